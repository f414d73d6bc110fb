// `npm run bench:load [-- --unet mid|sd15 --cache DIR --threads N --out FILE]`: how long creating
// the UNet's session takes cold (no optimized-graph cache: ONNX Runtime optimizes, and writes the
// cache entry) and warm (opened from the cache with optimization off), on the bench's
// random-weight fixture UNet. One JSON document on stdout, also written to
// bench-results/load-<date>.json; progress on stderr.
//
// The cache folder (default: a fresh temporary one, deleted afterwards) is emptied first so the
// cold load is cold. --unet sd15 builds the 3.4 GB SD-1.5-shaped fixture on first use.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MID_UNET_CONFIG, SD15_UNET_CONFIG } from '../../tests/fixtures/models';
import { getRuntimeInfo } from '../../src/engine';
import { createSession } from '../../src/engine/models/providers';
import { benchModel, isEntry, repoRoot, writeResult } from './fixture';

const log = (msg: string) => process.stderr.write(`bench:load: ${msg}\n`);
const round = (x: number) => Math.round(x);
const rssMb = () => Math.round(process.memoryUsage().rss / 2 ** 20);

/** Cold and warm UNet session creation of the bench fixture (what `npm run bench` reports too). */
export async function measureLoad(opts: {
  unet: 'mid' | 'sd15';
  /** Cache folder (emptied first); default a temporary one, deleted afterwards. */
  cache?: string;
  threads?: number;
  repeats: number;
}) {
  const { unet: name, threads } = opts;
  const repeats = Math.max(1, opts.repeats);
  const root = repoRoot();
  const cfg = name === 'sd15' ? SD15_UNET_CONFIG : MID_UNET_CONFIG;
  const { info } = await benchModel(root, name, {
    unet: cfg,
    hiddenSize: cfg.cross_attention_dim,
    dtype: 'float32',
    externalWeights: true,
  });
  const modelPath = path.join(info.dir, 'unet', 'model.onnx');
  const tempCache = opts.cache === undefined;
  const cacheDir = opts.cache ?? (await mkdtemp(path.join(os.tmpdir(), 'latent-ortcache-')));
  await rm(cacheDir, { recursive: true, force: true });
  await mkdir(cacheDir, { recursive: true });
  const sessionOpts = { optimizedCacheDir: cacheDir, ...(threads ? { threads } : {}) };

  const load = async (label: string) => {
    const started = performance.now();
    const created = await createSession(modelPath, 'unet/model.onnx', 'cpu', sessionOpts);
    const ms = performance.now() - started;
    const rss = rssMb();
    await created.session.release();
    log(`${label}: ${round(ms)} ms (cache ${created.cache}, rss ${rss} MB)`);
    return { ms: round(ms), cache: created.cache, rssMb: rss };
  };
  try {
    const cold = await load('cold');
    const warm = [];
    for (let i = 0; i < repeats; i++) warm.push(await load(`warm ${i + 1}`));
    return {
      unet: name,
      model: path.relative(root, info.dir),
      runtime: getRuntimeInfo(),
      cpus: os.cpus().length,
      loadAvg: os.loadavg().map((x) => Number(x.toFixed(2))),
      threads: threads ?? null,
      coldMs: cold.ms,
      warmMs: warm.map((w) => w.ms),
      cold,
      warm,
    };
  } finally {
    if (tempCache) await rm(cacheDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      unet: { type: 'string', default: 'mid' },
      cache: { type: 'string' },
      threads: { type: 'string' },
      repeats: { type: 'string', default: '2' },
      out: { type: 'string' },
    },
  });
  const name = values.unet;
  if (name !== 'mid' && name !== 'sd15')
    throw new Error(`--unet must be mid or sd15, not "${name}".`);
  const result = await measureLoad({
    unet: name,
    repeats: Number(values.repeats),
    ...(values.cache !== undefined ? { cache: values.cache } : {}),
    ...(values.threads ? { threads: Number(values.threads) } : {}),
  });
  await writeResult('load', result, values.out);
}

// Bundled into other benches (bench.ts) too: run only as its own tool.
if (isEntry('load'))
  main().catch((err: unknown) => {
    process.stderr.write(`bench:load: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
