/**
 * Resizing 8-bit images: nearest (masks), bilinear and Lanczos-3 (init images, hires passes),
 * bicubic (CLIP's image preprocessing, which resizes with Pillow's BICUBIC).
 *
 * Bilinear and Lanczos are separable convolutions in the style of Pillow's resampling
 * (Pillow's `ImagingResample`): each output pixel's centre maps to (i + 0.5) * scale in input
 * coordinates; when shrinking, the kernel is widened by the scale so it averages every input
 * pixel it covers (antialiasing); taps outside the image are dropped and the weights are
 * renormalized, so a constant image stays constant up to the edges. Lanczos-3 is
 * sinc(x) * sinc(x/3) for |x| < 3 (Duchon 1979; Turkowski, "Filters for common resampling
 * tasks", Graphics Gems 1990).
 */
import { EngineError } from '../errors';
import { checkImage, type PixelImage } from './pixels';

export type ResizeFilter = 'nearest' | 'bilinear' | 'bicubic' | 'lanczos3';

function checkTarget(width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new EngineError('bad-input', `Cannot resize to ${width}x${height}.`);
  }
}

/**
 * Nearest-neighbour resize: output pixel i takes input pixel floor((i + 0.5) * in/out).
 * Values are copied, never blended, so a binary mask stays binary.
 */
export function resizeNearest(img: PixelImage, width: number, height: number): PixelImage {
  checkImage(img);
  checkTarget(width, height);
  const { width: iw, height: ih, channels: c, data } = img;
  const out = new Uint8Array(width * height * c);
  const xs = new Int32Array(width);
  for (let x = 0; x < width; x++) xs[x] = Math.min(iw - 1, Math.floor(((x + 0.5) * iw) / width));
  for (let y = 0; y < height; y++) {
    const sy = Math.min(ih - 1, Math.floor(((y + 0.5) * ih) / height));
    const srcRow = sy * iw * c;
    const dstRow = y * width * c;
    for (let x = 0; x < width; x++) {
      const s = srcRow + xs[x] * c;
      const d = dstRow + x * c;
      for (let ch = 0; ch < c; ch++) out[d + ch] = data[s + ch];
    }
  }
  return { width, height, channels: c, data: out };
}

interface Kernel {
  support: number;
  fn: (x: number) => number;
}

const TRIANGLE: Kernel = {
  support: 1,
  fn: (x) => {
    const a = Math.abs(x);
    return a < 1 ? 1 - a : 0;
  },
};

/** Keys' cubic convolution with a = -0.5 (Keys 1981), as Pillow's BICUBIC filter uses it. */
const BICUBIC: Kernel = {
  support: 2,
  fn: (x) => {
    const a = -0.5;
    const t = Math.abs(x);
    if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
    if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
    return 0;
  },
};

function sinc(x: number): number {
  if (x === 0) return 1;
  const px = Math.PI * x;
  return Math.sin(px) / px;
}

const LANCZOS3: Kernel = { support: 3, fn: (x) => (x > -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) };

/** Per output index: first input tap and normalized weights. */
interface Taps {
  start: Int32Array;
  count: Int32Array;
  weights: Float32Array; // outSize * maxTaps
  maxTaps: number;
}

function computeTaps(inSize: number, outSize: number, kernel: Kernel): Taps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = kernel.support * filterScale;
  const maxTaps = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float32Array(outSize * maxTaps);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const lo = Math.max(0, Math.floor(center - support + 0.5));
    const hi = Math.min(inSize, Math.floor(center + support + 0.5));
    let total = 0;
    const n = Math.min(hi - lo, maxTaps);
    for (let j = 0; j < n; j++) {
      const w = kernel.fn((lo + j + 0.5 - center) / filterScale);
      weights[i * maxTaps + j] = w;
      total += w;
    }
    if (total !== 0) for (let j = 0; j < n; j++) weights[i * maxTaps + j] /= total;
    start[i] = lo;
    count[i] = n;
  }
  return { start, count, weights, maxTaps };
}

function clampByte(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
}

function resizeSeparable(
  img: PixelImage,
  width: number,
  height: number,
  kernel: Kernel,
  /** Round and clamp to 0..255 between the passes, as Pillow's 8-bit resampling does. */
  bytesBetween = false,
): PixelImage {
  checkImage(img);
  checkTarget(width, height);
  const { width: iw, height: ih, channels: c, data } = img;
  if (iw === width && ih === height)
    return { width, height, channels: c, data: Uint8Array.from(data) };

  // Horizontal pass into float rows (ih x width), then vertical into bytes.
  const hx = computeTaps(iw, width, kernel);
  const mid = new Float32Array(ih * width * c);
  for (let y = 0; y < ih; y++) {
    const srcRow = y * iw * c;
    const dstRow = y * width * c;
    for (let x = 0; x < width; x++) {
      const s0 = hx.start[x];
      const n = hx.count[x];
      const wo = x * hx.maxTaps;
      for (let ch = 0; ch < c; ch++) {
        let acc = 0;
        for (let j = 0; j < n; j++) acc += hx.weights[wo + j] * data[srcRow + (s0 + j) * c + ch];
        mid[dstRow + x * c + ch] = bytesBetween ? clampByte(acc) : acc;
      }
    }
  }
  const vy = computeTaps(ih, height, kernel);
  const out = new Uint8Array(width * height * c);
  const rowLen = width * c;
  for (let y = 0; y < height; y++) {
    const s0 = vy.start[y];
    const n = vy.count[y];
    const wo = y * vy.maxTaps;
    const dstRow = y * rowLen;
    for (let k = 0; k < rowLen; k++) {
      let acc = 0;
      for (let j = 0; j < n; j++) acc += vy.weights[wo + j] * mid[(s0 + j) * rowLen + k];
      out[dstRow + k] = clampByte(acc);
    }
  }
  return { width, height, channels: c, data: out };
}

/** Bilinear (triangle filter; antialiased when shrinking). */
export function resizeBilinear(img: PixelImage, width: number, height: number): PixelImage {
  return resizeSeparable(img, width, height, TRIANGLE);
}

/**
 * Bicubic (Keys, a = -0.5; antialiased when shrinking), rounded to bytes after each pass as
 * Pillow's Image.resize(BICUBIC) does, so CLIP's preprocessing sees the pixels Pillow gives.
 */
export function resizeBicubic(img: PixelImage, width: number, height: number): PixelImage {
  return resizeSeparable(img, width, height, BICUBIC, true);
}

/** Lanczos-3 (antialiased when shrinking). Overshoot at edges is clamped to 0..255. */
export function resizeLanczos(img: PixelImage, width: number, height: number): PixelImage {
  return resizeSeparable(img, width, height, LANCZOS3);
}

export function resizeImage(
  img: PixelImage,
  width: number,
  height: number,
  filter: ResizeFilter,
): PixelImage {
  switch (filter) {
    case 'nearest':
      return resizeNearest(img, width, height);
    case 'bilinear':
      return resizeBilinear(img, width, height);
    case 'bicubic':
      return resizeBicubic(img, width, height);
    case 'lanczos3':
      return resizeLanczos(img, width, height);
  }
}
