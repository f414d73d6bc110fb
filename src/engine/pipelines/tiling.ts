/**
 * Tiled diffusion and tiled VAE decode/encode: run a model on overlapping tiles and blend the
 * overlaps with smooth weights, so an output larger than one model call can hold completes.
 *
 * Tiled diffusion follows MultiDiffusion (Bar-Tal et al. 2023, "MultiDiffusion: Fusing
 * Diffusion Paths for Controlled Image Generation", Eq. 5): every step the denoiser runs on each
 * tile and each latent pixel takes the weighted mean of the tiles covering it. We fuse the
 * model's prediction rather than the stepped latents; for every sampler here a step is linear in
 * the prediction with coefficients shared by all pixels (and ancestral noise is drawn once for
 * the whole latent), so the two are the same. The weights are a feather (a quadratic ramp,
 * ((d + 0.5) / overlap)^2 at distance d from a tile edge inside the image, 1 elsewhere) instead
 * of MultiDiffusion's uniform ones, in the spirit of Mixture of Diffusers (Jiménez 2023,
 * Gaussian tile weights): a tile's edge, where its convolutions see padding instead of context,
 * contributes almost nothing (1/64 of the weight at overlap 4; a linear ramp left measurable
 * seams in tests/integration/upscale.test.ts).
 *
 * Tiled VAE decoding decodes overlapping latent tiles and blends them in pixel space with the
 * same feather (the approach of tiled VAE decoders such as diffusers' AutoencoderKL.tiled_decode,
 * which blends overlaps linearly; here the same quadratic feather). A decoder whose receptive field is local gives the untiled
 * result; GroupNorm statistics of a real VAE are per tile (a known limit of tiled decoding).
 */
import { EngineError, throwIfAborted } from '../errors';
import type { PixelImage } from '../image';
import { tensorToImage } from '../image';
import type { ComponentSession } from '../models';
import type { ModelPredict } from '../schedulers';
import { TorchGenerator } from '../rng';
import { floatsToOrt, ortToFloat32 } from '../tensor';
import { type StageTimings, timedRun } from './stats';

/** A rectangle in latent pixels. */
export interface Tile {
  y: number;
  x: number;
  h: number;
  w: number;
}

export interface TileGrid {
  /** Full latent size. */
  h: number;
  w: number;
  /** Requested overlap in latent pixels (tiles may overlap more to cover the size evenly). */
  overlap: number;
  tiles: Tile[];
}

/** Start offsets of tiles of length `tile` covering `size` with at least `overlap` shared. */
function axisStarts(size: number, tile: number, overlap: number): number[] {
  if (size <= tile) return [0];
  const stride = Math.max(1, tile - overlap);
  const n = Math.ceil((size - tile) / stride) + 1;
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(Math.round((i * (size - tile)) / (n - 1)));
  return out;
}

/**
 * Overlapping tiles of at most `tile` x `tile` latent pixels over an h x w latent, spread evenly
 * so the first starts at 0 and the last ends at the edge.
 */
export function planTiles(h: number, w: number, tile: number, overlap: number): TileGrid {
  if (!(tile >= 1) || !Number.isInteger(tile))
    throw new EngineError('bad-input', `Tile size ${tile} is not a positive whole number.`);
  const ov = Math.max(0, Math.min(Math.floor(overlap), tile - 1));
  const th = Math.min(tile, h);
  const tw = Math.min(tile, w);
  const tiles: Tile[] = [];
  for (const y of axisStarts(h, th, ov))
    for (const x of axisStarts(w, tw, ov)) tiles.push({ y, x, h: th, w: tw });
  return { h, w, overlap: ov, tiles };
}

/** The grid scaled by an integer factor (latent tiles -> pixel tiles). */
export function scaleGrid(grid: TileGrid, f: number): TileGrid {
  return {
    h: grid.h * f,
    w: grid.w * f,
    overlap: grid.overlap * f,
    tiles: grid.tiles.map((t) => ({ y: t.y * f, x: t.x * f, h: t.h * f, w: t.w * f })),
  };
}

/** 1-D feather: a quadratic ramp over `ramp` samples towards edges inside the image. */
function ramp1d(start: number, len: number, size: number, ramp: number): Float32Array {
  const out = new Float32Array(len);
  for (let i = 0; i < len; i++) {
    const lo = start > 0 ? i : Infinity;
    const hi = start + len < size ? len - 1 - i : Infinity;
    const d = Math.min(lo, hi);
    const t = ramp <= 0 ? 1 : Math.min(1, (d + 0.5) / ramp);
    out[i] = t * t;
  }
  return out;
}

/** Per-pixel blend weights of a tile (row-major h x w), always > 0. */
export function tileWeights(tile: Tile, grid: TileGrid): Float32Array {
  const wy = ramp1d(tile.y, tile.h, grid.h, grid.overlap);
  const wx = ramp1d(tile.x, tile.w, grid.w, grid.overlap);
  const out = new Float32Array(tile.h * tile.w);
  for (let y = 0; y < tile.h; y++)
    for (let x = 0; x < tile.w; x++) out[y * tile.w + x] = wy[y] * wx[x];
  return out;
}

/** 1 / (sum of the weights covering each pixel), h x w. */
function inverseCoverage(grid: TileGrid, weights: Float32Array[]): Float32Array {
  const sum = new Float32Array(grid.h * grid.w);
  grid.tiles.forEach((t, k) => {
    const wt = weights[k];
    for (let y = 0; y < t.h; y++)
      for (let x = 0; x < t.w; x++) sum[(t.y + y) * grid.w + t.x + x] += wt[y * t.w + x];
  });
  for (let i = 0; i < sum.length; i++) {
    if (!(sum[i] > 0)) throw new EngineError('internal', 'A latent pixel is covered by no tile.');
    sum[i] = 1 / sum[i];
  }
  return sum;
}

/** Copies tile `t` out of planes [N, H, W] (N = batch * channels) into [N, t.h, t.w]. */
export function cropPlanes(src: Float32Array, planes: number, H: number, W: number, t: Tile) {
  const out = new Float32Array(planes * t.h * t.w);
  for (let p = 0; p < planes; p++)
    for (let y = 0; y < t.h; y++) {
      const s = p * H * W + (t.y + y) * W + t.x;
      out.set(src.subarray(s, s + t.w), p * t.h * t.w + y * t.w);
    }
  return out;
}

/** acc[N, H, W] += tileData[N, t.h, t.w] * weight[t.h, t.w]. */
function accumulate(
  acc: Float32Array,
  planes: number,
  H: number,
  W: number,
  t: Tile,
  data: Float32Array,
  weight: Float32Array,
) {
  for (let p = 0; p < planes; p++)
    for (let y = 0; y < t.h; y++) {
      const d = p * H * W + (t.y + y) * W + t.x;
      const s = p * t.h * t.w + y * t.w;
      for (let x = 0; x < t.w; x++) acc[d + x] += data[s + x] * weight[y * t.w + x];
    }
}

function normalize(acc: Float32Array, planes: number, inv: Float32Array) {
  const plane = inv.length;
  for (let p = 0; p < planes; p++) {
    const o = p * plane;
    for (let i = 0; i < plane; i++) acc[o + i] *= inv[i];
  }
}

/**
 * MultiDiffusion: a model call over [batch, 4, grid.h, grid.w] made of one call per tile
 * (`tileModel(tile, k)` gives the call for tile k; it is asked once per tile and kept), fused
 * with the feather weights.
 */
export function tiledPredict(
  grid: TileGrid,
  batch: number,
  channels: number,
  tileModel: (tile: Tile, index: number) => ModelPredict,
): ModelPredict {
  const weights = grid.tiles.map((t) => tileWeights(t, grid));
  const inv = inverseCoverage(grid, weights);
  const models: (ModelPredict | undefined)[] = [];
  const planes = batch * channels;
  return async (x, timestep, info) => {
    const out = new Float32Array(x.length);
    for (let k = 0; k < grid.tiles.length; k++) {
      const t = grid.tiles[k];
      const model = (models[k] ??= tileModel(t, k));
      const pred = await model(cropPlanes(x, planes, grid.h, grid.w, t), timestep, info);
      if (pred.length !== planes * t.h * t.w)
        throw new EngineError(
          'model-shape',
          `The UNet returned ${pred.length} values for a ${t.w}x${t.h} tile.`,
        );
      accumulate(out, planes, grid.h, grid.w, t, pred, weights[k]);
    }
    normalize(out, planes, inv);
    return out;
  };
}

export interface VaeContext {
  timings: StageTimings;
  signal?: AbortSignal;
}

/** One decoder call: latents [1,4,h,w] (unscaled) -> floats [3, f*h, f*w]. */
async function decodeOnce(
  ctx: VaeContext,
  decoder: ComponentSession,
  latent: Float32Array,
  h: number,
  w: number,
): Promise<{ data: Float32Array; H: number; W: number }> {
  const spec = decoder.input('latent_sample') ?? decoder.signature.inputs[0];
  const out = await timedRun(
    ctx.timings,
    decoder,
    { [spec.name]: floatsToOrt(latent, [1, 4, h, w], spec, { model: decoder.file }) },
    ctx.signal,
  );
  const name = out.sample ? 'sample' : decoder.signature.outputs[0].name;
  const dims = out[name].dims as number[];
  if (dims.length !== 4 || dims[1] !== 3)
    throw new EngineError(
      'model-shape',
      `${decoder.file} returned shape [${dims.join(',')}]; expected [1,3,H,W].`,
      { file: decoder.file },
    );
  return { data: ortToFloat32(out[name], name), H: dims[2], W: dims[3] };
}

/**
 * Decodes image `index` of scaled latents [B,4,h,w]: divides by the VAE scaling factor, decodes
 * tile by tile when `grid` is given (else in one call), and blends the tiles in pixel space.
 */
export async function decodeLatents(
  ctx: VaeContext,
  decoder: ComponentSession,
  latents: Float32Array,
  index: number,
  h: number,
  w: number,
  scalingFactor: number,
  grid: TileGrid | null,
): Promise<PixelImage> {
  const per = 4 * h * w;
  const z = new Float32Array(per);
  const inv = 1 / scalingFactor;
  for (let i = 0; i < per; i++) z[i] = latents[index * per + i] * inv;
  if (!grid || grid.tiles.length <= 1) {
    const one = await decodeOnce(ctx, decoder, z, h, w);
    return tensorToImage(one.data, [1, 3, one.H, one.W], 0);
  }
  let acc: Float32Array | null = null;
  let pixelGrid: TileGrid | null = null;
  let weights: Float32Array[] = [];
  let f = 0;
  for (let k = 0; k < grid.tiles.length; k++) {
    throwIfAborted(ctx.signal, 'Decoding');
    const t = grid.tiles[k];
    const one = await decodeOnce(ctx, decoder, cropPlanes(z, 4, h, w, t), t.h, t.w);
    if (!acc) {
      f = one.H / t.h;
      if (!Number.isInteger(f) || one.W !== t.w * f)
        throw new EngineError(
          'model-shape',
          `${decoder.file} turned a ${t.w}x${t.h} latent into ${one.W}x${one.H} pixels; tiled decoding needs a whole scale factor.`,
          { file: decoder.file },
        );
      pixelGrid = scaleGrid(grid, f);
      weights = pixelGrid.tiles.map((pt) => tileWeights(pt, pixelGrid!));
      acc = new Float32Array(3 * h * f * w * f);
    }
    accumulate(acc, 3, h * f, w * f, pixelGrid!.tiles[k], one.data, weights[k]);
  }
  normalize(acc!, 3, inverseCoverage(pixelGrid!, weights));
  return tensorToImage(acc!, [1, 3, h * f, w * f], 0);
}

/**
 * VAE-encodes an image tensor [1,3,H,W] in [-1,1] to scaled latents [4, H/f, W/f], tile by
 * tile when `grid` (latent coordinates) is given. Handles both encoder outputs: `latent_sample`,
 * and optimum's `latent_parameters` (mean and log-variance, blended separately, then sampled
 * with the fixed generator the untiled path uses, so a local encoder gives the same latents).
 */
export async function encodeImageTensor(
  ctx: VaeContext,
  encoder: ComponentSession,
  image: Float32Array,
  H: number,
  W: number,
  factor: number,
  scalingFactor: number,
  grid: TileGrid | null,
): Promise<Float32Array> {
  const h = H / factor;
  const w = W / factor;
  const spec = encoder.input('sample') ?? encoder.signature.inputs[0];
  const run = async (data: Float32Array, th: number, tw: number) => {
    const out = await timedRun(
      ctx.timings,
      encoder,
      { [spec.name]: floatsToOrt(data, [1, 3, th, tw], spec, { model: encoder.file }) },
      ctx.signal,
    );
    const name = out.latent_sample
      ? 'latent_sample'
      : out.latent_parameters
        ? 'latent_parameters'
        : encoder.signature.outputs[0].name;
    return ortToFloat32(out[name], name);
  };
  let params: Float32Array;
  if (!grid || grid.tiles.length <= 1) {
    params = await run(image, H, W);
  } else {
    const pixel = scaleGrid(grid, factor);
    const weights = grid.tiles.map((t) => tileWeights(t, grid));
    let acc: Float32Array | null = null;
    let planes = 0;
    for (let k = 0; k < grid.tiles.length; k++) {
      throwIfAborted(ctx.signal, 'Encoding');
      const t = grid.tiles[k];
      const pt = pixel.tiles[k];
      const out = await run(cropPlanes(image, 3, H, W, pt), pt.h, pt.w);
      if (!acc) {
        planes = out.length / (t.h * t.w);
        acc = new Float32Array(planes * h * w);
      }
      accumulate(acc, planes, h, w, t, out, weights[k]);
    }
    normalize(acc!, planes, inverseCoverage(grid, weights));
    params = acc!;
  }
  const n = 4 * h * w;
  let latents: Float32Array;
  if (params.length === n) latents = params;
  else if (params.length === 2 * n) {
    // As encodeImage (generate.ts): logvar clamped to [-30, 20], eps from a generator seeded 0.
    const eps = new TorchGenerator(0).randn([n]);
    latents = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      const logvar = Math.min(20, Math.max(-30, params[n + i]));
      latents[i] = params[i] + Math.exp(logvar / 2) * eps[i];
    }
  } else
    throw new EngineError(
      'model-shape',
      `${encoder.file} returned ${params.length} values for a ${w}x${h} latent.`,
      { file: encoder.file },
    );
  for (let i = 0; i < n; i++) latents[i] *= scalingFactor;
  return latents;
}

/**
 * Bilinear resize of latents [planes, h, w] -> [planes, oh, ow] with half-pixel centres and no
 * antialiasing: torch.nn.functional.interpolate(mode="bilinear", align_corners=False), which is
 * A1111's "Latent" hires upscaler.
 */
export function resizeLatentBilinear(
  src: Float32Array,
  planes: number,
  h: number,
  w: number,
  oh: number,
  ow: number,
): Float32Array {
  const out = new Float32Array(planes * oh * ow);
  const axis = (o: number, n: number, i: number) => {
    const s = Math.max(0, ((i + 0.5) * n) / o - 0.5);
    const i0 = Math.min(n - 1, Math.floor(s));
    const i1 = Math.min(n - 1, i0 + 1);
    return { i0, i1, f: s - i0 };
  };
  const ys = Array.from({ length: oh }, (_, i) => axis(oh, h, i));
  const xs = Array.from({ length: ow }, (_, i) => axis(ow, w, i));
  for (let p = 0; p < planes; p++) {
    const base = p * h * w;
    for (let y = 0; y < oh; y++) {
      const { i0: y0, i1: y1, f: fy } = ys[y];
      for (let x = 0; x < ow; x++) {
        const { i0: x0, i1: x1, f: fx } = xs[x];
        const a = src[base + y0 * w + x0];
        const b = src[base + y0 * w + x1];
        const c = src[base + y1 * w + x0];
        const d = src[base + y1 * w + x1];
        out[p * oh * ow + y * ow + x] =
          (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy;
      }
    }
  }
  return out;
}
