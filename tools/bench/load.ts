// `npm run bench:load [-- --unet mid|sd15 --dtype float32|float16 --cache DIR --threads N
//  --out FILE]`: how long creating
// the UNet's session takes cold (no optimized-graph cache: ONNX Runtime optimizes, and writes the
// cache entry) and warm (opened from the cache with optimization off), on the bench's
// random-weight fixture UNet, stored float32 or float16 (on the CPU provider float16 weights are
// widened to float32 before ORT reads them on the cold load: `widenedWeights`). On Linux each
// load also reports its peak RSS (VmHWM, reset before it). One JSON document on stdout, also written to
// bench-results/load-<date>.json; progress on stderr.
//
// The cache folder (default: a fresh temporary one, deleted afterwards) is emptied first so the
// cold load is cold. --unet sd15 builds the 3.4 GB SD-1.5-shaped fixture on first use.
import { readFileSync, writeFileSync } from 'node:fs';
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

/** Peak RSS since the last reset, MB (Linux; null elsewhere). */
function peakMb(): number | null {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? Math.round(Number(m[1]) / 1024) : null;
  } catch {
    return null;
  }
}

/** Resets the peak to the current RSS (proc(5), clear_refs 5); a no-op where it cannot. */
function resetPeak(): void {
  try {
    writeFileSync('/proc/self/clear_refs', '5');
  } catch {
    // not Linux: peaks are not reported
  }
}

/** Cold and warm UNet session creation of the bench fixture (what `npm run bench` reports too). */
export async function measureLoad(opts: {
  unet: 'mid' | 'sd15';
  /** Storage type of the fixture's weights; default float32. */
  dtype?: 'float32' | 'float16';
  /** Cache folder (emptied first); default a temporary one, deleted afterwards. */
  cache?: string;
  threads?: number;
  repeats: number;
}) {
  const { unet: name, threads } = opts;
  const repeats = Math.max(1, opts.repeats);
  const root = repoRoot();
  const cfg = name === 'sd15' ? SD15_UNET_CONFIG : MID_UNET_CONFIG;
  const dtype = opts.dtype ?? 'float32';
  const { info } = await benchModel(root, `${name}${dtype === 'float16' ? '-fp16' : ''}`, {
    unet: cfg,
    hiddenSize: cfg.cross_attention_dim,
    dtype,
    externalWeights: true,
  });
  const modelPath = path.join(info.dir, 'unet', 'model.onnx');
  const tempCache = opts.cache === undefined;
  const cacheDir = opts.cache ?? (await mkdtemp(path.join(os.tmpdir(), 'latent-ortcache-')));
  await rm(cacheDir, { recursive: true, force: true });
  await mkdir(cacheDir, { recursive: true });
  const sessionOpts = { optimizedCacheDir: cacheDir, ...(threads ? { threads } : {}) };

  const load = async (label: string) => {
    resetPeak();
    const started = performance.now();
    const created = await createSession(modelPath, 'unet/model.onnx', 'cpu', sessionOpts);
    const ms = performance.now() - started;
    const rss = rssMb();
    const peak = peakMb();
    await created.session.release();
    const widened = created.widenedWeights;
    log(`${label}: ${round(ms)} ms (cache ${created.cache}, rss ${rss} MB, peak ${peak} MB)`);
    return {
      ms: round(ms),
      cache: created.cache,
      rssMb: rss,
      peakMb: peak,
      widenedWeights: widened,
    };
  };
  try {
    const cold = await load('cold');
    const warm = [];
    for (let i = 0; i < repeats; i++) warm.push(await load(`warm ${i + 1}`));
    return {
      unet: name,
      dtype,
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
      dtype: { type: 'string', default: 'float32' },
      cache: { type: 'string' },
      threads: { type: 'string' },
      repeats: { type: 'string', default: '2' },
      out: { type: 'string' },
    },
  });
  const name = values.unet;
  if (name !== 'mid' && name !== 'sd15')
    throw new Error(`--unet must be mid or sd15, not "${name}".`);
  const dtype = values.dtype;
  if (dtype !== 'float32' && dtype !== 'float16')
    throw new Error(`--dtype must be float32 or float16, not "${dtype}".`);
  const result = await measureLoad({
    unet: name,
    dtype,
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
