/**
 * Pixels <-> tensors. Images are 8-bit, row-major, interleaved (RGB, RGBA or a single channel
 * for masks); tensors are float32 NCHW as the VAE expects them. Pure code: no npm packages.
 */
import { EngineError } from '../errors';

/** An 8-bit image: `data.length === width * height * channels`, rows top to bottom. */
export interface PixelImage {
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  data: Uint8Array | Uint8ClampedArray;
}

/** A float tensor with its NCHW (or other) dimensions. */
export interface FloatTensor {
  data: Float32Array;
  dims: number[];
}

export function checkImage(img: PixelImage, what = 'image'): void {
  const { width, height, channels, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new EngineError('bad-input', `The ${what} has an invalid size ${width}x${height}.`);
  }
  if (channels !== 1 && channels !== 3 && channels !== 4) {
    throw new EngineError(
      'bad-input',
      `The ${what} has ${String(channels)} channels; 1, 3 or 4 are supported.`,
    );
  }
  if (data.length !== width * height * channels) {
    throw new EngineError(
      'bad-input',
      `The ${what} is ${width}x${height}x${channels} but holds ${data.length} bytes instead of ${width * height * channels}.`,
    );
  }
}

/**
 * An RGB(A) or gray image as a [1,3,H,W] tensor in [-1, 1]: x/255*2-1 per channel, the way
 * diffusers' image processor normalizes (alpha is dropped; gray is repeated on R, G and B).
 */
export function imageToTensor(img: PixelImage): FloatTensor {
  checkImage(img);
  const { width: w, height: h, channels: c, data: src } = img;
  const plane = w * h;
  const out = new Float32Array(3 * plane);
  for (let p = 0; p < plane; p++) {
    const s = p * c;
    for (let ch = 0; ch < 3; ch++) {
      const v = src[c === 1 ? s : s + ch];
      out[ch * plane + p] = (v / 255) * 2 - 1;
    }
  }
  return { data: out, dims: [1, 3, h, w] };
}

/** Round half to even (numpy's `round`, used by diffusers' `numpy_to_pil`). */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * VAE decoder output -> 8-bit RGB: clip(x/2 + 0.5, 0, 1) * 255, rounded (half to even).
 * `dims` is [B,3,H,W]; `index` picks the image in the batch.
 */
export function tensorToImage(data: Float32Array, dims: readonly number[], index = 0): PixelImage {
  if (dims.length !== 4 || dims[1] !== 3) {
    throw new EngineError(
      'model-shape',
      `The VAE decoder output has shape [${dims.join(',')}]; expected [B,3,H,W].`,
    );
  }
  const [b, , h, w] = dims;
  if (index < 0 || index >= b)
    throw new EngineError('bad-input', `Image ${index} is outside a batch of ${b}.`);
  const plane = w * h;
  if (data.length < b * 3 * plane) {
    throw new EngineError(
      'bad-input',
      `The tensor holds ${data.length} values; shape [${dims.join(',')}] needs more.`,
    );
  }
  const base = index * 3 * plane;
  const out = new Uint8Array(plane * 3);
  for (let ch = 0; ch < 3; ch++) {
    const off = base + ch * plane;
    for (let p = 0; p < plane; p++) {
      let v = data[off + p] / 2 + 0.5;
      v = v < 0 ? 0 : v > 1 ? 1 : v; // NaN becomes 0 below
      const q = roundHalfEven(v * 255);
      out[p * 3 + ch] = Number.isNaN(q) ? 0 : q;
    }
  }
  return { width: w, height: h, channels: 3, data: out };
}

/**
 * A mask as a [1,1,H,W] tensor of 0/1: white (>= half) means "repaint". diffusers binarizes
 * the same way (mask/255 < 0.5 -> 0, else 1). RGB(A) masks use their first channel.
 */
export function maskToTensor(mask: PixelImage, threshold = 0.5): FloatTensor {
  checkImage(mask, 'mask');
  const { width: w, height: h, channels: c, data } = mask;
  const out = new Float32Array(w * h);
  for (let p = 0; p < w * h; p++) out[p] = data[p * c] / 255 >= threshold ? 1 : 0;
  return { data: out, dims: [1, 1, h, w] };
}

/** Drop alpha / expand gray so the result has exactly 3 channels. */
export function toRgb(img: PixelImage): PixelImage {
  checkImage(img);
  if (img.channels === 3) return img;
  const n = img.width * img.height;
  const out = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) {
    for (let ch = 0; ch < 3; ch++) out[p * 3 + ch] = img.data[img.channels === 1 ? p : p * 4 + ch];
  }
  return { width: img.width, height: img.height, channels: 3, data: out };
}
