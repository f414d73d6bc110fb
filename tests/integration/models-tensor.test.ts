// Host tensors -> the exact dtypes and ranks a graph declares (src/engine/tensor.ts), checked
// both as pure conversions and by feeding real fixture sessions of every exporter variant.
import { describe, expect, test } from 'vitest';
import { EngineError } from '../../src/engine/errors';
import { loadModel, sessionCache } from '../../src/engine/models';
import {
  float16BitsToFloat32,
  float32ToFloat16Bits,
  floatsToOrt,
  fromFloat16,
  idsToOrt,
  ortToFloat32,
  timestepToOrt,
  toFloat16,
  type IoSpec,
} from '../../src/engine/tensor';
import { fixtureModel } from '../fixtures/models';

describe('float16 conversion', () => {
  test('known values round to nearest, ties to even', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.1, 0x2e66], // 0.0999755859375 is nearer than 0.10003662109375
      [65504, 0x7bff], // largest finite half
      [65519, 0x7bff], // below the midpoint to 65536
      [65520, 0x7c00], // the midpoint rounds to even: Inf
      [1e6, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // half of it: tie to even -> 0
      [1.5 * 2 ** -25, 0x0001],
      [3 * 2 ** -25, 0x0002], // 1.5 units: tie to even -> 2
      [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10: even
      [1 + 3 * 2 ** -11, 0x3c02], // tie between 1+2^-10 and 1+2^-9: even
      [1 + 2 ** -11 + 2 ** -20, 0x3c01], // just above the tie
      [2 ** -14 * (1 - 2 ** -11), 0x0400], // rounds up from subnormal into the smallest normal
    ];
    for (const [v, bits] of cases) expect([v, float32ToFloat16Bits(v)]).toEqual([v, bits]);
    expect(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(NaN)))).toBe(true);
  });

  test('every half value survives half -> float -> half exactly', () => {
    const all = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) all[i] = i;
    const floats = fromFloat16(all);
    const back = toFloat16(floats);
    for (let i = 0; i < 65536; i++) {
      const isNaN = (i & 0x7c00) === 0x7c00 && (i & 0x3ff) !== 0;
      if (isNaN) expect(Number.isNaN(floats[i])).toBe(true);
      else if (back[i] !== i)
        expect.fail(`0x${i.toString(16)} came back as 0x${back[i].toString(16)}`);
    }
  });

  test('float -> half error is at most half a unit in the last place', () => {
    for (let i = 0; i < 2000; i++) {
      const v = (Math.sin(i * 12.9898) * 43758.5453) % 300;
      const h = float16BitsToFloat32(float32ToFloat16Bits(v));
      const ulp = 2 ** (Math.floor(Math.log2(Math.abs(h) || 2 ** -14)) - 10);
      expect(Math.abs(h - Math.fround(v))).toBeLessThanOrEqual(ulp / 2 + 1e-12);
    }
  });
});

describe('building inputs for a declared signature', () => {
  const spec = (type: IoSpec['type'], shape: IoSpec['shape']): IoSpec => ({
    name: 'timestep',
    type,
    shape,
  });

  test('timestep: float [B], int64 [B] (truncated like numpy/torch casts), rank-0, float16', () => {
    const f = timestepToOrt(999.75, 2, spec('float32', ['batch']));
    expect(f.type).toBe('float32');
    expect(f.dims).toEqual([2]);
    expect(Array.from(f.data as Float32Array)).toEqual([999.75, 999.75]);

    const i = timestepToOrt(999.75, 2, spec('int64', ['batch']));
    expect(i.type).toBe('int64');
    expect(Array.from(i.data as BigInt64Array)).toEqual([999n, 999n]);

    const s = timestepToOrt(500.5, 2, spec('float32', []));
    expect(s.dims).toEqual([]);
    expect(Array.from(s.data as Float32Array)).toEqual([500.5]);

    const h = timestepToOrt(999.75, 1, spec('float16', ['batch']));
    expect(h.type).toBe('float16');
    // halves near 1000 are 0.5 apart: 999.75 is a tie between 999.5 (odd mantissa) and 1000
    expect(float16BitsToFloat32((h.data as Uint16Array)[0])).toBe(1000);

    // A model that fixes the batch at 1 gets 1 even when the caller's batch is 2.
    expect(timestepToOrt(3, 2, spec('float32', [1])).dims).toEqual([1]);
    expect(() => timestepToOrt(1, 1, spec('float32', [1, 1]))).toThrow(EngineError);
  });

  test('ids go to int32 or int64 as declared and refuse fractions and float inputs', () => {
    const ids = [49406, 320, 49407];
    const a = idsToOrt(ids, [1, 3], {
      name: 'input_ids',
      type: 'int32',
      shape: ['batch', 'sequence'],
    });
    expect(a.data).toBeInstanceOf(Int32Array);
    expect(Array.from(a.data as Int32Array)).toEqual(ids);
    const b = idsToOrt(ids, [1, 3], {
      name: 'input_ids',
      type: 'int64',
      shape: ['batch', 'sequence'],
    });
    expect(Array.from(b.data as BigInt64Array)).toEqual(ids.map(BigInt));
    expect(() =>
      idsToOrt([1.5], [1, 1], { name: 'input_ids', type: 'int64', shape: ['b', 's'] }),
    ).toThrow(/fractional/);
    expect(() =>
      idsToOrt([1], [1, 1], { name: 'input_ids', type: 'float32', shape: ['b', 's'] }),
    ).toThrow(EngineError);
  });

  test('rank and fixed dims are checked, naming the input and both shapes', () => {
    const s: IoSpec = { name: 'sample', type: 'float32', shape: ['batch', 4, 'h', 'w'] };
    expect(() =>
      floatsToOrt(new Float32Array(12), [1, 3, 2, 2], s, { model: 'unet/model.onnx' }),
    ).toThrow('unet/model.onnx input "sample" expects shape [batch,4,h,w] but got [1,3,2,2].');
    expect(() => floatsToOrt(new Float32Array(4), [4, 1], s)).toThrow(/rank 4/);
    expect(() => floatsToOrt(new Float32Array(3), [1, 4, 1, 1], s)).toThrow(/3 values/);
  });

  test('fp16 outputs read back as float32', () => {
    const t = floatsToOrt([0.5, -2, 1000], [3], { name: 'x', type: 'float16', shape: [3] });
    expect(Array.from(ortToFloat32(t))).toEqual([0.5, -2, 1000]);
  });
});

// Feed every UNet/text-encoder variant through onnxruntime with inputs built from the
// signature the session reports: if any dtype or rank were assumed, ORT would refuse.
describe('feeding real sessions of each exporter variant', () => {
  const variants = [
    { layout: 'diffusers', timestep: 'float', inputIds: 'int32', dtype: 'float32' },
    { layout: 'optimum', timestep: 'int64', inputIds: 'int64', dtype: 'float32' },
    { layout: 'optimum', timestep: 'scalar', inputIds: 'int64', dtype: 'float32' },
    { layout: 'diffusers', timestep: 'float', inputIds: 'int32', dtype: 'float16' },
    { layout: 'optimum', timestep: 'int64', inputIds: 'int64', dtype: 'float16' },
  ] as const;

  test.each(variants)('$layout timestep=$timestep ids=$inputIds $dtype', async (v) => {
    const dir = await fixtureModel(`feed-${v.layout}-${v.timestep}-${v.inputIds}-${v.dtype}`, {
      family: 'sd15',
      ...v,
    });
    const m = await loadModel(dir, { provider: 'cpu', threads: 1 });
    try {
      const te = await m.session('text_encoder');
      const idsSpec = te.input('input_ids')!;
      expect(idsSpec.type).toBe(v.inputIds);
      const tokens = new Array(77).fill(0).map((_, i) => (i === 0 ? 0 : 1));
      const teOut = await te.run({ input_ids: idsToOrt(tokens, [1, 77], idsSpec, te.file) });
      const hidden = teOut[te.signature.outputs[0].name];
      expect(hidden.dims).toEqual([1, 77, m.family.contextDim]);

      const unet = await m.session('unet');
      const ts = unet.input('timestep')!;
      expect(ts.type).toBe(v.timestep === 'int64' ? 'int64' : v.dtype);
      expect(ts.shape.length).toBe(v.timestep === 'scalar' ? 0 : 1);
      const sampleSpec = unet.input('sample')!;
      expect(sampleSpec.type).toBe(v.dtype);
      const sample = new Float32Array(4 * 8 * 8).map((_, i) => Math.sin(i));
      const out = await unet.run({
        sample: floatsToOrt(sample, [1, 4, 8, 8], sampleSpec, { model: unet.file }),
        timestep: timestepToOrt(420.7, 1, ts, unet.file),
        encoder_hidden_states: floatsToOrt(
          ortToFloat32(hidden),
          [1, 77, m.family.contextDim],
          unet.input('encoder_hidden_states')!,
        ),
      });
      const eps = ortToFloat32(out[unet.signature.outputs[0].name]);
      expect(eps.length).toBe(4 * 8 * 8);
      expect(eps.every(Number.isFinite)).toBe(true);
    } finally {
      await m.release();
    }
  });

  test('a wrong feed becomes an EngineError naming the file, without a stack in the message', async () => {
    const dir = await fixtureModel('feed-diffusers-float-int32-float32', {
      family: 'sd15',
      layout: 'diffusers',
      timestep: 'float',
      inputIds: 'int32',
      dtype: 'float32',
    });
    const m = await loadModel(dir, { provider: 'cpu', threads: 1 });
    try {
      const te = await m.session('text_encoder');
      // int64 ids into an int32 graph: ORT refuses.
      const wrong = idsToOrt([1, 2], [1, 2], {
        name: 'input_ids',
        type: 'int64',
        shape: ['b', 's'],
      });
      const err = await te.run({ input_ids: wrong }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(EngineError);
      expect((err as EngineError).message).toMatch(/^text_encoder\/model\.onnx /);
      expect((err as EngineError).message).not.toMatch(/\n|\s+at\s/);
      const ac = new AbortController();
      ac.abort();
      const cancelled = await te.run({}, ac.signal).catch((e: unknown) => e);
      expect((cancelled as EngineError).code).toBe('cancelled');
    } finally {
      await m.release();
      await sessionCache.releaseAll();
    }
  });
});
