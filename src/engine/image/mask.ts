/**
 * Mask operations for inpainting and outpainting. Pure code on float planes.
 *
 * A mask is a single-channel float plane in [0, 1], row-major; 1 (white) means "repaint".
 * The steps follow A1111's img2img inpainting (modules/processing.py,
 * StableDiffusionProcessingImg2Img.init): invert first, then binarize, then grow/shrink, then
 * feather with a Gaussian blur (A1111: cv2.GaussianBlur, sigma = mask_blur, kernel
 * 2 * int(2.5 * sigma + 0.5) + 1), crop around the feathered mask with padding
 * (masking.get_crop_region) expanded to the processing aspect (masking.expand_crop_region), and
 * finally paste the result over the original with the feathered mask as alpha
 * (apply_overlay). diffusers (StableDiffusionInpaintPipeline) binarizes at 0.5 the same way and
 * resizes the mask to latent size with nearest-neighbour interpolation.
 */
import { EngineError } from '../errors';
import { MT19937 } from '../rng';
import { type PixelImage, checkImage } from './pixels';
import { resizeNearest } from './resize';

export interface MaskPlane {
  width: number;
  height: number;
  /** width * height values in [0, 1]; 1 = repaint. */
  data: Float32Array;
}

/** A pixel rectangle [x0, x1) x [y0, y1). */
export interface Box {
  x0: number;
  y0: number;
  x1: number;
  y1: number;
}

/**
 * A painted mask image -> a float plane at `width` x `height`. A mask of another size is resized
 * with nearest-neighbour (values copied, never blended). Gray masks are taken as they are; RGB(A)
 * masks by their luminance (ITU-R 601, as PIL's convert('L') that A1111 and diffusers use), and an
 * alpha channel multiplies it (a transparent pixel is "keep").
 */
export function maskFromImage(
  mask: PixelImage,
  width: number,
  height: number,
): { mask: MaskPlane; resized: boolean } {
  checkImage(mask, 'mask');
  const resized = mask.width !== width || mask.height !== height;
  const img = resized ? resizeNearest(mask, width, height) : mask;
  const n = width * height;
  const out = new Float32Array(n);
  const c = img.channels;
  const d = img.data;
  for (let p = 0; p < n; p++) {
    const s = p * c;
    let v = c === 1 ? d[s] : (d[s] * 299 + d[s + 1] * 587 + d[s + 2] * 114) / 1000;
    if (c === 4) v = (v * d[s + 3]) / 255;
    out[p] = v / 255;
  }
  return { mask: { width, height, data: out }, resized };
}

/** 1 where value >= threshold (diffusers: mask < 0.5 -> 0, else 1), else 0. */
export function binarizeMask(m: MaskPlane, threshold = 0.5): MaskPlane {
  const out = new Float32Array(m.data.length);
  for (let i = 0; i < out.length; i++) out[i] = m.data[i] >= threshold ? 1 : 0;
  return { width: m.width, height: m.height, data: out };
}

export function invertMask(m: MaskPlane): MaskPlane {
  const out = new Float32Array(m.data.length);
  for (let i = 0; i < out.length; i++) out[i] = 1 - m.data[i];
  return { width: m.width, height: m.height, data: out };
}

/** True when no value is above zero. */
export function isMaskEmpty(m: MaskPlane): boolean {
  for (let i = 0; i < m.data.length; i++) if (m.data[i] > 0) return false;
  return true;
}

const FAR = 1e20;

/**
 * Squared Euclidean distance from each pixel to the nearest "site" pixel, with that site's index
 * (-1 when there is none): Felzenszwalb & Huttenlocher, "Distance Transforms of Sampled
 * Functions" (Theory of Computing 2012), the lower envelope of parabolas, once per column and
 * once per row, O(width * height).
 */
export function distanceTransform(
  width: number,
  height: number,
  isSite: (index: number) => boolean,
): { dist2: Float64Array; nearest: Int32Array } {
  const n = width * height;
  const colDist = new Float64Array(n);
  const colRow = new Int32Array(n);
  const len = Math.max(width, height);
  const f = new Float64Array(len);
  const d = new Float64Array(len);
  const arg = new Int32Array(len);
  const v = new Int32Array(len);
  const z = new Float64Array(len + 1);

  const envelope = (count: number) => {
    let k = 0;
    v[0] = 0;
    z[0] = -Infinity;
    z[1] = Infinity;
    for (let q = 1; q < count; q++) {
      let s = (f[q] + q * q - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
      while (s <= z[k]) {
        k--;
        s = (f[q] + q * q - (f[v[k]] + v[k] * v[k])) / (2 * q - 2 * v[k]);
      }
      k++;
      v[k] = q;
      z[k] = s;
      z[k + 1] = Infinity;
    }
    k = 0;
    for (let q = 0; q < count; q++) {
      while (z[k + 1] < q) k++;
      d[q] = (q - v[k]) * (q - v[k]) + f[v[k]];
      arg[q] = v[k];
    }
  };

  for (let x = 0; x < width; x++) {
    for (let y = 0; y < height; y++) f[y] = isSite(y * width + x) ? 0 : FAR;
    envelope(height);
    for (let y = 0; y < height; y++) {
      colDist[y * width + x] = d[y];
      colRow[y * width + x] = arg[y];
    }
  }
  const dist2 = new Float64Array(n);
  const nearest = new Int32Array(n);
  for (let y = 0; y < height; y++) {
    const row = y * width;
    for (let x = 0; x < width; x++) f[x] = colDist[row + x];
    envelope(width);
    for (let x = 0; x < width; x++) {
      const sx = arg[x];
      const best = d[x];
      dist2[row + x] = best;
      nearest[row + x] = best >= FAR ? -1 : colRow[row + sx] * width + sx;
    }
  }
  return { dist2, nearest };
}

/**
 * Grow (px > 0, dilation) or shrink (px < 0, erosion) a binary mask by a disc of radius |px|:
 * grown, a pixel is on when an on pixel lies within |px|; shrunk, it stays on only when every
 * off pixel is farther than |px| (the image border does not count as off).
 */
export function growMask(m: MaskPlane, px: number): MaskPlane {
  const bin = binarizeMask(m);
  if (px === 0) return bin;
  const r2 = px * px;
  const out = new Float32Array(bin.data.length);
  if (px > 0) {
    const { dist2 } = distanceTransform(m.width, m.height, (i) => bin.data[i] > 0);
    for (let i = 0; i < out.length; i++) out[i] = dist2[i] <= r2 ? 1 : 0;
  } else {
    const { dist2 } = distanceTransform(m.width, m.height, (i) => bin.data[i] === 0);
    for (let i = 0; i < out.length; i++) out[i] = bin.data[i] > 0 && dist2[i] > r2 ? 1 : 0;
  }
  return { width: m.width, height: m.height, data: out };
}

/** Half-width of the Gaussian kernel A1111 uses for a blur of sigma (cv2 kernel 2*k+1). */
export function featherReach(sigma: number): number {
  return sigma > 0 ? Math.floor(2.5 * sigma + 0.5) : 0;
}

/**
 * Separable Gaussian blur with standard deviation `sigma` pixels on a kernel of half-width
 * featherReach(sigma) (A1111's mask blur); edges replicate. Values farther than the reach from
 * any non-zero value stay exactly 0, so the feathered mask has a known, finite support.
 */
export function featherMask(m: MaskPlane, sigma: number): MaskPlane {
  if (!(sigma > 0)) return { width: m.width, height: m.height, data: Float32Array.from(m.data) };
  const reach = featherReach(sigma);
  const kernel = new Float64Array(2 * reach + 1);
  let sum = 0;
  for (let i = -reach; i <= reach; i++) {
    kernel[i + reach] = Math.exp(-(i * i) / (2 * sigma * sigma));
    sum += kernel[i + reach];
  }
  for (let i = 0; i < kernel.length; i++) kernel[i] /= sum;
  const { width: w, height: h } = m;
  const tmp = new Float32Array(w * h);
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let k = -reach; k <= reach; k++) {
        const xx = Math.min(w - 1, Math.max(0, x + k));
        acc += kernel[k + reach] * m.data[y * w + xx];
      }
      tmp[y * w + x] = acc;
    }
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      let acc = 0;
      for (let k = -reach; k <= reach; k++) {
        const yy = Math.min(h - 1, Math.max(0, y + k));
        acc += kernel[k + reach] * tmp[yy * w + x];
      }
      // Float noise must not turn "no mask here" into a tiny alpha, nor full into 0.99999.
      out[y * w + x] = acc < 1e-6 ? 0 : acc > 1 - 1e-6 ? 1 : acc;
    }
  return { width: w, height: h, data: out };
}

/** The smallest box holding every value > 0, or null for an empty mask. */
export function maskBounds(m: MaskPlane): Box | null {
  let x0 = m.width;
  let y0 = m.height;
  let x1 = 0;
  let y1 = 0;
  for (let y = 0; y < m.height; y++)
    for (let x = 0; x < m.width; x++) {
      if (m.data[y * m.width + x] > 0) {
        if (x < x0) x0 = x;
        if (x >= x1) x1 = x + 1;
        if (y < y0) y0 = y;
        if (y >= y1) y1 = y + 1;
      }
    }
  return x1 > x0 ? { x0, y0, x1, y1 } : null;
}

/**
 * The crop for "only masked": the box around the mask plus `padding` on each side, clamped to
 * the image (A1111 masking.get_crop_region), then grown to the aspect ratio of the processing
 * size `targetW` x `targetH` around its centre, shifted to stay inside the image and clamped
 * (masking.expand_crop_region). Returns null for an empty mask.
 */
export function cropRegion(
  m: MaskPlane,
  padding: number,
  targetW: number,
  targetH: number,
): Box | null {
  const b = maskBounds(m);
  if (!b) return null;
  const W = m.width;
  const H = m.height;
  let x0 = Math.max(0, b.x0 - padding);
  let y0 = Math.max(0, b.y0 - padding);
  let x1 = Math.min(W, b.x1 + padding);
  let y1 = Math.min(H, b.y1 + padding);
  const cw = x1 - x0;
  const ch = y1 - y0;
  const ratioCrop = cw / ch;
  const ratioTarget = targetW / targetH;
  if (ratioCrop > ratioTarget) {
    // Too wide: grow the height.
    const want = Math.min(H, Math.round(cw / ratioTarget));
    const extra = want - ch;
    y0 -= Math.floor(extra / 2);
    y1 = y0 + want;
    if (y0 < 0) {
      y1 -= y0;
      y0 = 0;
    }
    if (y1 > H) {
      y0 -= y1 - H;
      y1 = H;
    }
    y0 = Math.max(0, y0);
  } else if (ratioCrop < ratioTarget) {
    const want = Math.min(W, Math.round(ch * ratioTarget));
    const extra = want - cw;
    x0 -= Math.floor(extra / 2);
    x1 = x0 + want;
    if (x0 < 0) {
      x1 -= x0;
      x0 = 0;
    }
    if (x1 > W) {
      x0 -= x1 - W;
      x1 = W;
    }
    x0 = Math.max(0, x0);
  }
  return { x0, y0, x1, y1 };
}

export function cropMask(m: MaskPlane, b: Box): MaskPlane {
  const w = b.x1 - b.x0;
  const h = b.y1 - b.y0;
  const out = new Float32Array(w * h);
  for (let y = 0; y < h; y++)
    out.set(m.data.subarray((b.y0 + y) * m.width + b.x0, (b.y0 + y) * m.width + b.x1), y * w);
  return { width: w, height: h, data: out };
}

export function cropImage(img: PixelImage, b: Box): PixelImage {
  checkImage(img);
  const w = b.x1 - b.x0;
  const h = b.y1 - b.y0;
  const c = img.channels;
  const out = new Uint8Array(w * h * c);
  for (let y = 0; y < h; y++) {
    const s = ((b.y0 + y) * img.width + b.x0) * c;
    out.set(img.data.subarray(s, s + w * c), y * w * c);
  }
  return { width: w, height: h, channels: c, data: out };
}

/**
 * Downscale a mask to `width` x `height` (latent size). 'nearest': output cell i takes input
 * pixel floor((i + 0.5) * in / out), as resizeNearest (diffusers interpolates the mask to latent
 * size in nearest mode). 'max': a cell is 1 if any input pixel it covers is > 0, so no painted
 * pixel is lost however small.
 */
export function downscaleMask(
  m: MaskPlane,
  width: number,
  height: number,
  mode: 'nearest' | 'max',
): MaskPlane {
  const out = new Float32Array(width * height);
  const { width: iw, height: ih } = m;
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      if (mode === 'nearest') {
        const sx = Math.min(iw - 1, Math.floor(((x + 0.5) * iw) / width));
        const sy = Math.min(ih - 1, Math.floor(((y + 0.5) * ih) / height));
        out[y * width + x] = m.data[sy * iw + sx];
      } else {
        const xa = Math.floor((x * iw) / width);
        const xb = Math.max(xa + 1, Math.ceil(((x + 1) * iw) / width));
        const ya = Math.floor((y * ih) / height);
        const yb = Math.max(ya + 1, Math.ceil(((y + 1) * ih) / height));
        let v = 0;
        for (let yy = ya; yy < Math.min(ih, yb) && v === 0; yy++)
          for (let xx = xa; xx < Math.min(iw, xb); xx++)
            if (m.data[yy * iw + xx] > 0) {
              v = 1;
              break;
            }
        out[y * width + x] = v;
      }
    }
  return { width, height, data: out };
}

/**
 * Paste `top` over `base` at (left, topY) with per-pixel alpha from `alpha` (base coordinates,
 * base size): out = base + a * (top - base), rounded. Where a is 0, or outside the pasted
 * rectangle, the base pixel is copied unchanged, bit for bit. Both images must have the same
 * channel count.
 */
export function compositeWithMask(
  base: PixelImage,
  top: PixelImage,
  alpha: MaskPlane,
  left = 0,
  topY = 0,
): PixelImage {
  checkImage(base);
  checkImage(top);
  if (base.channels !== top.channels)
    throw new EngineError('bad-input', 'Composite: the images have different channel counts.');
  if (alpha.width !== base.width || alpha.height !== base.height)
    throw new EngineError('bad-input', 'Composite: the mask is not the size of the image.');
  const c = base.channels;
  const out = Uint8Array.from(base.data);
  const x0 = Math.max(0, left);
  const y0 = Math.max(0, topY);
  const x1 = Math.min(base.width, left + top.width);
  const y1 = Math.min(base.height, topY + top.height);
  for (let y = y0; y < y1; y++)
    for (let x = x0; x < x1; x++) {
      const a = alpha.data[y * base.width + x];
      if (a <= 0) continue;
      const o = (y * base.width + x) * c;
      const t = ((y - topY) * top.width + (x - left)) * c;
      for (let ch = 0; ch < c; ch++) {
        const b = base.data[o + ch];
        out[o + ch] = a >= 1 ? top.data[t + ch] : Math.round(b + a * (top.data[t + ch] - b));
      }
    }
  return { width: base.width, height: base.height, channels: c, data: out };
}

/**
 * Fill the pixels under a binary mask before diffusion (A1111's "masked content"):
 * 'original' keeps them; 'noise' replaces them with uniform random colours from an MT19937
 * seeded with `seed`; 'edge' spreads the colours at the mask's border inwards: every masked
 * pixel takes the colour of the nearest unmasked pixel (exact Euclidean distance transform),
 * then the filled area is smoothed with a normalized box blur that reads only filled pixels,
 * so the streaks of the nearest-pixel fill soften while unmasked pixels never change. A mask
 * that covers everything leaves nothing to spread: 'edge' then fills mid-gray.
 */
export function fillMasked(
  img: PixelImage,
  mask: MaskPlane,
  mode: 'original' | 'noise' | 'edge',
  seed = 0,
): PixelImage {
  checkImage(img);
  if (mask.width !== img.width || mask.height !== img.height)
    throw new EngineError('bad-input', 'Fill: the mask is not the size of the image.');
  if (mode === 'original') return img;
  const c = img.channels;
  const n = img.width * img.height;
  const out = Uint8Array.from(img.data);
  if (mode === 'noise') {
    const mt = new MT19937(seed >>> 0);
    for (let p = 0; p < n; p++) {
      if (mask.data[p] <= 0) continue;
      for (let ch = 0; ch < c; ch++) out[p * c + ch] = mt.nextUint32() >>> 24;
    }
    return { width: img.width, height: img.height, channels: c, data: out };
  }
  const { nearest } = distanceTransform(img.width, img.height, (i) => mask.data[i] <= 0);
  for (let p = 0; p < n; p++) {
    if (mask.data[p] <= 0) continue;
    const s = nearest[p];
    for (let ch = 0; ch < c; ch++) out[p * c + ch] = s < 0 ? 128 : img.data[s * c + ch];
  }
  // Smooth inside the hole only: a few passes of a normalized 9x9 box over filled pixels.
  const w = img.width;
  const h = img.height;
  const r = 4;
  let cur = out;
  for (let pass = 0; pass < 3; pass++) {
    const next = Uint8Array.from(cur);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const p = y * w + x;
        if (mask.data[p] <= 0) continue;
        for (let ch = 0; ch < c; ch++) {
          let acc = 0;
          let cnt = 0;
          for (let yy = Math.max(0, y - r); yy <= Math.min(h - 1, y + r); yy++)
            for (let xx = Math.max(0, x - r); xx <= Math.min(w - 1, x + r); xx++) {
              acc += cur[(yy * w + xx) * c + ch];
              cnt++;
            }
          next[p * c + ch] = Math.round(acc / cnt);
        }
      }
    cur = next;
  }
  return { width: w, height: h, channels: c, data: cur };
}
