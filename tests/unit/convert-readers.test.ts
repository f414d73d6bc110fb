import { existsSync } from 'node:fs';
import { mkdtemp, open, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emaName, ordinaryName } from '../../src/engine/convert/readers/ema';
import { openCheckpoint } from '../../src/engine/convert/readers/index';
import { SafetensorsSource } from '../../src/engine/convert/readers/safetensors';
import {
  encodeFloats,
  readKeySet,
  safetensorsHeader,
  writeSafetensors,
} from '../fixtures/checkpoint';

const CHECKPOINTS = path.join(import.meta.dirname, '..', 'fixtures', 'reference', 'checkpoints');

/** The values make_torch_fixtures.py stores: arange(n) * 0.25 - 1. */
const ramp = (n: number): number[] => Array.from({ length: n }, (_, i) => i * 0.25 - 1);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'convert-readers-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('safetensors reader', () => {
  const values = Float32Array.from([0.5, -2, 3.25, 65504, 1e-7, -0]);

  it('reads F32, F16 and BF16 tensors by name, in file order, with metadata', async () => {
    const file = path.join(dir, 'three.safetensors');
    await writeSafetensors(
      file,
      [
        { name: 'b.f16', dtype: 'F16', shape: [2, 3] },
        { name: 'a.f32', dtype: 'F32', shape: [6] },
        { name: 'c.bf16', dtype: 'BF16', shape: [3, 2] },
      ],
      (t) => encodeFloats(values, t.dtype as 'F32' | 'F16' | 'BF16'),
      { 'modelspec.prediction_type': 'v' },
    );
    const source = await SafetensorsSource.open(file);
    try {
      expect(source.list().map((t) => t.name)).toEqual(['b.f16', 'a.f32', 'c.bf16']);
      expect(source.info('b.f16')).toMatchObject({ dtype: 'F16', shape: [2, 3], byteLength: 12 });
      expect(source.metadata['modelspec.prediction_type']).toBe('v');
      expect([...(await source.readFloat32('a.f32'))]).toEqual([...values]);
      const half = await source.readFloat32('b.f16');
      // 1e-7 is a binary16 subnormal: 2^-24 * round(1e-7 / 2^-24) = 2 * 2^-24.
      expect([...half]).toEqual([0.5, -2, 3.25, 65504, 2 ** -23, -0]);
      const bf = await source.readFloat32('c.bf16');
      expect(bf[0]).toBe(0.5);
      expect(bf[3]).toBe(65536); // bf16 keeps 8 mantissa bits: 65504 rounds to 2^16
      expect(Math.abs(bf[4]! - 1e-7) / 1e-7).toBeLessThan(0.01);
    } finally {
      await source.close();
    }
  });

  async function withHeader(name: string, header: object, dataBytes: number): Promise<string> {
    const file = path.join(dir, name);
    const json = Buffer.from(JSON.stringify(header));
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(BigInt(json.length));
    await writeFile(file, Buffer.concat([prefix, json, Buffer.alloc(dataBytes)]));
    return file;
  }

  it('refuses a header whose sizes do not match the shape, in one sentence', async () => {
    const file = await withHeader(
      'lying.safetensors',
      { w: { dtype: 'F32', shape: [4, 4], data_offsets: [0, 32] } },
      32,
    );
    await expect(SafetensorsSource.open(file)).rejects.toThrow(
      /lying\.safetensors: the header lies about tensor w: its shape \[4, 4\] of F32 needs 64 bytes but its offsets span 32\./,
    );
  });

  it('refuses overlapping tensors', async () => {
    const file = await withHeader(
      'overlap.safetensors',
      {
        a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] },
        b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] },
      },
      24,
    );
    await expect(SafetensorsSource.open(file)).rejects.toThrow(/tensors a and b overlap/);
  });

  it('refuses offsets past the end of the file and a truncated file', async () => {
    const outside = await withHeader(
      'outside.safetensors',
      { a: { dtype: 'F16', shape: [1000], data_offsets: [0, 2000] } },
      16,
    );
    await expect(SafetensorsSource.open(outside)).rejects.toThrow(
      /outside\.safetensors: the file is truncated: its header describes \d+ bytes but it has \d+\./,
    );
    const file = path.join(dir, 'cut.safetensors');
    await writeSafetensors(
      file,
      [{ name: 'w', dtype: 'F32', shape: [64] }],
      () => new Uint8Array(256),
    );
    await truncate(file, 100);
    await expect(SafetensorsSource.open(file)).rejects.toThrow(/truncated/);
    await truncate(file, 20);
    await expect(SafetensorsSource.open(file)).rejects.toThrow(/ends inside its header/);
  });

  it('refuses an unknown dtype, bad JSON and a nonsense header length', async () => {
    const dtype = await withHeader(
      'dtype.safetensors',
      { w: { dtype: 'F8_E4M3', shape: [1], data_offsets: [0, 1] } },
      1,
    );
    await expect(SafetensorsSource.open(dtype)).rejects.toThrow(/element type \(F8_E4M3\)/);
    const json = path.join(dir, 'json.safetensors');
    const prefix = Buffer.alloc(8);
    prefix.writeBigUInt64LE(5n);
    await writeFile(json, Buffer.concat([prefix, Buffer.from('{"a":')]));
    await expect(SafetensorsSource.open(json)).rejects.toThrow(/not valid JSON/);
    const huge = path.join(dir, 'huge.safetensors');
    prefix.writeBigUInt64LE(1n << 40n);
    await writeFile(huge, Buffer.concat([prefix, Buffer.from('{}')]));
    await expect(SafetensorsSource.open(huge)).rejects.toThrow(/header length/);
  });

  it('reads one tensor without reading the others (positioned reads only)', async () => {
    const file = path.join(dir, 'sparse.safetensors');
    const tensors = [
      { name: 'first', dtype: 'F32' as const, shape: [2] },
      { name: 'big', dtype: 'F16' as const, shape: [1 << 20] },
      { name: 'last', dtype: 'F32' as const, shape: [2] },
    ];
    const header = safetensorsHeader(tensors);
    const handle = await open(file, 'w');
    await handle.write(header);
    await handle.write(encodeFloats(Float32Array.from([1, 2]), 'F32'));
    // Leave 'big' as a hole of zeros (sparse on disk) and write only 'last'.
    await handle.write(
      encodeFloats(Float32Array.from([3, 4]), 'F32'),
      0,
      8,
      header.length + 8 + (2 << 20),
    );
    await handle.close();
    const source = await SafetensorsSource.open(file);
    expect([...(await source.readFloat32('last'))]).toEqual([3, 4]);
    await expect(source.readFloat32('nope')).rejects.toThrow(/no tensor named nope/);
    await source.close();
  });
});

describe('torch checkpoint reader (files written by torch.save, torch 1.13)', () => {
  it('reads every dtype, strided views and shared storages, and the global_step', async () => {
    const { source, hints } = await openCheckpoint(path.join(CHECKPOINTS, 'tiny.ckpt'));
    try {
      expect(hints.globalStep).toBe(875000);
      const names = source.list().map((t) => t.name);
      expect(names).toEqual([
        'f32',
        'f16',
        'bf16',
        'f64',
        'i64',
        'transposed',
        'slice_a',
        'slice_b',
        'scalar',
        'param',
      ]);
      expect(source.info('f16')).toMatchObject({ dtype: 'F16', shape: [2, 2, 2], byteLength: 16 });
      expect([...(await source.readFloat32('f32'))]).toEqual(ramp(6));
      expect([...(await source.readFloat32('f16'))]).toEqual(ramp(8));
      expect([...(await source.readFloat32('bf16'))]).toEqual(ramp(5));
      expect([...(await source.readFloat32('f64'))]).toEqual(ramp(3));
      expect([...(await source.readFloat32('i64'))]).toEqual(
        Array.from({ length: 77 }, (_, i) => i),
      );
      // base = arange(24).reshape(4, 6); transposed[i][j] = base[j][i] = 6j + i.
      const t = await source.readFloat32('transposed');
      expect(source.info('transposed')!.shape).toEqual([6, 4]);
      expect([...t]).toEqual(Array.from({ length: 24 }, (_, k) => 6 * (k % 4) + Math.floor(k / 4)));
      expect([...(await source.readFloat32('slice_a'))]).toEqual([2, 3, 4]);
      expect([...(await source.readFloat32('slice_b'))]).toEqual([6, 7, 8, 9]);
      expect([...(await source.readFloat32('scalar'))]).toEqual([4.5]);
      expect([...(await source.readFloat32('param'))]).toEqual(ramp(4));
    } finally {
      await source.close();
    }
  });

  it('reads a bare state dict (.pt without a state_dict wrapper)', async () => {
    const { source, hints } = await openCheckpoint(path.join(CHECKPOINTS, 'plain.pt'));
    expect(hints.globalStep).toBeUndefined();
    expect([...(await source.readFloat32('w'))]).toEqual(ramp(4));
    await source.close();
  });

  it('refuses a pickle that calls os.system, by name, without running it', async () => {
    const marker = '/tmp/latent-studio-pwned';
    await rm(marker, { force: true });
    await expect(openCheckpoint(path.join(CHECKPOINTS, 'evil.ckpt'))).rejects.toThrow(
      /evil\.ckpt was refused because it refers to posix\.system, which a checkpoint has no reason to use/,
    );
    expect(existsSync(marker)).toBe(false);
  });

  it('says when a checkpoint is truncated', async () => {
    const cut = path.join(dir, 'cut.ckpt');
    const { readFile } = await import('node:fs/promises');
    const whole = await readFile(path.join(CHECKPOINTS, 'tiny.ckpt'));
    await writeFile(cut, whole.subarray(0, whole.length - 40));
    await expect(openCheckpoint(cut)).rejects.toThrow(/cut\.ckpt: .*(truncated|not a zip)/);
  });

  it('refuses files that are neither format in one sentence', async () => {
    const junk = path.join(dir, 'junk.safetensors');
    await writeFile(junk, 'hello, this is not a model at all');
    await expect(openCheckpoint(junk)).rejects.toThrow(
      'junk.safetensors is neither a .safetensors file nor a PyTorch checkpoint.',
    );
    await expect(openCheckpoint(path.join(dir, 'missing.ckpt'))).rejects.toThrow(/Cannot open/);
    // torch.save before 1.6 wrote a bare pickle stream (protocol 2 header 0x80 0x02).
    const legacy = path.join(dir, 'old.ckpt');
    await writeFile(legacy, Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9]));
    await expect(openCheckpoint(legacy)).rejects.toThrow(
      'old.ckpt is a PyTorch file in the pre-1.6 format; re-save it with a current torch or as .safetensors.',
    );
  });
});

describe('EMA-only checkpoints', () => {
  it('maps every ldm UNet key of SD 1.5, SD 2.1 and SDXL to its EMA name and back', async () => {
    for (const name of ['sd15', 'sd21', 'sdxl'] as const) {
      const keys = (await readKeySet(name)).tensors
        .map(([k]) => k)
        .filter((k) => k.startsWith('model.diffusion_model.'));
      for (const key of keys) expect(ordinaryName(emaName(key))).toBe(key);
    }
  });

  it('presents model_ema.* under the ordinary names when there are no others', async () => {
    const file = path.join(dir, 'ema.safetensors');
    const unetKey = 'model.diffusion_model.input_blocks.11.0.out_layers.3.weight';
    await writeSafetensors(
      file,
      [
        { name: emaName(unetKey), dtype: 'F32', shape: [2] },
        { name: 'model_ema.decay', dtype: 'F32', shape: [] },
        { name: 'first_stage_model.decoder.conv_out.bias', dtype: 'F32', shape: [1] },
      ],
      (t) =>
        encodeFloats(
          Float32Array.from({ length: t.shape[0] ?? 1 }, (_, i) => i + 7),
          'F32',
        ),
    );
    const { source } = await openCheckpoint(file);
    expect(source.list().map((t) => t.name)).toContain(unetKey);
    expect(source.info(unetKey)?.shape).toEqual([2]);
    expect([...(await source.readFloat32(unetKey))]).toEqual([7, 8]);
    await source.close();
  });
});
