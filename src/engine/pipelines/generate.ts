import type { GenerationSettings } from '../../shared/generation';
import { EngineError } from '../errors';
import { type PixelImage, imageToTensor, resizeImage, tensorToImage, toRgb } from '../image';
import type { ComponentSession } from '../models';
import { TorchGenerator } from '../rng';
import { type ModelPredict, parseSchedulerConfig, planSampling } from '../schedulers';
import { floatsToOrt, ortToFloat32 } from '../tensor';
import {
  type GeneratedImage,
  type RunContext,
  type StepBlend,
  checkSeedRange,
  diffuse,
  encodePrompts,
  reportStage,
} from './core';
import { timedRun } from './stats';
import { decodeGrid, generationBudgetBytes, textEncodersInTheWay } from './memory';
import { type Tile, decodeLatents } from './tiling';
import { type ControlCrop, type ControlUnit, prepareUnits } from './controlnet';
import { type ExtraChannels, type PredictOptions, makeUnetPredict } from './unet';

export type { GenerateProgress, GeneratedImage, RunContext } from './core';
export { reportDenoiseStep } from './core';
export { guidanceEmbedding, makeUnetPredict } from './unet';
export type { PredictOptions } from './unet';

/**
 * Optional overrides of runDiffusion's stages, used by the upscale pipelines (upscale.ts) and
 * inpainting (inpaint.ts): img2img from given latents, the UNet call wrapped (tiled diffusion),
 * the decoder replaced (tiled VAE decode), the final latents handed out (the hires fix enlarges
 * them), extra UNet channels and a blend after each step.
 */
export interface DiffusionHooks {
  /** img2img from these scaled latents ([B,4,h,w] or one [4,h,w]) for batch n; no encode. */
  initLatents?: (batch: number) => Float32Array;
  /** Wraps the full-size UNet call; `at(tile)` makes the same call for a region of the latent. */
  wrapPredict?: (full: ModelPredict, at: (tile: Tile) => ModelPredict) => ModelPredict;
  /** Decodes image `index` of `latents` ([B,4,h,w], scaled) instead of one decoder call. */
  decode?: (latents: Float32Array, index: number, h: number, w: number) => Promise<PixelImage>;
  /** Receives each batch's final (scaled) latents. */
  onLatents?: (batch: number, latents: Float32Array) => void;
  /**
   * UNet input channels after the 4 latent ones, the same for every image and both guidance
   * halves ([channels, h, w]): a 9-channel inpainting UNet's mask and masked-image latents
   * (inpaint.ts).
   */
  extraChannels?: ExtraChannels;
  /**
   * The core's step after every sampler step (core.ts StepBlend): inpainting with a 4-channel
   * UNet blends the known latents back here.
   */
  blend?: StepBlend;
  /** ControlNet units guiding every UNet call (controlnet.ts). */
  control?: ControlSetup;
}

/** The ControlNet side of a generation, as the engine resolved it. */
export interface ControlSetup {
  units: readonly ControlUnit[];
  /** The UNet to run instead of the folder's: its ControlNet UNet (controlnet-io.ts). */
  unet?: ComponentSession;
  /** Where the generated region lies on the control images' picture (inpainting's crop). */
  crop?: ControlCrop;
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
  // Image i of the request uses seed + i: refuse before any work when that leaves the integers.
  checkSeedRange(settings);

  const schedulerConfig = parseSchedulerConfig(model.schedulerConfig);
  const plan = planSampling(
    schedulerConfig,
    settings.sampler,
    settings.steps,
    img2img
      ? { schedule: settings.schedule, strength: settings.strength }
      : { schedule: settings.schedule },
  );
  const isLcm = family.family === 'lcm' || family.timestepCondDim !== null;
  const useCfg = settings.guidance > 1 && !isLcm;

  reportStage(ctx, 0, settings.batchCount, 'text', 0, plan.timesteps.length);
  const { cond, uncond } = await encodePrompts(ctx, settings, useCfg);
  // SDXL's two text encoders hold 3 GiB in float32: give them up when the UNet call or the
  // decode ahead may not fit beside them (README "Performance").
  const rows = settings.batchSize * (useCfg ? 2 : 1);
  if (textEncodersInTheWay(model, rows, h, w, generationBudgetBytes(ctx.memoryBudgetMb)))
    await ctx.text.releaseEncoders();

  const unet = hooks.control?.unet ?? (await model.session('unet'));
  const decoder = await model.session(model.decoderName);
  const extra = wholeMask ? await wholeMaskChannels(ctx, width, height) : hooks.extraChannels;
  const initLatents =
    img2img && !hooks.initLatents ? await encodeImage(ctx, initImage!, width, height) : null;
  const predictOptions: PredictOptions = {
    cond,
    uncond,
    guidance: settings.guidance,
    batch: settings.batchSize,
    h,
    w,
    height,
    width,
    timings,
    signal,
    extra,
    control: {
      units: prepareUnits(hooks.control?.units ?? [], width, height, hooks.control?.crop),
      steps: plan.timesteps.length,
      stepOf: (t) => nearestIndex(plan.timesteps, t),
    },
  };
  const unetPredict = makeUnetPredict(unet, predictOptions);
  const predict = hooks.wrapPredict
    ? hooks.wrapPredict(unetPredict, (tile) => makeUnetPredict(unet, predictOptions, tile))
    : unetPredict;

  return diffuse(ctx, {
    settings,
    plan,
    schedulerConfig,
    h,
    w,
    what: 'Generation',
    predict: () => predict,
    initLatents: hooks.initLatents ?? (() => initLatents),
    blend: hooks.blend,
    decode: (latents, i) =>
      hooks.decode
        ? hooks.decode(latents, i, h, w)
        : ctx.fastDecode
          ? ctx.fastDecode.decode(latents, i, h, w, ctx.timings, ctx.signal)
          : decodeFitting(ctx, decoder, latents, i, h, w),
    onLatents: hooks.onLatents,
  });
}

/** The index of the value in `values` nearest to `t` (the step a timestep belongs to). */
function nearestIndex(values: readonly number[], t: number): number {
  let best = 0;
  for (let i = 1; i < values.length; i++)
    if (Math.abs(values[i] - t) < Math.abs(values[best] - t)) best = i;
  return best;
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

/**
 * The decoder call, in tiles when one whole call is estimated above the generation's budget at
 * the time of the decode (generationBudgetBytes: at most 2 GiB unless the user set a budget; an
 * SDXL decode at 1024x1024 holds 4 GiB whole; README "Performance"), else whole as
 * `decodeLatent`.
 */
async function decodeFitting(
  ctx: RunContext,
  decoder: ComponentSession,
  latents: Float32Array,
  index: number,
  h: number,
  w: number,
): Promise<PixelImage> {
  const grid = decodeGrid(ctx.model, h, w, generationBudgetBytes(ctx.memoryBudgetMb));
  if (!grid) return decodeLatent(ctx, decoder, latents, index, h, w);
  const scaling = ctx.model.family.vaeScalingFactor;
  return decodeLatents(ctx, decoder, latents, index, h, w, scaling, grid);
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
