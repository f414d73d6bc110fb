// `npm run bench [-- --steps N --repeats N --size N --sampler NAME[,NAME] --unet mid|sd15
//  --provider NAME --threads N --out FILE]`: the engine's speed on a random-weight fixture model
// built from the checkout (tests/fixtures), as one JSON document on stdout, also written to
// bench-results/engine-<date>.json. Progress goes to stderr; any failure exits non-zero with a
// one-line reason.
//
// What it measures, per sampler, after a warm-up run: per-stage times, per-step time, and the
// engine's overhead as ratios taken in the same run (the machines are noisy, absolute numbers
// are not comparable across runs):
// - overhead: wall time of DiffusionEngine.generate / sum of its ComponentSession.run times;
// - denoiseOverhead: the denoise stage / the UNet's own run time inside it;
// - rawRatio: the pipeline's per-step time / a bare `session.run` of the same UNet on the same
//   feeds. Measured in a second, paired run per repeat where each pipeline UNet call is preceded
//   by a bare call, timed apart and taken out of the stage time: pairing step by step, rather
//   than a separate loop after the run, keeps the ratio steady on a busy machine. Reported per
//   run (whole denoise stage) and per step (median over all steps, the steadiest number).
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type * as ort from 'onnxruntime-node';
import { MID_UNET_CONFIG, SD15_UNET_CONFIG, type FixtureSpec } from '../../tests/fixtures/models';
import { benchModel, repoRoot } from './fixture';
import { gpuMain } from './gpu';
import { measureLoad } from './load';
import { VARIANTS, type Variant, memoryMatrix, summarizeMemory } from './memory';
import {
  DiffusionEngine,
  type StageTimings,
  describeEngineError,
  getRuntimeInfo,
  isEngineError,
} from '../../src/engine';
import { physicalCoreCount } from '../../src/engine/models/providers';
import { GenerationSettings, type SamplerName, samplerNames } from '../../src/shared/generation';
import type { ExecutionProviderPreference } from '../../src/shared/settings';

const usage = `Usage: npm run bench -- [options]
       npm run bench -- --gpu [options]   (the GPU benchmark: see tools/bench/gpu.ts)

  --unet mid|sd15      mid: 18 M-parameter UNet (default); sd15: the full SD 1.5 shape with
                       random weights (3.4 GB, builds for many minutes; only on request)
  --size N             image side in pixels (default 256 for mid, 512 for sd15)
  --steps N            sampling steps (default 10)
  --repeats N          timed runs per sampler after one warm-up (default 3)
  --sampler A[,B]      samplers (default euler,dpmpp_2m)
  --provider NAME      auto, cpu, cuda, dml, coreml, webgpu (default cpu)
  --threads N          intra-op threads (default: physical cores)
  --load-repeats N     warm loads after the cold one (default 1; 0 skips the load measurement)
  --memory-sizes A[,B] image sides for peak memory, one child process per case (default
                       256,512 for mid, 512 for sd15; none skips it)
  --memory-variants V  matmul (attention as exported), fused (rewritten to MultiHeadAttention,
                       the default load), fused-noarena (default matmul,fused)
  --out FILE           where to write the JSON (default bench-results/engine-<date>.json)`;

class UsageError extends Error {}

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

function intArg(raw: string | undefined, name: string, fallback: number, min: number): number {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min)
    throw new UsageError(`--${name} must be an integer >= ${min}, not "${raw}".`);
  return n;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const round = (x: number, digits = 2) => Number(x.toFixed(digits));

interface RunRecord {
  wallMs: number;
  loadMs: number;
  textMs: number;
  denoiseMs: number;
  decodeMs: number;
  totalMs: number;
  stepMs: number;
  sessionRunMs: number;
  sessionRuns: number;
  unetRunMs: number;
  unetRuns: number;
  /** wall / sessionRunMs */
  overhead: number;
  /** denoiseMs / unetRunMs */
  denoiseOverhead: number;
  /** Per-step time of the paired run (its denoise stage less the bare calls). */
  pairedStepMs: number;
  /** Mean bare session.run of the UNet on the pipeline's own feeds, in the paired run. */
  rawUnetMs: number;
  /** pairedStepMs / (rawUnetMs * UNet runs per step) */
  rawRatio: number;
}

const medianKeys = [
  'wallMs',
  'loadMs',
  'textMs',
  'denoiseMs',
  'decodeMs',
  'totalMs',
  'stepMs',
  'sessionRunMs',
  'unetRunMs',
  'overhead',
  'denoiseOverhead',
  'pairedStepMs',
  'rawUnetMs',
  'rawRatio',
] as const;

function rounded(r: RunRecord): RunRecord {
  const out = { ...r };
  for (const k of medianKeys) out[k] = round(r[k], k.endsWith('Ms') ? 1 : 4);
  return out;
}

/**
 * Per step of a paired run (between consecutive step events, so from the second step on): the
 * step's time less its bare calls, over its bare calls. Steps with no bare call are skipped.
 */
function stepRatios(marks: number[], calls: { at: number; ms: number }[]): number[] {
  const out: number[] = [];
  for (let i = 1; i < marks.length; i++) {
    let bareMs = 0;
    for (const c of calls) if (c.at >= marks[i - 1] && c.at < marks[i]) bareMs += c.ms;
    if (bareMs > 0) out.push((marks[i] - marks[i - 1] - bareMs) / bareMs);
  }
  return out;
}

async function main(): Promise<void> {
  // `--gpu`: the GPU benchmark (tools/bench/gpu.ts), with its own options.
  const argv = process.argv.slice(2);
  if (argv.includes('--gpu')) return gpuMain(argv.filter((a) => a !== '--gpu'));
  const { values } = parseArgs({
    options: {
      steps: { type: 'string' },
      repeats: { type: 'string' },
      size: { type: 'string' },
      sampler: { type: 'string' },
      unet: { type: 'string', default: 'mid' },
      provider: { type: 'string', default: 'cpu' },
      threads: { type: 'string' },
      'load-repeats': { type: 'string' },
      'memory-sizes': { type: 'string' },
      'memory-variants': { type: 'string', default: 'matmul,fused' },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stderr.write(usage + '\n');
    return;
  }
  const unetName = values.unet;
  if (unetName !== 'mid' && unetName !== 'sd15')
    throw new UsageError(`--unet must be mid or sd15, not "${unetName}".`);
  const steps = intArg(values.steps, 'steps', 10, 1);
  const repeats = intArg(values.repeats, 'repeats', 3, 1);
  const size = intArg(values.size, 'size', unetName === 'sd15' ? 512 : 256, 64);
  if (size % 8) throw new UsageError(`--size must be a multiple of 8, not ${size}.`);
  const threads = intArg(values.threads, 'threads', 0, 0);
  const loadRepeats = intArg(values['load-repeats'], 'load-repeats', 1, 0);
  const memorySizesArg = values['memory-sizes'] ?? (unetName === 'sd15' ? '512' : '256,512');
  const memorySizes =
    memorySizesArg === 'none'
      ? []
      : memorySizesArg.split(',').map((x) => intArg(x.trim(), 'memory-sizes', 0, 64));
  if (memorySizes.some((x) => x % 8))
    throw new UsageError(`--memory-sizes must be multiples of 8, not "${memorySizesArg}".`);
  const memoryVariants = values['memory-variants'].split(',').map((v) => v.trim());
  for (const v of memoryVariants)
    if (!(VARIANTS as readonly string[]).includes(v))
      throw new UsageError(`--memory-variants: "${v}" is not one of ${VARIANTS.join(', ')}.`);
  const samplers = (values.sampler ?? 'euler,dpmpp_2m').split(',').map((s) => s.trim());
  for (const s of samplers)
    if (!(samplerNames as readonly string[]).includes(s))
      throw new UsageError(`--sampler: "${s}" is not one of ${samplerNames.join(', ')}.`);
  const provider = values.provider as ExecutionProviderPreference;
  if (!['auto', 'cpu', 'cuda', 'dml', 'coreml', 'webgpu'].includes(provider))
    throw new UsageError(
      `--provider: "${provider}" is not auto, cpu, cuda, dml, coreml or webgpu.`,
    );

  const root = repoRoot();
  if (!existsSync(path.join(root, 'tests', 'fixtures', 'models.ts')))
    throw new Error('run it from a checkout: tests/fixtures/models.ts is not here.');
  const now = new Date();
  const out = path.resolve(
    values.out ??
      path.join(root, 'bench-results', `engine-${now.toISOString().replace(/[:.]/g, '-')}.json`),
  );
  // Fail now, not after minutes of measuring, if the result cannot be written there.
  await mkdir(path.dirname(out), { recursive: true });

  const cfg = unetName === 'sd15' ? SD15_UNET_CONFIG : MID_UNET_CONFIG;
  if (unetName === 'sd15')
    log(
      'WARNING: --unet sd15 builds an 860 M-parameter UNet (3.4 GB of random weights) on first use; that takes many minutes and ~8 GB of memory, and each CPU step takes seconds.',
    );
  const spec: FixtureSpec = {
    unet: cfg,
    hiddenSize: cfg.cross_attention_dim,
    dtype: 'float32',
    externalWeights: true,
  };
  const { info, built, buildMs } = await benchModel(root, unetName, spec);

  const guidance = 7;
  const engine = new DiffusionEngine({ provider, ...(threads ? { threads } : {}) });
  const loadStarted = performance.now();
  const model = await engine.load(info.dir);
  const coldLoadMs = performance.now() - loadStarted;
  log(
    `loaded ${path.relative(root, info.dir)} on ${model.provider} in ${coldLoadMs.toFixed(0)} ms`,
  );

  // Count the UNet's own run time (the pipeline calls this same ComponentSession object). In a
  // paired run, each pipeline UNet call is preceded by a bare `session.run` on the very same
  // feeds, timed apart: interleaving step by step keeps the ratio honest on a noisy machine.
  const unet = await model.session('unet');
  const counter = { ms: 0, runs: 0 };
  const bare = { ms: 0, runs: 0, pair: false, calls: [] as { at: number; ms: number }[] };
  const innerRun = unet.run.bind(unet);
  unet.run = async (feeds: Record<string, ort.Tensor>, signal?: AbortSignal) => {
    if (bare.pair) {
      const t0 = performance.now();
      await unet.session.run(feeds);
      const ms = performance.now() - t0;
      bare.ms += ms;
      bare.runs += 1;
      bare.calls.push({ at: t0, ms });
    }
    const started = performance.now();
    try {
      return await innerRun(feeds, signal);
    } finally {
      counter.ms += performance.now() - started;
      counter.runs += 1;
    }
  };

  let promptNo = 0;
  const generate = async (sampler: SamplerName, pair = false) => {
    // A new prompt each run, so the text stage runs (the engine caches embeddings per prompt).
    const prompt = `a photograph of an astronaut riding a horse, take ${promptNo++}`;
    const before = { ...counter };
    bare.ms = 0;
    bare.runs = 0;
    bare.calls = [];
    bare.pair = pair;
    const marks: number[] = [];
    const started = performance.now();
    let result;
    try {
      result = await engine.generate(
        {
          modelDir: info.dir,
          settings: GenerationSettings.parse({
            model: info.dir,
            prompt,
            seed: 42,
            sampler,
            steps,
            guidance,
            width: size,
            height: size,
          }),
        },
        { onProgress: (e) => void (e.stage === 'denoise' && marks.push(performance.now())) },
      );
    } finally {
      bare.pair = false;
    }
    const wallMs = performance.now() - started;
    return {
      wallMs,
      timings: result.timings,
      unetRunMs: counter.ms - before.ms,
      unetRuns: counter.runs - before.runs,
      bareMs: bare.ms,
      bareRuns: bare.runs,
      stepRatios: pair ? stepRatios(marks, bare.calls) : [],
    };
  };

  const results: Record<string, unknown> = {};
  const summary: Record<string, unknown> = {};
  for (const sampler of samplers as SamplerName[]) {
    log(`${sampler}: warm-up (${steps} steps, ${size}x${size}, CFG ${guidance})`);
    const warm = await generate(sampler);
    const runs: RunRecord[] = [];
    const ratios: number[] = [];
    for (let r = 0; r < repeats; r++) {
      const g = await generate(sampler);
      const t: StageTimings = g.timings;
      const stepMs = t.denoiseMs / steps;
      const p = await generate(sampler, true);
      const rawUnetMs = p.bareMs / p.bareRuns;
      const pairedStepMs = (p.timings.denoiseMs - p.bareMs) / steps;
      ratios.push(...p.stepRatios);
      const rec: RunRecord = {
        wallMs: g.wallMs,
        loadMs: t.loadMs,
        textMs: t.textMs,
        denoiseMs: t.denoiseMs,
        decodeMs: t.decodeMs,
        totalMs: t.totalMs,
        stepMs,
        sessionRunMs: t.sessionRunMs,
        sessionRuns: t.sessionRuns,
        unetRunMs: g.unetRunMs,
        unetRuns: g.unetRuns,
        overhead: g.wallMs / t.sessionRunMs,
        denoiseOverhead: t.denoiseMs / g.unetRunMs,
        pairedStepMs,
        rawUnetMs,
        rawRatio: pairedStepMs / ((rawUnetMs * p.unetRuns) / steps),
      };
      runs.push(rec);
      log(
        `${sampler} ${r + 1}/${repeats}: ${stepMs.toFixed(1)} ms/step, overhead ${rec.overhead.toFixed(4)}, denoise ${rec.denoiseOverhead.toFixed(4)}, vs bare run ${rec.rawRatio.toFixed(4)}${p.stepRatios.length ? ` (per-step median ${median(p.stepRatios).toFixed(4)})` : ''}`,
      );
    }
    const med = Object.fromEntries(
      medianKeys.map((k) => [k, round(median(runs.map((x) => x[k])), k.endsWith('Ms') ? 1 : 4)]),
    );
    results[sampler] = {
      warmup: { wallMs: round(warm.wallMs, 1), loadMs: round(warm.timings.loadMs, 1) },
      unetRunsPerStep: runs[0].unetRuns / steps,
      median: med,
      // Needs two steps or more (ratios are taken between step events).
      rawRatioPerStep: ratios.length
        ? {
            median: round(median(ratios), 4),
            min: round(Math.min(...ratios), 4),
            max: round(Math.max(...ratios), 4),
            steps: ratios.length,
          }
        : null,
      runs: runs.map(rounded),
    };
    summary[sampler] = {
      stepMs: med.stepMs,
      overhead: med.overhead,
      denoiseOverhead: med.denoiseOverhead,
      rawRatio: med.rawRatio,
      rawRatioPerStepMedian: ratios.length ? round(median(ratios), 4) : null,
    };
  }
  await engine.release();
  const upscale = await benchUpscale(info.dir, size, steps, provider, threads);
  // Model loading cold and warm (bench:load's measurement), then peak memory per resolution
  // (bench:memory's, each case in its own process so each peak is its own).
  const load =
    loadRepeats > 0
      ? await measureLoad({ unet: unetName, repeats: loadRepeats, ...(threads ? { threads } : {}) })
      : null;
  const memory =
    memorySizes.length > 0
      ? await memoryMatrix({
          unet: unetName,
          sizes: memorySizes,
          dtypes: ['float32'],
          variants: memoryVariants as Variant[],
          calls: 1,
          ...(threads ? { threads } : {}),
        })
      : null;

  const cpus = os.cpus();
  const runtime = getRuntimeInfo();
  const overheads = Object.values(summary).map((s) => (s as { overhead: number }).overhead);
  const doc = {
    bench: 'engine',
    date: now.toISOString(),
    machine: {
      cpu: cpus[0]?.model.trim() ?? 'unknown',
      logicalCores: os.availableParallelism(),
      physicalCores: physicalCoreCount(),
      memoryGiB: round(os.totalmem() / 2 ** 30, 1),
      platform: `${process.platform}/${process.arch}`,
      node: process.version,
      onnxruntime: runtime.onnxruntime,
      providerRequested: provider,
      provider: model.provider,
      fallbackReason: model.fallbackReason,
      threads: threads || physicalCoreCount(),
    },
    model: {
      unet: unetName,
      unetParams: info.unetParams,
      config: cfg,
      dtype: info.dtype,
      externalWeights: true,
      dir: path.relative(root, info.dir),
      built,
      buildMs: round(buildMs, 0),
      coldLoadMs: round(coldLoadMs, 1),
    },
    settings: {
      width: size,
      height: size,
      latent: [size / 8, size / 8],
      guidance,
      batchSize: 1,
      steps,
      repeats,
      samplers,
      previewEvery: 4,
    },
    summary: {
      target: { overhead: 1.03 },
      overheadMax: round(Math.max(...overheads), 4),
      withinTarget: Math.max(...overheads) <= 1.03,
      samplers: summary,
    },
    samplers: results,
    upscale,
    load: load && { coldMs: load.coldMs, warmMs: load.warmMs, cold: load.cold, warm: load.warm },
    memory: memory && { summary: summarizeMemory(memory), cases: memory },
  };
  const json = JSON.stringify(doc, null, 2);
  await writeFile(out, json + '\n');
  log(`wrote ${path.relative(process.cwd(), out)}`);
  process.stdout.write(json + '\n');
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    const reason =
      err instanceof UsageError
        ? `${err.message} (--help for usage)`
        : isEngineError(err) || !(err instanceof Error)
          ? describeEngineError(err).message
          : err.message;
    process.stderr.write(`bench: failed: ${reason.split('\n')[0]}\n`);
    process.exit(1);
  },
);

// ---------------------------------------------------------------------------------------------
// Upscaling cases (issue #4): the two-pass hires fix whole and tiled, with peak memory.

interface UpscaleCase {
  name: string;
  /** Base size; the hires pass runs at 2x. */
  base: number;
  /** settings.upscale.tile (px; 0: the memory plan decides). */
  tile: number;
  /** EngineOptions.memoryBudgetMb (undefined: 60% of free RAM). */
  budgetMb?: number;
}

/**
 * Runs each case in a fresh engine (sessions released between cases) and samples the process's
 * resident set every 10 ms while it runs: `peakRssMiB` is the highest sample, `rssGrowthMiB` that
 * less the RSS at the start of the case. Cases go from the smallest memory need to the largest,
 * since freed memory is not always handed back to the OS (ONNX Runtime's arena, malloc), which
 * would hide a smaller case's peak behind a larger one run before it.
 */
async function benchUpscale(
  dir: string,
  size: number,
  steps: number,
  provider: ExecutionProviderPreference,
  threads: number,
): Promise<Record<string, unknown>> {
  const cases: UpscaleCase[] = [
    {
      name: `hires ${size / 2}->${size} tiled (${size / 2} px tiles)`,
      base: size / 2,
      tile: size / 2,
    },
    { name: `hires ${size / 2}->${size} whole`, base: size / 2, tile: 0, budgetMb: 1 << 20 },
    {
      name: `hires ${size}->${size * 2} tiled (plan, 256 MB budget)`,
      base: size,
      tile: 0,
      budgetMb: 256,
    },
    { name: `hires ${size}->${size * 2} whole`, base: size, tile: 0, budgetMb: 1 << 20 },
  ];
  const out: Record<string, unknown>[] = [];
  for (const c of cases) {
    const engine = new DiffusionEngine({
      provider,
      previewEvery: 0,
      ...(threads ? { threads } : {}),
      ...(c.budgetMb ? { memoryBudgetMb: c.budgetMb } : {}),
    });
    try {
      const settings = GenerationSettings.parse({
        model: dir,
        prompt: 'a photograph of an astronaut riding a horse',
        seed: 42,
        sampler: 'euler',
        steps,
        guidance: 7,
        width: c.base,
        height: c.base,
        upscale: {
          method: 'hires',
          factor: 2,
          hiresSteps: steps,
          hiresStrength: 0.5,
          tile: c.tile,
        },
      });
      const unet = await (await engine.load(dir)).session('unet');
      const shapes = new Map<string, number>();
      const innerRun = unet.run.bind(unet);
      unet.run = (feeds: Record<string, ort.Tensor>, signal?: AbortSignal) => {
        const s = (feeds.sample?.dims ?? []).join('x');
        shapes.set(s, (shapes.get(s) ?? 0) + 1);
        return innerRun(feeds, signal);
      };
      const startRss = process.memoryUsage().rss;
      let peak = startRss;
      const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
      const started = performance.now();
      let result;
      try {
        result = await engine.generate({ modelDir: dir, settings });
      } finally {
        clearInterval(timer);
      }
      peak = Math.max(peak, process.memoryUsage().rss);
      const wallMs = performance.now() - started;
      const t = result.timings;
      const rec = {
        case: c.name,
        output: [result.images[0].image.width, result.images[0].image.height],
        wallMs: round(wallMs, 1),
        denoiseMs: round(t.denoiseMs, 1),
        decodeMs: round(t.decodeMs, 1),
        encodeMs: round(t.encodeMs, 1),
        unetCalls: Object.fromEntries(shapes),
        peakRssMiB: round(peak / 2 ** 20, 1),
        rssGrowthMiB: round((peak - startRss) / 2 ** 20, 1),
      };
      log(
        `${c.name}: ${(wallMs / 1000).toFixed(1)} s, peak RSS ${rec.peakRssMiB} MiB (+${rec.rssGrowthMiB}), UNet calls ${JSON.stringify(rec.unetCalls)}`,
      );
      out.push(rec);
    } finally {
      await engine.release();
    }
  }
  return { cases: out, maxRssMiB: round(process.resourceUsage().maxRSS / 1024, 1) };
}
