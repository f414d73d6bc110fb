import type * as ort from 'onnxruntime-node';
import { expect, vi } from 'vitest';
import type { DiffusionEngine, PixelImage } from '../../src/engine';
import { type FixtureInfo, resizeLatentNearest } from '../fixtures/models';

/**
 * Helpers for tests on the known-answer fixture model: what its VAE decodes each stored
 * latent x_k to, and which x_k an output image is.
 */

/**
 * The image the fixture VAE decodes x_k to at a size (x_k nearest-resized as the UNet does),
 * for any VAE factor (8, or 4 for the x4 upscaler's decoder).
 */
export function expectedImage(
  info: FixtureInfo,
  k: number,
  width: number,
  height: number,
): Uint8Array {
  const s = info.latentSize;
  const f = info.vaeFactor;
  const h = height / f;
  const w = width / f;
  const z =
    h === s && w === s
      ? info.knownLatents![k]
      : resizeLatentNearest(info.knownLatents![k], s, s, h, w);
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) {
        const v = z[c * h * w + Math.floor(y / f) * w + Math.floor(x / f)] / (info.vaeScale * f);
        out[(y * width + x) * 3 + c] = Math.round(Math.min(1, Math.max(0, v / 2 + 0.5)) * 255);
      }
  return out;
}

/** expectedImage as a PixelImage. */
export function knownImage(
  info: FixtureInfo,
  k: number,
  width: number,
  height: number,
): PixelImage {
  return { width, height, channels: 3, data: expectedImage(info, k, width, height) };
}

/** Mean and max absolute difference of two equally long pixel arrays (8-bit levels). */
export function diff(a: ArrayLike<number>, b: ArrayLike<number>): { mean: number; max: number } {
  expect(a.length).toBe(b.length);
  let sum = 0;
  let max = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    sum += d;
    max = Math.max(max, d);
  }
  return { mean: sum / a.length, max };
}

/** Which x_k an image shows, and how far it is from it (8-bit levels). */
export function classify(
  info: FixtureInfo,
  img: PixelImage,
): { k: number; mean: number; max: number } {
  expect(img.channels).toBe(3);
  let best = { k: -1, mean: Infinity, max: Infinity };
  info.knownLatents!.forEach((_, k) => {
    const d = diff(img.data, expectedImage(info, k, img.width, img.height));
    if (d.mean < best.mean) best = { k, ...d };
  });
  return best;
}

/** Asserts the image is x_k (some k) up to `tol` levels per pixel; returns k. */
export function expectKnown(info: FixtureInfo, img: PixelImage, tol = 6, what = ''): number {
  const c = classify(info, img);
  expect(c.max, `${what}: ${JSON.stringify(c)}`).toBeLessThanOrEqual(tol);
  return c.k;
}

/** Same size and bit-identical pixels. */
export function same(a: PixelImage, b: PixelImage): boolean {
  return (
    a.width === b.width &&
    a.height === b.height &&
    Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(
      Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength),
    )
  );
}

export interface SessionCall {
  feeds: Record<string, { dims: number[]; data: Float32Array | number[] }>;
}

/** Records every run of a component's ORT session (calling through to the real run). */
export async function spyOnSession(
  engine: DiffusionEngine,
  dir: string,
  component: 'unet' | 'text_encoder',
) {
  const model = await engine.load(dir);
  const session = (await model.session(component)).session;
  const calls: SessionCall[] = [];
  const original = session.run.bind(session) as (...args: unknown[]) => Promise<unknown>;
  const spy = vi.spyOn(session, 'run').mockImplementation((async (...args: unknown[]) => {
    const feeds = args[0] as Record<string, ort.Tensor>;
    const rec: SessionCall['feeds'] = {};
    for (const [name, t] of Object.entries(feeds)) {
      const data =
        t.type === 'float32'
          ? Float32Array.from(t.data as Float32Array)
          : Array.from(t.data as ArrayLike<number | bigint>, Number);
      rec[name] = { dims: [...t.dims], data };
    }
    calls.push({ feeds: rec });
    return original(...args);
  }) as never);
  return {
    calls,
    reset: () => (calls.length = 0),
    restore: () => spy.mockRestore(),
  };
}
