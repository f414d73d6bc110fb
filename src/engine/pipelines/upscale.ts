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
import type * as ort from 'onnxruntime-node';
import { UpscaleOptions, type GenerationSettings } from '../../shared/generation';
import { EngineError, throwIfAborted } from '../errors';
import { type PixelImage, imageToTensor, latentRgbFactorsFor, resizeImage, toRgb } from '../image';
import type { ComponentSession } from '../models';
import { TorchGenerator } from '../rng';
import {
  type ModelPredict,
  alphasCumprod,
  makeDenoiser,
  parseSchedulerConfig,
  planSampling,
} from '../schedulers';
import { floatsToOrt, ortToFloat32, timestepToOrt } from '../tensor';
import {
  type DiffusionHooks,
  type GeneratedImage,
  type RunContext,
  reportDenoiseStep,
  runDiffusion,
} from './generate';
import { type MemoryPlan, planMemory } from './memory';
import { timedRun } from './stats';
import { type PromptEmbedding, TextConditioner, padChunks } from './text';
import {
  type Tile,
  cropPlanes,
  decodeLatents,
  encodeImageTensor,
  resizeLatentBilinear,
  tiledPredict,
} from './tiling';

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
): Promise<GeneratedImage[]> {
  const up = settings.upscale ?? UpscaleOptions.parse({});
  if (settings.mode === 'txt2img') {
    if (up.method !== 'hires')
      throw new EngineError(
        'bad-input',
        'The x4 upscaler enlarges an existing image; use the upscale mode with an input image.',
      );
    return runHires(ctx, settings, up);
  }
  if (settings.mode !== 'upscale')
    throw new EngineError('bad-input', `Upscaling does not apply to the ${settings.mode} mode.`);
  if (!initImage) throw new EngineError('bad-input', 'Upscaling needs an input image.');
  if (up.method === 'x4') return runX4(ctx, settings, up, initImage);
  return runHiresImage(ctx, settings, up, initImage);
}

// ---------------------------------------------------------------------------------------------
// Two-pass hires

/** Steps a plan runs (for progress over both passes). */
function stepsRun(ctx: RunContext, s: GenerationSettings, strength: number): number {
  const cfg = parseSchedulerConfig(ctx.model.schedulerConfig);
  return planSampling(cfg, s.sampler, s.steps, strength < 1 ? { strength } : {}).timesteps.length;
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
      const bySize = new Map<string, ModelPredict>();
      return tiledPredict(grid, batch, 4, (t) => {
        const key = `${t.h}x${t.w}`;
        let p = bySize.get(key);
        if (!p) bySize.set(key, (p = t.h === grid.h && t.w === grid.w ? full : at(t.h, t.w)));
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

async function runHires(
  ctx: UpscaleContext,
  settings: GenerationSettings,
  up: UpscaleOptions,
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
  });
}

async function runHiresImage(
  ctx: UpscaleContext,
  settings: GenerationSettings,
  up: UpscaleOptions,
  initImage: PixelImage,
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
  });
}

// ---------------------------------------------------------------------------------------------
// x4 upscaler

async function promptEmbeddings(ctx: RunContext, s: GenerationSettings, useCfg: boolean) {
  const { timings, signal } = ctx;
  let cond = await ctx.text.encode(s.prompt, timings, signal);
  let uncond: PromptEmbedding | null = null;
  if (useCfg) {
    uncond = await ctx.text.encode(s.negativePrompt, timings, signal);
    const chunks = Math.max(cond.chunks, uncond.chunks);
    const filler = await ctx.text.encode('', timings, signal);
    cond = padChunks(cond, chunks, filler);
    uncond = padChunks(uncond, chunks, filler);
    if (s.negativePrompt === '' && ctx.model.info.extras.forceZerosForEmptyPrompt === true)
      uncond = TextConditioner.zerosLike(uncond);
  }
  return { cond, uncond };
}

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

interface X4PredictOptions {
  cond: PromptEmbedding;
  uncond: PromptEmbedding | null;
  guidance: number;
  batch: number;
  /** Noised low-res images [B,3,H,W] in [-1,1]. */
  image: Float32Array;
  H: number;
  W: number;
  noiseLevel: number;
  ctx: RunContext;
}

/** The x4 UNet call over `region` of the latent (the whole latent or one tile). */
function makeX4Predict(unet: ComponentSession, o: X4PredictOptions, region: Tile): ModelPredict {
  const copies = o.uncond ? 2 : 1;
  const B = o.batch;
  const rows = B * copies;
  const { h, w } = region;
  const plane = h * w;
  const per = 77 * o.cond.chunks * o.cond.width;
  const states = new Float32Array(rows * per);
  for (let r = 0; r < rows; r++)
    states.set(o.uncond && r < B ? o.uncond.hidden : o.cond.hidden, r * per);
  const spec = (name: string) => {
    const s = unet.input(name);
    if (!s)
      throw new EngineError('model-shape', `${unet.file} has no ${name} input.`, {
        file: unet.file,
      });
    return s;
  };
  const statesSpec = spec('encoder_hidden_states');
  const labelsSpec = spec('class_labels');
  const timestepSpec = spec('timestep');
  const sampleSpec = unet.input('sample') ?? unet.signature.inputs[0];
  const constant: Record<string, ort.Tensor> = {
    [statesSpec.name]: floatsToOrt(states, [rows, 77 * o.cond.chunks, o.cond.width], statesSpec, {
      model: unet.file,
    }),
    // diffusers: noise_level = torch.cat([noise_level] * image.shape[0]), int64 [rows].
    [labelsSpec.name]: floatsToOrt(
      new Array<number>(labelsSpec.shape.length === 0 ? 1 : rows).fill(o.noiseLevel),
      labelsSpec.shape.length === 0 ? [] : [rows],
      labelsSpec,
      { model: unet.file },
    ),
  };
  const image = cropPlanes(o.image, B * 3, o.H, o.W, region);
  const outName = unet.output('out_sample') ? 'out_sample' : unet.signature.outputs[0].name;
  const n = B * 4 * plane;
  return async (scaledX, timestep) => {
    // [latents (scheduler-scaled) | noised image] per row; rows = [uncond; cond].
    const sample = new Float32Array(rows * 7 * plane);
    for (let r = 0; r < rows; r++) {
      const b = r % B;
      sample.set(scaledX.subarray(b * 4 * plane, (b + 1) * 4 * plane), r * 7 * plane);
      sample.set(image.subarray(b * 3 * plane, (b + 1) * 3 * plane), (r * 7 + 4) * plane);
    }
    const feeds: Record<string, ort.Tensor> = {
      ...constant,
      [sampleSpec.name]: floatsToOrt(sample, [rows, 7, h, w], sampleSpec, { model: unet.file }),
      [timestepSpec.name]: timestepToOrt(timestep, rows, timestepSpec, unet.file),
    };
    const out = await timedRun(o.ctx.timings, unet, feeds, o.ctx.signal);
    const pred = ortToFloat32(out[outName], outName);
    if (copies === 1) return pred.length === n ? pred : pred.subarray(0, n);
    const guided = new Float32Array(n);
    for (let i = 0; i < n; i++) guided[i] = pred[i] + o.guidance * (pred[n + i] - pred[i]);
    return guided;
  };
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
  const B = settings.batchSize;
  const maxSeed = Number.MAX_SAFE_INTEGER - (B * settings.batchCount - 1);
  if (settings.seed > maxSeed)
    throw new EngineError(
      'bad-input',
      `Seed ${settings.seed} is too large; use at most ${maxSeed}.`,
    );

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
  const plan = planSampling(mainCfg, settings.sampler, settings.steps);
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

  let started = performance.now();
  ctx.onProgress?.({
    batch: 0,
    batchCount: settings.batchCount,
    stage: 'text',
    step: 0,
    total: plan.timesteps.length,
    elapsedMs: 0,
    etaMs: null,
    preview: null,
  });
  const { cond, uncond } = await promptEmbeddings(ctx, settings, useCfg);
  timings.textMs += performance.now() - started;
  const unet = await model.session('unet');
  const decoder = await model.session(model.decoderName);

  const results: GeneratedImage[] = [];
  const latentDims = [B, 4, H, W];
  const totalSteps = plan.timesteps.length * settings.batchCount;
  const runStarted = performance.now();
  const factors = latentRgbFactorsFor(family.family);
  const a = Math.sqrt(abar);
  const s1 = Math.sqrt(1 - abar);
  for (let n = 0; n < settings.batchCount; n++) {
    throwIfAborted(signal, 'Upscaling');
    const batchSeed = settings.seed + n * B;
    const perImage = settings.seedMode === 'per-image';
    const generators = perImage
      ? Array.from({ length: B }, (_, i) => new TorchGenerator(batchSeed + i))
      : [new TorchGenerator(batchSeed)];
    // diffusers: the image noise is the generator's first draw, the latents its second.
    const image = new Float32Array(B * 3 * H * W);
    const imageNoise = generators.map((g) => g.randn([1, 3, H, W]));
    for (let b = 0; b < B; b++) {
      const eps = imageNoise[perImage ? b : 0];
      for (let i = 0; i < 3 * H * W; i++) image[b * 3 * H * W + i] = a * low[i] + s1 * eps[i];
    }
    const draw = (count: number): Float32Array => {
      if (generators.length === 1) return generators[0].randn([count]);
      const out = new Float32Array(count);
      const per = count / generators.length;
      generators.forEach((g, i) => out.set(g.randn([per]), i * per));
      return out;
    };
    const noise = perImage ? draw(B * 4 * H * W) : generators[0].randn(latentDims);
    const x = new Float32Array(noise.length);
    for (let i = 0; i < x.length; i++) x[i] = noise[i] * plan.initNoiseSigma;

    const o: X4PredictOptions = {
      cond,
      uncond,
      guidance: settings.guidance,
      batch: B,
      image,
      H,
      W,
      noiseLevel: up.noiseLevel,
      ctx,
    };
    const grid = memory.unetGrid;
    const predict = grid
      ? tiledPredict(grid, B, 4, (t) => makeX4Predict(unet, o, t))
      : makeX4Predict(unet, o, { y: 0, x: 0, h: H, w: W });

    started = performance.now();
    const latents = await plan.sampler(makeDenoiser(predict, mainCfg), x, plan.sigmas, {
      rng: { randn: draw },
      signal,
      timestepOf: plan.timestepOf,
      onStep: (e) =>
        reportDenoiseStep(ctx, e, {
          batch: n,
          batchCount: settings.batchCount,
          stepsPerBatch: plan.timesteps.length,
          totalSteps,
          started: runStarted,
          latentDims,
          factors,
        }),
    });
    timings.denoiseMs += performance.now() - started;

    started = performance.now();
    for (let i = 0; i < B; i++) {
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
      results.push({
        image: cropImage(out, src.width * f, src.height * f),
        seed: perImage ? batchSeed + i : batchSeed,
        batchIndex: perImage ? 0 : i,
      });
    }
    timings.decodeMs += performance.now() - started;
  }
  return results;
}
