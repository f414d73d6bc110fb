// The converter's CUDA variant of the UNet (src/engine/convert/emit/cuda.ts). Its fused
// operators have no CPU kernels (except MultiHeadAttention), so here: the plain variant is
// unchanged byte for byte; the same variant with each fused operator written as its schema's
// decomposition reproduces the PyTorch reference (so weight packing, NHWC layouts and wiring are
// right); and the real float16 graph passes ONNX Runtime's schema and type checks, failing only
// for want of CUDA kernels. The kernels' numerics are checked on a GPU by tools/bench/gpu-check.sh.

import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { CONVERSION_RECORD, convertCheckpoint } from '../../src/engine/convert/convert';
import { type EmitOptions, emitUnet } from '../../src/engine/convert/emit';
import { convWeightNhwc, packHeads } from '../../src/engine/convert/emit/cuda';
import type { CheckpointFamily } from '../../src/engine/convert/types';
import { readOnnxHeader } from '../../src/engine/models/onnx-file';
import { FixtureSafetensors, type ReferenceArch } from '../fixtures/safetensors-fixture';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';

const REF = path.join(__dirname, '../fixtures/reference');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'convert-cuda-'));
const open: FixtureSafetensors[] = [];
afterAll(async () => {
  await Promise.all(open.map((f) => f.close()));
  rmSync(tmp, { recursive: true, force: true });
});

let dirs = 0;
function fixture(family: CheckpointFamily) {
  const arch = JSON.parse(
    readFileSync(path.join(REF, `convert-${family}.json`), 'utf8'),
  ) as ReferenceArch;
  const source = new FixtureSafetensors(path.join(REF, `convert-${family}.safetensors`));
  const expected = new FixtureSafetensors(path.join(REF, `convert-${family}.expected.safetensors`));
  open.push(source, expected);
  return { arch, source, expected };
}

async function emit(family: CheckpointFamily, opts: Omit<EmitOptions, 'dir'>) {
  const { arch, source } = fixture(family);
  return emitUnet(source, arch.unet, arch.unetPrefix, {
    ...opts,
    dir: path.join(tmp, `u${dirs++}`),
  });
}

function sha256(...files: string[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(readFileSync(f));
  return h.digest('hex');
}

/** How many nodes of `opType` model.onnx holds (NodeProto.op_type is field 4, a string). */
function countOp(model: string, opType: string): number {
  const bytes = readFileSync(model);
  const needle = Buffer.concat([Buffer.from([0x22, opType.length]), Buffer.from(opType)]);
  let n = 0;
  for (let at = bytes.indexOf(needle); at >= 0; at = bytes.indexOf(needle, at + 1)) n++;
  return n;
}

// Recorded from the converter before the CUDA variant existed (same fixtures, same options):
// adding the variant must not change a byte of what the CPU variant writes.
const CPU_VARIANT_SHA256: Record<string, string> = {
  'sd1 fp16': '11e3e9922e042a647db2e88f645790463bc5658e8b3c2094b3aa0f90f20c8232',
  'sd1 fp32': 'e59e5d23aab913c2d735dfbea5c404d1b29173824654efa29a7ed688ae604b10',
  'sd2 fp16': 'dc5371e3f60e0a3a334eacc05d933b261957812c7bfe576146128acbf104ad4c',
  'sd2 fp32': '8d69e7de5c6acead8e109b6c97429861b4937892b01b7e0c8ca44d38fa60bad1',
  'sdxl fp16': '67d6ce1fce37998b425f0e7d6372bc7968588c86192fb4fb729ca734f16f87b4',
  'sdxl fp32': '6e7d0e5642ca450b78d5b45ccf63d3102bd75daf70e650d62bb65a5129a4e655',
};

const FAMILIES: CheckpointFamily[] = ['sd1', 'sd2', 'sdxl'];

describe('the CPU variant is unchanged', () => {
  it.each(Object.keys(CPU_VARIANT_SHA256))('%s: same bytes as before', async (name) => {
    const [family, precision] = name.split(' ') as [CheckpointFamily, 'fp16' | 'fp32'];
    for (const target of [undefined, 'cpu'] as const) {
      const r = await emit(family, { precision, ...(target ? { target } : {}) });
      expect(sha256(r.model, r.data), `${name} target ${target}`).toBe(CPU_VARIANT_SHA256[name]);
    }
  });
});

describe('packing helpers', () => {
  it('convWeightNhwc moves the input channel last', () => {
    // [M=2, C=3, 2, 2] with value = 1000 m + 100 c + 10 y + x.
    const w = new Float32Array(24);
    for (let m = 0; m < 2; m++)
      for (let c = 0; c < 3; c++)
        for (let s = 0; s < 4; s++) w[(m * 3 + c) * 4 + s] = 1000 * m + 100 * c + s;
    const out = convWeightNhwc(w, 2, 3, 2);
    // [M, kH, kW, C]: index (m * 4 + s) * 3 + c.
    expect(out[(1 * 4 + 3) * 3 + 2]).toBe(1203);
    expect(out[(0 * 4 + 2) * 3 + 1]).toBe(102);
  });
  it('packHeads lays columns out head by head, part by part', () => {
    // Two parts, 2 heads of width 2, in = 1: w_j[out] = 10 j + out.
    const parts = [0, 1].map((j) => Float32Array.from([0, 1, 2, 3], (o) => 10 * j + o));
    expect([...packHeads(parts, 1, 2, 2)]).toEqual([0, 1, 10, 11, 2, 3, 12, 13]);
  });
});

describe.each(FAMILIES)('%s CUDA variant', (family) => {
  it('decomposed, it reproduces the PyTorch reference (fp32 weights)', async () => {
    const { expected } = fixture(family);
    const r = await emit(family, { precision: 'fp32', target: 'cuda', decomposeFused: true });
    const feeds: Record<string, ort.Tensor> = {};
    for (const name of ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids']) {
      const info = expected.info(`unet.${name}`);
      if (info)
        feeds[name] = new ort.Tensor('float32', await expected.readFloat32(`unet.${name}`), [
          ...info.shape,
        ]);
    }
    const session = await ort.InferenceSession.create(r.model, { executionProviders: ['cpu'] });
    try {
      const out = (await session.run(feeds)).out_sample!;
      const want = await expected.readFloat32('unet.out_sample');
      expect([...out.dims]).toEqual([...expected.info('unet.out_sample')!.shape]);
      const got = out.data as Float32Array;
      let diff = 0;
      let ref = 0;
      for (let i = 0; i < want.length; i++) {
        diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
        ref = Math.max(ref, Math.abs(want[i]!));
      }
      expect(ref).toBeGreaterThan(0);
      expect(diff / ref).toBeLessThan(1e-4);
    } finally {
      await session.release();
    }
  });

  it('fused, it holds the fused operators and no unfused norm, GELU or softmax', async () => {
    const r = await emit(family, { target: 'cuda' });
    for (const op of ['GroupNorm', 'NhwcConv', 'MultiHeadAttention', 'BiasSplitGelu', 'BiasAdd'])
      expect(countOp(r.model, op), op).toBeGreaterThan(0);
    for (const op of ['InstanceNormalization', 'Erf', 'Softmax'])
      expect(countOp(r.model, op), op).toBe(0);
    // One BiasSplitGelu per transformer block; three BiasAdds (two attentions, feed-forward)
    // per block plus one per SpatialTransformer (proj_out).
    const gelus = countOp(r.model, 'BiasSplitGelu');
    expect(countOp(r.model, 'MultiHeadAttention')).toBe(2 * gelus);
    expect(countOp(r.model, 'BiasAdd')).toBeGreaterThan(3 * gelus);
  });

  it('fused, ONNX Runtime accepts its schemas and types and lacks only CUDA kernels', async () => {
    const r = await emit(family, { target: 'cuda' });
    // Graph resolution (contrib schemas, type and shape inference) runs before kernels are
    // assigned: a wrong input count, type or rank would fail there with another message.
    await expect(
      ort.InferenceSession.create(r.model, { executionProviders: ['cpu'] }),
    ).rejects.toThrow(
      /Failed to find kernel for com\.microsoft\.(GroupNorm|NhwcConv|BiasSplitGelu|BiasAdd)\(1\)/,
    );
  });
});

describe('convertCheckpoint with target cuda', () => {
  it('writes the fused UNet, float16 inside and float32 at its inputs, and records the target', async () => {
    const { file, arch } = await smallCheckpoint(tmp, 'sd1');
    const out = path.join(tmp, 'converted-cuda');
    const r = await convertCheckpoint(file, out, {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      target: 'cuda',
    });
    expect(r.target).toBe('cuda');
    const record = JSON.parse(readFileSync(path.join(out, CONVERSION_RECORD), 'utf8'));
    expect(record.target).toBe('cuda');
    expect(readFileSync(path.join(out, 'README.md'), 'utf8')).toMatch(/CUDA provider only/);
    const unet = path.join(out, 'unet', 'model.onnx');
    expect(countOp(unet, 'GroupNorm')).toBeGreaterThan(0);
    // The engine's contract: float32 in and out; the weights themselves are float16 (no Cast).
    const header = readOnnxHeader(unet);
    for (const io of [...header.inputs, ...header.outputs])
      expect(io.type, io.name).toBe('float32');
    expect(countOp(unet, 'Cast')).toBeLessThan(10);
    // The other components are the plain graphs.
    expect(countOp(path.join(out, 'vae_decoder', 'model.onnx'), 'GroupNorm')).toBe(0);
    const plain = await convertCheckpoint(file, path.join(tmp, 'converted-cpu'), {
      vocabularyFile: VOCABULARY,
      architecture: arch,
    });
    expect(plain.target).toBeUndefined();
  });
});
