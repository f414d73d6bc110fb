// Full-size key coverage: the graphs built for the recorded SD 1.5, SD 2.1 and SDXL key sets
// (tests/fixtures/reference/keysets, instantiated from the original sources) use every key of
// the checkpoint except the known training leftovers, and a missing key is a clear error.
// Graphs are built without writing them: weights are only read when a graph is saved.
import { beforeAll, describe, expect, it } from 'vitest';
import { detectArchitecture } from '../../src/engine/convert/detect';
import { buildTextEncoder } from '../../src/engine/convert/emit/text-encoder';
import { buildUNet } from '../../src/engine/convert/emit/unet';
import { buildVaeDecoder, buildVaeEncoder } from '../../src/engine/convert/emit/vae';
import { Graph } from '../../src/engine/convert/onnx/graph';
import type {
  CheckpointArchitecture,
  TensorInfo,
  TensorSource,
} from '../../src/engine/convert/types';
import { KNOWN_UNUSED } from '../../src/engine/convert/convert';
import { type KeySet, readKeySet } from '../fixtures/checkpoint';

const sets: Record<string, KeySet> = {};
beforeAll(async () => {
  for (const name of ['sd15', 'sd21', 'sdxl'] as const) sets[name] = await readKeySet(name);
});

/** A TensorSource of names and shapes only; reading a value is a test failure. */
function shapesOnly(set: KeySet, drop?: string): TensorSource {
  const tensors: TensorInfo[] = set.tensors
    .filter(([k]) => k !== drop)
    .map(([name, shape]) => ({
      name,
      dtype: 'F16',
      shape,
      byteLength: shape.reduce((a, b) => a * b, 2),
    }));
  const byName = new Map(tensors.map((t) => [t.name, t]));
  return {
    path: `${set.name}.safetensors`,
    list: () => tensors,
    info: (name) => byName.get(name),
    readFloat32: () => Promise.reject(new Error('no values in a key set')),
    close: async () => {},
  };
}

function consumedBy(source: TensorSource, arch: CheckpointArchitecture): Set<string> {
  const used = new Set<string>();
  const add = (keys: Set<string>): void => keys.forEach((k) => used.add(k));
  for (const t of arch.textEncoders) {
    add(buildTextEncoder(new Graph('text_encoder', 'fp16'), source, t, arch.family, 'fused'));
  }
  add(buildUNet(new Graph('unet', 'fp16'), source, arch.unet, arch.unetPrefix, 'fused'));
  add(buildVaeEncoder(new Graph('vae_encoder', 'fp16'), source, arch.vae, arch.vaePrefix, 'fused'));
  add(buildVaeDecoder(new Graph('vae_decoder', 'fp16'), source, arch.vae, arch.vaePrefix, 'fused'));
  return used;
}

describe('every key of the full-size checkpoints is consumed', () => {
  for (const name of ['sd15', 'sd21', 'sdxl'] as const) {
    it(name, () => {
      const source = shapesOnly(sets[name]!);
      const arch = detectArchitecture(source.list(), source.path, { globalStep: 1 });
      const used = consumedBy(source, arch);
      const left = source
        .list()
        .map((t) => t.name)
        .filter((k) => !used.has(k) && !KNOWN_UNUSED.some((re) => re.test(k)));
      expect(left).toEqual([]);
      // And the graphs used nothing that is not in the file.
      for (const k of used) expect(source.info(k), k).toBeDefined();
    });
  }

  it('a missing key is a clear error naming the key and the component', () => {
    const key = 'model.diffusion_model.middle_block.1.proj_out.weight';
    const source = shapesOnly(sets.sd15!, key);
    const arch = detectArchitecture(source.list(), source.path);
    expect(() => consumedBy(source, arch)).toThrow(
      `sd15.safetensors has no tensor "${key}", which the UNet needs.`,
    );
  });
});
