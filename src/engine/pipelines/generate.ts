import type * as ort from 'onnxruntime-node';
import type { GenerationSettings } from '../../shared/generation';
import { EngineError, throwIfAborted } from '../errors';
import {
  type LatentRgbFactors,
  type PixelImage,
  imageToTensor,
  latentPreview,
  latentRgbFactorsFor,
  resizeImage,
  tensorToImage,
  toRgb,
} from '../image';
import type { ComponentSession, LoadedModel } from '../models';
import { TorchGenerator } from '../rng';
import {
  type ModelPredict,
  type StepEvent,
  makeDenoiser,
  parseSchedulerConfig,
  planSampling,
} from '../schedulers';
import { floatsToOrt, ortToFloat32, timestepToOrt } from '../tensor';
import { type StageTimings, timedRun } from './stats';
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
  /** A cheap latent-space RGB preview of the first image, every few steps. */
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
}

/**
 * Optional overrides of runDiffusion's stages, used by the upscale pipelines (upscale.ts):
 * img2img from given latents, the UNet call wrapped (tiled diffusion), the decoder replaced
 * (tiled VAE decode), and the final latents handed out (the hires fix enlarges them).
 */
export interface DiffusionHooks {
  /** img2img from these scaled latents ([B,4,h,w] or one [4,h,w]) for batch n; no encode. */
  initLatents?: (batch: number) => Float32Array;
  /** Wraps the full-size UNet call; `at(h, w)` makes the same call for a latent tile size. */
  wrapPredict?: (full: ModelPredict, at: (h: number, w: number) => ModelPredict) => ModelPredict;
  /** Decodes image `index` of `latents` ([B,4,h,w], scaled) instead of one decoder call. */
  decode?: (latents: Float32Array, index: number, h: number, w: number) => Promise<PixelImage>;
  /** Receives each batch's final (scaled) latents. */
  onLatents?: (batch: number, latents: Float32Array) => void;
  /**
   * UNet input channels after the 4 latent ones, the same for every image and both guidance
   * halves ([channels, h, w]): a 9-channel inpainting UNet's mask and masked-image latents
   * (inpaint.ts).
   */
  extraChannels?: { channels: number; data: Float32Array };
  /**
   * After every step, with batch n's sample x (at `sigmaNext`, changed in place) and the batch's
   * starting noise: inpainting with a 4-channel UNet blends the known latents back here.
   */
  afterStep?: (x: Float32Array, sigmaNext: number, noise: Float32Array, batch: number) => void;
}

const latentChannels = 4;

/**
 * Text-to-image and image-to-image with diffusers' semantics: classifier-free guidance as one
 * batched UNet call [uncond; cond] (skipped when guidance <= 1, and for LCM, which embeds the
 * guidance instead), starting noise equal to torch.randn for the seed, the scheduler's own
 * timesteps and sigmas, img2img noising the encoded image to the first sigma of the cut schedule.
 */
export async function runDiffusion(
  ctx: RunContext,
  settings: GenerationSettings,
  initImage: PixelImage | null,
  hooks: DiffusionHooks = {},
): Promise<GeneratedImage[]> {
  const { model, timings, signal } = ctx;
  const family = model.family;
  // A 9-channel inpainting UNet outside the inpaint pipeline (text to image, image to image, a
  // hires pass) gets what AUTOMATIC1111 gives it: everything masked and an empty masked image.
  const wholeMask =
    !hooks.extraChannels && !family.classLabels && family.unetInChannels === latentChannels + 5;
  if (
    !wholeMask &&
    family.unetInChannels !== latentChannels + (hooks.extraChannels?.channels ?? 0)
  ) {
    const what = family.classLabels ? 'an x4 upscaler' : 'an inpainting model';
    throw new EngineError(
      'model-unsupported',
      `${model.info.name} is ${what}; use it from the ${family.classLabels ? 'upscale' : 'inpaint'} mode.`,
    );
  }
  if (settings.mode === 'img2img' && !initImage && !hooks.initLatents)
    throw new EngineError('bad-input', 'Image-to-image needs an input image.');
  const img2img = settings.mode === 'img2img';
  const { width, height } = settings;
  const scale = family.latentScale;
  if (width % scale || height % scale)
    throw new EngineError('bad-input', `Width and height must be multiples of ${scale}.`);
  const h = height / scale;
  const w = width / scale;
  const B = settings.batchSize;
  const latentDims = [B, latentChannels, h, w];
  // Image i of the request uses seed + i: keep that an exact integer (torch's seed range).
  const maxSeed = Number.MAX_SAFE_INTEGER - (B * settings.batchCount - 1);
  if (settings.seed > maxSeed)
    throw new EngineError(
      'bad-input',
      `Seed ${settings.seed} is too large for ${B * settings.batchCount} images; use a seed of at most ${maxSeed}.`,
    );

  const schedulerConfig = parseSchedulerConfig(model.schedulerConfig);
  const plan = planSampling(
    schedulerConfig,
    settings.sampler,
    settings.steps,
    img2img ? { strength: settings.strength } : {},
  );
  const isLcm = family.family === 'lcm' || family.timestepCondDim !== null;
  const useCfg = settings.guidance > 1 && !isLcm;

  // Text conditioning (cached per prompt inside the conditioner).
  report(ctx, 0, settings, 'text', 0, plan.timesteps.length, null);
  let started = performance.now();
  let cond = await ctx.text.encode(settings.prompt, timings, signal);
  let uncond: PromptEmbedding | null = null;
  if (useCfg) {
    const zeros =
      settings.negativePrompt === '' && model.info.extras.forceZerosForEmptyPrompt === true;
    uncond = await ctx.text.encode(settings.negativePrompt, timings, signal);
    const chunks = Math.max(cond.chunks, uncond.chunks);
    const filler = await ctx.text.encode('', timings, signal);
    cond = padChunks(cond, chunks, filler);
    uncond = padChunks(uncond, chunks, filler);
    // After padding, so that a long prompt's extra chunks are zeros on the uncond side too.
    if (zeros) uncond = TextConditioner.zerosLike(uncond);
  }
  timings.textMs += performance.now() - started;

  const unet = await model.session('unet');
  const decoder = await model.session(model.decoderName);
  const extra = wholeMask ? await wholeMaskChannels(ctx, width, height) : hooks.extraChannels;
  const initLatents =
    img2img && !hooks.initLatents ? await encodeImage(ctx, initImage!, width, height) : null;
  const predictOptions: PredictOptions = {
    cond,
    uncond,
    guidance: settings.guidance,
    batch: B,
    h,
    w,
    height,
    width,
    lcm: isLcm,
    timings,
    signal,
    extra,
  };
  const unetPredict = makeUnetPredict(unet, predictOptions);
  const predictFor = hooks.wrapPredict
    ? hooks.wrapPredict(unetPredict, (th, tw) =>
        makeUnetPredict(unet, { ...predictOptions, h: th, w: tw }),
      )
    : unetPredict;

  const results: GeneratedImage[] = [];
  const totalSteps = plan.timesteps.length * settings.batchCount;
  const runStarted = performance.now();
  for (let n = 0; n < settings.batchCount; n++) {
    throwIfAborted(signal, 'Generation');
    const batchSeed = settings.seed + n * B;
    const perImage = latentChannels * h * w;
    // 'batch': one generator for the batch's starting noise and every later (ancestral) draw.
    // 'per-image': image i owns the generator seeded seed + i for both, as A1111 does, so it is
    // the image a batch of one with that seed gives.
    const generators =
      settings.seedMode === 'per-image'
        ? Array.from({ length: B }, (_, i) => new TorchGenerator(batchSeed + i))
        : [new TorchGenerator(batchSeed)];
    const draw = (count: number): Float32Array => {
      if (generators.length === 1) return generators[0].randn([count]);
      const out = new Float32Array(count);
      const per = count / generators.length;
      generators.forEach((g, i) => out.set(g.randn([per]), i * per));
      return out;
    };
    const noise = generators.length === 1 ? generators[0].randn(latentDims) : draw(B * perImage);
    const x = new Float32Array(noise.length);
    const init = hooks.initLatents ? hooks.initLatents(n) : initLatents;
    if (init) {
      const per = init.length;
      for (let i = 0; i < x.length; i++) x[i] = init[i % per] + noise[i] * plan.sigmas[0];
    } else {
      for (let i = 0; i < x.length; i++) x[i] = noise[i] * plan.initNoiseSigma;
    }

    started = performance.now();
    const denoise = makeDenoiser(predictFor, schedulerConfig);
    const factors = latentRgbFactorsFor(family.family);
    const latents = await plan.sampler(denoise, x, plan.sigmas, {
      rng: { randn: draw },
      signal,
      timestepOf: plan.timestepOf,
      onStep: (e) => {
        hooks.afterStep?.(e.x, plan.sigmas[e.step + 1], noise, n);
        reportDenoiseStep(ctx, e, {
          batch: n,
          batchCount: settings.batchCount,
          stepsPerBatch: plan.timesteps.length,
          totalSteps,
          started: runStarted,
          latentDims,
          factors,
        });
      },
    });
    timings.denoiseMs += performance.now() - started;
    hooks.onLatents?.(n, latents);

    report(ctx, n, settings, 'decode', plan.timesteps.length, plan.timesteps.length, null);
    started = performance.now();
    for (let i = 0; i < B; i++) {
      const image = hooks.decode
        ? await hooks.decode(latents, i, h, w)
        : await decodeLatent(ctx, decoder, latents, i, h, w);
      results.push({
        image,
        seed: settings.seedMode === 'per-image' ? batchSeed + i : batchSeed,
        batchIndex: settings.seedMode === 'per-image' ? 0 : i,
      });
    }
    timings.decodeMs += performance.now() - started;
  }
  return results;
}

function report(
  ctx: RunContext,
  batch: number,
  s: GenerationSettings,
  stage: GenerateProgress['stage'],
  step: number,
  total: number,
  etaMs: number | null,
) {
  ctx.onProgress?.({
    batch,
    batchCount: s.batchCount,
    stage,
    step,
    total,
    elapsedMs: 0,
    etaMs,
    preview: null,
  });
}

export interface PredictOptions {
  cond: PromptEmbedding;
  uncond: PromptEmbedding | null;
  guidance: number;
  batch: number;
  h: number;
  w: number;
  height: number;
  width: number;
  lcm: boolean;
  timings: StageTimings;
  signal?: AbortSignal;
  /** Channels appended to every row's sample (DiffusionHooks.extraChannels). */
  extra?: { channels: number; data: Float32Array };
}

/**
 * The UNet call with guidance. Constant inputs (text states, SDXL's text_embeds/time_ids, LCM's
 * guidance embedding) are built once; per step only `sample` and `timestep` change.
 */
export function makeUnetPredict(unet: ComponentSession, o: PredictOptions) {
  const copies = o.uncond ? 2 : 1;
  const rows = o.batch * copies;
  const per = 77 * o.cond.chunks * o.cond.width;
  const states = new Float32Array(rows * per);
  for (let r = 0; r < rows; r++)
    states.set(o.uncond && r < o.batch ? o.uncond.hidden : o.cond.hidden, r * per);
  const constant: Record<string, ort.Tensor> = {};
  const statesSpec = unet.input('encoder_hidden_states');
  if (!statesSpec)
    throw new EngineError('model-shape', `${unet.file} has no encoder_hidden_states input.`, {
      file: unet.file,
    });
  constant[statesSpec.name] = floatsToOrt(
    states,
    [rows, 77 * o.cond.chunks, o.cond.width],
    statesSpec,
    { model: unet.file },
  );

  const textEmbeds = unet.input('text_embeds');
  if (textEmbeds) {
    const pooled = o.cond.pooled;
    if (!pooled)
      throw new EngineError(
        'model-shape',
        `${unet.file} wants text_embeds but the text encoders gave no pooled output.`,
      );
    const all = new Float32Array(rows * pooled.length);
    for (let r = 0; r < rows; r++)
      all.set(o.uncond && r < o.batch ? (o.uncond.pooled ?? pooled) : pooled, r * pooled.length);
    constant[textEmbeds.name] = floatsToOrt(all, [rows, pooled.length], textEmbeds, {
      model: unet.file,
    });
  }
  const timeIds = unet.input('time_ids');
  if (timeIds) {
    // [original h, w, crop top, left, target h, w] (diffusers' _get_add_time_ids).
    const ids = [o.height, o.width, 0, 0, o.height, o.width];
    constant[timeIds.name] = floatsToOrt(
      Array.from({ length: rows }, () => ids).flat(),
      [rows, 6],
      timeIds,
      { model: unet.file },
    );
  }
  const timestepCond = unet.input('timestep_cond');
  if (timestepCond) {
    const dim = typeof timestepCond.shape[1] === 'number' ? timestepCond.shape[1] : 256;
    const embedding = guidanceEmbedding(o.guidance - 1, dim);
    const all = new Float32Array(rows * dim);
    for (let r = 0; r < rows; r++) all.set(embedding, r * dim);
    constant[timestepCond.name] = floatsToOrt(all, [rows, dim], timestepCond, { model: unet.file });
  }
  const sampleSpec = unet.input('sample') ?? unet.signature.inputs[0];
  const timestepSpec = unet.input('timestep');
  if (!timestepSpec)
    throw new EngineError('model-shape', `${unet.file} has no timestep input.`, {
      file: unet.file,
    });
  const outName = unet.output('out_sample') ? 'out_sample' : unet.signature.outputs[0].name;
  const n = o.batch * latentChannels * o.h * o.w;
  const plane = o.h * o.w;
  const extraC = o.extra?.channels ?? 0;
  const sampleChannels = latentChannels + extraC;
  if (o.extra && o.extra.data.length !== extraC * plane)
    throw new EngineError(
      'internal',
      `Extra UNet channels hold ${o.extra.data.length} values, not ${extraC}x${o.h}x${o.w}.`,
    );

  return async (scaledX: Float32Array, timestep: number): Promise<Float32Array> => {
    let sample = scaledX;
    if (extraC > 0) {
      sample = new Float32Array(rows * (latentChannels + extraC) * plane);
      const per = n / o.batch;
      for (let r = 0; r < rows; r++) {
        const at = r * (latentChannels + extraC) * plane;
        const img = r % o.batch;
        sample.set(scaledX.subarray(img * per, (img + 1) * per), at);
        sample.set(o.extra!.data, at + per);
      }
    } else if (copies === 2) {
      sample = new Float32Array(2 * n);
      sample.set(scaledX, 0);
      sample.set(scaledX, n);
    }
    const feeds: Record<string, ort.Tensor> = {
      ...constant,
      [sampleSpec.name]: floatsToOrt(sample, [rows, sampleChannels, o.h, o.w], sampleSpec, {
        model: unet.file,
      }),
      [timestepSpec.name]: timestepToOrt(timestep, rows, timestepSpec, unet.file),
    };
    const out = await timedRun(o.timings, unet, feeds, o.signal);
    const pred = ortToFloat32(out[outName], outName);
    if (copies === 1) return pred.length === n ? pred : pred.subarray(0, n);
    const guided = new Float32Array(n);
    const g = o.guidance;
    for (let i = 0; i < n; i++) {
      const u = pred[i];
      guided[i] = u + g * (pred[n + i] - u);
    }
    return guided;
  };
}

/**
 * LCM's guidance-scale embedding (diffusers LatentConsistencyModelPipeline.
 * get_guidance_scale_embedding, after VDM's timestep embedding): [sin | cos] of
 * (w * 1000) * exp(-ln(10000) * k / (half - 1)), k = 0 .. half-1.
 */
export function guidanceEmbedding(w: number, dim: number): Float32Array {
  const half = dim / 2;
  const out = new Float32Array(dim);
  const base = Math.log(10000) / (half - 1);
  for (let k = 0; k < half; k++) {
    const arg = w * 1000 * Math.exp(-base * k);
    out[k] = Math.sin(arg);
    out[half + k] = Math.cos(arg);
  }
  return out;
}

/** Init image -> scaled latents [1,4,h,w], resized (Lanczos) to the requested size first. */
export async function encodeImage(
  ctx: RunContext,
  image: PixelImage,
  width: number,
  height: number,
): Promise<Float32Array> {
  let rgb = toRgb(image);
  if (rgb.width !== width || rgb.height !== height)
    rgb = resizeImage(rgb, width, height, 'lanczos3');
  return encodeTensor(ctx, imageToTensor(rgb));
}

/**
 * Reports denoising step e.step of batch `at.batch`: progress over all batches with an ETA, and
 * a latent preview every ctx.previewEvery steps and at the last.
 */
export function reportDenoiseStep(
  ctx: Pick<RunContext, 'onProgress' | 'previewEvery'>,
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
  ctx.onProgress({
    batch: at.batch,
    batchCount: at.batchCount,
    stage: 'denoise',
    step: e.step + 1,
    total: e.total,
    elapsedMs: elapsed,
    etaMs: (elapsed / done) * (at.totalSteps - done),
    preview: wantPreview
      ? latentPreview(e.denoised, at.latentDims, at.factors, { index: 0 })
      : null,
  });
}

/**
 * The extra channels of a 9-channel inpainting UNet with nothing to keep: a mask of ones and the
 * latents of an all-masked image (zeros in [-1, 1], mid grey), as inpaint.ts would build them
 * for a mask covering everything.
 */
async function wholeMaskChannels(
  ctx: RunContext,
  width: number,
  height: number,
): Promise<{ channels: number; data: Float32Array }> {
  const empty = await encodeTensor(ctx, {
    data: new Float32Array(3 * width * height),
    dims: [1, 3, height, width],
  });
  const plane = empty.length / latentChannels;
  const data = new Float32Array(5 * plane);
  data.fill(1, 0, plane);
  data.set(empty, plane);
  return { channels: 5, data };
}

/** A [1,3,H,W] tensor in [-1, 1] -> scaled latents [1,4,H/8,W/8] (inpainting's masked image). */
export async function encodeTensor(
  ctx: RunContext,
  input: { data: Float32Array; dims: number[] },
): Promise<Float32Array> {
  const { model, timings, signal } = ctx;
  if (!model.has('vae_encoder'))
    throw new EngineError(
      'model-missing-file',
      `${model.info.name} has no vae_encoder, which image-to-image needs.`,
    );
  const started = performance.now();
  const encoder = await model.session('vae_encoder');
  const spec = encoder.input('sample') ?? encoder.signature.inputs[0];
  const out = await timedRun(
    timings,
    encoder,
    { [spec.name]: floatsToOrt(input.data, input.dims, spec, { model: encoder.file }) },
    signal,
  );
  const scaleFactor = model.family.vaeScalingFactor;
  let latents: Float32Array;
  if (out.latent_sample) {
    latents = ortToFloat32(out.latent_sample, 'latent_sample');
  } else {
    // optimum >= 1.23: mean and log-variance; sample with a fixed generator so img2img stays
    // deterministic for a seed (logvar clamped to [-30, 20] as diffusers does).
    const name = out.latent_parameters ? 'latent_parameters' : encoder.signature.outputs[0].name;
    const params = ortToFloat32(out[name], name);
    const half = params.length / 2;
    const eps = new TorchGenerator(0).randn([half]);
    latents = new Float32Array(half);
    for (let i = 0; i < half; i++) {
      const logvar = Math.min(20, Math.max(-30, params[half + i]));
      latents[i] = params[i] + Math.exp(logvar / 2) * eps[i];
    }
  }
  for (let i = 0; i < latents.length; i++) latents[i] *= scaleFactor;
  timings.encodeMs += performance.now() - started;
  return latents;
}

export async function decodeLatent(
  ctx: RunContext,
  decoder: ComponentSession,
  latents: Float32Array,
  index: number,
  h: number,
  w: number,
): Promise<PixelImage> {
  const per = latentChannels * h * w;
  const slice = new Float32Array(per);
  const inv = 1 / ctx.model.family.vaeScalingFactor;
  for (let i = 0; i < per; i++) slice[i] = latents[index * per + i] * inv;
  const spec = decoder.input('latent_sample') ?? decoder.signature.inputs[0];
  const out = await timedRun(
    ctx.timings,
    decoder,
    { [spec.name]: floatsToOrt(slice, [1, latentChannels, h, w], spec, { model: decoder.file }) },
    ctx.signal,
  );
  const name = out.sample ? 'sample' : decoder.signature.outputs[0].name;
  const pixels = out[name];
  return tensorToImage(ortToFloat32(pixels, name), pixels.dims as number[], 0);
}
