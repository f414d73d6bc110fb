import { describe, expect, test } from 'vitest';
import { EngineError } from '../../src/engine/errors';
import {
  SD15_LATENT_RGB,
  SDXL_LATENT_RGB,
  imageToTensor,
  latentPreview,
  latentRgbFactorsFor,
  maskToTensor,
  resizeBilinear,
  resizeLanczos,
  resizeNearest,
  tensorToImage,
  toRgb,
  type PixelImage,
} from '../../src/engine/image';

function rgb(
  width: number,
  height: number,
  f: (x: number, y: number, c: number) => number,
): PixelImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = f(x, y, c);
  return { width, height, channels: 3, data };
}

function px(img: PixelImage, x: number, y: number, c = 0): number {
  return img.data[(y * img.width + x) * img.channels + c];
}

describe('pixels <-> tensors', () => {
  test('imageToTensor maps 0..255 to -1..1 in NCHW order', () => {
    const img: PixelImage = {
      width: 2,
      height: 1,
      channels: 3,
      data: Uint8Array.from([0, 255, 51, 255, 0, 204]),
    };
    const t = imageToTensor(img);
    expect(t.dims).toEqual([1, 3, 1, 2]);
    // channel planes: R = [0,255], G = [255,0], B = [51,204]
    expect(Array.from(t.data)).toEqual(
      [-1, 1, 1, -1, 51 / 127.5 - 1, 204 / 127.5 - 1].map((v) => Math.fround(v)),
    );
  });

  test('RGBA drops alpha; gray is repeated on three channels', () => {
    const rgba: PixelImage = {
      width: 1,
      height: 1,
      channels: 4,
      data: Uint8Array.from([10, 20, 30, 0]),
    };
    const gray: PixelImage = { width: 1, height: 1, channels: 1, data: Uint8Array.from([255]) };
    expect(Array.from(imageToTensor(rgba).data)).toEqual(
      Array.from(imageToTensor(toRgb(rgba)).data),
    );
    expect(Array.from(imageToTensor(gray).data)).toEqual([1, 1, 1]);
  });

  test('round trip image -> tensor -> image is exact for every byte value', () => {
    const img = rgb(256, 2, (x, y, c) => (x + 85 * c + y) % 256);
    const t = imageToTensor(img);
    const back = tensorToImage(t.data, t.dims);
    expect(back.width).toBe(256);
    expect(back.height).toBe(2);
    expect(Buffer.from(back.data).equals(Buffer.from(img.data))).toBe(true);
  });

  test('tensorToImage clips to [0,255], maps NaN to 0 and picks the batch index', () => {
    // batch of 2, 1x1 pixels: image 0 = (-5, 5, NaN), image 1 = (0, 0.5, -0.5)
    const data = Float32Array.from([-5, 5, NaN, 0, 0.5, -0.5]);
    expect(Array.from(tensorToImage(data, [2, 3, 1, 1], 0).data)).toEqual([0, 255, 0]);
    // 0 -> 0.5*255 = 127.5 -> 128 (half to even); 0.5 -> 191.25 -> 191; -0.5 -> 63.75 -> 64
    expect(Array.from(tensorToImage(data, [2, 3, 1, 1], 1).data)).toEqual([128, 191, 64]);
  });

  test('tensorToImage rejects a non-RGB tensor', () => {
    expect(() => tensorToImage(new Float32Array(4), [1, 4, 1, 1])).toThrow(EngineError);
  });

  test('maskToTensor binarizes at one half (white = repaint)', () => {
    const mask: PixelImage = {
      width: 4,
      height: 1,
      channels: 1,
      data: Uint8Array.from([0, 127, 128, 255]),
    };
    const t = maskToTensor(mask);
    expect(t.dims).toEqual([1, 1, 1, 4]);
    expect(Array.from(t.data)).toEqual([0, 0, 1, 1]);
  });

  test('a mis-sized buffer is a bad-input error naming the sizes', () => {
    const bad: PixelImage = { width: 2, height: 2, channels: 3, data: new Uint8Array(5) };
    try {
      imageToTensor(bad);
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(EngineError);
      expect((e as EngineError).code).toBe('bad-input');
      expect((e as EngineError).message).toContain('2x2x3');
    }
  });
});

describe('resize', () => {
  const constant = rgb(13, 9, (_x, _y, c) => [200, 17, 90][c]);

  test.each([
    ['bilinear', resizeBilinear],
    ['lanczos3', resizeLanczos],
    ['nearest', resizeNearest],
  ] as const)('%s keeps a constant image constant, up and down', (_name, fn) => {
    for (const [w, h] of [
      [31, 20],
      [5, 4],
      [13, 9],
      [1, 1],
    ]) {
      const out = fn(constant, w, h);
      expect(out.width).toBe(w);
      expect(out.height).toBe(h);
      for (let i = 0; i < out.data.length; i++) expect(out.data[i]).toBe([200, 17, 90][i % 3]);
    }
  });

  test('Lanczos-3 keeps a linear ramp linear away from the edges', () => {
    // Ramp along x: value = 4x + 10 on 48 pixels; upscale by 1.5 and downscale by 2.
    const ramp = rgb(48, 3, (x) => 4 * x + 10);
    for (const w of [72, 24]) {
      const out = resizeLanczos(ramp, w, 3);
      const s = 48 / w;
      const margin = Math.ceil((3 * Math.max(s, 1)) / s) + 1; // output pixels whose taps reach an edge
      for (let x = margin; x < w - margin; x++) {
        const srcX = (x + 0.5) * s - 0.5; // the input coordinate of the output pixel's centre
        expect(Math.abs(px(out, x, 1) - (4 * srcX + 10))).toBeLessThanOrEqual(1);
      }
    }
  });

  test('bilinear 2x upscale of two pixels gives the known interpolation', () => {
    const img: PixelImage = { width: 2, height: 1, channels: 1, data: Uint8Array.from([0, 100]) };
    const out = resizeBilinear(img, 4, 1);
    // centres map to -0.25, 0.25, 0.75, 1.25 in input pixel units -> 0, 25, 75, 100 (edges clamp)
    expect(Array.from(out.data)).toEqual([0, 25, 75, 100]);
  });

  test('bilinear 2x downscale widens the triangle to two input pixels (antialiased, as Pillow)', () => {
    const img: PixelImage = {
      width: 4,
      height: 1,
      channels: 1,
      data: Uint8Array.from([0, 100, 200, 40]),
    };
    // output 0 centre = 1.0: taps at 0.5, 1.5, 2.5 weigh 0.75, 0.75, 0.25 (sum 1.75)
    //   (0*0.75 + 100*0.75 + 200*0.25) / 1.75 = 71.43
    // output 1 centre = 3.0: taps at 1.5, 2.5, 3.5 weigh 0.25, 0.75, 0.75
    //   (100*0.25 + 200*0.75 + 40*0.75) / 1.75 = 117.14
    expect(Array.from(resizeBilinear(img, 2, 1).data)).toEqual([71, 117]);
  });

  test('Lanczos overshoot is clamped, not wrapped', () => {
    const step = rgb(16, 1, (x) => (x < 8 ? 0 : 255));
    const out = resizeLanczos(step, 40, 1);
    let sawLow = false;
    let sawHigh = false;
    for (let x = 0; x < 40; x++) {
      const v = px(out, x, 0);
      if (x < 14) expect(v).toBeLessThan(30);
      if (x > 26) expect(v).toBeGreaterThan(225);
      sawLow ||= v === 0;
      sawHigh ||= v === 255;
    }
    expect(sawLow && sawHigh).toBe(true);
  });

  test('nearest keeps a mask binary and maps blocks exactly', () => {
    const mask: PixelImage = {
      width: 2,
      height: 2,
      channels: 1,
      data: Uint8Array.from([0, 255, 255, 0]),
    };
    const up = resizeNearest(mask, 4, 4);
    expect(Array.from(up.data)).toEqual([
      0, 0, 255, 255, 0, 0, 255, 255, 255, 255, 0, 0, 255, 255, 0, 0,
    ]);
    const down = resizeNearest(up, 2, 2);
    expect(Array.from(down.data)).toEqual([0, 255, 255, 0]);
    const odd = resizeNearest(up, 3, 5);
    for (const v of odd.data) expect(v === 0 || v === 255).toBe(true);
  });

  test('RGBA keeps its four channels through a resize', () => {
    const img: PixelImage = { width: 2, height: 2, channels: 4, data: new Uint8Array(16).fill(77) };
    const out = resizeLanczos(img, 3, 3);
    expect(out.channels).toBe(4);
    expect(out.data.length).toBe(36);
    expect(out.data.every((v) => v === 77)).toBe(true);
  });

  test('a zero target size is rejected', () => {
    expect(() => resizeBilinear(constant, 0, 4)).toThrow(/Cannot resize to 0x4/);
  });
});

describe('latent preview', () => {
  test('maps each latent pixel through the SD1.5 factors', () => {
    // one 1x2 latent: pixel 0 = (1,0,0,0), pixel 1 = (0,0,0,-1)
    const lat = Float32Array.from([1, 0, 0, 0, 0, 0, 0, -1]);
    const img = latentPreview(lat, [1, 4, 1, 2], SD15_LATENT_RGB);
    expect(img.width).toBe(2);
    expect(img.height).toBe(1);
    const expectByte = (v: number) => Math.round(((v + 1) / 2) * 255);
    expect(Array.from(img.data)).toEqual([
      expectByte(0.3512),
      expectByte(0.2297),
      expectByte(0.3227),
      expectByte(0.212),
      expectByte(0.2616),
      expectByte(0.7177),
    ]);
  });

  test('uses the SDXL bias, picks the batch item and enlarges by an integer scale', () => {
    const lat = new Float32Array(2 * 4 * 1 * 1);
    lat[4] = 10; // batch item 1, channel 0: saturates R and G and B upward
    const zero = latentPreview(lat, [2, 4, 1, 1], SDXL_LATENT_RGB, { index: 0, scale: 3 });
    expect(zero.width).toBe(3);
    expect(zero.height).toBe(3);
    expect(zero.data[0]).toBe(Math.round(((0.1084 + 1) / 2) * 255));
    expect(new Set(zero.data.filter((_, i) => i % 3 === 0))).toEqual(new Set([zero.data[0]]));
    const one = latentPreview(lat, [2, 4, 1, 1], SDXL_LATENT_RGB, { index: 1 });
    expect(Array.from(one.data)).toEqual([255, 255, 255]);
    expect(latentRgbFactorsFor('sdxl-turbo')).toBe(SDXL_LATENT_RGB);
    expect(latentRgbFactorsFor('sdxl-inpaint')).toBe(SDXL_LATENT_RGB);
    expect(latentRgbFactorsFor('sd1')).toBe(SD15_LATENT_RGB);
  });
});
