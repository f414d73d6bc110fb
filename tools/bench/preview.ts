// `npm run bench:preview [-- --size N --runs N --dir DIR]`: what one live preview costs per step:
// TAESD's decoder (emit/taesd.ts) vs the full SD VAE decoder vs today's latent-RGB preview
// (image/preview.ts), at one image of N x N pixels (default 512). Both decoders are converted by
// our converters from random-weight files with the real key names and shapes (the SD 1.5 key set
// for the VAE, taesd.py's for TAESD): speed does not depend on the values. Runs are interleaved;
// medians on stdout as JSON. Scratch files go to --dir (default a temporary folder, deleted).
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { encodeFloats, readKeySet, writeSafetensors } from '../../tests/fixtures/checkpoint';
import { convertTaesd } from '../../src/engine/convert/convert-taesd';
import { convertVae } from '../../src/engine/convert/convert-vae';
import { SD15_LATENT_RGB, latentPreview } from '../../src/engine/image/preview';
import { createSession } from '../../src/engine/models/providers';
import { repoRoot } from './fixture';

const log = (msg: string) => process.stderr.write(`bench:preview: ${msg}\n`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Small xorshift32 values in [-0.05, 0.05): random weights that keep activations finite. */
function randomFloats(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 0.1;
  }
  return out;
}

async function writeRandom(file: string, tensors: { name: string; shape: number[] }[]) {
  let seed = 1;
  await writeSafetensors(
    file,
    tensors.map((t) => ({ ...t, dtype: 'F32' as const })),
    (t) =>
      encodeFloats(
        randomFloats(
          t.shape.reduce((a, b) => a * b, 1),
          seed++,
        ),
        'F32',
      ),
  );
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      size: { type: 'string', default: '512' },
      runs: { type: 'string', default: '3' },
      dir: { type: 'string' },
    },
  });
  const size = Number(values.size);
  const runs = Math.max(1, Number(values.runs));
  const lat = size / 8;
  const root = repoRoot();
  const dir = values.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'latent-preview-bench-')));
  await mkdir(dir, { recursive: true });
  try {
    const vaeKeys = (await readKeySet('sd15')).tensors
      .filter(([name]) => name.startsWith('first_stage_model.'))
      .map(([name, shape]) => ({ name, shape: [...shape] }));
    await writeRandom(path.join(dir, 'vae.safetensors'), vaeKeys);
    const vae = await convertVae(path.join(dir, 'vae.safetensors'), path.join(dir, 'vae'), {
      precision: 'fp32',
    });
    const ref = JSON.parse(
      await readFile(path.join(root, 'tests/fixtures/reference/taesd-decoder.json'), 'utf8'),
    ) as { tensors: { name: string; shape: number[] }[] };
    await writeRandom(path.join(dir, 'taesd.safetensors'), ref.tensors);
    const taesd = await convertTaesd(path.join(dir, 'taesd.safetensors'), path.join(dir, 'taesd'));
    log('converted both decoders');

    const open = async (p: string) =>
      (await createSession(p, path.basename(path.dirname(p)), 'cpu')).session;
    const vaeSession = await open(path.join(vae.dir, 'vae_decoder', 'model.onnx'));
    const taesdSession = await open(path.join(taesd.dir, 'model.onnx'));
    const latents = randomFloats(4 * lat * lat, 7).map((x) => x * 20);
    const feed = { latent_sample: new ort.Tensor('float32', latents, [1, 4, lat, lat]) };
    const t = { vae: [] as number[], taesd: [] as number[], latentRgb: [] as number[] };
    await taesdSession.run(feed); // warm-up (the VAE's first run is timed: it is minutes long)
    for (let r = 0; r < runs; r++) {
      let t0 = performance.now();
      await taesdSession.run(feed);
      t.taesd.push(performance.now() - t0);
      t0 = performance.now();
      latentPreview(latents, [1, 4, lat, lat], SD15_LATENT_RGB, { index: 0 });
      t.latentRgb.push(performance.now() - t0);
      t0 = performance.now();
      await vaeSession.run(feed);
      t.vae.push(performance.now() - t0);
      log(
        `run ${r + 1}: vae ${t.vae.at(-1)!.toFixed(0)} ms, taesd ${t.taesd.at(-1)!.toFixed(0)} ms`,
      );
    }
    await vaeSession.release();
    await taesdSession.release();
    const result = {
      size,
      cpus: os.cpus().length,
      loadAvg: os.loadavg().map((x) => Number(x.toFixed(2))),
      vaeDecodeMs: Math.round(median(t.vae)),
      taesdDecodeMs: Math.round(median(t.taesd)),
      latentRgbMs: Number(median(t.latentRgb).toFixed(2)),
      vaeOverTaesd: Number((median(t.vae) / median(t.taesd)).toFixed(1)),
      runs: t,
    };
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } finally {
    if (!values.dir) await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:preview: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
