/**
 * Cheap previews of latents during sampling: a fixed linear map from the 4 latent channels to
 * RGB, evaluated per latent pixel (no VAE), the technique ComfyUI's "Latent2RGB" previewer uses.
 *
 * The factors are the published ones in ComfyUI's comfy/latent_formats.py (classes SD15, SDXL
 * and SD_X4; facts, fitted by regression of decoded RGB on latents). They apply to latents in
 * the sampler's (scaled) space; the result is in [-1, 1] and maps to bytes as (v + 1) / 2.
 */
import { isSdxlFamily } from '../../shared';
import { EngineError } from '../errors';
import type { PixelImage } from './pixels';

export interface LatentRgbFactors {
  /** 4 rows (latent channels) x 3 columns (R, G, B). */
  factors: readonly (readonly [number, number, number])[];
  bias: readonly [number, number, number];
}

/** SD 1.x / 2.x latents (and everything sharing their VAE: LCM, turbo, inpainting). */
export const SD15_LATENT_RGB: LatentRgbFactors = {
  factors: [
    [0.3512, 0.2297, 0.3227],
    [0.325, 0.4974, 0.235],
    [-0.2829, 0.1762, 0.2721],
    [-0.212, -0.2616, -0.7177],
  ],
  bias: [0, 0, 0],
};

/** SDXL latents. */
export const SDXL_LATENT_RGB: LatentRgbFactors = {
  factors: [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
  ],
  bias: [0.1084, -0.0175, -0.0011],
};

/** The x4 upscaler's latents. */
export const X4_LATENT_RGB: LatentRgbFactors = {
  factors: [
    [-0.234, -0.3863, -0.3257],
    [0.0994, 0.0885, -0.0908],
    [-0.2833, -0.2349, -0.3741],
    [0.2523, -0.0055, -0.1651],
  ],
  bias: [0, 0, 0],
};

/** The preview factors for a model family name (see models/family.ts). */
export function latentRgbFactorsFor(family: string): LatentRgbFactors {
  if (isSdxlFamily(family)) return SDXL_LATENT_RGB;
  if (family === 'x4-upscaler') return X4_LATENT_RGB;
  return SD15_LATENT_RGB;
}

/**
 * A small RGB preview of one latent image: [B,C>=4,h,w] -> h x w RGB, optionally enlarged by
 * an integer `scale` with nearest neighbour. Only the first 4 channels are used (a 9-channel
 * inpainting input still previews its noisy latents).
 */
export function latentPreview(
  latents: Float32Array,
  dims: readonly number[],
  factors: LatentRgbFactors,
  options: { index?: number; scale?: number } = {},
): PixelImage {
  const index = options.index ?? 0;
  const scale = Math.max(1, Math.floor(options.scale ?? 1));
  if (dims.length !== 4 || dims[1] < 4) {
    throw new EngineError(
      'bad-input',
      `Latents of shape [${dims.join(',')}] cannot be previewed; expected [B,4,h,w].`,
    );
  }
  const [b, c, h, w] = dims;
  if (index < 0 || index >= b)
    throw new EngineError('bad-input', `Latent ${index} is outside a batch of ${b}.`);
  const plane = h * w;
  const base = index * c * plane;
  const ow = w * scale;
  const out = new Uint8Array(ow * h * scale * 3);
  const f = factors.factors;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const p = y * w + x;
      const l0 = latents[base + p];
      const l1 = latents[base + plane + p];
      const l2 = latents[base + 2 * plane + p];
      const l3 = latents[base + 3 * plane + p];
      const rgb = [0, 0, 0];
      for (let ch = 0; ch < 3; ch++) {
        const v = l0 * f[0][ch] + l1 * f[1][ch] + l2 * f[2][ch] + l3 * f[3][ch] + factors.bias[ch];
        const u = (v + 1) / 2;
        rgb[ch] = u <= 0 || Number.isNaN(u) ? 0 : u >= 1 ? 255 : Math.round(u * 255);
      }
      for (let dy = 0; dy < scale; dy++) {
        const row = (y * scale + dy) * ow;
        for (let dx = 0; dx < scale; dx++) {
          const o = (row + x * scale + dx) * 3;
          out[o] = rgb[0];
          out[o + 1] = rgb[1];
          out[o + 2] = rgb[2];
        }
      }
    }
  }
  return { width: ow, height: h * scale, channels: 3, data: out };
}
