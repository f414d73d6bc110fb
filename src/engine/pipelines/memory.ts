/**
 * The memory plan for large outputs: estimate the activation memory of one UNet call and one
 * VAE decoder call at a latent size, compare it with the memory we may use, and pick tiling
 * (tiling.ts) when a whole call would not fit. Refuse only when even the smallest tile, or the
 * full-size buffers that tiling cannot avoid, would not fit. The upscale pipelines plan both
 * calls (planMemory); every generation also asks, with the memory free at that moment, whether
 * the text encoders should be released before the denoise (textEncodersInTheWay) and whether
 * its decode should be tiled (decodeGrid).
 *
 * The estimates are deliberately rough (ONNX Runtime's arena and the provider's kernels decide
 * the real numbers), from what a model folder and its sessions tell us: the weight bytes, the
 * dtype, the UNet's first convolution, and whether each session's attention is fused
 * (LoadedModel.attention: MultiHeadAttention, rewritten at load or written so by the converter,
 * which ONNX Runtime's CPU provider runs in flash-attention tiles) or materialised (exported
 * MatMul + Softmax, every head's N x N scores held at once).
 *
 *   UNet, per call (rows = batch x 2 with classifier-free guidance):
 *     bytes = rows * e * (A * c0 * h * w + [materialised] 4 * heads * T^2)
 *       c0    = conv_in's output channels when the file names `conv_in.weight` (SD 1.x/2.x and
 *               SDXL: 320), else 320 * sqrt(params / 860e6), at least 32
 *       A     = 56: feature maps alive per latent pixel in units of c0 (the skip connections kept
 *               for the up path, the block being computed, GroupNorm and convolution buffers).
 *               Measured with fused attention (`npm run bench:memory`, CPU, fp32, CFG rows 2,
 *               peak over the loaded session): SD-1.5-shaped UNet at 512x512 0.45 GiB (A = 46),
 *               mid UNet (c0 = 64) at 512x512 0.11 GiB (A = 56), 768x768 0.20 GiB (A = 46) and
 *               1024x1024 0.42 GiB (A = 54). SDXL, whose full-resolution level has no
 *               transformer: A = 24, measured 0.71 GiB at 1024x1024 (A = 18; whole generation,
 *               `bench:memory -- --generate`).
 *       heads = 8, T = h * w tokens at the highest-resolution self-attention (h*w/4 for SDXL
 *               and the x4 upscaler, whose first block has no attention). Materialised, the
 *               scores, their scaled copy and their softmax are held at once: measured 4.1 and
 *               3.9 score-sized tensors (mid and SD-1.5-shaped UNets at 512x512, exported graph).
 *               Fused, nothing N x N is held: the term is dropped.
 *       e     = 4 bytes (fp32) or 2 (fp16 I/O)
 *   VAE decoder, per call (one image, output f*h x f*w pixels, P = f^2 * h * w):
 *     bytes = e * (4 * cV * P + [materialised] s * (h * w)^2)
 *       cV = half the decoder's conv_in channels when the file names `conv_in.weight` (SD's and
 *            SDXL's decoder: 512, so 256), else 256 * sqrt(params / 49.5e6), at least 3 (SD's
 *            decoder: 49.5 M parameters; its full-resolution up blocks are 128-256 channels
 *            wide). Measured: the SDXL decoder at 1024x1024 (fp32 compute, fused mid-block
 *            attention) held 4.08 GiB; the estimate is 4.0 GiB.
 *       s  = min(1, params / 49.5e6): the mid-block self-attention over h*w tokens, for decoders
 *            of real size, when materialised.
 *   Fixed (tiling cannot shrink it): the full latents (about 8 copies in the sampler) and the
 *   pixel accumulators of the decode (3 floats + 3 bytes per pixel, twice).
 *
 * The budget is EngineOptions.memoryBudgetMb when set, else 60% of os.freemem() (available RAM; on a
 * GPU provider set the budget to the device's memory, which the engine cannot query); a
 * generation's own decisions cap the latter at SPARE_CAP_BYTES (generationBudgetBytes).
 */
import os from 'node:os';
import { isSdxlFamily } from '../../shared';
import { EngineError } from '../errors';
import type { ComponentName, LoadedModel } from '../models';
import { floatTypeOf } from '../tensor';
import { type TileGrid, planTiles } from './tiling';

const MB = 1024 * 1024;

/** Whether the user set a budget (EngineOptions.memoryBudgetMb). */
const budgetSet = (budgetMb?: number | null): budgetMb is number =>
  budgetMb !== undefined && budgetMb !== null && budgetMb > 0;

export function memoryBudgetBytes(budgetMb?: number | null, free: number = os.freemem()): number {
  return budgetSet(budgetMb) ? budgetMb * MB : Math.floor(free * 0.6);
}

/**
 * The most a generation plans to hold beyond its loaded sessions when memory is to spare:
 * what a 16 GiB machine leaves once SDXL's sessions are loaded. A generation whose UNet call or
 * whole decode is estimated above it releases its text encoders, as on that machine: SDXL at
 * 1024x1024 kept them and peaked at 18.93 GiB with a whole decode; they come back for a new
 * prompt in seconds from the optimized-graph cache (README "Performance"). The decode itself is
 * capped lower still (DECODE_CAP_BYTES).
 */
export const SPARE_CAP_BYTES = 2048 * MB;

/**
 * The budget of a generation's decisions (textEncodersInTheWay, decodeGrid): `budgetMb` when
 * set (the user's word), else 60% of the memory free now, at most SPARE_CAP_BYTES.
 */
export function generationBudgetBytes(
  budgetMb?: number | null,
  free: number = os.freemem(),
): number {
  const budget = memoryBudgetBytes(budgetMb, free);
  return budgetSet(budgetMb) ? budget : Math.min(SPARE_CAP_BYTES, budget);
}

interface ModelSizes {
  unetParams: number;
  vaeParams: number;
  elem: number;
  attentionQuarter: boolean;
  /** conv_in's output channels, when the UNet file names its weight. */
  unetC0: number | null;
  /** The decoder's conv_in output channels (SD's and SDXL's VAE: 512), when named. */
  vaeConvIn: number | null;
}

const channels = (dims: number[] | null | undefined): number | null =>
  dims && dims.length === 4 && dims[0] > 0 ? dims[0] : null;

function sizes(model: LoadedModel): ModelSizes {
  const unet = model.info.components.unet;
  const vae = model.info.components[model.decoderName];
  const sample = model.signatures.unet?.inputs.find((i) => i.name === 'sample');
  const elem = floatTypeOf(sample) === 'float16' ? 2 : 4;
  const fam = model.family.family;
  return {
    unetParams: (unet?.bytes ?? 0) / elem,
    vaeParams: (vae?.bytes ?? 0) / elem,
    elem,
    attentionQuarter: isSdxlFamily(fam) || fam === 'x4-upscaler',
    unetC0: channels(unet?.header.convInWeightDims),
    vaeConvIn: channels(vae?.header.convInWeightDims),
  };
}

/**
 * Whether the session of `name` holds attention scores whole: true unless its graph is known
 * to have fused attention and none materialised (unknown counts as materialised: the plan then
 * errs towards tiling).
 */
export function materialisesAttention(model: LoadedModel, name: ComponentName): boolean {
  const a = model.attention[name];
  return !a || a.materialised > 0;
}

/** Feature maps alive per latent pixel, in units of c0 (see the file comment). */
const UNET_MAPS = 56;
/** The same for SDXL, whose full-resolution level has no transformer (see the file comment). */
const UNET_MAPS_SDXL = 24;
/** Score-sized tensors held by a materialised attention (scores, scaled, softmax). */
const SCORE_COPIES = 4;

/** Estimated activation bytes of one UNet call over `rows` latents of h x w. */
export function unetCallBytes(model: LoadedModel, rows: number, h: number, w: number): number {
  const s = sizes(model);
  const c0 = s.unetC0 ?? Math.max(32, 320 * Math.sqrt(s.unetParams / 860e6));
  const tokens = s.attentionQuarter ? (h * w) / 4 : h * w;
  const scores = materialisesAttention(model, 'unet') ? SCORE_COPIES * 8 * tokens * tokens : 0;
  const maps = isSdxlFamily(model.family.family) ? UNET_MAPS_SDXL : UNET_MAPS;
  return rows * s.elem * (maps * c0 * h * w + scores);
}

/** Estimated activation bytes of one VAE decoder call on an h x w latent. */
export function vaeCallBytes(model: LoadedModel, h: number, w: number): number {
  const s = sizes(model);
  const f = model.family.latentScale;
  const cV = s.vaeConvIn ? s.vaeConvIn / 2 : Math.max(3, 256 * Math.sqrt(s.vaeParams / 49.5e6));
  const attn = materialisesAttention(model, model.decoderName)
    ? Math.min(1, s.vaeParams / 49.5e6)
    : 0;
  return s.elem * (4 * cV * f * f * h * w + attn * (h * w) ** 2);
}

/**
 * Whether the text encoders should give up their memory before the denoise: when the larger of
 * one UNet call (over `rows` latents of h x w) and one decode is estimated above the budget,
 * which is measured against the memory free with the encoders loaded. The prompts stay encoded;
 * a new prompt creates the encoders again (from the optimized-graph cache when there is one).
 */
export function textEncodersInTheWay(
  model: LoadedModel,
  rows: number,
  h: number,
  w: number,
  budgetBytes: number,
): boolean {
  return Math.max(unetCallBytes(model, rows, h, w), vaeCallBytes(model, h, w)) > budgetBytes;
}

/**
 * The most one decoder call is planned to hold, whatever the budget: tiles of about this size
 * decode about as fast as the whole image and hold a fifth of it. Measured on a full-size VAE
 * decoder at 1024x1024 (bench:memory --decoder, 2 cores, no memory patterns): whole 108 s and
 * +4.13 GiB (kept by the arena after the call), 9 tiles of 448 px 109 s and +0.81 GiB, 4 tiles
 * of 640 px 149 s and +1.83 GiB; within an SDXL generation the 9 tiles took 75 s where the
 * whole decode had taken 70 s at a like load (README "Performance").
 */
export const DECODE_CAP_BYTES = 1024 * MB;

/**
 * Latent tiles for one decoder call that fits `budgetBytes` and DECODE_CAP_BYTES: null when the
 * whole call fits, or when not even the smallest tile does (the whole call is then tried, as
 * without a plan).
 */
export function decodeGrid(
  model: LoadedModel,
  h: number,
  w: number,
  budgetBytes: number,
): TileGrid | null {
  const room = Math.min(budgetBytes, DECODE_CAP_BYTES);
  if (vaeCallBytes(model, h, w) <= room) return null;
  return fewestTiles(h, w, room, (th, tw) => vaeCallBytes(model, th, tw));
}

/**
 * Of the tile grids whose one-call estimate fits `room`, the one with the fewest tiles (fewest
 * seams and calls), then the fewest latent pixels decoded in all (the larger tile on a tie), or
 * null when none fits. The largest tile that fits is not the cheapest: at 1024x1024 under
 * 2 GiB, 4 tiles of 704 px decode 1.89x the image's pixels where 4 of 640 px decode 1.56x.
 */
function fewestTiles(
  h: number,
  w: number,
  room: number,
  estimate: (th: number, tw: number) => number,
): TileGrid | null {
  let best: { grid: TileGrid; work: number } | null = null;
  for (let t = align8(Math.max(h, w) - 1); t >= minTile; t -= 8) {
    if (estimate(Math.min(t, h), Math.min(t, w)) > room) continue;
    const grid = planTiles(h, w, t, overlapFor(t));
    const work = grid.tiles.reduce((sum, tile) => sum + tile.h * tile.w, 0);
    const n = grid.tiles.length;
    if (!best || n < best.grid.tiles.length || (n === best.grid.tiles.length && work < best.work))
      best = { grid, work };
  }
  return best?.grid ?? null;
}

/** The largest tile grid whose one-call estimate fits `room`, or null when none does. */
function largestTile(
  h: number,
  w: number,
  room: number,
  estimate: (th: number, tw: number) => number,
): { grid: TileGrid; bytes: number } | null {
  for (let t = align8(Math.max(h, w) - 1); t >= minTile; t -= 8) {
    const bytes = estimate(Math.min(t, h), Math.min(t, w));
    if (bytes <= room) return { grid: planTiles(h, w, t, overlapFor(t)), bytes };
  }
  return null;
}

export interface MemoryPlan {
  budgetBytes: number;
  /** Estimates for the untiled calls and the fixed buffers. */
  unetBytes: number;
  vaeBytes: number;
  fixedBytes: number;
  /** null: one call over the whole latent. */
  unetGrid: TileGrid | null;
  vaeGrid: TileGrid | null;
  /** Estimates of one tiled call (equal to the untiled ones without tiling). */
  unetTileBytes: number;
  vaeTileBytes: number;
  /** Why tiling was or was not chosen, for logs and the UI. */
  reason: string;
}

export interface MemoryPlanInput {
  /** UNet batch rows per call (batch x 2 with guidance). */
  rows: number;
  /** Images decoded (one at a time) = batch size. */
  batch: number;
  /** Full latent size. */
  h: number;
  w: number;
  /** settings.upscale.tile: tile size in output pixels; 0 picks from memory. */
  tilePx: number;
  budgetBytes: number;
}

/** Latent tile sides tried from large to small (multiples of 8, the UNet's downsampling). */
const minTile = 16;

function align8(v: number): number {
  return Math.max(8, Math.floor(v / 8) * 8);
}

function overlapFor(tile: number): number {
  return Math.max(2, Math.floor(tile / 4));
}

function fmt(bytes: number): string {
  return bytes >= 1024 * MB
    ? `${(bytes / 1024 / MB).toFixed(1)} GB`
    : `${Math.ceil(bytes / MB)} MB`;
}

/**
 * Decides whether (and how) to tile. With `tilePx` > 0 the caller's tile is used for both the
 * UNet and the VAE when the output is larger than it. Otherwise the largest tile whose estimate
 * fits the budget, or no tiling when the whole call fits. Throws EngineError 'out-of-memory'
 * when not even tiling can fit.
 */
export function planMemory(model: LoadedModel, o: MemoryPlanInput): MemoryPlan {
  const f = model.family.latentScale;
  const { h, w, rows, budgetBytes } = o;
  const unetBytes = unetCallBytes(model, rows, h, w);
  const vaeBytes = vaeCallBytes(model, h, w);
  const latentFloats = o.batch * 4 * h * w;
  const pixels = f * f * h * w;
  const fixedBytes = 8 * 4 * latentFloats + 2 * 7 * pixels;
  const size = `${w * f}x${h * f}`;
  if (fixedBytes > budgetBytes)
    throw new EngineError(
      'out-of-memory',
      `A ${size} image needs about ${fmt(fixedBytes)} for its latents and pixels alone, more than the ${fmt(budgetBytes)} available; choose a smaller size or raise the memory budget.`,
    );
  const room = budgetBytes - fixedBytes;

  if (o.tilePx > 0) {
    const t = align8(o.tilePx / f);
    const grid = t < Math.max(h, w) ? planTiles(h, w, t, overlapFor(t)) : null;
    const th = Math.min(t, h);
    const tw = Math.min(t, w);
    return {
      budgetBytes,
      unetBytes,
      vaeBytes,
      fixedBytes,
      unetGrid: grid,
      vaeGrid: grid,
      unetTileBytes: unetCallBytes(model, rows, th, tw),
      vaeTileBytes: vaeCallBytes(model, th, tw),
      reason: grid
        ? `tiles of ${t * f} px as requested (${grid.tiles.length} tiles)`
        : `the requested ${t * f} px tile covers the whole ${size} image`,
    };
  }

  const pick = (
    whole: number,
    estimate: (th: number, tw: number) => number,
    what: string,
  ): { grid: TileGrid | null; bytes: number } => {
    if (whole <= room) return { grid: null, bytes: whole };
    const fits = largestTile(h, w, room, estimate);
    if (fits) return fits;
    const smallest = estimate(Math.min(minTile, h), Math.min(minTile, w));
    throw new EngineError(
      'out-of-memory',
      `The ${what} at ${size} needs about ${fmt(smallest)} even in tiles of ${minTile * f} px, more than the ${fmt(room)} available; choose a smaller size or raise the memory budget.`,
    );
  };
  const unet = pick(unetBytes, (th, tw) => unetCallBytes(model, rows, th, tw), 'UNet');
  const vae = pick(vaeBytes, (th, tw) => vaeCallBytes(model, th, tw), 'VAE decoder');
  const parts: string[] = [];
  parts.push(
    unet.grid
      ? `UNet in ${unet.grid.tiles.length} tiles of ${unet.grid.tiles[0].w * f}x${unet.grid.tiles[0].h * f} px (whole: ${fmt(unetBytes)})`
      : `UNet whole (${fmt(unetBytes)})`,
  );
  parts.push(
    vae.grid
      ? `VAE in ${vae.grid.tiles.length} tiles (whole: ${fmt(vaeBytes)})`
      : `VAE whole (${fmt(vaeBytes)})`,
  );
  return {
    budgetBytes,
    unetBytes,
    vaeBytes,
    fixedBytes,
    unetGrid: unet.grid,
    vaeGrid: vae.grid,
    unetTileBytes: unet.bytes,
    vaeTileBytes: vae.bytes,
    reason: `${parts.join('; ')}; budget ${fmt(budgetBytes)}`,
  };
}
