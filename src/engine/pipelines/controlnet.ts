/**
 * ControlNet residuals for the guided UNet call (Zhang et al. 2023, "Adding Conditional Control
 * to Text-to-Image Diffusion Models"): each active unit runs its ControlNet on the step's latents
 * and its control image, and the residuals of all units, each times its weight, are summed into
 * the UNet's `down_block_N_additional_residual` / `mid_block_additional_residual` inputs (as
 * diffusers' MultiControlNetModel sums them). A UNet with those inputs and no active unit gets
 * zeros, which leave its output exactly as without them.
 *
 * Per unit, as AUTOMATIC1111's sd-webui-controlnet does: the unit acts only while the fraction
 * of steps done, step / steps, lies in [start, end]; "ControlNet is more important" (guess) scales
 * residual i of n by 0.825^(n - 1 - i) (soft injection, deepest strongest) and applies the control
 * to the conditional half of classifier-free guidance only.
 */
import type * as ort from 'onnxruntime-node';
import { EngineError } from '../errors';
import type { ComponentSession } from '../models';
import { floatsToOrt, ortToFloat32, timestepToOrt } from '../tensor';
import { type Box, type PixelImage, canny, cropImage, resizeImage, toRgb } from '../image';
import type { ControlNetUnit } from '../../shared/generation';
import { controlNetOutputsFor, residualInputs } from './controlnet-io';
import { type StageTimings, timedRun } from './stats';
import { cropPlanes } from './tiling';

/**
 * One ControlNet applied to a generation, as the host resolved it: the session, the control image
 * as given (any size) and how to preprocess it. Each pipeline fits the image to what it generates
 * (prepareUnits): the output size, inpainting's crop, the hires pass's size.
 */
export interface ControlUnit extends Pick<
  ControlNetUnit,
  'preprocessor' | 'lowThreshold' | 'highThreshold' | 'weight' | 'start' | 'end' | 'guess'
> {
  /** The ControlNet's session (controlnet_cond, conditioning_scale and the residual outputs). */
  session: ComponentSession;
  /** The control image as given. */
  source: PixelImage;
}

/** A unit with its control image fitted to one generation (prepareUnits). */
export interface PreparedUnit extends Pick<
  ControlUnit,
  'session' | 'weight' | 'start' | 'end' | 'guess'
> {
  /** The preprocessed control image, [3, height, width] in [0, 1] at the generated size. */
  image: Float32Array;
}

/**
 * Where a generation lies on the picture the control images describe: inpainting's "only
 * masked" generates `box` of a `width` x `height` picture (the control image is resized to the
 * picture, then cropped to the box, as the input image is).
 */
export interface ControlCrop {
  width: number;
  height: number;
  box: Box;
}

/** The active units (weight not 0) with their control images at `width` x `height`. */
export function prepareUnits(
  units: readonly ControlUnit[],
  width: number,
  height: number,
  crop?: ControlCrop,
): PreparedUnit[] {
  return units
    .filter((u) => u.weight !== 0)
    .map((u) => {
      let source = toRgb(u.source);
      if (crop) {
        if (source.width !== crop.width || source.height !== crop.height)
          source = resizeImage(source, crop.width, crop.height, 'lanczos3');
        source = cropImage(source, crop.box);
      }
      const { tensor } = controlImage(source, u, width, height);
      return {
        session: u.session,
        weight: u.weight,
        start: u.start,
        end: u.end,
        guess: u.guess,
        image: tensor,
      };
    });
}

/** What makeControlResiduals needs of the generation. */
export interface ControlOptions {
  units: readonly PreparedUnit[];
  /** The step index (0-based) a timestep belongs to, and the step count. */
  stepOf: (timestep: number) => number;
  steps: number;
  /** Rows of the UNet call ([uncond; cond] halves of `batch` images each, or one half). */
  rows: number;
  batch: number;
  guided: boolean;
  /** The latent size of the call (a tile's under tiled diffusion). */
  h: number;
  w: number;
  /**
   * Under tiled diffusion: the tile within the whole latent (`full`), whose part of each control
   * image the ControlNet sees (8 pixels per latent cell).
   */
  tile?: { y: number; x: number; full: { h: number; w: number } };
  timings: StageTimings;
  signal?: AbortSignal;
}

/** A1111's soft-injection weight of residual i of n ("ControlNet is more important"). */
export function softWeight(i: number, n: number): number {
  return 0.825 ** (n - 1 - i);
}

/** Whether a unit acts at step `step` of `steps` (A1111: start <= step / steps <= end). */
export function unitActive(
  unit: Pick<ControlUnit, 'weight' | 'start' | 'end'>,
  step: number,
  steps: number,
): boolean {
  const done = step / steps;
  return unit.weight !== 0 && done >= unit.start && done <= unit.end;
}

type Feeds = Record<string, ort.Tensor>;

/**
 * The residual feeds of one UNet call, or null for a UNet without residual inputs (then units are
 * refused). `inputs` are the call's own feeds: latents [rows, 4, h, w] (the first four channels
 * are taken), timestep, encoder_hidden_states and SDXL's text_embeds / time_ids.
 */
export function makeControlResiduals(
  unet: ComponentSession,
  o: ControlOptions,
): ((latents: Float32Array, timestep: number, constant: Feeds) => Promise<Feeds>) | null {
  const specs = residualInputs(unet);
  const units = o.units.filter((u) => u.weight !== 0);
  if (specs.length === 0) {
    if (units.length > 0) {
      throw new EngineError(
        'model-unsupported',
        `${unet.file} takes no ControlNet residuals; use a model converted with ControlNet support or an ONNX export with down_block_N_additional_residual inputs.`,
        { file: unet.file },
      );
    }
    return null;
  }
  // Zeros broadcast over the latent's height and width (ONNX Add broadcasts), so they fit any
  // size without knowing the UNet's levels.
  const zeros: Feeds = {};
  for (const s of specs) {
    const c = typeof s.shape[1] === 'number' && s.shape[1] > 0 ? s.shape[1] : 1;
    zeros[s.name] = floatsToOrt(new Float32Array(o.rows * c), [o.rows, c, 1, 1], s, {
      model: unet.file,
    });
  }
  // Which ControlNet output feeds which residual input, read once per unit (controlnet-io.ts).
  const outputs = units.map((u) => controlNetOutputsFor(u.session, specs, unet.file));
  const images = units.map((u) => {
    // Under tiled diffusion each ControlNet call sees the tile's part of the control image.
    const t = o.tile;
    const img = t
      ? cropPlanes(u.image, 3, t.full.h * 8, t.full.w * 8, {
          y: t.y * 8,
          x: t.x * 8,
          h: o.h * 8,
          w: o.w * 8,
        })
      : u.image;
    if (img.length !== 3 * o.h * 8 * o.w * 8) {
      throw new EngineError(
        'internal',
        `A control image holds ${img.length} values, not 3x${o.h * 8}x${o.w * 8}.`,
      );
    }
    const per = img.length;
    const all = new Float32Array(o.rows * per);
    for (let r = 0; r < o.rows; r++) all.set(img, r * per);
    return all;
  });
  const per = 4 * o.h * o.w;
  return async (latents, timestep, constant) => {
    const step = o.stepOf(timestep);
    const active = units.filter((u) => unitActive(u, step, o.steps));
    if (active.length === 0) return zeros;
    const sums: Float32Array[] = specs.map(() => new Float32Array(0));
    const dims: number[][] = specs.map(() => []);
    for (const unit of active) {
      const cn = unit.session;
      const feeds: Feeds = {};
      const sample = cn.input('sample') ?? cn.signature.inputs[0];
      const rowsPer = latents.length / o.rows;
      let x = latents;
      if (rowsPer !== per) {
        // A 9-channel UNet's rows carry mask channels after the latents: the ControlNet takes 4.
        x = new Float32Array(o.rows * per);
        for (let r = 0; r < o.rows; r++)
          x.set(latents.subarray(r * rowsPer, r * rowsPer + per), r * per);
      }
      feeds[sample.name] = floatsToOrt(x, [o.rows, 4, o.h, o.w], sample, { model: cn.file });
      const ts = cn.input('timestep');
      if (ts) feeds[ts.name] = timestepToOrt(timestep, o.rows, ts, cn.file);
      for (const name of ['encoder_hidden_states', 'text_embeds', 'time_ids']) {
        if (cn.input(name) && constant[name]) feeds[name] = constant[name];
      }
      const cond = cn.input('controlnet_cond')!;
      const scale = cn.input('conditioning_scale');
      const u = units.indexOf(unit);
      const img = images[u];
      feeds[cond.name] = floatsToOrt(img, [o.rows, 3, o.h * 8, o.w * 8], cond, { model: cn.file });
      if (scale) feeds[scale.name] = floatsToOrt([1], scale.shape.length === 0 ? [] : [1], scale);
      const out = await timedRun(o.timings, cn, feeds, o.signal);
      specs.forEach((s, i) => {
        const name = outputs[u][i];
        const t = out[name];
        const r = ortToFloat32(t, name);
        if (sums[i].length === 0) {
          sums[i] = new Float32Array(r.length);
          dims[i] = [...t.dims];
        } else if (sums[i].length !== r.length) {
          throw new EngineError(
            'model-shape',
            `${cn.file} gives residual ${i} shaped [${t.dims.join(', ')}] where another unit gave [${dims[i].join(', ')}]; the ControlNets were made for different model families.`,
            { file: cn.file },
          );
        }
        const k = unit.weight * (unit.guess ? softWeight(i, specs.length) : 1);
        // Guess mode: the unconditional rows (the first half) get no control.
        const from = unit.guess && o.guided ? r.length / 2 : 0;
        const sum = sums[i];
        for (let j = from; j < r.length; j++) sum[j] += k * r[j];
      });
    }
    const feeds: Feeds = {};
    specs.forEach((s, i) => {
      feeds[s.name] = floatsToOrt(sums[i], dims[i], s, { model: unet.file });
    });
    return feeds;
  };
}

/**
 * A unit's control image as the ControlNet takes it: resized (Lanczos) to the output size, then
 * preprocessed (canny: OpenCV's edges as white lines on black, in all three channels), as
 * [3, height, width] floats in [0, 1] (diffusers' ControlNet image processor, no normalisation).
 * Also returns the preprocessed image (for previews and the record).
 */
export function controlImage(
  image: PixelImage,
  unit: Pick<ControlNetUnit, 'preprocessor' | 'lowThreshold' | 'highThreshold'>,
  width: number,
  height: number,
): { tensor: Float32Array; preview: PixelImage } {
  let rgb = toRgb(image);
  if (rgb.width !== width || rgb.height !== height)
    rgb = resizeImage(rgb, width, height, 'lanczos3');
  const pre =
    unit.preprocessor === 'canny' ? canny(rgb, unit.lowThreshold, unit.highThreshold) : rgb;
  const plane = width * height;
  const tensor = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) {
      tensor[c * plane + p] = pre.data[pre.channels === 1 ? p : p * pre.channels + c] / 255;
    }
  }
  return { tensor, preview: pre };
}
