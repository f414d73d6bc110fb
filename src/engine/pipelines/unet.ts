/**
 * The guided UNet call of every pipeline: text states and the other constant inputs built once,
 * per step only `sample` and `timestep` change; classifier-free guidance as one batched call
 * [uncond; cond], combined as uncond + g * (cond - uncond) (diffusers' pipelines).
 */
import type * as ort from 'onnxruntime-node';
import { EngineError } from '../errors';
import type { ComponentSession } from '../models';
import type { ModelPredict } from '../schedulers';
import { floatsToOrt, ortToFloat32, timestepToOrt } from '../tensor';
import { type ControlOptions, makeControlResiduals } from './controlnet';
import { type StageTimings, timedRun } from './stats';
import type { PromptEmbedding } from './text';
import { type Tile, cropPlanes } from './tiling';

const latentChannels = 4;

/**
 * UNet input channels after the 4 latent ones, appended to every row's sample (both guidance
 * halves): a 9-channel inpainting UNet's mask and masked-image latents, the x4 upscaler's noised
 * low-resolution image.
 */
export interface ExtraChannels {
  channels: number;
  /** [channels, h, w] shared by every image, or [batch, channels, h, w] with `perImage`. */
  data: Float32Array;
  perImage?: boolean;
}

export interface PredictOptions {
  cond: PromptEmbedding;
  uncond: PromptEmbedding | null;
  guidance: number;
  batch: number;
  /** The full latent size; a call for a tile crops the extra channels to it. */
  h: number;
  w: number;
  /** The output size in pixels (SDXL's time_ids). */
  height: number;
  width: number;
  timings: StageTimings;
  signal?: AbortSignal;
  extra?: ExtraChannels;
  /** The x4 upscaler's class_labels (its noise level), int64 [rows]. */
  classLabels?: number;
  /** ControlNet units (controlnet.ts); a UNet with residual inputs gets zeros without them. */
  control?: Pick<ControlOptions, 'units' | 'stepOf' | 'steps'>;
}

/**
 * The UNet call with guidance over `region` of the latent (default: all of it). The returned
 * function takes the scaled latents of the region [batch, 4, region.h, region.w] and a timestep,
 * and returns the guided prediction of the same size.
 */
export function makeUnetPredict(
  unet: ComponentSession,
  o: PredictOptions,
  region: Tile = { y: 0, x: 0, h: o.h, w: o.w },
): ModelPredict {
  const copies = o.uncond ? 2 : 1;
  const rows = o.batch * copies;
  const spec = (name: string) => {
    const s = unet.input(name);
    if (!s)
      throw new EngineError('model-shape', `${unet.file} has no ${name} input.`, {
        file: unet.file,
      });
    return s;
  };
  const per = 77 * o.cond.chunks * o.cond.width;
  const states = new Float32Array(rows * per);
  for (let r = 0; r < rows; r++)
    states.set(o.uncond && r < o.batch ? o.uncond.hidden : o.cond.hidden, r * per);
  const constant: Record<string, ort.Tensor> = {};
  const statesSpec = spec('encoder_hidden_states');
  constant[statesSpec.name] = floatsToOrt(
    states,
    [rows, 77 * o.cond.chunks, o.cond.width],
    statesSpec,
    { model: unet.file },
  );
  if (o.classLabels !== undefined) {
    // diffusers: noise_level = torch.cat([noise_level] * image.shape[0]), int64 [rows].
    const labels = spec('class_labels');
    const scalar = labels.shape.length === 0;
    constant[labels.name] = floatsToOrt(
      new Array<number>(scalar ? 1 : rows).fill(o.classLabels),
      scalar ? [] : [rows],
      labels,
      { model: unet.file },
    );
  }

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
  const timestepSpec = spec('timestep');
  const outName = unet.output('out_sample') ? 'out_sample' : unet.signature.outputs[0].name;
  const { h, w } = region;
  const plane = h * w;
  const n = o.batch * latentChannels * plane;
  const extraC = o.extra?.channels ?? 0;
  const sampleChannels = latentChannels + extraC;
  let extra: Float32Array | null = null;
  if (o.extra) {
    const images = o.extra.perImage ? o.batch : 1;
    if (o.extra.data.length !== images * extraC * o.h * o.w)
      throw new EngineError(
        'internal',
        `Extra UNet channels hold ${o.extra.data.length} values, not ${images}x${extraC}x${o.h}x${o.w}.`,
      );
    const whole = region.h === o.h && region.w === o.w;
    extra = whole ? o.extra.data : cropPlanes(o.extra.data, images * extraC, o.h, o.w, region);
  }
  const extraPer = extraC * plane;
  const wholeLatent = region.h === o.h && region.w === o.w;
  const residuals = makeControlResiduals(unet, {
    units: [],
    stepOf: () => 0,
    steps: 1,
    ...o.control,
    rows,
    batch: o.batch,
    guided: copies === 2,
    h,
    w,
    ...(wholeLatent ? {} : { tile: { y: region.y, x: region.x, full: { h: o.h, w: o.w } } }),
    timings: o.timings,
    signal: o.signal,
  });

  return async (scaledX: Float32Array, timestep: number): Promise<Float32Array> => {
    let sample = scaledX;
    if (extra) {
      // [latents | extra channels] per row; rows = [uncond; cond].
      sample = new Float32Array(rows * sampleChannels * plane);
      const per = n / o.batch;
      for (let r = 0; r < rows; r++) {
        const at = r * sampleChannels * plane;
        const img = r % o.batch;
        sample.set(scaledX.subarray(img * per, (img + 1) * per), at);
        sample.set(
          o.extra!.perImage ? extra.subarray(img * extraPer, (img + 1) * extraPer) : extra,
          at + per,
        );
      }
    } else if (copies === 2) {
      sample = new Float32Array(2 * n);
      sample.set(scaledX, 0);
      sample.set(scaledX, n);
    }
    const feeds: Record<string, ort.Tensor> = {
      ...constant,
      [sampleSpec.name]: floatsToOrt(sample, [rows, sampleChannels, h, w], sampleSpec, {
        model: unet.file,
      }),
      [timestepSpec.name]: timestepToOrt(timestep, rows, timestepSpec, unet.file),
    };
    if (residuals) Object.assign(feeds, await residuals(sample, timestep, constant));
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
