// `npm run bench -- --gpu [--steps N --repeats N --size N --models sd15,turbo --no-numerics
//  --provider cuda|webgpu --dry-run --work DIR --keep --out FILE]`: the GPU path (issue 17 item 6). Builds an
// SD-1.5-shaped and an SD-Turbo-shaped (SD 2.1) model from random-weight full-size checkpoints
// with the converter's CUDA variant (fused operators, float16), and runs them through
// DiffusionEngine on ONNX Runtime's CUDA provider: SD 1.5 at 512x512 with CFG (UNet batch 2)
// for N steps, SD-Turbo one step without CFG. One JSON document on stdout (also written to
// bench-results/gpu-<date>.json):
// - per step: the engine's denoise stage / steps, and the ratio to a bare loop of the same
//   session.run calls on the same session and feeds (the engine's own per-step cost);
// - load: the first load of the model in the process (cold: CUDA and cuDNN start, graph
//   optimization, the optimized-graph cache written) and a second in a new engine (warm);
// - peak GPU memory (nvidia-smi sampled every 100 ms: this process, and the whole device) and
//   peak RSS while each model loads and runs;
// - numerics: the fused float16 UNet against the plain float32-compute one built from the same
//   checkpoint, on the same provider and feeds.
// Without CUDA (no NVIDIA GPU, or onnxruntime-node's CUDA add-on not installed) it is a dry run
// on CPU: the converter's small recorded checkpoints, 64x64, 2 steps, plain UNets (the fused
// operators have no CPU kernels) and the decomposed fused UNet in the numerics check; the JSON
// says `"dryRun": true, "provider": "cpu"` and why. `--provider webgpu` runs the plain variant
// (full size, no numerics check) on WebGPU instead: a GPU figure where CUDA cannot load.
import { mkdtempSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { DiffusionEngine, getRuntimeInfo } from '../../src/engine';
import { createSession } from '../../src/engine/models/providers';
import { GenerationSettings } from '../../src/shared/generation';
import { repoRoot } from './fixture';
import { GpuMemory, cudaUnavailable, gpuName, rssSampler } from './gpu-probe';
import { type GpuModelName, buildModel } from './gpu-models';

const log = (msg: string) => process.stderr.write(`bench --gpu: ${msg}\n`);
const round = (x: number, d = 1) => Number(x.toFixed(d));

/** Published ORT CUDA figures on an A100 (issue 17 item 6). */
const ANCHORS = {
  gpu: 'NVIDIA A100',
  sd15: { steps: 50, size: 512, cfg: true, totalMs: [1000, 1100], stepMs: 20 },
  turbo: { steps: 1, size: 512, cfg: false, totalMs: [38, 38] },
};

/** cuda: the CUDA variant; webgpu: the plain variant on WebGPU; cpu: the dry run. */
type BenchProvider = 'cuda' | 'webgpu' | 'cpu';

interface ModelPlan {
  name: GpuModelName;
  steps: number;
  guidance: number;
}

async function benchModel(
  dir: string,
  plan: ModelPlan,
  opts: { provider: BenchProvider; size: number; repeats: number; cacheDir: string },
  mem: GpuMemory,
): Promise<Record<string, unknown>> {
  mem.reset();
  const rss = rssSampler();
  const engineOpts = { provider: opts.provider, previewEvery: 0, optimizedCacheDir: opts.cacheDir };
  const load = async (): Promise<{ engine: DiffusionEngine; ms: number; provider: string }> => {
    const engine = new DiffusionEngine(engineOpts);
    const t0 = performance.now();
    const model = await engine.load(dir);
    await model.session('unet');
    const ms = performance.now() - t0;
    if (model.provider !== opts.provider) {
      await engine.release();
      // A full-size model on the CPU fallback would run for hours: stop with the reason.
      throw new Error(
        `the ${opts.provider} provider did not load the model: ${model.fallbackReason ?? 'unknown reason'}`,
      );
    }
    return { engine, ms, provider: model.provider };
  };
  const cold = await load();
  await cold.engine.release();
  const warm = await load();
  const engine = warm.engine;
  try {
    const model = await engine.load(dir);
    const unet = await model.session('unet');
    let lastFeeds: Record<string, ort.Tensor> | null = null;
    let unetRuns = 0;
    const inner = unet.run.bind(unet);
    unet.run = (feeds: Record<string, ort.Tensor>, signal?: AbortSignal) => {
      lastFeeds = feeds;
      unetRuns++;
      return inner(feeds, signal);
    };
    let promptNo = 0;
    const generate = () =>
      engine.generate({
        modelDir: dir,
        settings: GenerationSettings.parse({
          model: dir,
          prompt: `a photograph of an astronaut riding a horse, take ${promptNo++}`,
          seed: 42,
          sampler: 'euler',
          steps: plan.steps,
          guidance: plan.guidance,
          width: opts.size,
          height: opts.size,
        }),
      });
    log(`${plan.name}: warm-up`);
    await generate();
    const runs: Record<string, number>[] = [];
    for (let r = 0; r < opts.repeats; r++) {
      unetRuns = 0;
      const t0 = performance.now();
      const result = await generate();
      const wallMs = performance.now() - t0;
      const runsPerStep = unetRuns / plan.steps;
      // The same session.run calls, bare: the last step's feeds, as many times as the run made;
      // the median call (a busy machine's outliers aside) times the calls per step.
      const feeds = lastFeeds!;
      const calls: number[] = [];
      for (let i = 0; i < Math.max(unetRuns, 3); i++) {
        const t1 = performance.now();
        await unet.session.run(feeds);
        calls.push(performance.now() - t1);
      }
      calls.sort((a, b) => a - b);
      const rawStepMs = calls[calls.length >> 1]! * runsPerStep;
      const t = result.timings;
      runs.push({
        wallMs: round(wallMs),
        textMs: round(t.textMs),
        denoiseMs: round(t.denoiseMs),
        decodeMs: round(t.decodeMs),
        stepMs: round(t.denoiseMs / plan.steps, 2),
        rawStepMs: round(rawStepMs, 2),
        rawRatio: round(t.denoiseMs / plan.steps / rawStepMs, 4),
        unetBatch: Number(feeds.sample?.dims[0] ?? 0),
      });
      log(`${plan.name} ${r + 1}/${opts.repeats}: ${JSON.stringify(runs[runs.length - 1])}`);
    }
    const median = (k: string) => {
      const xs = runs.map((x) => x[k]!).sort((a, b) => a - b);
      return xs[xs.length >> 1]!;
    };
    return {
      provider: warm.provider,
      settings: {
        size: opts.size,
        steps: plan.steps,
        guidance: plan.guidance,
        cfg: plan.guidance > 1,
      },
      load: { coldMs: round(cold.ms), warmMs: round(warm.ms), coldProvider: cold.provider },
      median: {
        stepMs: median('stepMs'),
        rawStepMs: median('rawStepMs'),
        rawRatio: median('rawRatio'),
        denoiseMs: median('denoiseMs'),
        wallMs: median('wallMs'),
      },
      peakGpuMemory: mem.read(),
      peakRssMiB: rss.read(),
      runs,
    };
  } finally {
    rss.stop();
    await engine.release();
  }
}

/** The fused UNet against the plain one: same random feeds, same provider. */
async function numerics(
  unets: { fused: string; plain: string; contextDim: number },
  provider: BenchProvider,
  size: number,
): Promise<Record<string, unknown>> {
  const ctxDim = unets.contextDim;
  const lat = size / 8;
  let s = 12345;
  const rand = (n: number) =>
    Float32Array.from({ length: n }, () => {
      s = (s * 1103515245 + 12345) >>> 0;
      return s / 2 ** 31 - 1;
    });
  const feeds = {
    sample: new ort.Tensor('float32', rand(2 * 4 * lat * lat), [2, 4, lat, lat]),
    timestep: new ort.Tensor('float32', Float32Array.of(500, 500), [2]),
    encoder_hidden_states: new ort.Tensor('float32', rand(2 * 77 * ctxDim), [2, 77, ctxDim]),
  };
  const out: Record<string, Float32Array> = {};
  const providers: Record<string, string> = {};
  for (const [k, file] of [
    ['fused', unets.fused],
    ['plain', unets.plain],
  ] as const) {
    const created = await createSession(file, `unet (${k})`, provider);
    providers[k] = created.provider;
    try {
      out[k] = (await created.session.run(feeds)).out_sample!.data as Float32Array;
    } finally {
      await created.session.release();
    }
  }
  const a = out.fused!;
  const b = out.plain!;
  let diff = 0;
  let ref = 0;
  let finite = true;
  for (let i = 0; i < b.length; i++) {
    if (!Number.isFinite(a[i]!)) finite = false;
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    ref = Math.max(ref, Math.abs(b[i]!));
  }
  const relErr = diff / ref;
  // float16 compute against float32 through a whole UNet: a few parts in a thousand.
  const tolerance = provider === 'cpu' ? 1e-4 : 2e-2;
  return {
    providers,
    size,
    relErr: Number(relErr.toPrecision(3)),
    maxAbsRef: Number(ref.toPrecision(4)),
    finite,
    tolerance,
    ok: finite && relErr < tolerance,
  };
}

export async function gpuMain(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      steps: { type: 'string' },
      repeats: { type: 'string' },
      size: { type: 'string' },
      models: { type: 'string', default: 'sd15,turbo' },
      'no-numerics': { type: 'boolean', default: false },
      'dry-run': { type: 'boolean', default: false },
      work: { type: 'string' },
      keep: { type: 'boolean', default: false },
      out: { type: 'string' },
      provider: { type: 'string', default: 'cuda' },
    },
  });
  const wanted = values.provider;
  if (wanted !== 'cuda' && wanted !== 'webgpu')
    throw new Error(`--provider must be cuda or webgpu, not "${wanted}".`);
  const unavailable = values['dry-run']
    ? 'asked for (--dry-run)'
    : wanted === 'cuda'
      ? cudaUnavailable()
      : null;
  const dryRun = unavailable !== null;
  const provider: BenchProvider = dryRun ? 'cpu' : wanted;
  // The fused operators are CUDA's (and ROCm's); other providers run the plain graph.
  const target = provider === 'cuda' ? 'cuda' : 'cpu';
  if (dryRun) log(`dry run on CPU: ${unavailable}`);
  const int = (raw: string | undefined, name: string, fallback: number, min: number) => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min)
      throw new Error(`--${name} must be an integer >= ${min}, not "${raw}".`);
    return n;
  };
  const steps = int(values.steps, 'steps', dryRun ? 2 : 50, 1);
  const repeats = int(values.repeats, 'repeats', dryRun ? 1 : 2, 1);
  const size = int(values.size, 'size', dryRun ? 64 : 512, 64);
  if (size % 8) throw new Error(`--size must be a multiple of 8, not ${size}.`);
  const names = values.models.split(',').map((x) => x.trim());
  for (const n of names)
    if (n !== 'sd15' && n !== 'turbo') throw new Error(`--models: "${n}" is not sd15 or turbo.`);

  const root = repoRoot();
  const now = new Date();
  const outFile = path.resolve(
    values.out ??
      path.join(root, 'bench-results', `gpu-${now.toISOString().replace(/[:.]/g, '-')}.json`),
  );
  await mkdir(path.dirname(outFile), { recursive: true });
  const work = values.work
    ? path.resolve(values.work)
    : mkdtempSync(path.join(os.tmpdir(), 'latent-gpu-bench-'));
  await mkdir(work, { recursive: true });
  const mem = new GpuMemory();
  if (!dryRun) mem.start();
  const models: Record<string, unknown> = {};
  const checks: Record<string, unknown> = {};
  try {
    for (const name of names as GpuModelName[]) {
      const plan: ModelPlan =
        name === 'sd15' ? { name, steps, guidance: 7.5 } : { name, steps: 1, guidance: 0 };
      // The numerics check compares the fused UNet with the plain one: CUDA, or decomposed on CPU.
      const wantNumerics = !values['no-numerics'] && name === 'sd15' && provider !== 'webgpu';
      log(
        `${name}: building (${dryRun ? 'small recorded checkpoint' : 'random full-size checkpoint'}, ${target === 'cuda' ? 'CUDA' : 'plain'} variant)`,
      );
      const rss = rssSampler();
      const built = await buildModel(work, name, target, dryRun, wantNumerics);
      rss.stop();
      log(`${name}: built in ${((built.checkpointMs + built.convertMs) / 1000).toFixed(1)} s`);
      const result = await benchModel(
        built.dir,
        plan,
        { provider, size, repeats, cacheDir: path.join(work, 'ort-cache') },
        mem,
      );
      models[name] = {
        build: {
          checkpoint: built.checkpoint,
          target,
          checkpointMs: round(built.checkpointMs),
          convertMs: round(built.convertMs),
          peakRssMiB: rss.read(),
        },
        ...result,
      };
      if (built.numerics) {
        log(`${name}: numerics (fused against plain UNet)`);
        checks[name] = await numerics(built.numerics, provider, size);
        log(`${name}: numerics ${JSON.stringify(checks[name])}`);
      }
    }
  } finally {
    mem.stop();
    if (!values.keep) await rm(work, { recursive: true, force: true });
  }
  type Median = { median: { stepMs: number; wallMs: number } };
  const sd15 = models.sd15 as Median | undefined;
  const turbo = models.turbo as Median | undefined;
  const doc = {
    bench: 'gpu',
    date: now.toISOString(),
    dryRun,
    ...(dryRun ? { dryRunReason: unavailable } : {}),
    provider,
    machine: {
      cpu: os.cpus()[0]?.model.trim() ?? 'unknown',
      logicalCores: os.availableParallelism(),
      memoryGiB: round(os.totalmem() / 2 ** 30),
      gpu: dryRun ? null : await gpuName(),
      node: process.version,
      onnxruntime: getRuntimeInfo().onnxruntime,
    },
    anchors: ANCHORS,
    vsAnchors: dryRun
      ? null
      : {
          // Per-step time against the anchor's, and whole generations (text encoder, denoising,
          // VAE decode) against the anchors' totals.
          sd15StepMsOverAnchor: sd15 ? round(sd15.median.stepMs / ANCHORS.sd15.stepMs, 3) : null,
          sd15WallMsOverAnchor: sd15
            ? round(sd15.median.wallMs / ANCHORS.sd15.totalMs[0]!, 3)
            : null,
          turboWallMsOverAnchor: turbo
            ? round(turbo.median.wallMs / ANCHORS.turbo.totalMs[0]!, 3)
            : null,
        },
    models,
    numerics: checks,
    maxRssMiB: round(process.resourceUsage().maxRSS / 1024),
  };
  const json = JSON.stringify(doc, null, 2);
  await writeFile(outFile, json + '\n');
  log(`wrote ${path.relative(process.cwd(), outFile)}`);
  process.stdout.write(json + '\n');
  const failed = Object.entries(checks).filter(([, c]) => !(c as { ok: boolean }).ok);
  if (failed.length)
    throw new Error(`numerics check failed for ${failed.map(([n]) => n).join(', ')}.`);
}
