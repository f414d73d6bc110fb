// Full-size key coverage: the graphs built for the recorded SD 1.5, SD 2.1 and SDXL key sets
// (tests/fixtures/reference/keysets, instantiated from the original sources) use every key of
// the checkpoint except the known training leftovers, and a missing key is a clear error.
// The emitters run as dry runs: every graph is built and every key checked, nothing is read or
// written.
import { beforeAll, describe, expect, it } from 'vitest';
import { detectArchitecture } from '../../src/engine/convert/detect';
import {
  emitTextEncoder,
  emitUnet,
  emitVaeDecoder,
  emitVaeEncoder,
} from '../../src/engine/convert/emit/index';
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

async function consumedBy(
  source: TensorSource,
  arch: CheckpointArchitecture,
): Promise<Set<string>> {
  const used = new Set<string>();
  const opts = { dir: '/nonexistent/dry-run', dryRun: true };
  const results = [
    ...(await Promise.all(
      arch.textEncoders.map((t) => emitTextEncoder(source, t, arch.family, opts)),
    )),
    await emitUnet(source, arch.unet, arch.unetPrefix, opts),
    await emitVaeEncoder(source, arch.vae, arch.vaePrefix, opts),
    await emitVaeDecoder(source, arch.vae, arch.vaePrefix, opts),
  ];
  for (const r of results) r.consumed.forEach((k) => used.add(k));
  return used;
}

describe('every key of the full-size checkpoints is consumed', () => {
  for (const name of ['sd15', 'sd21', 'sdxl'] as const) {
    it(name, async () => {
      const source = shapesOnly(sets[name]!);
      const arch = detectArchitecture(source.list(), source.path, { globalStep: 1 });
      const used = await consumedBy(source, arch);
      const left = source
        .list()
        .map((t) => t.name)
        .filter((k) => !used.has(k) && !KNOWN_UNUSED.some((re) => re.test(k)));
      expect(left).toEqual([]);
      // And the graphs used nothing that is not in the file.
      for (const k of used) expect(source.info(k), k).toBeDefined();
    });
  }

  it('a missing key is a clear error naming the key and the component', async () => {
    const key = 'model.diffusion_model.middle_block.1.proj_out.weight';
    const source = shapesOnly(sets.sd15!, key);
    const arch = detectArchitecture(source.list(), source.path);
    await expect(consumedBy(source, arch)).rejects.toThrow(
      `sd15.safetensors has no tensor "${key}", which the UNet needs.`,
    );
  });
});
