/**
 * Upscaling by hierarchical diffusion (issue #4):
 *
 * - Two-pass "hires fix" (A1111's txt2img hires fix): generate at the base size, show the
 *   decoded low-resolution result as a preview, enlarge it (in latent space, bilinear as A1111's
 *   "Latent" upscaler: F.interpolate(mode="bilinear", align_corners=False); or decode ->
 *   Lanczos-3 in pixels -> encode), then run img2img at width*factor x height*factor (each
 *   rounded to a multiple of 8) with hiresSteps and hiresStrength. Noise: A1111's semantics —
 *   the hires pass draws fresh torch.randn noise of the hires shape from the same seed(s); the
 *   schedule is cut as diffusers' img2img does (get_timesteps: int(steps * strength) steps run).
 *   Mode 'upscale' with method 'hires' does the same to the input image (Lanczos path).
 * - The x4 upscaler (diffusers StableDiffusionUpscalePipeline / OnnxStableDiffusionUpscalePipeline):
 *   the low-res image in [-1, 1] is noised by the low_res_scheduler at noise_level
 *   (DDPM add_noise: sqrt(abar) x + sqrt(1 - abar) eps, eps drawn first from the seed's
 *   generator, then the latents), concatenated unscaled to the scheduler-scaled latents (7
 *   channels), class_labels = noise_level (int64), classifier-free guidance batched
 *   [uncond; cond], latents / scaling_factor (0.08333) decoded by `vae` to 4x the size.
 * - Large outputs run with tiled diffusion and tiled VAE decoding (tiling.ts) as the memory
 *   plan (memory.ts) decides.
 */
import { UpscaleOptions, type GenerationSettings } from '../../shared/generation';
import { EngineError, throwIfAborted } from '../errors';
import { type PixelImage, imageToTensor, resizeImage, toRgb } from '../image';
import type { ComponentSession } from '../models';
import {
  type ModelPredict,
  alphasCumprod,
  parseSchedulerConfig,
  planSampling,
} from '../schedulers';
import {
  type GeneratedImage,
  type RunContext,
  checkSeedRange,
  diffuse,
  encodePrompts,
  reportStage,
} from './core';
import { type ControlSetup, type DiffusionHooks, runDiffusion } from './generate';
import { type MemoryPlan, planMemory } from './memory';
import { decodeLatents, encodeImageTensor, resizeLatentBilinear, tiledPredict } from './tiling';
import { makeUnetPredict } from './unet';

export interface UpscaleContext extends RunContext {
  /** Activation memory the plan may use (memory.ts memoryBudgetBytes). */
  memoryBudgetBytes: number;
  /** Told the memory plan of each tiled stage (logs, tests). */
  onMemoryPlan?: (plan: MemoryPlan) => void;
}

/** The hires target side: base * factor rounded to a multiple of 8 (at least 8). */
export function hiresSide(base: number, factor: number): number {
  return Math.max(8, Math.round((base * factor) / 8) * 8);
}

/** The second pass: img2img at the target size with the hires steps and strength. */
function hiresPassSettings(
  settings: GenerationSettings,
  up: UpscaleOptions,
  width: number,
  height: number,
): GenerationSettings {
  return {
    ...settings,
    mode: 'img2img',
    width,
    height,
    steps: up.hiresSteps,
    strength: up.hiresStrength,
    upscale: null,
  };
}

/** Entry point for txt2img with settings.upscale and for mode 'upscale'. */
export async function runUpscale(
  ctx: UpscaleContext,
  settings: GenerationSettings,
  initImage: PixelImage | null,
  control?: ControlSetup,
): Promise<GeneratedImage[]> {
  const up = settings.upscale ?? UpscaleOptions.parse({});
  if (settings.mode === 'txt2img') {
    if (up.method !== 'hires')
      throw new EngineError(
        'bad-input',
        'The x4 upscaler enlarges an existing image; use the upscale mode with an input image.',
      );
    return runHires(ctx, settings, up, control);
  }
  if (settings.mode !== 'upscale')
    throw new EngineError('bad-input', `Upscaling does not apply to the ${settings.mode} mode.`);
  if (!initImage) throw new EngineError('bad-input', 'Upscaling needs an input image.');
  // The engine refuses ControlNet units for x4 before loading them.
  if (up.method === 'x4') return runX4(ctx, settings, up, initImage);
  return runHiresImage(ctx, settings, up, initImage, control);
}

// ---------------------------------------------------------------------------------------------
// Two-pass hires

/** Steps a plan runs (for progress over both passes). */
function stepsRun(ctx: RunContext, s: GenerationSettings, strength: number): number {
  const cfg = parseSchedulerConfig(ctx.model.schedulerConfig);
  const options = strength < 1 ? { schedule: s.schedule, strength } : { schedule: s.schedule };
  return planSampling(cfg, s.sampler, s.steps, options).timesteps.length;
}

/** Wraps onProgress so a pass's steps count within the whole request. */
function passContext(ctx: RunContext, offset: number, total: number, rest: number): RunContext {
  const onProgress = ctx.onProgress;
  if (!onProgress) return ctx;
  return {
    ...ctx,
    onProgress: (p) =>
      onProgress({
        ...p,
        step: offset + p.step,
        total,
        etaMs: p.etaMs === null ? null : p.etaMs + rest * (p.elapsedMs / Math.max(1, p.step)),
      }),
  };
}

function tilingHooks(
  ctx: UpscaleContext,
  plan: MemoryPlan,
  batch: number,
  decoder: ComponentSession,
): Pick<DiffusionHooks, 'wrapPredict' | 'decode'> {
  const hooks: Pick<DiffusionHooks, 'wrapPredict' | 'decode'> = {};
  const grid = plan.unetGrid;
  if (grid) {
    hooks.wrapPredict = (full, at) => {
      // One call per tile position: a tile's call crops what depends on where it lies (the
      // extra channels, the ControlNet's control image).
      const byTile = new Map<string, ModelPredict>();
      return tiledPredict(grid, batch, 4, (t) => {
        const key = `${t.y},${t.x},${t.h}x${t.w}`;
        let p = byTile.get(key);
        if (!p) byTile.set(key, (p = t.h === grid.h && t.w === grid.w ? full : at(t)));
        return p;
      });
    };
  }
  if (plan.vaeGrid) {
    const vaeGrid = plan.vaeGrid;
    hooks.decode = (latents, index, h, w) =>
      decodeLatents(ctx, decoder, latents, index, h, w, ctx.model.family.vaeScalingFactor, vaeGrid);
  }
  return hooks;
}

function hiresPlan(
  ctx: UpscaleContext,
  s: GenerationSettings,
  up: UpscaleOptions,
  width: number,
  height: number,
) {
  const isLcm = ctx.model.family.family === 'lcm' || ctx.model.family.timestepCondDim !== null;
  const copies = s.guidance > 1 && !isLcm ? 2 : 1;
  const scale = ctx.model.family.latentScale;
  const plan = planMemory(ctx.model, {
    rows: s.batchSize * copies,
    batch: s.batchSize,
    h: height / scale,
    w: width / scale,
    tilePx: up.tile,
    budgetBytes: ctx.memoryBudgetBytes,
  });
  ctx.onMemoryPlan?.(plan);
  return plan;
}

/** Scaled latents of an RGB image at width x height (Lanczos-resized first). */
async function encodeResized(
  ctx: UpscaleContext,
  image: PixelImage,
  width: number,
  height: number,
  plan: MemoryPlan,
): Promise<Float32Array> {
  const { model } = ctx;
  if (!model.has('vae_encoder'))
    throw new EngineError(
      'model-missing-file',
      `${model.info.name} has no vae_encoder, which the hires pass needs to encode its input.`,
      { file: 'vae_encoder/model.onnx' },
    );
  let rgb = toRgb(image);
  if (rgb.width !== width || rgb.height !== height)
    rgb = resizeImage(rgb, width, height, 'lanczos3');
  const encoder = await model.session('vae_encoder');
  const started = performance.now();
  const tensor = imageToTensor(rgb);
  const latents = await encodeImageTensor(
    ctx,
    encoder,
    tensor.data,
    height,
    width,
    model.family.latentScale,
    model.family.vaeScalingFactor,
    plan.vaeGrid,
  );
  ctx.timings.encodeMs += performance.now() - started;
  return latents;
}

/**
 * ControlNet units act in both passes, the control image fitted to each pass's size (A1111's
 * hires fix does the same); under tiled diffusion each tile's ControlNet call sees its part.
 */
async function runHires(
  ctx: UpscaleContext,
  settings: GenerationSettings,
  up: UpscaleOptions,
  control?: ControlSetup,
): Promise<GeneratedImage[]> {
  const { width, height } = settings;
  const B = settings.batchSize;
  const scale = ctx.model.family.latentScale;
  const tw = hiresSide(width, up.factor);
  const th = hiresSide(height, up.factor);
  const base: GenerationSettings = { ...settings, mode: 'txt2img', upscale: null };
  const hires = hiresPassSettings(settings, up, tw, th);
  // Plan first: refuse before any work when even tiling cannot fit.
  const plan = hiresPlan(ctx, settings, up, tw, th);
  const baseSteps = stepsRun(ctx, base, 1);
  const hiresSteps = stepsRun(ctx, hires, up.hiresStrength);
  const total = baseSteps + hiresSteps;
  const work = (tw * th) / (width * height);

  const baseLatents: Float32Array[] = [];
  const baseImages = await runDiffusion(passContext(ctx, 0, total, hiresSteps * work), base, null, {
    onLatents: (n, l) => (baseLatents[n] = l),
    ...(control ? { control } : {}),
  });
  // The low-resolution result first, as the preview of the request.
  ctx.onProgress?.({
    batch: 0,
    batchCount: settings.batchCount,
    stage: 'decode',
    step: baseSteps,
    total,
    elapsedMs: 0,
    etaMs: null,
    // A copy: the worker transfers preview buffers, and the Lanczos path still reads the image.
    preview: { ...baseImages[0].image, data: baseImages[0].image.data.slice() },
  });
  throwIfAborted(ctx.signal, 'Generation');

  const h = height / scale;
  const w = width / scale;
  const per = 4 * (th / scale) * (tw / scale);
  const enlarged: Float32Array[] = [];
  for (let n = 0; n < settings.batchCount; n++) {
    if (up.upscaler === 'latent') {
      enlarged[n] = resizeLatentBilinear(baseLatents[n], B * 4, h, w, th / scale, tw / scale);
    } else {
      const all = new Float32Array(B * per);
      for (let i = 0; i < B; i++)
        all.set(await encodeResized(ctx, baseImages[n * B + i].image, tw, th, plan), i * per);
      enlarged[n] = all;
    }
  }
  const decoder = await ctx.model.session(ctx.model.decoderName);
  return runDiffusion(passContext(ctx, baseSteps, total, 0), hires, null, {
    initLatents: (n) => enlarged[n],
    ...tilingHooks(ctx, plan, B, decoder),
    ...(control ? { control } : {}),
  });
}

async function runHiresImage(
  ctx: UpscaleContext,
  settings: GenerationSettings,
  up: UpscaleOptions,
  initImage: PixelImage,
  control?: ControlSetup,
): Promise<GeneratedImage[]> {
  // Before any work: an x4 upscaler cannot make the img2img pass (runDiffusion would say so only
  // after the encode). A 9-channel inpainting model can: runDiffusion masks everything for it.
  if (ctx.model.family.classLabels)
    throw new EngineError(
      'model-unsupported',
      `${ctx.model.info.name} is an x4 upscaler; the hires upscaler needs a text-to-image or inpainting model (or choose the x4 method).`,
    );
  const tw = hiresSide(initImage.width, up.factor);
  const th = hiresSide(initImage.height, up.factor);
  const hires = hiresPassSettings(settings, up, tw, th);
  const plan = hiresPlan(ctx, settings, up, tw, th);
  const latents = await encodeResized(ctx, initImage, tw, th, plan);
  const decoder = await ctx.model.session(ctx.model.decoderName);
  return runDiffusion(ctx, hires, null, {
    initLatents: () => latents,
    ...tilingHooks(ctx, plan, settings.batchSize, decoder),
    ...(control ? { control } : {}),
  });
}

// ---------------------------------------------------------------------------------------------
// x4 upscaler

/** Edge-replicates an RGB image to w x h (w, h >= its size). */
function padEdge(img: PixelImage, w: number, h: number): PixelImage {
  if (img.width === w && img.height === h) return img;
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(y, img.height - 1);
    for (let x = 0; x < w; x++) {
      const sx = Math.min(x, img.width - 1);
      const s = (sy * img.width + sx) * 3;
      out.set(img.data.subarray(s, s + 3), (y * w + x) * 3);
    }
  }
  return { width: w, height: h, channels: 3, data: out };
}

function cropImage(img: PixelImage, w: number, h: number): PixelImage {
  if (img.width === w && img.height === h) return img;
  const c = img.channels;
  const out = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++)
    out.set(img.data.subarray(y * img.width * c, (y * img.width + w) * c), y * w * c);
  return { width: w, height: h, channels: c, data: out };
}

async function runX4(
  ctx: UpscaleContext,
  settings: GenerationSettings,
  up: UpscaleOptions,
  initImage: PixelImage,
): Promise<GeneratedImage[]> {
  const { model, timings, signal } = ctx;
  const family = model.family;
  if (family.family !== 'x4-upscaler' || !family.classLabels)
    throw new EngineError(
      'model-unsupported',
      `${model.info.name} is not an x4 upscaler (its family is ${family.family}); choose an x4 upscaler model for the x4 method.`,
    );
  const maxNoise = model.info.extras.maxNoiseLevel ?? 350;
  if (up.noiseLevel > maxNoise)
    throw new EngineError(
      'bad-input',
      `Noise level ${up.noiseLevel} is above this upscaler's max_noise_level of ${maxNoise}.`,
    );
  if (!model.lowResSchedulerConfig)
    throw new EngineError(
      'model-missing-file',
      'low_res_scheduler/scheduler_config.json is missing from the model folder.',
      { file: 'low_res_scheduler/scheduler_config.json' },
    );
  checkSeedRange(settings);

  // The latents are the low-res image itself (4x smaller than the output); the UNet downsamples
  // 3 times, so pad to a multiple of 8 by edge replication and crop the output back.
  const src = toRgb(initImage);
  const W = Math.ceil(src.width / 8) * 8;
  const H = Math.ceil(src.height / 8) * 8;
  const low = imageToTensor(padEdge(src, W, H)).data;
  const f = family.latentScale;

  const mainCfg = parseSchedulerConfig(model.schedulerConfig);
  const lowCfg = parseSchedulerConfig(model.lowResSchedulerConfig);
  const abar = alphasCumprod(lowCfg)[up.noiseLevel];
  const plan = planSampling(mainCfg, settings.sampler, settings.steps, {
    schedule: settings.schedule,
  });
  const B = settings.batchSize;
  const useCfg = settings.guidance > 1;
  const memory = planMemory(model, {
    rows: B * (useCfg ? 2 : 1),
    batch: B,
    h: H,
    w: W,
    tilePx: up.tile,
    budgetBytes: ctx.memoryBudgetBytes,
  });
  ctx.onMemoryPlan?.(memory);

  reportStage(ctx, 0, settings.batchCount, 'text', 0, plan.timesteps.length);
  const { cond, uncond } = await encodePrompts(ctx, settings, useCfg);
  const unet = await model.session('unet');
  const decoder = await model.session(model.decoderName);

  const a = Math.sqrt(abar);
  const s1 = Math.sqrt(1 - abar);
  const plane = 3 * H * W;
  return diffuse(ctx, {
    settings,
    plan,
    schedulerConfig: mainCfg,
    h: H,
    w: W,
    what: 'Upscaling',
    predict: (_n, rng) => {
      // diffusers: the image noise is the generator's first draw, the latents its second. The
      // noised low-res image goes unscaled into the UNet's last 3 channels.
      const imageNoise = rng.generators.map((g) => g.randn([1, 3, H, W]));
      const image = new Float32Array(B * plane);
      for (let b = 0; b < B; b++) {
        const eps = imageNoise[imageNoise.length === 1 ? 0 : b];
        for (let i = 0; i < plane; i++) image[b * plane + i] = a * low[i] + s1 * eps[i];
      }
      const options = {
        cond,
        uncond,
        guidance: settings.guidance,
        batch: B,
        h: H,
        w: W,
        height: H * f,
        width: W * f,
        timings,
        signal,
        extra: { channels: 3, data: image, perImage: true },
        classLabels: up.noiseLevel,
      };
      const grid = memory.unetGrid;
      return grid
        ? tiledPredict(grid, B, 4, (t) => makeUnetPredict(unet, options, t))
        : makeUnetPredict(unet, options);
    },
    decode: async (latents, i) => {
      const out = await decodeLatents(
        ctx,
        decoder,
        latents,
        i,
        H,
        W,
        family.vaeScalingFactor,
        memory.vaeGrid,
      );
      return cropImage(out, src.width * f, src.height * f);
    },
  });
}
