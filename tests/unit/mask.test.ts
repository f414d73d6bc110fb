// Mask operations (src/engine/image/mask.ts): pure functions, checked against brute force or
// hand-worked values.
import { describe, expect, it } from 'vitest';
import { EngineError } from '../../src/engine';
import {
  type MaskPlane,
  type PixelImage,
  binarizeMask,
  compositeWithMask,
  cropRegion,
  distanceTransform,
  downscaleMask,
  featherMask,
  featherReach,
  fillMasked,
  growMask,
  invertMask,
  isMaskEmpty,
  maskBounds,
  maskFromImage,
} from '../../src/engine/image';

function plane(width: number, height: number, on: (x: number, y: number) => boolean): MaskPlane {
  const data = new Float32Array(width * height);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) data[y * width + x] = on(x, y) ? 1 : 0;
  return { width, height, data };
}

function lcg(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe('binarize, invert, from image', () => {
  it('binarizes at 0.5 as diffusers does (< 0.5 -> 0), inverts', () => {
    const m: MaskPlane = { width: 4, height: 1, data: Float32Array.from([0, 0.49, 0.5, 1]) };
    expect(Array.from(binarizeMask(m).data)).toEqual([0, 0, 1, 1]);
    expect(Array.from(invertMask(binarizeMask(m)).data)).toEqual([1, 1, 0, 0]);
    expect(isMaskEmpty(plane(3, 3, () => false))).toBe(true);
    expect(isMaskEmpty(plane(3, 3, (x, y) => x === 2 && y === 2))).toBe(false);
  });

  it('reads gray, RGB (luminance) and RGBA (alpha multiplies); resizes nearest when sizes differ', () => {
    const gray: PixelImage = { width: 2, height: 1, channels: 1, data: Uint8Array.from([0, 255]) };
    expect(Array.from(maskFromImage(gray, 2, 1).mask.data)).toEqual([0, 1]);
    const rgb: PixelImage = {
      width: 2,
      height: 1,
      channels: 3,
      data: Uint8Array.from([255, 0, 0, 255, 255, 255]),
    };
    const lum = maskFromImage(rgb, 2, 1).mask.data;
    expect(lum[0]).toBeCloseTo(0.299, 5);
    expect(lum[1]).toBeCloseTo(1, 6);
    const rgba: PixelImage = {
      width: 2,
      height: 1,
      channels: 4,
      data: Uint8Array.from([255, 255, 255, 0, 255, 255, 255, 255]),
    };
    expect(Array.from(maskFromImage(rgba, 2, 1).mask.data)).toEqual([0, 1]);
    const r = maskFromImage(gray, 4, 2);
    expect(r.resized).toBe(true);
    expect(Array.from(r.mask.data)).toEqual([0, 0, 1, 1, 0, 0, 1, 1]);
    expect(maskFromImage(gray, 2, 1).resized).toBe(false);
  });
});

describe('distance transform, grow and shrink', () => {
  it('matches brute force (squared distance and a nearest site at that distance)', () => {
    const rnd = lcg(5);
    const W = 23;
    const H = 17;
    const sites = Array.from({ length: W * H }, () => rnd() < 0.05);
    const { dist2, nearest } = distanceTransform(W, H, (i) => sites[i]);
    for (let i = 0; i < W * H; i++) {
      let best = Infinity;
      for (let j = 0; j < W * H; j++)
        if (sites[j]) {
          const dx = (i % W) - (j % W);
          const dy = Math.floor(i / W) - Math.floor(j / W);
          best = Math.min(best, dx * dx + dy * dy);
        }
      expect(dist2[i]).toBe(best);
      const s = nearest[i];
      expect(sites[s]).toBe(true);
      expect(((i % W) - (s % W)) ** 2 + (Math.floor(i / W) - Math.floor(s / W)) ** 2).toBe(best);
    }
  });

  it('grows by a disc of radius N, shrinks by one, zero is a no-op', () => {
    const dot = plane(21, 21, (x, y) => x === 10 && y === 10);
    const grown = growMask(dot, 5);
    for (let y = 0; y < 21; y++)
      for (let x = 0; x < 21; x++)
        expect(grown.data[y * 21 + x]).toBe((x - 10) ** 2 + (y - 10) ** 2 <= 25 ? 1 : 0);
    const square = plane(12, 12, (x, y) => x >= 2 && x < 10 && y >= 2 && y < 10);
    const shrunk = growMask(square, -2);
    for (let y = 0; y < 12; y++)
      for (let x = 0; x < 12; x++)
        expect(shrunk.data[y * 12 + x]).toBe(x >= 4 && x < 8 && y >= 4 && y < 8 ? 1 : 0);
    expect(Array.from(growMask(square, 0).data)).toEqual(Array.from(square.data));
    expect(isMaskEmpty(growMask(square, -4))).toBe(true);
    // The image border is not "off": a full mask stays full when shrunk.
    expect(
      isMaskEmpty(
        growMask(
          plane(5, 5, () => true),
          -2,
        ),
      ),
    ).toBe(false);
  });
});

describe('feather', () => {
  it("uses A1111's kernel reach, keeps exact 0 and 1 beyond it, is symmetric and 0.5 on a straight edge", () => {
    expect(featherReach(4)).toBe(10);
    expect(featherReach(0)).toBe(0);
    const half = plane(60, 3, (x) => x >= 30);
    const f = featherMask(half, 4);
    for (let x = 0; x < 60; x++) {
      const v = f.data[60 + x];
      if (x < 30 - 10) expect(v).toBe(0);
      else if (x >= 30 + 10) expect(v).toBe(1);
      else expect(v).toBeGreaterThan(0);
      if (x >= 30 - 10 && x < 30 + 10) expect(v).toBeLessThan(1);
      // Symmetry about the edge between pixels 29 and 30.
      expect(v + f.data[60 + 59 - x]).toBeCloseTo(1, 5);
    }
    expect(Array.from(featherMask(half, 0).data)).toEqual(Array.from(half.data));
  });
});

describe('bounds, crop region, downscale', () => {
  it('finds the box, pads it, widens it to the processing aspect inside the image', () => {
    const m = plane(100, 80, (x, y) => x >= 40 && x < 50 && y >= 30 && y < 36);
    expect(maskBounds(m)).toEqual({ x0: 40, y0: 30, x1: 50, y1: 36 });
    expect(maskBounds(plane(4, 4, () => false))).toBeNull();
    // 10x6 + 4 padding -> 18x14, widened to 1:1 -> 18x18.
    const r = cropRegion(m, 4, 64, 64)!;
    expect(r.x1 - r.x0).toBe(r.y1 - r.y0);
    expect(r.x1 - r.x0).toBe(18);
    expect(r.x0 <= 40 && r.x1 >= 50 && r.y0 <= 30 && r.y1 >= 36).toBe(true);
    // Near a corner the widened box is shifted inside the image, not cut.
    const corner = plane(100, 80, (x, y) => x < 4 && y >= 70);
    const c = cropRegion(corner, 2, 128, 64)!;
    expect(c).toEqual({ x0: 0, y0: 68, x1: 24, y1: 80 });
    expect((c.x1 - c.x0) / (c.y1 - c.y0)).toBe(2);
  });

  it('nearest takes the centre pixel; max keeps any painted pixel', () => {
    const m = plane(16, 16, (x, y) => x === 1 && y === 1); // one pixel, not a block centre
    expect(isMaskEmpty(downscaleMask(m, 2, 2, 'nearest'))).toBe(true);
    expect(Array.from(downscaleMask(m, 2, 2, 'max').data)).toEqual([1, 0, 0, 0]);
    const c = plane(16, 16, (x, y) => x === 4 && y === 12);
    expect(Array.from(downscaleMask(c, 2, 2, 'nearest').data)).toEqual([0, 0, 1, 0]);
  });
});

describe('composite and fill', () => {
  const base: PixelImage = {
    width: 3,
    height: 1,
    channels: 3,
    data: Uint8Array.from([10, 20, 30, 40, 50, 60, 70, 80, 90]),
  };
  it('alpha 0 keeps the base bit for bit, 1 takes the top, between mixes; offsets place the top', () => {
    const top: PixelImage = { width: 2, height: 1, channels: 3, data: new Uint8Array(6).fill(200) };
    const alpha: MaskPlane = { width: 3, height: 1, data: Float32Array.from([0.5, 1, 0]) };
    const out = compositeWithMask(base, top, alpha, 1, 0);
    expect(Array.from(out.data)).toEqual([10, 20, 30, 200, 200, 200, 70, 80, 90]);
    const mid = compositeWithMask(base, top, alpha, 0, 0);
    expect(Array.from(mid.data.subarray(0, 3))).toEqual([105, 110, 115]);
    expect(() =>
      compositeWithMask(base, top, { width: 2, height: 1, data: new Float32Array(2) }),
    ).toThrow(EngineError);
  });

  it('original keeps, noise is seeded and stays in the mask, edge spreads border colours', () => {
    const W = 20;
    const H = 10;
    const img: PixelImage = { width: W, height: H, channels: 3, data: new Uint8Array(W * H * 3) };
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) img.data.set(x < 10 ? [200, 0, 0] : [0, 0, 200], (y * W + x) * 3);
    const hole = plane(W, H, (x, y) => x >= 6 && x < 14 && y >= 2 && y < 8);
    expect(fillMasked(img, hole, 'original')).toBe(img);
    const n1 = fillMasked(img, hole, 'noise', 9);
    const n2 = fillMasked(img, hole, 'noise', 9);
    const n3 = fillMasked(img, hole, 'noise', 10);
    expect(Buffer.from(n1.data).equals(Buffer.from(n2.data))).toBe(true);
    expect(Buffer.from(n1.data).equals(Buffer.from(n3.data))).toBe(false);
    const e = fillMasked(img, hole, 'edge');
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++) {
        const o = (y * W + x) * 3;
        const inHole = hole.data[y * W + x] > 0;
        if (!inHole) {
          expect(Array.from(n1.data.subarray(o, o + 3))).toEqual(
            Array.from(img.data.subarray(o, o + 3)),
          );
          expect(Array.from(e.data.subarray(o, o + 3))).toEqual(
            Array.from(img.data.subarray(o, o + 3)),
          );
        }
      }
    // Deep in the hole's left part red dominates, in its right part blue; never anything else.
    const at = (x: number, y: number) =>
      Array.from(e.data.subarray((y * W + x) * 3, (y * W + x) * 3 + 3));
    expect(at(6, 4)[0]).toBeGreaterThan(at(6, 4)[2]);
    expect(at(13, 4)[2]).toBeGreaterThan(at(13, 4)[0]);
    expect(at(9, 5)[1]).toBe(0);
  });
});
