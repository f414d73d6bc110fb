/**
 * The invisible watermark of Stable Diffusion's reference scripts: the `dwtDct` method of the
 * invisible-watermark library (github.com/ShieldMnt/invisible-watermark, imwatermark/maxDct.py,
 * v0.2.0), bit-compatible in both directions. Facts learnt by running that library (see
 * tools/watermark/record.py); the code is ours.
 *
 * The library's layout, which any reader of these marks assumes:
 *  - colour: OpenCV's 8-bit BGR->YUV; only U is marked (the library's scales are [0, 36, 36] but
 *    its loop visits channels 0 and 1 only, and Y's scale is 0);
 *  - the top-left `floor(h/4)*4 x floor(w/4)*4` pixels, one level of the Haar DWT, LL band only
 *    (LL = sum of a 2x2 pixel patch / 2);
 *  - LL is cut into 4x4 blocks, row-major; block number n carries bit `n mod length`;
 *  - in a block, the coefficient of largest magnitude other than the block's first (index 0 of
 *    the row-major 16) carries the bit: `|v| mod 36 > 18` reads 1. (Despite the name, no DCT is
 *    taken in this mode.)
 *  - decoding averages the block readings of each bit; `mean * 255 > 127` gives 1.
 *
 * Where we differ from the library's encoder, without changing what its decoder reads: we move
 * each coefficient to the nearest level of its bit (`36k + 9 + 18*bit`, the library always takes
 * the level at or below), keep it the block's largest (else the decoder reads another one), leave
 * the detail bands alone (the library writes H and V back swapped, which costs about 4 dB) and
 * check the rounded result, fixing the blocks that rounding or clipping flipped.
 *
 * And one addition the library's decoder never looks at: a second copy of the message in the
 * luma (Y) channel, same layout, at a finer step (LUMA_SCALE). JPEG's default 4:2:0 chroma
 * keeps one chroma sample per 2x2 pixels and quantizes it coarsely, which wipes out the U mark
 * (the library's own marks too: its decoder reads chance after `cv2.imwrite(..., q90)`); luma
 * keeps its full resolution, so the copy survives. It moves R, G and B alike, which leaves U
 * untouched, and costs about 0.2 dB.
 */
import { EngineError } from '../errors';
import type { PixelImage } from './pixels';
import { resizeBilinear } from './resize';

/** A message the reference scripts write. */
export interface WatermarkMessage {
  /** Stable identifier, recorded in the history and our PNG JSON. */
  id: 'sd1' | 'sdxl';
  /** What a person reads: the text, or the bits in hex. */
  label: string;
  /** Who writes it. */
  writer: string;
  /** The bits, most significant first (numpy's unpackbits order). */
  bits: Uint8Array;
}

function bytesToBits(bytes: Uint8Array): Uint8Array {
  const bits = new Uint8Array(bytes.length * 8);
  for (let i = 0; i < bits.length; i++) bits[i] = (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
  return bits;
}

function binaryToBits(binary: string): Uint8Array {
  return Uint8Array.from(binary, (c) => (c === '1' ? 1 : 0));
}

/** SD 1.x/2.x scripts (CompVis/stable-diffusion scripts/txt2img.py): the UTF-8 text, 136 bits. */
export const SD1_WATERMARK: WatermarkMessage = {
  id: 'sd1',
  label: 'StableDiffusionV1',
  writer: 'Stable Diffusion 1/2 reference scripts',
  bits: bytesToBits(new TextEncoder().encode('StableDiffusionV1')),
};

/**
 * SDXL (Stability-AI/generative-models sgm/inference/helpers.py, also diffusers' SDXL
 * watermarker): the fixed 48-bit message 0xB3EC907BB19E.
 */
export const SDXL_WATERMARK: WatermarkMessage = {
  id: 'sdxl',
  label: '0xB3EC907BB19E',
  writer: 'SDXL reference scripts (sgm, diffusers)',
  bits: binaryToBits('101100111110110010010000011110111011000110011110'),
};

export const WATERMARK_MESSAGES: readonly WatermarkMessage[] = [SD1_WATERMARK, SDXL_WATERMARK];

/** The message the reference scripts of a model family write: SDXL's for SDXL, else SD 1/2's. */
export function watermarkForFamily(family: string | null | undefined): WatermarkMessage {
  return family?.startsWith('sdxl') ? SDXL_WATERMARK : SD1_WATERMARK;
}

/** The library refuses images under 256x256 pixels in area; so do we. */
export const WATERMARK_MIN_PIXELS = 256 * 256;

const SCALE = 36;
const BLOCK = 4;
/**
 * The luma copy's step. Luma survives JPEG far better than chroma, so a finer step than U's 36
 * suffices: at 12 every fixture still reads after JPEG q90 with 4:2:0 chroma (tested), for a
 * fraction of a dB.
 */
const LUMA_SCALE = 12;
/** Margin inside the luma copy's half-period (rounding to 8 bits moves LL by about 1). */
const LUMA_BIT_MARGIN = 1.5;

/** Which plane carries a mark: U (the library's) or our luma copy. */
export type WatermarkChannel = 'u' | 'y';

/** OpenCV's 8-bit BGR->YUV Y (14-bit fixed point, rounded), for every pixel of the region. */
function yChannel(img: PixelImage, w: number, h: number): Float32Array {
  const { data, channels, width } = img;
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    let p = y * width * channels;
    for (let x = 0; x < w; x++, p += channels)
      out[y * w + x] = (data[p]! * 4899 + data[p + 1]! * 9617 + data[p + 2]! * 1868 + 8192) >> 14;
  }
  return out;
}

function plane(img: PixelImage, l: Layout, channel: WatermarkChannel): Float32Array {
  return channel === 'y' ? yChannel(img, l.w, l.h) : uChannel(img, l.w, l.h);
}

/**
 * OpenCV's 8-bit BGR->YUV U channel (modules/imgproc color_yuv: 14-bit fixed point, Y rounded
 * first, then U = (B - Y) * 0.492 + 128 rounded and saturated), for every pixel of the region.
 */
function uChannel(img: PixelImage, w: number, h: number): Float32Array {
  const { data, channels, width } = img;
  const u = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    let p = y * width * channels;
    for (let x = 0; x < w; x++, p += channels) {
      const r = data[p]!;
      const g = data[p + 1]!;
      const b = data[p + 2]!;
      const luma = (r * 4899 + g * 9617 + b * 1868 + 8192) >> 14;
      const v = ((b - luma) * 8061 + (128 << 14) + 8192) >> 14;
      u[y * w + x] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return u;
}

interface Layout {
  /** Region in pixels (multiples of 4). */
  w: number;
  h: number;
  /** LL band size. */
  lw: number;
  lh: number;
  /** Blocks per LL row and column. */
  bx: number;
  by: number;
}

function layout(img: PixelImage, what: string): Layout {
  if (img.channels !== 3 && img.channels !== 4)
    throw new EngineError('bad-input', `The ${what} must be RGB or RGBA to carry a watermark.`);
  if (img.width * img.height < WATERMARK_MIN_PIXELS)
    throw new EngineError(
      'bad-input',
      `The ${what} is ${img.width}x${img.height}; a watermark needs at least 256x256 pixels.`,
    );
  const w = Math.floor(img.width / 4) * 4;
  const h = Math.floor(img.height / 4) * 4;
  const lw = w / 2;
  const lh = h / 2;
  return { w, h, lw, lh, bx: Math.floor(lw / BLOCK), by: Math.floor(lh / BLOCK) };
}

/** pywt's Haar analysis taps: float64 sqrt(2)/2. */
const HAAR = Math.SQRT1_2;

/**
 * LL of one level of pywt's `dwt2(u, 'haar')`: columns first, then rows, each output
 * `HAAR * a + HAAR * b` in float64 exactly as pywt sums it. (That is (a + b + c + d) / 2 up to
 * the last bit, and the last bit decides readings that fall exactly on 18 mod 36.)
 */
function lowBand(u: Float32Array, l: Layout): Float64Array {
  const ll = new Float64Array(l.lw * l.lh);
  for (let i = 0; i < l.lh; i++) {
    const top = 2 * i * l.w;
    const bottom = top + l.w;
    for (let j = 0; j < l.lw; j++) {
      const x = 2 * j;
      const left = HAAR * u[top + x]! + HAAR * u[bottom + x]!;
      const right = HAAR * u[top + x + 1]! + HAAR * u[bottom + x + 1]!;
      ll[i * l.lw + j] = HAAR * left + HAAR * right;
    }
  }
  return ll;
}

/** The LL index of the block's carrier: largest magnitude except entry 0, first on ties. */
function carrier(ll: Float64Array, l: Layout, bi: number, bj: number): number {
  let best = -1;
  let bestIndex = 0;
  for (let k = 1; k < BLOCK * BLOCK; k++) {
    const idx = (bi * BLOCK + (k >> 2)) * l.lw + bj * BLOCK + (k & 3);
    const a = Math.abs(ll[idx]!);
    if (a > best) {
      best = a;
      bestIndex = idx;
    }
  }
  return bestIndex;
}

function readBit(value: number, scale = SCALE): number {
  return Math.abs(value) % scale > scale / 2 ? 1 : 0;
}

/** The block's largest magnitude other than entry 0 and `except`. */
function runnerUp(ll: Float64Array, l: Layout, bi: number, bj: number, except: number): number {
  let best = 0;
  for (let k = 1; k < BLOCK * BLOCK; k++) {
    const idx = (bi * BLOCK + (k >> 2)) * l.lw + bj * BLOCK + (k & 3);
    if (idx !== except) best = Math.max(best, Math.abs(ll[idx]!));
  }
  return best;
}

/** Margin kept between the carrier and the block's next largest, so rounding keeps it first. */
const CARRIER_MARGIN = 2;
/**
 * How far inside its half-period a carrier is put: 8-bit rounding moves LL by about 1 and the
 * check passes fix the rest, so 2.5 keeps the reading; a wider margin costs PSNR (the library's
 * centre, 9, gives about 38 dB).
 */
const BIT_MARGIN = 2.5;

/** Whether `magnitude` reads `bit` at least BIT_MARGIN inside its half-period. */
function readsWithMargin(
  magnitude: number,
  bit: number,
  scale = SCALE,
  margin = BIT_MARGIN,
): boolean {
  const r = (magnitude % scale) - (bit * scale) / 2;
  return r >= margin && r <= scale / 2 - margin;
}

/**
 * The magnitude nearest to `magnitude` that reads `bit` with the margin and stays at least
 * CARRIER_MARGIN above `floor` (the block's next largest), so the decoder finds it again.
 */
function targetMagnitude(
  magnitude: number,
  bit: number,
  floor: number,
  scale = SCALE,
  margin = BIT_MARGIN,
): number {
  const lo = (bit * scale) / 2 + margin;
  const hi = (bit * scale) / 2 + scale / 2 - margin;
  const base = Math.floor(magnitude / scale) * scale;
  let best = Infinity;
  for (let k = -1; k <= 1; k++) {
    const t = Math.min(Math.max(magnitude, base + k * scale + lo), base + k * scale + hi);
    if (t >= 0 && Math.abs(t - magnitude) < Math.abs(best - magnitude)) best = t;
  }
  if (best >= floor + CARRIER_MARGIN) return best;
  // Else the smallest magnitude at least floor + margin that reads `bit`.
  const f = floor + CARRIER_MARGIN;
  const start = Math.floor(f / scale) * scale;
  if (f <= start + hi) return Math.max(f, start + lo);
  return start + scale + lo;
}

/**
 * U = 0.492 (B - Y) with Y = 0.299 R + 0.587 G + 0.114 B, so dU/d(R, G, B) = 0.492 (-0.299,
 * -0.587, 0.886). Moving RGB along that gradient is the smallest RGB change (least squared
 * error, about 1 dB better PSNR than holding Y and V) that moves U by a given amount.
 */
const U_GRADIENT = [-0.299 * 0.492, -0.587 * 0.492, 0.886 * 0.492] as const;
const U_NORM2 = U_GRADIENT[0] ** 2 + U_GRADIENT[1] ** 2 + U_GRADIENT[2] ** 2;
const U_STEP = U_GRADIENT.map((g) => g / U_NORM2);

/** Equal R, G and B steps move Y one for one and leave U and V where they are. */
const Y_STEP = [1, 1, 1] as const;

/** Adds `delta` to U (or, with Y_STEP, to Y) over the 2x2 patch of LL entry `idx`. */
function shiftPatch(
  out: Float32Array,
  img: PixelImage,
  l: Layout,
  idx: number,
  delta: number,
  step: readonly number[] = U_STEP,
): void {
  const i = Math.floor(idx / l.lw);
  const j = idx - i * l.lw;
  const c = img.channels;
  for (let dy = 0; dy < 2; dy++) {
    for (let dx = 0; dx < 2; dx++) {
      const p = ((2 * i + dy) * img.width + 2 * j + dx) * c;
      for (let ch = 0; ch < 3; ch++) out[p + ch] = out[p + ch]! + step[ch]! * delta;
    }
  }
}

function toBytes(values: Float32Array, like: PixelImage): Uint8Array {
  const bytes = new Uint8Array(values.length);
  for (let k = 0; k < values.length; k++) {
    const v = Math.round(values[k]!);
    bytes[k] = v < 0 ? 0 : v > 255 ? 255 : v;
  }
  if (like.channels === 4) for (let k = 3; k < bytes.length; k += 4) bytes[k] = like.data[k]!;
  return bytes;
}

/**
 * LL as it comes back from a JPEG with 4:2:0 chroma (the default of libjpeg, OpenCV and sharp)
 * or from halving and restoring the size: the encoder averages each 2x2 chroma patch (exactly
 * an LL entry, over 2) and the decoder's "fancy" upsampling (libjpeg jdsample.c: 3/4 nearer,
 * 1/4 farther sample) spreads it back, so each patch mean becomes [1/8, 3/4, 1/8] of its
 * neighbours along each axis. Edges repeat, as libjpeg does.
 */
function smoothLow(ll: Float64Array, l: Layout): Float64Array {
  const rows = new Float64Array(ll.length);
  for (let i = 0; i < l.lh; i++)
    for (let j = 0; j < l.lw; j++) {
      const c = ll[i * l.lw + j]!;
      const left = j > 0 ? ll[i * l.lw + j - 1]! : c;
      const right = j < l.lw - 1 ? ll[i * l.lw + j + 1]! : c;
      rows[i * l.lw + j] = 0.75 * c + 0.125 * (left + right);
    }
  const out = new Float64Array(ll.length);
  for (let i = 0; i < l.lh; i++)
    for (let j = 0; j < l.lw; j++) {
      const c = rows[i * l.lw + j]!;
      const up = i > 0 ? rows[(i - 1) * l.lw + j]! : c;
      const down = i < l.lh - 1 ? rows[(i + 1) * l.lw + j]! : c;
      out[i * l.lw + j] = 0.75 * c + 0.125 * (up + down);
    }
  return out;
}

/** A carrier's own weight in smoothLow: 3/4 x 3/4. */
const SMOOTH_SELF = 0.5625;
/** Margins kept after smoothing: the bit inside its half-period, the carrier above the rest. */
const SMOOTH_BIT_MARGIN = 2;
const SMOOTH_CARRIER_MARGIN = 1;
/** The largest LL change spent on a block for robustness; dearer blocks are left to the vote. */
const ROBUST_MAX_CHANGE = SCALE / 2;

/**
 * The cheapest change of one coefficient of the block that the decoder reads as `bit` both as
 * the image is and after 4:2:0 chroma (smoothLow): [index, new value], or null if none within
 * a period and a half.
 */
function robustChange(
  ll: Float64Array,
  sm: Float64Array,
  l: Layout,
  bi: number,
  bj: number,
  bit: number,
): [number, number] | null {
  // The two largest of the block (entry 0 aside), raw and smoothed: the floor a candidate must
  // clear is the largest of the others, so the first, or the second for the first itself.
  let r1 = -1;
  let r2 = 0;
  let rAt = -1;
  let s1 = -1;
  let s2 = 0;
  let sAt = -1;
  for (let q = 1; q < BLOCK * BLOCK; q++) {
    const idx = (bi * BLOCK + (q >> 2)) * l.lw + bj * BLOCK + (q & 3);
    const r = ll[idx]!;
    if (r > r1) [r2, r1, rAt] = [r1 < 0 ? 0 : r1, r, idx];
    else if (r > r2) r2 = r;
    const v = sm[idx]!;
    if (v > s1) [s2, s1, sAt] = [s1 < 0 ? 0 : s1, v, idx];
    else if (v > s2) s2 = v;
  }
  let best: [number, number] | null = null;
  let bestCost = Infinity;
  for (let k = 1; k < BLOCK * BLOCK; k++) {
    const p = (bi * BLOCK + (k >> 2)) * l.lw + bj * BLOCK + (k & 3);
    const rawFloor = p === rAt ? r2 : r1;
    const smFloor = p === sAt ? s2 : s1;
    const v = ll[p]!;
    const s = sm[p]!;
    for (let d = 0; d < Math.min(bestCost, ROBUST_MAX_CHANGE); d += 0.5) {
      for (let sign = 1; sign >= -1; sign -= 2) {
        const t = v + sign * d;
        if (t < 0 || t < rawFloor + CARRIER_MARGIN || !readsWithMargin(t, bit)) continue;
        const f = s + SMOOTH_SELF * (t - v);
        if (f < smFloor + SMOOTH_CARRIER_MARGIN) continue;
        const r = (f % SCALE) - (bit * SCALE) / 2;
        if (r < SMOOTH_BIT_MARGIN || r > SCALE / 2 - SMOOTH_BIT_MARGIN) continue;
        best = [p, t];
        bestCost = d;
        break;
      }
      if (best && best[0] === p) break;
    }
  }
  return best;
}

/** Whether an image is large enough to carry a mark (the library's own limit). */
export function canWatermark(img: Pick<PixelImage, 'width' | 'height'>): boolean {
  return img.width * img.height >= WATERMARK_MIN_PIXELS;
}

/**
 * Returns a copy of `img` (RGB or RGBA; alpha kept) carrying `bits` in the library's dwtDct
 * layout, readable by its `WatermarkDecoder('bits', bits.length).decode(bgr, 'dwtDct')`.
 * Throws a bad-input EngineError for an image under 256x256 pixels or an empty message.
 */
export function embedWatermark(img: PixelImage, bits: ArrayLike<number>): PixelImage {
  const l = layout(img, 'image');
  if (bits.length === 0) throw new EngineError('bad-input', 'A watermark needs at least one bit.');
  const work = new Float32Array(img.data);
  let current: PixelImage = img;
  // Later passes fix the blocks that rounding to 8 bits or clipping at 0/255 flipped, and the
  // luma blocks that the U pass moved (a U step changes Y too; a Y step leaves U alone): each
  // pass starts again from what the decoder would read.
  for (let pass = 0; pass < 4; pass++) {
    const markedU = markChroma(current, work, l, bits);
    if (markedU) current = { ...img, data: toBytes(work, img) };
    const markedY = markLuma(current, work, l, bits);
    if (markedY) current = { ...img, data: toBytes(work, img) };
    if (!markedU && !markedY) break;
  }
  return current;
}

/**
 * The cheapest plain change of a block that reads `bit` as the image is: the carrier moved to
 * its nearest reading level above the next largest, or another coefficient raised to a reading
 * level above the carrier. [LL index, new magnitude].
 */
function plainChange(
  ll: Float64Array,
  l: Layout,
  bi: number,
  bj: number,
  bit: number,
  scale: number,
  margin: number,
): [number, number] {
  const idx = carrier(ll, l, bi, bj);
  const mag = Math.abs(ll[idx]!);
  let bestIdx = idx;
  let bestTarget = targetMagnitude(mag, bit, runnerUp(ll, l, bi, bj, idx), scale, margin);
  for (let k = 1; k < BLOCK * BLOCK; k++) {
    const other = (bi * BLOCK + (k >> 2)) * l.lw + bj * BLOCK + (k & 3);
    if (other === idx) continue;
    const m = Math.abs(ll[other]!);
    const t = targetMagnitude(m, bit, mag, scale, margin);
    if (Math.abs(t - m) < Math.abs(bestTarget - Math.abs(ll[bestIdx]!))) {
      bestIdx = other;
      bestTarget = t;
    }
  }
  return [bestIdx, bestTarget];
}

/** One pass of the library's U mark over `current`, shifting `work`; whether anything moved. */
function markChroma(
  current: PixelImage,
  work: Float32Array,
  l: Layout,
  bits: ArrayLike<number>,
): boolean {
  const ll = lowBand(plane(current, l, 'u'), l);
  const sm = smoothLow(ll, l);
  let changed = false;
  for (let bi = 0; bi < l.by; bi++) {
    for (let bj = 0; bj < l.bx; bj++) {
      const bit = bits[(bi * l.bx + bj) % bits.length]! & 1;
      const idx = carrier(ll, l, bi, bj);
      const mag = Math.abs(ll[idx]!);
      const smoothOk =
        carrier(sm, l, bi, bj) === idx &&
        readsWithMargin(sm[idx]!, bit) &&
        sm[idx]! >= runnerUp(sm, l, bi, bj, idx) + SMOOTH_CARRIER_MARGIN;
      // An untouched block keeps its values, so a carrier that reads right stays the carrier.
      if (readsWithMargin(mag, bit) && smoothOk) continue;
      const [bestIdx, bestTarget] =
        robustChange(ll, sm, l, bi, bj, bit) ?? plainChange(ll, l, bi, bj, bit, SCALE, BIT_MARGIN);
      const v = ll[bestIdx]!;
      const target = bestTarget * (v < 0 ? -1 : 1);
      if (target === v) continue;
      // LL is half the patch sum, so each of the four pixels moves by half the change.
      shiftPatch(work, current, l, bestIdx, (target - v) / 2);
      changed = true;
    }
  }
  return changed;
}

/** One pass of our luma copy (see the file's doc) over `current`; whether anything moved. */
function markLuma(
  current: PixelImage,
  work: Float32Array,
  l: Layout,
  bits: ArrayLike<number>,
): boolean {
  const ll = lowBand(plane(current, l, 'y'), l);
  let changed = false;
  for (let bi = 0; bi < l.by; bi++) {
    for (let bj = 0; bj < l.bx; bj++) {
      const bit = bits[(bi * l.bx + bj) % bits.length]! & 1;
      const idx = carrier(ll, l, bi, bj);
      if (readsWithMargin(Math.abs(ll[idx]!), bit, LUMA_SCALE, LUMA_BIT_MARGIN)) continue;
      const [at, magnitude] = plainChange(ll, l, bi, bj, bit, LUMA_SCALE, LUMA_BIT_MARGIN);
      const v = ll[at]!;
      const target = magnitude * (v < 0 ? -1 : 1);
      if (target === v) continue;
      shiftPatch(work, current, l, at, (target - v) / 2, Y_STEP);
      changed = true;
    }
  }
  return changed;
}

/**
 * The bits the library's decoder reads from `img` for a message of `length` bits (channel 'u',
 * the default), or the same reading of our luma copy (channel 'y').
 */
export function decodeWatermarkBits(
  img: PixelImage,
  length: number,
  channel: WatermarkChannel = 'u',
): Uint8Array {
  const l = layout(img, 'image');
  if (!Number.isInteger(length) || length < 1)
    throw new EngineError('bad-input', 'A watermark length must be a whole number of bits.');
  const scale = channel === 'y' ? LUMA_SCALE : SCALE;
  const ll = lowBand(plane(img, l, channel), l);
  const ones = new Float64Array(length);
  const counts = new Float64Array(length);
  for (let bi = 0; bi < l.by; bi++) {
    for (let bj = 0; bj < l.bx; bj++) {
      const n = (bi * l.bx + bj) % length;
      ones[n]! += readBit(ll[carrier(ll, l, bi, bj)]!, scale);
      counts[n]! += 1;
    }
  }
  // The library: `mean(scores) * 255 > 127`; a bit no block carries averages NaN, reading 0.
  return Uint8Array.from(ones, (s, n) => (counts[n]! > 0 && (s / counts[n]!) * 255 > 127 ? 1 : 0));
}

/** What a check found. */
export interface WatermarkCheck {
  /** The message read, or null: no known mark (an unmarked image reads as chance). */
  message: WatermarkMessage | null;
  /** Of the best-matching known message: bits that agree, and its length. */
  matchingBits: number;
  totalBits: number;
  /** The best-matching known message, found or not. */
  closest: WatermarkMessage['id'];
  /** Where the best reading came from: U (the library's mark) or our luma copy. */
  channel: WatermarkChannel;
}

/**
 * Chance that an unmarked image passes for one message: an unmarked image agrees with a fixed
 * message on about half its bits, so a message of n bits counts as found when so few bits differ
 * that Binomial(n, 1/2) gives that few under this probability. The library's own encoder loses
 * many bits (its H/V swap wraps 8-bit values), so the test is statistical, not exact.
 */
export const WATERMARK_FALSE_MATCH = 1e-6;

/** The most differing bits for which a message of `n` bits still counts as found. */
export function maxBitErrors(n: number, falseMatch = WATERMARK_FALSE_MATCH): number {
  let logC = 0; // log C(n, k)
  let tail = 0;
  for (let k = 0; k <= n; k++) {
    if (k > 0) logC += Math.log((n - k + 1) / k);
    tail += Math.exp(logC - n * Math.LN2);
    if (tail >= falseMatch) return k - 1;
  }
  return n;
}

/** What a check found, and at which size the image was read. */
export interface WatermarkSearch extends WatermarkCheck {
  /** The size the image was read at: its own, or the original size it was resized from. */
  readAt: { width: number; height: number };
}

const CHANNELS: readonly WatermarkChannel[] = ['u', 'y'];

function matchMessages(
  img: PixelImage,
  messages: readonly WatermarkMessage[],
  falseMatch: number,
): WatermarkCheck {
  let best: WatermarkCheck | null = null;
  // Two readings per message (U, then the luma copy) share the chance budget.
  const perReading = falseMatch / CHANNELS.length;
  for (const m of messages) {
    for (const channel of CHANNELS) {
      const read = decodeWatermarkBits(img, m.bits.length, channel);
      let same = 0;
      for (let k = 0; k < read.length; k++) if (read[k] === m.bits[k]) same++;
      const result = {
        message: null,
        matchingBits: same,
        totalBits: m.bits.length,
        closest: m.id,
        channel,
      };
      if (m.bits.length - same <= maxBitErrors(m.bits.length, perReading))
        return { ...result, message: m };
      if (!best || same / m.bits.length > best.matchingBits / best.totalBits) best = result;
    }
  }
  if (!best) throw new EngineError('bad-input', 'No watermark message to look for.');
  return best;
}

/**
 * Reads `img` for each known message and names the one it carries, if any, as the library's
 * decoder would read it (U) or in our luma copy, at the image's own size. Images under 256x256
 * throw (bad-input).
 */
export function checkWatermark(
  img: PixelImage,
  messages: readonly WatermarkMessage[] = WATERMARK_MESSAGES,
): WatermarkCheck {
  return matchMessages(img, messages, WATERMARK_FALSE_MATCH);
}

/** Sizes a resized image may have been made at: multiples of 64, 0.5x to 2x, same aspect. */
function originalSizes(img: PixelImage): Array<{ width: number; height: number }> {
  const out: Array<{ width: number; height: number }> = [];
  for (let width = 64 * Math.ceil(img.width / 128); width <= img.width * 2; width += 64) {
    const height = Math.round((img.height * width) / img.width / 64) * 64;
    if (width === img.width && height === img.height) continue;
    // The aspect must agree within the rounding of the resize (a pixel or two).
    if (Math.abs((height * img.width) / width - img.height) > 2) continue;
    if (width * height >= WATERMARK_MIN_PIXELS) out.push({ width, height });
  }
  return out;
}

/**
 * checkWatermark, and when nothing is found at the image's own size, again at each size it may
 * have been resized from (0.5x to 2x, multiples of 64 as generators make them), resized back
 * (bilinear): the block grid the mark lives on follows the pixels, so a resized mark is read at
 * its original size. Each try is held to WATERMARK_FALSE_MATCH divided by the number of tries,
 * so searching does not make chance matches likelier.
 */
export function findWatermark(
  img: PixelImage,
  messages: readonly WatermarkMessage[] = WATERMARK_MESSAGES,
): WatermarkSearch {
  const candidates = originalSizes(img);
  const tries = candidates.length + 1;
  const ownSize = { width: img.width, height: img.height };
  let best: WatermarkSearch | null = null;
  if (canWatermark(img)) {
    best = { ...matchMessages(img, messages, WATERMARK_FALSE_MATCH / tries), readAt: ownSize };
    if (best.message) return best;
  }
  const rgb: PixelImage = img.channels === 4 ? dropAlpha(img) : img;
  for (const size of candidates) {
    const back = resizeBilinear(rgb, size.width, size.height);
    const found = matchMessages(back, messages, WATERMARK_FALSE_MATCH / tries);
    if (found.message) return { ...found, readAt: size };
    if (!best || found.matchingBits / found.totalBits > best.matchingBits / best.totalBits)
      best = { ...found, readAt: size };
  }
  if (!best) layout(img, 'image'); // throws the size sentence
  return best!;
}

function dropAlpha(img: PixelImage): PixelImage {
  const data = new Uint8Array(img.width * img.height * 3);
  for (let p = 0; p < img.width * img.height; p++)
    data.set(img.data.subarray(p * 4, p * 4 + 3), p * 3);
  return { width: img.width, height: img.height, channels: 3, data };
}
