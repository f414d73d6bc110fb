// ONNX ControlNets and ControlNet UNets made by other tools, used as they are: the graphs in
// tests/fixtures/reference/controlnet-sd1-onnx were exported by torch.onnx from the reference
// PyTorch modules with the fixture's weights (tools/convert-reference/make_controlnet_onnx.py),
// named as the diffusers-based ONNX scripts name them (ControlNet outputs matched by position,
// UNet inputs down_block_add_resNN / mid_block_res_sample), and a model folder in OnnxStack's
// layout (plain unet/ plus the ControlNet UNet in controlnet/). Each must give what the
// converter's own graphs give.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine } from '../../src/engine';
import { controlNetModelPath } from '../../src/engine/pipelines/controlnet-io';
import { type ControlNetUnit, type GenerationInput } from '../../src/shared/generation';
import {
  REFERENCE,
  convertedFixture,
  fixtureControlNet,
  meanAbsDiff,
  squareImage,
  controlSettings,
} from '../fixtures/controlnet-fixture';

const EXPORTED = path.join(REFERENCE, 'controlnet-sd1-onnx');
let dir: string;
let withResiduals: string;
let plain: string;
let stack: string;
let exportedUnet: string;
let ours: string;
const engine = new DiffusionEngine({ previewEvery: 0 });

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'controlnet-onnx-'));
  withResiduals = await convertedFixture(dir, 'sd1', path.join(dir, 'sd1-control'), {
    controlResiduals: true,
  });
  plain = await convertedFixture(dir, 'sd1', path.join(dir, 'sd1-plain'));
  // OnnxStack's layout: the plain UNet in unet/, the UNet with residual inputs in controlnet/.
  stack = path.join(dir, 'sd1-stack');
  await cp(plain, stack, { recursive: true });
  await cp(path.join(withResiduals, 'unet'), path.join(stack, 'controlnet'), { recursive: true });
  // The diffusers-script layout: unet/ replaced by the torch export with down_block_add_resNN.
  exportedUnet = path.join(dir, 'sd1-exported-unet');
  await cp(plain, exportedUnet, { recursive: true });
  await rm(path.join(exportedUnet, 'unet'), { recursive: true });
  await cp(path.join(EXPORTED, 'unet'), path.join(exportedUnet, 'unet'), { recursive: true });
  ours = await fixtureControlNet(path.join(dir, 'cn'), 'sd1');
}, 120_000);
afterAll(async () => {
  await engine.release();
  await rm(dir, { recursive: true, force: true });
});

async function generate(
  modelDir: string,
  controlnet: string | null,
  unit: Partial<ControlNetUnit> = {},
  extra: Partial<GenerationInput> = {},
): Promise<Uint8Array | Uint8ClampedArray> {
  const settings = controlSettings(controlnet ? [unit] : [], extra);
  const result = await engine.generate({
    modelDir,
    settings,
    controlnets: controlnet ? [{ file: controlnet, image: squareImage() }] : [],
  });
  return result.images[0]!.image.data;
}

describe('ONNX ControlNet exports used as they are', () => {
  it("a folder in OnnxStack's layout runs its ControlNet UNet for a unit, its plain UNet without", async () => {
    const converted = await generate(withResiduals, ours);
    expect(await generate(stack, ours)).toEqual(converted);
    expect(await generate(stack, null)).toEqual(await generate(plain, null));
  });

  it('a plain UNet without a ControlNet UNet beside it refuses a unit in one sentence', async () => {
    await expect(generate(plain, ours)).rejects.toThrow(
      /^sd1-plain's UNet takes no ControlNet residuals and the folder has no ControlNet UNet \(controlnet\/model\.onnx\); convert .*\.$/,
    );
  });

  it('a torch-exported ControlNet folder (outputs matched by position) guides as the converted one does', async () => {
    const none = await generate(withResiduals, null);
    const converted = await generate(withResiduals, ours);
    // The folder holds controlnet/model.onnx, as a diffusers ONNX pipeline folder does.
    const exported = await generate(withResiduals, EXPORTED);
    expect(meanAbsDiff(converted, none)).toBeGreaterThan(1);
    expect(meanAbsDiff(exported, converted)).toBeLessThan(0.05);
  });

  it('a torch-exported UNet with down_block_add_resNN inputs takes the residuals', async () => {
    const converted = await generate(withResiduals, ours);
    const exported = await generate(exportedUnet, EXPORTED);
    expect(meanAbsDiff(exported, converted)).toBeLessThan(0.05);
    // Fed zeros (weight 0), it gives its plain output: the same picture as the plain folder.
    const zero = await generate(exportedUnet, EXPORTED, { weight: 0 });
    expect(meanAbsDiff(zero, await generate(plain, null))).toBeLessThan(0.05);
    expect(meanAbsDiff(exported, zero)).toBeGreaterThan(1);
  });

  it('finds model.onnx in a ControlNet folder, or says there is none', async () => {
    expect(await controlNetModelPath(EXPORTED)).toBe(
      path.join(EXPORTED, 'controlnet', 'model.onnx'),
    );
    expect(await controlNetModelPath(path.join(EXPORTED, 'controlnet'))).toBe(
      path.join(EXPORTED, 'controlnet', 'model.onnx'),
    );
    await expect(controlNetModelPath(dir)).rejects.toThrow(
      /^The ControlNet folder .* holds no model\.onnx \(nor controlnet\/model\.onnx\)\.$/,
    );
  });
});
