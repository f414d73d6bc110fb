// SDXL with ControlNet in the engine: the sdxl fixture checkpoint converted with a residual UNet
// and the SDXL fixture ControlNet (label_emb: it takes text_embeds and time_ids as the UNet does,
// tests/fixtures/reference/controlnet-sdxl.*) converted beside it. Weight 0 must give the plain
// generation bit for bit and a unit must change the picture.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine, type PixelImage } from '../../src/engine';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { emitControlNet } from '../../src/engine/convert/emit';
import type { ControlNetArchitecture } from '../../src/engine/convert/types';
import { type ControlNetUnit, GenerationSettings } from '../../src/shared/generation';
import { FixtureSafetensors } from '../fixtures/safetensors-fixture';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';

const REF = path.join(__dirname, '../fixtures/reference');
let dir: string;
let model: string;
let controlnet: string;
const engine = new DiffusionEngine({ previewEvery: 0 });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'controlnet-sdxl-'));
  const { file, arch } = await smallCheckpoint(dir, 'sdxl');
  model = path.join(dir, 'sdxl-control');
  await convertCheckpoint(file, model, {
    vocabularyFile: VOCABULARY,
    architecture: arch,
    precision: 'fp32',
    controlResiduals: true,
  });
  const cnArch = JSON.parse(
    await readFile(path.join(REF, 'controlnet-sdxl.json'), 'utf8'),
  ) as ControlNetArchitecture;
  const source = new FixtureSafetensors(path.join(REF, 'controlnet-sdxl.safetensors'));
  try {
    const out = await emitControlNet(source, cnArch, {
      dir: path.join(dir, 'cn'),
      precision: 'fp32',
    });
    controlnet = out.model;
  } finally {
    await source.close();
  }
}, 180_000);
afterAll(async () => {
  await engine.release();
  await rm(dir, { recursive: true, force: true });
});

const SIZE = 64;

function square(): PixelImage {
  const data = new Uint8Array(SIZE * SIZE * 3);
  for (let y = 16; y < 48; y++) data.fill(255, (y * SIZE + 16) * 3, (y * SIZE + 48) * 3);
  return { width: SIZE, height: SIZE, channels: 3, data };
}

async function generate(
  units: Partial<ControlNetUnit>[] = [],
): Promise<Uint8Array | Uint8ClampedArray> {
  const settings = GenerationSettings.parse({
    model: 'fixture',
    prompt: 'a red house on a hill',
    seed: 5,
    sampler: 'euler',
    steps: 4,
    guidance: 5,
    width: SIZE,
    height: SIZE,
    controlnets: units.map((u) => ({ model: 'cn', image: 'control.png', ...u })),
  });
  const result = await engine.generate({
    modelDir: model,
    settings,
    controlnets: units.map(() => ({ file: controlnet, image: square() })),
  });
  expect(result.family).toBe('sdxl');
  return result.images[0]!.image.data;
}

function meanAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i] - b[i]);
  return s / a.length;
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
