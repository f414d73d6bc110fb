// For the inpainting tests (inpaint.test.ts, inpaint-sdxl.test.ts): the settings they start
// from, painted rectangles, rectangle masks, a texture with detail in every 8x8 block, and a
// per-pixel comparison restricted to a region.
import { expect } from 'vitest';
import type { PixelImage } from '../../src/engine';
import { GenerationSettings, type GenerationInput } from '../../src/shared/generation';

/** Inpainting at 64x64 with Euler, no guidance, a sharp mask; `over` changes any of it. */
export function inpaintSettings(over: Partial<GenerationInput> = {}): GenerationSettings {
  return GenerationSettings.parse({
    mode: 'inpaint',
    model: 'fixture',
    prompt: 'fill the hole',
    seed: 3,
    sampler: 'euler',
    steps: 12,
    guidance: 1,
    width: 64,
    height: 64,
    initImage: 'init.png',
    mask: { image: 'mask.png', blur: 0 },
    ...over,
  });
}

export type Rect = { x0: number; y0: number; x1: number; y1: number };
export const inRect = (r: Rect, x: number, y: number) =>
  x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1;

/** `img` (RGB) with the rectangle `r` painted in one colour. */
export function paint(img: PixelImage, r: Rect, rgb: [number, number, number]): PixelImage {
  const data = Uint8Array.from(img.data);
  for (let y = r.y0; y < r.y1; y++)
    for (let x = r.x0; x < r.x1; x++) data.set(rgb, (y * img.width + x) * 3);
  return { ...img, data };
}

/** A one-channel mask, white inside `r`. */
export function rectMask(width: number, height: number, r: Rect): PixelImage {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) data[y * width + x] = inRect(r, x, y) ? 255 : 0;
  return { width, height, channels: 1, data };
}

/** A picture with detail everywhere (no 8x8 block is flat), so a VAE round trip changes it. */
export function texture(width: number, height: number, seed = 1): PixelImage {
  const data = new Uint8Array(width * height * 3);
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    data[i] = 40 + ((s >>> 16) % 176);
  }
  return { width, height, channels: 3, data };
}

/** Max |a - b| over pixels where `where(x, y)`, and how many pixels differ at all there. */
export function compare(a: PixelImage, b: PixelImage, where: (x: number, y: number) => boolean) {
  expect([a.width, a.height]).toEqual([b.width, b.height]);
  let max = 0;
  let differing = 0;
  let count = 0;
  for (let y = 0; y < a.height; y++)
    for (let x = 0; x < a.width; x++) {
      if (!where(x, y)) continue;
      count++;
      let d = 0;
      for (let c = 0; c < 3; c++) {
        const o = (y * a.width + x) * 3 + c;
        d = Math.max(d, Math.abs(a.data[o] - b.data[o]));
      }
      max = Math.max(max, d);
      if (d > 0) differing++;
    }
  return { max, differing, count };
}
