/**
 * The diffusion core that every pipeline runs through (text to image, image to image,
 * inpainting, both hires passes and the x4 upscaler): the seed's noise streams, the starting
 * latents, the sampler over the plan's sigmas with the guided UNet call, the optional blend after
 * each step, progress and previews, and decoding. A pipeline only says what differs: its plan,
 * its UNet call, its starting latents, its blend and its decoder (DiffusionJob).
 */
import type { GenerationSettings } from '../../shared/generation';
import { EngineError, throwIfAborted } from '../errors';
import {
  type LatentRgbFactors,
  type PixelImage,
  latentPreview,
  latentRgbFactorsFor,
} from '../image';
import type { LoadedModel } from '../models';
import { TorchGenerator } from '../rng';
import {
  type ModelPredict,
  type SamplingPlan,
  type SchedulerConfig,
  type StepEvent,
  makeDenoiser,
} from '../schedulers';
import type { StageTimings } from './stats';
import type { TaesdDecoder } from './taesd';
import { type PromptEmbedding, TextConditioner, padChunks } from './text';

export interface GenerateProgress {
  /** Which image batch of `batchCount` is running (0-based). */
  batch: number;
  batchCount: number;
  stage: 'text' | 'encode' | 'denoise' | 'decode';
  /** Steps done of `total` in the denoise stage. */
  step: number;
  total: number;
  elapsedMs: number;
  /** Estimated time left for the whole request, or null before the first step. */
  etaMs: number | null;
  /**
   * A preview of the first image's predicted result, every few steps: decoded by TAESD at full
   * size when the run has a TAESD decoder (RunContext.taesd), else the latent-space RGB
   * approximation at 1/8 of the size.
   */
  preview: PixelImage | null;
}

export interface GeneratedImage {
  image: PixelImage;
  /** The seed that reproduces this image (with its batch index under seedMode 'batch'). */
  seed: number;
  /** Position within its noise draw (0 under 'per-image'). */
  batchIndex: number;
}

export interface RunContext {
  model: LoadedModel;
  text: TextConditioner;
  timings: StageTimings;
  signal?: AbortSignal;
  onProgress?: (p: GenerateProgress) => void;
  /** Emit a preview every N steps (0: never). */
  previewEvery: number;
  /**
   * The TAESD decoder for this run's previews (within its time share, see pipelines/taesd.ts);
   * absent or null: latent-RGB previews.
   */
  taesd?: TaesdDecoder | null;
  /**
   * The TAESD decoder that decodes the final images instead of the VAE (settings.fastDecode);
   * absent or null: the model's VAE. Pipelines with their own decoding (tiled upscales) ignore it.
   */
  fastDecode?: TaesdDecoder | null;
  /**
   * EngineOptions.memoryBudgetMb: the activation memory the run may plan with (absent: 60% of
   * the memory free when it plans, memory.ts memoryBudgetBytes).
   */
  memoryBudgetMb?: number;
}

const latentChannels = 4;

/**
 * The seed's noise for one batch of images. 'batch': one generator for the batch's starting
 * noise and every later draw. 'per-image': image i owns the generator seeded seed + i for all of
 * its draws, as A1111 does, so it is the image a batch of one with that seed gives.
 */
export interface BatchNoise {
  /** One generator ('batch') or one per image ('per-image'), in image order. */
  generators: TorchGenerator[];
  /** `count` values split evenly over the generators (an ancestral sampler's fresh noise). */
  draw(count: number): Float32Array;
}

function batchNoise(seed: number, batch: number, mode: GenerationSettings['seedMode']): BatchNoise {
  const generators =
    mode === 'per-image'
      ? Array.from({ length: batch }, (_, i) => new TorchGenerator(seed + i))
      : [new TorchGenerator(seed)];
  return {
    generators,
    draw(count) {
      if (generators.length === 1) return generators[0].randn([count]);
      const out = new Float32Array(count);
      const per = count / generators.length;
      generators.forEach((g, i) => out.set(g.randn([per]), i * per));
      return out;
    },
  };
}

/**
 * After sampler step `step` of batch `batch`: changes the sample x (now at `sigmaNext`) in place
 * before the next step starts from it. `noise` is the batch's starting noise. Inpainting with a
 * 4-channel UNet puts the known latents back here.
 */
export type StepBlend = (
  x: Float32Array,
  sigmaNext: number,
  noise: Float32Array,
  batch: number,
) => void;

/** One diffusion run, as a pipeline describes it to the core. */
export interface DiffusionJob {
  settings: Pick<
    GenerationSettings,
    'seed' | 'seedMode' | 'batchSize' | 'batchCount' | 'guidance' | 'prompt' | 'negativePrompt'
  >;
  plan: SamplingPlan;
  schedulerConfig: SchedulerConfig;
  /** Latent size (4 channels). */
  h: number;
  w: number;
  /** Names the work in a cancellation message ("Generation was cancelled."). */
  what: string;
  /**
   * The guided UNet call for batch n. Called once per batch, before the starting noise is drawn,
   * so draws it makes from `noise` come first (the x4 upscaler noises its image with them).
   */
  predict: (batch: number, noise: BatchNoise) => ModelPredict;
  /** Scaled latents to start from (img2img: [B,4,h,w] or one [4,h,w]); none: pure noise. */
  initLatents?: (batch: number) => Float32Array | null;
  blend?: StepBlend;
  /** Decodes image `index` of the final (scaled) latents [B,4,h,w]. */
  decode: (latents: Float32Array, index: number) => Promise<PixelImage>;
  /** Receives each batch's final (scaled) latents. */
  onLatents?: (batch: number, latents: Float32Array) => void;
}

/** Refuses a seed whose later images (seed + i) would leave the exact integers. */
export function checkSeedRange(s: Pick<GenerationSettings, 'seed' | 'batchSize' | 'batchCount'>) {
  const images = s.batchSize * s.batchCount;
  const maxSeed = Number.MAX_SAFE_INTEGER - (images - 1);
  if (s.seed > maxSeed)
    throw new EngineError(
      'bad-input',
      `Seed ${s.seed} is too large for ${images} images; use a seed of at most ${maxSeed}.`,
    );
}

/**
 * The prompt's (and, with guidance, the negative prompt's) text states, padded to the same
 * number of chunks; the negative side is zeros for an empty negative prompt when the model asks
 * for it (SDXL's force_zeros_for_empty_prompt).
 */
export async function encodePrompts(
  ctx: RunContext,
  s: Pick<GenerationSettings, 'prompt' | 'negativePrompt'>,
  useCfg: boolean,
): Promise<{ cond: PromptEmbedding; uncond: PromptEmbedding | null }> {
  const { timings, signal } = ctx;
  const started = performance.now();
  let cond = await ctx.text.encode(s.prompt, timings, signal);
  let uncond: PromptEmbedding | null = null;
  if (useCfg) {
    uncond = await ctx.text.encode(s.negativePrompt, timings, signal);
    const chunks = Math.max(cond.chunks, uncond.chunks);
    const filler = await ctx.text.encode('', timings, signal);
    cond = padChunks(cond, chunks, filler);
    uncond = padChunks(uncond, chunks, filler);
    // After padding, so that a long prompt's extra chunks are zeros on the uncond side too.
    if (s.negativePrompt === '' && ctx.model.info.extras.forceZerosForEmptyPrompt === true)
      uncond = TextConditioner.zerosLike(uncond);
  }
  timings.textMs += performance.now() - started;
  return { cond, uncond };
}

/** A progress event outside the denoise stage. */
export function reportStage(
  ctx: RunContext,
  batch: number,
  batchCount: number,
  stage: GenerateProgress['stage'],
  step: number,
  total: number,
): void {
  ctx.onProgress?.({
    batch,
    batchCount,
    stage,
    step,
    total,
    elapsedMs: 0,
    etaMs: null,
    preview: null,
  });
}

/**
 * Runs the job for every batch: noise from the seed, the starting latents (pure noise times the
 * plan's initNoiseSigma, or the init latents noised to the first sigma), the sampler with the
 * job's blend after each step, then the decoder for each image.
 */
export async function diffuse(ctx: RunContext, job: DiffusionJob): Promise<GeneratedImage[]> {
  const { timings, signal } = ctx;
  const { settings: s, plan, h, w } = job;
  checkSeedRange(s);
  const B = s.batchSize;
  const latentDims = [B, latentChannels, h, w];
  const perImage = latentChannels * h * w;
  const stepsPerBatch = plan.timesteps.length;
  const totalSteps = stepsPerBatch * s.batchCount;
  const factors = latentRgbFactorsFor(ctx.model.family.family);
  const results: GeneratedImage[] = [];
  const runStarted = performance.now();
  for (let n = 0; n < s.batchCount; n++) {
    throwIfAborted(signal, job.what);
    const batchSeed = s.seed + n * B;
    const rng = batchNoise(batchSeed, B, s.seedMode);
    const predict = job.predict(n, rng);
    const noise =
      rng.generators.length === 1 ? rng.generators[0].randn(latentDims) : rng.draw(B * perImage);
    const x = new Float32Array(noise.length);
    const init = job.initLatents?.(n) ?? null;
    if (init) {
      const per = init.length;
      for (let i = 0; i < x.length; i++) x[i] = init[i % per] + noise[i] * plan.sigmas[0];
    } else {
      for (let i = 0; i < x.length; i++) x[i] = noise[i] * plan.initNoiseSigma;
    }

    let started = performance.now();
    const blend = job.blend;
    const latents = await plan.sampler(makeDenoiser(predict, job.schedulerConfig), x, plan.sigmas, {
      rng: { randn: rng.draw },
      signal,
      timestepOf: plan.timestepOf,
      afterStep: blend ? (xs, step) => blend(xs, plan.sigmas[step + 1], noise, n) : undefined,
      onStep: (e) =>
        reportDenoiseStep(ctx, e, {
          batch: n,
          batchCount: s.batchCount,
          stepsPerBatch,
          totalSteps,
          started: runStarted,
          latentDims,
          factors,
        }),
    });
    // A TAESD preview still being decoded goes out before the decode stage is reported.
    await ctx.taesd?.settled();
    // A schedule that ends above sigma 0 (DPM++ 2M with final_sigmas_type "sigma_min") leaves a
    // noisy sample; diffusers decodes its variance-preserving form, x / sqrt(sigma^2 + 1).
    const last = plan.sigmas[plan.sigmas.length - 1];
    if (last > 0) {
      const c = 1 / Math.sqrt(last * last + 1);
      for (let i = 0; i < latents.length; i++) latents[i] *= c;
    }
    timings.denoiseMs += performance.now() - started;
    job.onLatents?.(n, latents);

    reportStage(ctx, n, s.batchCount, 'decode', stepsPerBatch, stepsPerBatch);
    started = performance.now();
    for (let i = 0; i < B; i++) {
      results.push({
        image: await job.decode(latents, i),
        seed: s.seedMode === 'per-image' ? batchSeed + i : batchSeed,
        batchIndex: s.seedMode === 'per-image' ? 0 : i,
      });
    }
    timings.decodeMs += performance.now() - started;
  }
  return results;
}

/**
 * Reports denoising step e.step of batch `at.batch`: progress over all batches with an ETA, and
 * a latent preview every ctx.previewEvery steps and at the last.
 */
export function reportDenoiseStep(
  ctx: Pick<RunContext, 'onProgress' | 'previewEvery' | 'taesd' | 'signal' | 'timings'>,
  e: Pick<StepEvent, 'step' | 'total' | 'denoised'>,
  at: {
    batch: number;
    batchCount: number;
    stepsPerBatch: number;
    totalSteps: number;
    started: number;
    latentDims: readonly number[];
    factors: LatentRgbFactors;
  },
): void {
  if (!ctx.onProgress) return;
  const done = at.batch * at.stepsPerBatch + e.step + 1;
  const elapsed = performance.now() - at.started;
  const wantPreview =
    ctx.previewEvery > 0 && ((e.step + 1) % ctx.previewEvery === 0 || e.step + 1 === e.total);
  const onProgress = ctx.onProgress;
  const report = (preview: PixelImage | null) =>
    onProgress({
      batch: at.batch,
      batchCount: at.batchCount,
      stage: 'denoise',
      step: e.step + 1,
      total: e.total,
      elapsedMs: elapsed,
      etaMs: (elapsed / done) * (at.totalSteps - done),
      preview,
    });
  const rgb = () => latentPreview(e.denoised, at.latentDims, at.factors, { index: 0 });
  const taesd = ctx.taesd;
  if (!wantPreview) report(null);
  else if (!taesd?.admits(elapsed)) report(rgb());
  else {
    // Reported once decoded (before the next step: sessions run one at a time on this thread).
    const [, , h, w] = at.latentDims;
    taesd.preview(e.denoised, h!, w!, ctx.timings, ctx.signal, report, rgb);
  }
}
