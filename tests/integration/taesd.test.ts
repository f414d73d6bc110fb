// TAESD's decoder (src/engine/convert/emit/taesd.ts) against PyTorch: a file of formula weights
// in taesd.py's naming (and in diffusers' AutoencoderTiny naming) is converted, run with real
// onnxruntime-node, and compared with madebyollin/taesd's own Decoder on the same weights,
// recorded by tools/convert-reference/taesd_decoder.py into tests/fixtures/reference.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { convertTaesd } from '../../src/engine/convert/convert-taesd';
import { EngineError } from '../../src/engine/errors';
import { encodeFloats, writeSafetensors } from '../fixtures/checkpoint';
import {
  type TaesdReference,
  readTaesdReference,
  taesdFormula,
  writeTaesdFile,
} from '../fixtures/taesd-file';

let ref: TaesdReference;
let root: string;

beforeAll(async () => {
  ref = await readTaesdReference();
  root = await mkdtemp(path.join(tmpdir(), 'latent-taesd-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Writes the reference's tensors under `rename(name)` to a .safetensors file. */
const writeTaesd = (file: string, rename: (name: string) => string | null) =>
  writeTaesdFile(file, rename, ref);

async function decode(dir: string): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'));
  try {
    const n = ref.latentShape.reduce((a, b) => a * b, 1);
    const latent = new Float32Array(n);
    for (let j = 0; j < n; j++) latent[j] = Math.fround(Math.sin(0.11 * j) * 2.5);
    const out = await session.run({
      latent_sample: new ort.Tensor('float32', latent, ref.latentShape),
    });
    expect(out.sample.dims).toEqual(ref.outputShape);
    return out.sample.data as Float32Array;
  } finally {
    await session.release();
  }
}

/** max |a - b| / max |b|. */
function relErr(a: Float32Array, b: number[]): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i]! - b[i]!));
    den = Math.max(den, Math.abs(b[i]!));
  }
  return num / den;
}

describe('TAESD decoder', () => {
  test('a taesd.py-named file decodes as PyTorch does (relative error <= 1e-4)', async () => {
    const file = path.join(root, 'taesd_decoder.safetensors');
    await writeTaesd(file, (n) => n);
    const { dir, latentChannels } = await convertTaesd(file, path.join(root, 'out-a'));
    expect(latentChannels).toBe(4);
    expect(relErr(await decode(dir), ref.output)).toBeLessThanOrEqual(1e-4);
  }, 60_000);

  test("diffusers' AutoencoderTiny naming (decoder.layers.N, no Clamp module) decodes the same", async () => {
    const file = path.join(root, 'diffusion_pytorch_model.safetensors');
    await writeTaesd(file, (n) => {
      const [i, ...rest] = n.split('.');
      return `decoder.layers.${Number(i) - 1}.${rest.join('.')}`;
    });
    const { dir } = await convertTaesd(file, path.join(root, 'out-b'));
    expect(relErr(await decode(dir), ref.output)).toBeLessThanOrEqual(1e-4);
  }, 60_000);

  test('a file that is not a TAESD decoder is refused in one sentence, leaving nothing', async () => {
    const file = path.join(root, 'encoder.safetensors');
    // The encoder's first layers: "0.weight" and Blocks at 1, no decoder input conv at 1.
    await writeTaesd(file, (n) => (n.startsWith('1.') ? `0.${n.slice(2)}` : null));
    const out = path.join(root, 'out-c');
    const err = await convertTaesd(file, out).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).message).toMatch(/is not a TAESD decoder/);
    await expect(readFile(path.join(out, 'model.onnx'))).rejects.toThrow();
  });

  test('extra tensors (an encoder saved beside the decoder) are named, not silently dropped', async () => {
    const file = path.join(root, 'both.safetensors');
    await writeTaesd(file, (n) => n);
    const withExtra = path.join(root, 'extra.safetensors');
    const values = new Map<string, Float32Array>();
    const specs = ref.tensors.map(({ name, shape }, t) => {
      values.set(name, taesdFormula(t, shape));
      return { name, dtype: 'F32' as const, shape };
    });
    specs.push({ name: 'encoder.0.weight', dtype: 'F32', shape: [64, 3, 3, 3] });
    values.set('encoder.0.weight', new Float32Array(64 * 27));
    await writeSafetensors(withExtra, specs, (s) => encodeFloats(values.get(s.name)!, 'F32'));
    await expect(convertTaesd(withExtra, path.join(root, 'out-d'))).rejects.toThrow(
      /encoder\.0\.weight/,
    );
  });
});
