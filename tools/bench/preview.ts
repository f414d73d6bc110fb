// `npm run bench:preview [-- --size N --runs N --dir DIR --unet mid|sd15 --steps N
// --sampling-size N]`: what a live preview costs.
// 1. One preview: TAESD's decoder (emit/taesd.ts) vs the full SD VAE decoder vs the latent-RGB
//    preview (image/preview.ts), at one image of N x N pixels (default 512).
// 2. During sampling: the engine's denoise time per step (txt2img, Euler, CFG 7, a preview
//    wanted at every step) with latent-RGB previews, with TAESD previews at every step, and with
//    TAESD previews in their default 10% share of sampling time (pipelines/taesd.ts), on the
//    benchmarks' random-weight UNet (--unet mid, the default, or sd15: SD 1.5's shape, minutes
//    to build once) at --sampling-size (default 256 for mid, 512 for sd15); the three runs
//    interleaved --runs times, medians and ratios to the latent-RGB run.
// Both decoders are converted by our converters from random-weight files with the real key names
// and shapes (the SD 1.5 key set for the VAE, taesd.py's for TAESD): speed does not depend on
// the values. JSON on stdout. Scratch files go to --dir (default a temporary folder, deleted).
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { encodeFloats, readKeySet, writeSafetensors } from '../../tests/fixtures/checkpoint';
import { convertTaesd } from '../../src/engine/convert/convert-taesd';
import { convertVae } from '../../src/engine/convert/convert-vae';
import { SD15_LATENT_RGB, latentPreview } from '../../src/engine/image/preview';
import { DiffusionEngine } from '../../src/engine';
import { createSession } from '../../src/engine/models/providers';
import { GenerationSettings } from '../../src/shared/generation';
import { MID_UNET_CONFIG, SD15_UNET_CONFIG } from '../../tests/fixtures/models';
import { benchModel, repoRoot } from './fixture';

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
      unet: { type: 'string', default: 'mid' },
      steps: { type: 'string', default: '8' },
      'sampling-size': { type: 'string' },
    },
  });
  const unet = values.unet === 'sd15' ? 'sd15' : 'mid';
  const steps = Math.max(2, Number(values.steps));
  const samplingSize = Number(values['sampling-size'] ?? (unet === 'sd15' ? 512 : 256));
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
    const sampling = await samplingCost(root, {
      unet,
      steps,
      size: samplingSize,
      runs,
      taesdDir: taesd.dir,
    });
    const result = {
      size,
      cpus: os.cpus().length,
      loadAvg: os.loadavg().map((x) => Number(x.toFixed(2))),
      vaeDecodeMs: Math.round(median(t.vae)),
      taesdDecodeMs: Math.round(median(t.taesd)),
      latentRgbMs: Number(median(t.latentRgb).toFixed(2)),
      vaeOverTaesd: Number((median(t.vae) / median(t.taesd)).toFixed(1)),
      runs: t,
      sampling,
    };
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  } finally {
    if (!values.dir) await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Denoise milliseconds per step of one txt2img run per preview mode, interleaved `runs` times:
 * latent-RGB previews, TAESD previews at every step (share unlimited), TAESD in its default share.
 */
async function samplingCost(
  root: string,
  o: { unet: 'mid' | 'sd15'; steps: number; size: number; runs: number; taesdDir: string },
) {
  const cfg = o.unet === 'sd15' ? SD15_UNET_CONFIG : MID_UNET_CONFIG;
  const { info } = await benchModel(root, o.unet, {
    unet: cfg,
    hiddenSize: cfg.cross_attention_dim,
    dtype: 'float32',
    externalWeights: true,
  });
  const settings = GenerationSettings.parse({
    model: 'bench',
    prompt: 'a lighthouse at dusk',
    seed: 1,
    sampler: 'euler',
    steps: o.steps,
    guidance: 7,
    width: o.size,
    height: o.size,
  });
  const modes = {
    latentRgb: { share: 0.1, previewDecoder: 'latent' as const },
    taesdEveryStep: { share: Number.POSITIVE_INFINITY, previewDecoder: 'taesd' as const },
    taesdDefaultShare: { share: 0.1, previewDecoder: 'taesd' as const },
  };
  const engines = Object.fromEntries(
    Object.entries(modes).map(([k, m]) => [
      k,
      new DiffusionEngine({ provider: 'cpu', previewEvery: 1, taesdPreviewShare: m.share }),
    ]),
  ) as Record<keyof typeof modes, DiffusionEngine>;
  const series = (): Record<keyof typeof modes, number[]> => ({
    latentRgb: [],
    taesdEveryStep: [],
    taesdDefaultShare: [],
  });
  const perStep = series();
  const taesdPreviews = series();
  // Within one run, denoise time over denoise time less the TAESD previews' own time: the
  // slowdown the previews cause, unaffected by the load changing between runs.
  const inRun = series();
  try {
    for (const k of Object.keys(modes) as (keyof typeof modes)[]) {
      // Warm-up: loads the sessions and runs one step, untimed.
      await engines[k].generate(
        {
          modelDir: info.dir,
          settings: { ...settings, steps: 1 },
          taesdDir: o.taesdDir,
          previewDecoder: modes[k].previewDecoder,
        },
        { onProgress: () => undefined },
      );
    }
    for (let r = 0; r < o.runs; r++) {
      for (const k of Object.keys(modes) as (keyof typeof modes)[]) {
        const result = await engines[k].generate(
          {
            modelDir: info.dir,
            settings,
            taesdDir: o.taesdDir,
            previewDecoder: modes[k].previewDecoder,
          },
          { onProgress: () => undefined },
        );
        perStep[k].push(result.timings.denoiseMs / o.steps);
        taesdPreviews[k].push(result.taesd?.previews ?? 0);
        const previewMs = result.taesd?.previewMs ?? 0;
        inRun[k].push(result.timings.denoiseMs / (result.timings.denoiseMs - previewMs));
        log(`sampling run ${r + 1} ${k}: ${perStep[k].at(-1)!.toFixed(0)} ms/step`);
      }
    }
  } finally {
    for (const e of Object.values(engines)) await e.release();
  }
  const base = median(perStep.latentRgb);
  const summary = (k: keyof typeof modes) => ({
    msPerStep: Math.round(median(perStep[k])),
    overLatentRgb: Number((median(perStep[k]) / base).toFixed(3)),
    slowdownInRun: Number(median(inRun[k]).toFixed(3)),
    taesdPreviews: median(taesdPreviews[k]),
  });
  return {
    unet: o.unet,
    size: o.size,
    steps: o.steps,
    latentRgb: summary('latentRgb'),
    taesdEveryStep: summary('taesdEveryStep'),
    taesdDefaultShare: summary('taesdDefaultShare'),
    runs: { msPerStep: perStep, slowdownInRun: inRun },
  };
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:preview: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
