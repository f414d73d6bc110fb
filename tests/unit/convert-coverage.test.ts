// Full-size key coverage: the graphs built for the recorded SD 1.5, SD 2.1 and SDXL key sets
// (tests/fixtures/reference/keysets, instantiated from the original sources by
// tools/convert/record_keysets.py) use every key of the checkpoint except the known training
// leftovers, hold the parameter counts the published models have, and a missing key is a clear
// error. The emitters run as dry runs: every graph is built and every key checked, nothing is
// read or written.
import { beforeAll, describe, expect, it } from 'vitest';
import { detectArchitecture } from '../../src/engine/convert/detect';
import {
  emitTextEncoder,
  emitUnet,
  emitVaeDecoder,
  emitVaeEncoder,
  type EmitResult,
} from '../../src/engine/convert/emit/index';
import type { CheckpointArchitecture, TensorSource } from '../../src/engine/convert/types';
import { KNOWN_UNUSED } from '../../src/engine/convert/convert';
import { modelIndex, unetConfig } from '../../src/engine/convert/pipeline-files';
import {
  type KeySet,
  inpaintingKeySet,
  keySetSource,
  readKeySet,
  UNET_CONV_IN,
} from '../fixtures/checkpoint';

const sets: Record<string, KeySet> = {};
beforeAll(async () => {
  for (const name of ['sd15', 'sd21', 'sdxl'] as const) sets[name] = await readKeySet(name);
});

/** Every component built as a dry run with fp32 weights: the keys used, parameters per component. */
async function dryRun(
  source: TensorSource,
  arch: CheckpointArchitecture,
): Promise<{ used: Set<string>; params: Record<string, number> }> {
  const opts = { dir: '/nonexistent/dry-run', dryRun: true, precision: 'fp32' as const };
  const results: Array<[string, EmitResult]> = [];
  for (const [i, t] of arch.textEncoders.entries()) {
    results.push([
      `text_encoder${i ? `_${i + 1}` : ''}`,
      await emitTextEncoder(source, t, arch.family, opts),
    ]);
  }
  results.push(['unet', await emitUnet(source, arch.unet, arch.unetPrefix, opts)]);
  results.push(['vae_encoder', await emitVaeEncoder(source, arch.vae, arch.vaePrefix, opts)]);
  results.push(['vae_decoder', await emitVaeDecoder(source, arch.vae, arch.vaePrefix, opts)]);
  const used = new Set<string>();
  const params: Record<string, number> = {};
  for (const [component, r] of results) {
    r.consumed.forEach((k) => used.add(k));
    params[component] = r.bytes / 4;
  }
  return { used, params };
}

async function coverage(
  name: 'sd15' | 'sd21' | 'sdxl',
  variant: (set: KeySet) => KeySet = (set) => set,
): Promise<Record<string, number>> {
  const source = keySetSource(variant(sets[name]!));
  const arch = detectArchitecture(source.list(), source.path, { globalStep: 1 });
  const { used, params } = await dryRun(source, arch);
  const left = source
    .list()
    .map((t) => t.name)
    .filter((k) => !used.has(k) && !KNOWN_UNUSED.some((re) => re.test(k)));
  expect(left).toEqual([]);
  // And the graphs used nothing that is not in the file.
  for (const k of used) expect(source.info(k), k).toBeDefined();
  return params;
}

describe('every key of the full-size checkpoints is consumed', () => {
  it('SD 1.5: every key; UNet 859.52 M parameters, CLIP ViT-L 123.06 M', async () => {
    const params = await coverage('sd15');
    expect(params.unet).toBe(859_520_964);
    // position_ids is in the file but not a weight of the graph.
    expect(params.text_encoder).toBe(123_060_480);
    expect(params.vae_encoder! + params.vae_decoder!).toBe(83_653_863);
  });

  it('SD 2.1: every key, the last OpenCLIP layer consumed but not emitted', async () => {
    const params = await coverage('sd21');
    expect(params.unet).toBe(865_910_724);
    // ViT-H text tower, 24 layers stored of 12 D^2 + 13 D = 12,596,224 parameters each; 23 run:
    // 23 layers + token (49408 x 1024) and position (77 x 1024) embeddings + ln_final.
    expect(params.text_encoder).toBe(23 * 12_596_224 + 49408 * 1024 + 77 * 1024 + 2 * 1024);
  });

  it('SDXL: every key; UNet 2.567 G parameters, both text encoders', async () => {
    const params = await coverage('sdxl');
    expect(params.unet).toBe(2_567_463_684);
    expect(params.text_encoder).toBe(123_060_480);
    expect(params.text_encoder_2).toBe(694_659_840);
  });

  it('the 9-channel inpainting variants of SD 1.5 and SDXL: every key, conv_in of 9 channels', async () => {
    // conv_in [320, 9, 3, 3] instead of [320, 4, 3, 3]: 320 x 5 x 9 more parameters.
    expect((await coverage('sd15', inpaintingKeySet)).unet).toBe(859_520_964 + 14_400);
    expect((await coverage('sdxl', inpaintingKeySet)).unet).toBe(2_567_463_684 + 14_400);
    // What the folder loader reads to call it an inpainting model: in_channels and the pipeline.
    const sd15 = keySetSource(inpaintingKeySet(sets.sd15!));
    const arch = detectArchitecture(sd15.list(), sd15.path);
    expect(sd15.info(UNET_CONV_IN)?.shape).toEqual([320, 9, 3, 3]);
    expect(unetConfig(arch, 512)).toMatchObject({ in_channels: 9, out_channels: 4 });
    expect(modelIndex(arch, 'PNDMScheduler')._class_name).toBe(
      'OnnxStableDiffusionInpaintPipeline',
    );
    const sdxl = keySetSource(inpaintingKeySet(sets.sdxl!));
    const xl = detectArchitecture(sdxl.list(), sdxl.path);
    expect(unetConfig(xl, 1024)).toMatchObject({ in_channels: 9 });
    expect(modelIndex(xl, 'EulerDiscreteScheduler')._class_name).toBe(
      'ORTStableDiffusionXLInpaintPipeline',
    );
  });

  it('a missing key is a clear error naming the key and the component', async () => {
    const key = 'model.diffusion_model.middle_block.1.proj_out.weight';
    const source = keySetSource(sets.sd15!, { drop: key });
    const arch = detectArchitecture(source.list(), source.path);
    await expect(dryRun(source, arch)).rejects.toThrow(
      `sd15.safetensors has no tensor "${key}", which the UNet needs.`,
    );
  });
});
