// Reading textual-inversion embedding files. The .pt/.bin files were written by PyTorch itself
// (tools/reference/record_embeddings.py: A1111's and diffusers' layouts, fp16/bf16, a hostile
// pickle); expected.json holds their vectors as torch converts them and their SHA-256.
// .safetensors files are written here with the fixture writer (the format is its header).

import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readEmbeddingFile } from '../../src/engine/adapters/embeddings-file';
import { EngineError } from '../../src/engine/errors';
import { encodeFloats, writeSafetensors, type TensorSpec } from '../fixtures/checkpoint';

const reference = fileURLToPath(new URL('../fixtures/reference/embeddings/', import.meta.url));
let expected: Record<string, { shape: [number, number]; values: number[]; sha256: string }>;
let dir: string;

beforeAll(async () => {
  expected = JSON.parse(await readFile(path.join(reference, 'expected.json'), 'utf8'));
  dir = await mkdtemp(path.join(tmpdir(), 'ti-files-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function ramp(count: number, scale: number): Float32Array {
  return Float32Array.from({ length: count }, (_, i) => Math.sin(i * 0.37) * scale);
}

async function safetensors(
  name: string,
  tensors: { name: string; shape: number[]; dtype: TensorSpec['dtype']; values: Float32Array }[],
): Promise<string> {
  const file = path.join(dir, name);
  await writeSafetensors(
    file,
    tensors.map(({ name: n, shape, dtype }) => ({ name: n, shape, dtype })),
    (t) => {
      const src = tensors.find((x) => x.name === t.name)!;
      return encodeFloats(src.values, t.dtype as 'F32' | 'F16' | 'BF16');
    },
  );
  return file;
}

async function refusal(file: string): Promise<EngineError> {
  const err = await readEmbeddingFile(file).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EngineError);
  const e = err as EngineError;
  expect(e.code).toBe('bad-input');
  // One sentence that names the file.
  expect(e.message).toContain(path.basename(file));
  expect(e.message.trim().split(/\.\s+[A-Z]/).length).toBe(1);
  return e;
}

describe('PyTorch embedding files (recorded with torch.save)', () => {
  for (const name of ['a1111.pt', 'a1111-fp16.pt', 'diffusers-1d.bin', 'diffusers-bf16.bin']) {
    it(`${name}: the vectors torch stored, in float32`, async () => {
      const file = await readEmbeddingFile(path.join(reference, name));
      const want = expected[name]!;
      expect(file.single).not.toBeNull();
      expect(file.clipL).toBeNull();
      expect([file.single!.rows, file.single!.width]).toEqual(want.shape);
      expect(file.vectors).toBe(want.shape[0]);
      expect(Array.from(file.single!.data)).toEqual(want.values);
      expect(file.sha256).toBe(want.sha256);
    });
  }

  it('refuses a file with two terms in string_to_param', async () => {
    const e = await refusal(path.join(reference, 'two-terms.pt'));
    expect(e.message).toMatch(/2 terms/);
  });

  it('refuses a hostile pickle without running it', async () => {
    const marker = '/tmp/hostile-pickle-ran';
    await rm(marker, { force: true });
    const e = await refusal(path.join(reference, 'hostile.pt'));
    expect(e.message).toMatch(/was refused because .*system/);
    expect(existsSync(marker)).toBe(false);
  });
});

describe('.safetensors embeddings', () => {
  it('reads kohya emb_params in fp16', async () => {
    const values = ramp(2 * 768, 0.5);
    const file = await readEmbeddingFile(
      await safetensors('kohya.safetensors', [
        { name: 'emb_params', shape: [2, 768], dtype: 'F16', values },
      ]),
    );
    expect(file.vectors).toBe(2);
    expect(file.single!.width).toBe(768);
    for (let i = 0; i < values.length; i++)
      expect(Math.abs(file.single!.data[i]! - values[i]!)).toBeLessThan(1e-3 * 0.5 + 1e-4);
  });

  it('reads an SDXL pair (clip_l 768 + clip_g 1280) in bf16', async () => {
    const l = ramp(3 * 768, 1);
    const g = ramp(3 * 1280, 2);
    const file = await readEmbeddingFile(
      await safetensors('sdxl.safetensors', [
        { name: 'clip_g', shape: [3, 1280], dtype: 'BF16', values: g },
        { name: 'clip_l', shape: [3, 768], dtype: 'BF16', values: l },
      ]),
    );
    expect(file.single).toBeNull();
    expect(file.vectors).toBe(3);
    expect([file.clipL!.rows, file.clipL!.width, file.clipG!.width]).toEqual([3, 768, 1280]);
    // bf16 keeps 8 bits of mantissa: relative error under 2^-8.
    for (let i = 0; i < g.length; i++)
      expect(Math.abs(file.clipG!.data[i]! - g[i]!)).toBeLessThanOrEqual(Math.abs(g[i]!) / 256);
  });

  it('takes a single tensor of any name as the vectors (A1111 does)', async () => {
    const file = await readEmbeddingFile(
      await safetensors('one.safetensors', [
        { name: '<token>', shape: [4, 1024], dtype: 'F32', values: ramp(4 * 1024, 1) },
      ]),
    );
    expect([file.vectors, file.single!.width]).toEqual([4, 1024]);
  });

  it('refuses an SDXL pair whose vector counts differ', async () => {
    const e = await refusal(
      await safetensors('uneven.safetensors', [
        { name: 'clip_g', shape: [2, 1280], dtype: 'F32', values: ramp(2 * 1280, 1) },
        { name: 'clip_l', shape: [3, 768], dtype: 'F32', values: ramp(3 * 768, 1) },
      ]),
    );
    expect(e.message).toMatch(/as many of each/);
  });

  it('refuses several unrelated tensors (a LoRA, say)', async () => {
    const e = await refusal(
      await safetensors('lora.safetensors', [
        { name: 'a.lora_down.weight', shape: [4, 8], dtype: 'F32', values: ramp(32, 1) },
        { name: 'a.lora_up.weight', shape: [8, 4], dtype: 'F32', values: ramp(32, 1) },
      ]),
    );
    expect(e.message).toMatch(/holds 2 tensors/);
  });

  it('refuses more vectors than a prompt chunk holds', async () => {
    const e = await refusal(
      await safetensors('long.safetensors', [
        { name: 'emb_params', shape: [76, 8], dtype: 'F32', values: ramp(76 * 8, 1) },
      ]),
    );
    expect(e.message).toMatch(/76 vectors/);
  });

  it('refuses NaN vectors', async () => {
    const values = ramp(16, 1);
    values[3] = NaN;
    const e = await refusal(
      await safetensors('nan.safetensors', [
        { name: 'emb_params', shape: [2, 8], dtype: 'F32', values },
      ]),
    );
    expect(e.message).toMatch(/NaN/);
  });

  it('refuses a truncated file', async () => {
    const whole = await readFile(
      await safetensors('whole.safetensors', [
        { name: 'emb_params', shape: [2, 8], dtype: 'F32', values: ramp(16, 1) },
      ]),
    );
    const file = path.join(dir, 'cut.safetensors');
    await writeFile(file, whole.subarray(0, whole.length - 10));
    await refusal(file);
  });
});

it('refuses a file that is neither format', async () => {
  const file = path.join(dir, 'notes.pt');
  await writeFile(file, 'these are not vectors\n');
  const e = await refusal(file);
  expect(e.message).toMatch(/neither/);
});
