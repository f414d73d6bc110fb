// ControlNet end to end in the engine: the sd1 fixture checkpoint converted with a residual UNet,
// the fixture ControlNet (tests/fixtures/reference/controlnet-sd1.*) converted beside it, and
// generations through DiffusionEngine. Weight 0 and a unit outside its start/end must give the
// plain generation bit for bit; the control image must change the picture, and a plain UNet
// must refuse a unit with one sentence.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine, type PixelImage } from '../../src/engine';
import { type ControlNetUnit, type GenerationInput } from '../../src/shared/generation';
import {
  controlSettings,
  convertedFixture,
  fixtureControlNet,
  meanAbsDiff,
} from '../fixtures/controlnet-fixture';

let dir: string;
let withResiduals: string;
let plain: string;
let controlnet: string;
const engine = new DiffusionEngine({ previewEvery: 0 });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'controlnet-'));
  withResiduals = await convertedFixture(dir, 'sd1', path.join(dir, 'sd1-control'), {
    controlResiduals: true,
  });
  plain = await convertedFixture(dir, 'sd1', path.join(dir, 'sd1-plain'));
  controlnet = await fixtureControlNet(path.join(dir, 'cn'), 'sd1');
}, 120_000);
afterAll(async () => {
  await engine.release();
  await rm(dir, { recursive: true, force: true });
});

const SIZE = 64;

/** A white square (or disc) on black: what canny or a line drawing gives a ControlNet. */
function shape(kind: 'square' | 'disc'): PixelImage {
  const data = new Uint8Array(SIZE * SIZE * 3);
  for (let y = 0; y < SIZE; y++) {
    for (let x = 0; x < SIZE; x++) {
      const inside =
        kind === 'square'
          ? x >= 16 && x < 48 && y >= 16 && y < 48
          : (x - 32) ** 2 + (y - 32) ** 2 < 14 ** 2;
      data.fill(inside ? 255 : 0, (y * SIZE + x) * 3, (y * SIZE + x) * 3 + 3);
    }
  }
  return { width: SIZE, height: SIZE, channels: 3, data };
}

async function generate(
  modelDir: string,
  units: Partial<ControlNetUnit>[] = [],
  images: PixelImage[] = [],
  extra: Partial<GenerationInput> = {},
): Promise<Uint8Array | Uint8ClampedArray> {
  const settings = controlSettings(units, extra);
  const result = await engine.generate({
    modelDir,
    settings,
    controlnets: images.map((image) => ({ file: controlnet, image })),
  });
  return result.images[0]!.image.data;
}

describe('ControlNet in the engine', () => {
  it('weight 0, or a unit outside its start/end, gives the plain generation bit for bit', async () => {
    const none = await generate(withResiduals);
    expect(await generate(withResiduals, [{ weight: 0 }], [shape('square')])).toEqual(none);
    // Active only from step 4 of 4 on: never.
    expect(await generate(withResiduals, [{ start: 1, end: 1 }], [shape('square')])).toEqual(none);
  });

  it('the control image shapes the result; the same control reproduces it', async () => {
    const none = await generate(withResiduals);
    const square = await generate(withResiduals, [{}], [shape('square')]);
    const disc = await generate(withResiduals, [{}], [shape('disc')]);
    expect(await generate(withResiduals, [{}], [shape('square')])).toEqual(square);
    expect(meanAbsDiff(square, none)).toBeGreaterThan(1);
    expect(meanAbsDiff(square, disc)).toBeGreaterThan(1);
    // Half the weight moves the picture less than the full weight does.
    const half = await generate(withResiduals, [{ weight: 0.5 }], [shape('square')]);
    expect(meanAbsDiff(half, none)).toBeLessThan(meanAbsDiff(square, none));
  });

  it('two units sum; guess mode and the canny preprocessor change the result', async () => {
    const one = await generate(withResiduals, [{}], [shape('square')]);
    const two = await generate(
      withResiduals,
      [{}, { weight: 0.7 }],
      [shape('square'), shape('disc')],
    );
    expect(meanAbsDiff(one, two)).toBeGreaterThan(0.5);
    const guess = await generate(withResiduals, [{ guess: true }], [shape('square')]);
    expect(meanAbsDiff(one, guess)).toBeGreaterThan(0.5);
    const edges = await generate(withResiduals, [{ preprocessor: 'canny' }], [shape('square')]);
    expect(meanAbsDiff(one, edges)).toBeGreaterThan(0.5);
  });

  it('a model whose UNet takes no residuals refuses a unit in one sentence', async () => {
    await expect(generate(plain, [{}], [shape('square')])).rejects.toThrow(
      /takes no ControlNet residuals and the folder has no ControlNet UNet .*\.$/,
    );
    // Weight 0 asks nothing of the UNet.
    expect(await generate(plain, [{ weight: 0 }], [shape('square')])).toEqual(
      await generate(plain),
    );
  });
});
