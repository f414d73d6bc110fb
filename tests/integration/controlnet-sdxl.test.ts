// SDXL with ControlNet in the engine: the sdxl fixture checkpoint converted with a residual UNet
// and the SDXL fixture ControlNet (label_emb: it takes text_embeds and time_ids as the UNet does,
// tests/fixtures/reference/controlnet-sdxl.*) converted beside it. Weight 0 must give the plain
// generation bit for bit and a unit must change the picture.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine } from '../../src/engine';
import type { ControlNetUnit } from '../../src/shared/generation';
import {
  convertedFixture,
  fixtureControlNet,
  meanAbsDiff,
  squareImage,
  controlSettings,
} from '../fixtures/controlnet-fixture';

let dir: string;
let model: string;
let controlnet: string;
const engine = new DiffusionEngine({ previewEvery: 0 });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'controlnet-sdxl-'));
  model = await convertedFixture(dir, 'sdxl', path.join(dir, 'sdxl-control'), {
    controlResiduals: true,
  });
  controlnet = await fixtureControlNet(path.join(dir, 'cn'), 'sdxl');
}, 180_000);
afterAll(async () => {
  await engine.release();
  await rm(dir, { recursive: true, force: true });
});

async function generate(
  units: Partial<ControlNetUnit>[] = [],
): Promise<Uint8Array | Uint8ClampedArray> {
  const settings = controlSettings(units, { seed: 5 });
  const result = await engine.generate({
    modelDir: model,
    settings,
    controlnets: units.map(() => ({ file: controlnet, image: squareImage() })),
  });
  expect(result.family).toBe('sdxl');
  return result.images[0]!.image.data;
}

describe('SDXL ControlNet in the engine', () => {
  it('weight 0 gives the plain generation bit for bit; a unit and guess mode change it', async () => {
    const none = await generate();
    expect(await generate([{ weight: 0 }])).toEqual(none);
    const guided = await generate([{}]);
    expect(meanAbsDiff(guided, none)).toBeGreaterThan(1);
    expect(meanAbsDiff(await generate([{ guess: true }]), guided)).toBeGreaterThan(0.5);
  });
});
