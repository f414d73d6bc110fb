// ControlNet beyond text to image: image to image, inpainting (a 4-channel UNet, whose known
// latents are blended back, and a 9-channel inpainting UNet, whose ControlNet sees only the 4
// latent channels), "only masked" (the control image cropped as the picture is), the hires fix
// (both passes) and the hires upscaler under tiled diffusion (each tile's ControlNet call sees its
// part of the control image). In each, weight 0 must give the plain result bit for bit and a
// unit must change it; x4 upscaling and outpainting refuse a unit in one sentence.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DiffusionEngine, type PixelImage } from '../../src/engine';
import { controlImage } from '../../src/engine/pipelines/controlnet';
import { cropPlanes } from '../../src/engine/pipelines/tiling';
import { type ControlNetUnit, type GenerationInput } from '../../src/shared/generation';
import {
  convertedFixture,
  fixtureControlNet,
  meanAbsDiff as valuesDiff,
  squareImage as square,
  controlSettings,
} from '../fixtures/controlnet-fixture';
import { fixtureModelInfo } from '../fixtures/models';

let dir: string;
let four: string;
let nine: string;
let controlnet: string;
const engine = new DiffusionEngine({ previewEvery: 0 });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'controlnet-modes-'));
  const residuals = { controlResiduals: true };
  four = await convertedFixture(dir, 'sd1', path.join(dir, 'sd1-control'), residuals);
  nine = await convertedFixture(dir, 'sd1', path.join(dir, 'sd1-inpainting-control'), {
    ...residuals,
    inpainting: true,
  });
  controlnet = await fixtureControlNet(path.join(dir, 'cn'), 'sd1');
}, 180_000);
afterAll(async () => {
  await engine.release();
  await rm(dir, { recursive: true, force: true });
});

const SIZE = 64;

/** A smooth colour ramp: the picture to repaint or enlarge. */
function picture(): PixelImage {
  const data = new Uint8Array(SIZE * SIZE * 3);
  for (let y = 0; y < SIZE; y++)
    for (let x = 0; x < SIZE; x++) data.set([x * 4, y * 4, 128], (y * SIZE + x) * 3);
  return { width: SIZE, height: SIZE, channels: 3, data };
}

/** White (repaint) in the left half. */
function leftHalf(): PixelImage {
  const data = new Uint8Array(SIZE * SIZE);
  for (let y = 0; y < SIZE; y++) data.fill(255, y * SIZE, y * SIZE + SIZE / 2);
  return { width: SIZE, height: SIZE, channels: 1, data };
}

async function generate(
  modelDir: string,
  over: Partial<GenerationInput>,
  unit: Partial<ControlNetUnit> | null,
  e: DiffusionEngine = engine,
): Promise<PixelImage> {
  const settings = controlSettings(unit ? [unit] : [], { seed: 7, ...over });
  const result = await e.generate({
    modelDir,
    settings,
    initImage: picture(),
    maskImage: leftHalf(),
    controlnets: unit ? [{ file: controlnet, image: square() }] : [],
  });
  return result.images[0]!.image;
}

/** Records the feeds' shapes (and controlnet_cond's values) of every ControlNet call. */
function spyOnControlNet() {
  const calls: { dims: Record<string, number[]>; cond: Float32Array }[] = [];
  // The factory's runtime value is the session class, whose prototype every session shares.
  const proto = (ort.InferenceSession as unknown as { prototype: ort.InferenceSession }).prototype;
  const original = proto.run;
  const spy = vi.spyOn(proto, 'run').mockImplementation(async function (
    this: ort.InferenceSession,
    ...args: Parameters<typeof original>
  ) {
    const feeds = args[0] as Record<string, ort.Tensor>;
    if (feeds.controlnet_cond) {
      const dims: Record<string, number[]> = {};
      for (const [name, t] of Object.entries(feeds)) dims[name] = [...t.dims];
      calls.push({ dims, cond: Float32Array.from(feeds.controlnet_cond.data as Float32Array) });
    }
    return original.apply(this, args);
  } as typeof original);
  return { calls, restore: () => spy.mockRestore() };
}

function meanAbsDiff(a: PixelImage, b: PixelImage): number {
  expect([a.width, a.height]).toEqual([b.width, b.height]);
  return valuesDiff(a.data, b.data);
}

/** Weight 0 gives `plain` bit for bit; weight 1 moves the picture. Returns the controlled one. */
async function expectControl(
  modelDir: string,
  over: Partial<GenerationInput>,
  e?: DiffusionEngine,
): Promise<{ plain: PixelImage; guided: PixelImage }> {
  const plain = await generate(modelDir, over, null, e);
  expect((await generate(modelDir, over, { weight: 0 }, e)).data).toEqual(plain.data);
  const guided = await generate(modelDir, over, {}, e);
  expect(meanAbsDiff(guided, plain)).toBeGreaterThan(0.5);
  return { plain, guided };
}

/** Whether the right half (kept by the inpainting mask) equals the input picture exactly. */
function keptRightHalf(out: PixelImage): boolean {
  const input = picture();
  for (let y = 0; y < SIZE; y++)
    for (let x = SIZE / 2; x < SIZE; x++)
      for (let c = 0; c < 3; c++)
        if (out.data[(y * SIZE + x) * 3 + c] !== input.data[(y * SIZE + x) * 3 + c]) return false;
  return true;
}

describe('ControlNet in the other modes', () => {
  it('image to image', async () => {
    await expectControl(four, { mode: 'img2img', initImage: 'init.png', strength: 0.7 });
  });

  it('inpainting with a 4-channel UNet: the unit acts in the mask, the rest stays', async () => {
    const mask = { image: 'mask.png', blur: 0 };
    const { guided } = await expectControl(four, { mode: 'inpaint', initImage: 'i', mask });
    expect(keptRightHalf(guided)).toBe(true);
  });

  it('inpainting with a 9-channel inpainting UNet: the ControlNet takes the 4 latent channels', async () => {
    const mask = { image: 'mask.png', blur: 0 };
    const cn = spyOnControlNet();
    try {
      const { guided } = await expectControl(nine, { mode: 'inpaint', initImage: 'i', mask });
      expect(keptRightHalf(guided)).toBe(true);
      expect(cn.calls.length).toBeGreaterThan(0);
      for (const c of cn.calls) expect(c.dims.sample).toEqual([2, 4, 8, 8]);
    } finally {
      cn.restore();
    }
  });

  it('"only masked": the control image is cropped with the picture', async () => {
    const mask = { image: 'mask.png', blur: 0, onlyMasked: true, padding: 0 };
    // Generated at 64 x 128, the aspect of the masked left half (32 x 64): the crop is exactly
    // that half, enlarged twice.
    const over: Partial<GenerationInput> = { mode: 'inpaint', initImage: 'i', mask, height: 128 };
    const { guided } = await expectControl(four, over);
    expect(keptRightHalf(guided)).toBe(true);
    const cn = spyOnControlNet();
    try {
      await generate(four, over, {});
      expect(cn.calls[0].dims.controlnet_cond).toEqual([2, 3, 128, 64]);
      // Middle row: the square covers columns 16..47 of the picture, so the half's columns 16..31
      // (32..63 enlarged) are white and 0..15 (0..31) black; Lanczos rings near the edge only.
      const row = Array.from(cn.calls[0].cond.subarray(64 * 64, 65 * 64));
      expect(row.slice(0, 26)).toEqual(Array<number>(26).fill(0));
      expect(row.slice(38)).toEqual(Array<number>(26).fill(1));
    } finally {
      cn.restore();
    }
  });

  it('the hires fix guides both passes', async () => {
    const cn = spyOnControlNet();
    try {
      const upscale = { method: 'hires' as const, factor: 2, hiresSteps: 4, hiresStrength: 0.5 };
      cn.calls.length = 0;
      const { guided } = await expectControl(four, { upscale });
      expect([guided.width, guided.height]).toEqual([128, 128]);
      const sizes = new Set(cn.calls.map((c) => c.dims.controlnet_cond.join('x')));
      expect(sizes).toEqual(new Set(['2x3x64x64', '2x3x128x128']));
    } finally {
      cn.restore();
    }
  });

  it('the hires upscaler under tiled diffusion: each tile sees its part of the control image', async () => {
    const upscale = {
      method: 'hires' as const,
      factor: 2,
      hiresSteps: 4,
      hiresStrength: 0.5,
      tile: 64,
    };
    const cn = spyOnControlNet();
    try {
      await expectControl(four, { mode: 'upscale', initImage: 'i', upscale });
      const dims = new Set(cn.calls.map((c) => c.dims.controlnet_cond.join('x')));
      expect(dims).toEqual(new Set(['2x3x64x64']));
      expect(cn.calls.map((c) => c.dims.sample.join('x'))).toContain('2x4x8x8');
      // The whole control image at the 128 x 128 output, and its tiles at the corners.
      const whole = controlImage(
        square(),
        { preprocessor: 'none', lowThreshold: 100, highThreshold: 200 },
        128,
        128,
      ).tensor;
      const seen = cn.calls.map((c) => c.cond.subarray(0, 3 * 64 * 64));
      for (const [y, x] of [
        [0, 0],
        [64, 64],
      ]) {
        const tile = cropPlanes(whole, 3, 128, 128, { y, x, h: 64, w: 64 });
        expect(
          seen.some((c) => c.every((v, i) => v === tile[i])),
          `tile ${y},${x}`,
        ).toBe(true);
      }
    } finally {
      cn.restore();
    }
  });

  it('x4 upscaling and outpainting refuse a unit in one sentence; weight 0 asks nothing', async () => {
    const x4 = await fixtureModelInfo('x4-ka', { family: 'x4', unet: 'known-answer' });
    const up = { mode: 'upscale' as const, initImage: 'i', upscale: { method: 'x4' as const } };
    await expect(generate(x4.dir, up, {})).rejects.toThrow(
      /^The x4 upscaler takes no ControlNet \(no ControlNet is made for its UNet\); [^.]*\.$/,
    );
    await generate(x4.dir, { ...up, guidance: 1, steps: 2 }, { weight: 0 });
    const out = { mode: 'outpaint' as const, initImage: 'i', outpaint: { left: 8 } };
    await expect(generate(four, out, {})).rejects.toThrow(
      /^ControlNet does not work with outpainting yet; [^.]*\.$/,
    );
  });
});
