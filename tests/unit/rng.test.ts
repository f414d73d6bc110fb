import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { MT19937, TorchGenerator, batchNoise, randn, seedLow32 } from '../../src/engine/rng';

// Recorded by PyTorch 1.13 (CPU, float32); a copy of shared/reference kept in tests/fixtures/reference.
const here = path.dirname(fileURLToPath(import.meta.url));
const vectorsPath = path.resolve(here, '../fixtures/reference/torch-randn-vectors.json');

interface RecordedCase {
  seed: number;
  shape: number[];
  values: number[];
}
interface RecordedVectors {
  cases: RecordedCase[];
  sequence: { seed: number; calls: number[][]; values: number[][] };
}
const recorded = JSON.parse(readFileSync(vectorsPath, 'utf8')) as RecordedVectors;

// Platform log/sin/cos (and torch's SIMD versions) differ by an ulp or so.
const TOLERANCE = 1e-5;

function expectClose(actual: Float32Array, expected: readonly number[]): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++)
    worst = Math.max(worst, Math.abs(actual[i] - expected[i]));
  expect(worst).toBeLessThan(TOLERANCE);
}

function concat(...parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

describe('MT19937', () => {
  it('matches the reference generator for the default seed 5489', () => {
    // C++ [rand.predef]: the 10000th output of a default-constructed std::mt19937 is 4123659995;
    // its first output is 3499211612.
    const mt = new MT19937(5489);
    expect(mt.nextUint32()).toBe(3499211612);
    let last = 0;
    for (let i = 1; i < 10000; i++) last = mt.nextUint32();
    expect(last).toBe(4123659995);
  });
});

describe('torch-compatible randn', () => {
  it('loads every recorded case', () => {
    expect(recorded.cases.length).toBeGreaterThanOrEqual(7);
  });

  for (const c of recorded.cases) {
    it(`matches torch.randn(${JSON.stringify(c.shape)}) with seed ${c.seed}`, () => {
      expectClose(randn(c.seed, c.shape), c.values);
      expectClose(randn(BigInt(c.seed), c.shape), c.values);
    });
  }

  it('continues generator state across calls like torch (recorded sequence)', () => {
    const g = new TorchGenerator(recorded.sequence.seed);
    recorded.sequence.calls.forEach((shape, k) =>
      expectClose(g.randn(shape), recorded.sequence.values[k]),
    );
  });

  it('uses the low 32 bits of the seed', () => {
    expect(seedLow32(4294967301)).toBe(5);
    expect(randn(4294967301, [20])).toEqual(randn(5, [20]));
    expect(randn(2n ** 60n + 5n, [5])).toEqual(randn(5, [5]));
    expect(randn(Number.MAX_SAFE_INTEGER, [3])).toEqual(randn(0xffffffff, [3]));
    // torch wraps negative seeds to uint64; the low 32 bits of -1 are 0xffffffff.
    expect(randn(-1, [17])).toEqual(randn(0xffffffff, [17]));
  });

  it('rejects seeds a number cannot hold exactly', () => {
    expect(() => randn(2 ** 53 + 2, [1])).toThrow(RangeError);
    expect(() => randn(1.5, [1])).toThrow(RangeError);
    expect(() => randn(1, [2, -1])).toThrow(RangeError);
  });

  it('is deterministic', () => {
    expect(randn(99, [1, 4, 16, 16])).toEqual(randn(99, [1, 4, 16, 16]));
    expect(randn(99, [5])).toEqual(randn(99, [5]));
    expect(randn(99, [1, 4, 16, 16])).not.toEqual(randn(100, [1, 4, 16, 16]));
  });

  it('scalar path (numel < 16): split calls equal one call, because the cached r*sin carries over', () => {
    const g = new TorchGenerator(11);
    expect(concat(g.randn([3]), g.randn([3]), g.randn([2]))).toEqual(randn(11, [8]));
    const h = new TorchGenerator(11);
    expect(concat(h.randn([4]), h.randn([4]))).toEqual(randn(11, [8]));
  });

  it('vectorised path (numel >= 16): whole blocks of 16 are independent of how calls are split', () => {
    // [32] fills 32 float uniforms then transforms blocks 0 and 16: the same draws as two [16].
    const g = new TorchGenerator(5);
    expect(concat(g.randn([16]), g.randn([16]))).toEqual(randn(5, [32]));
  });

  it('scalar and vectorised paths consume the stream differently', () => {
    // Two [8] calls use double uniforms (two words each); [16] uses one word per float uniform.
    const g = new TorchGenerator(5);
    expect(concat(g.randn([8]), g.randn([8]))).not.toEqual(randn(5, [16]));
  });

  it('a partial tail redraws the last 16 values', () => {
    // [20]: block 0 is transformed from draws 0..15, then values 4..19 are redrawn from draws
    // 20..35. So the first 4 values equal those of [16], the rest do not.
    const a = randn(8, [20]);
    const b = randn(8, [16]);
    expect(Array.from(a.subarray(0, 4))).toEqual(Array.from(b.subarray(0, 4)));
    expect(Array.from(a.subarray(4, 16))).not.toEqual(Array.from(b.subarray(4, 16)));
  });

  it('the vectorised path neither uses nor clears the cached scalar normal', () => {
    const pair = randn(21, [2]); // [r cos, r sin] of the first scalar draw
    const g = new TorchGenerator(21);
    expect(g.randn([1])[0]).toBe(pair[0]);
    g.randn([16]);
    expect(g.randn([1])[0]).toBe(pair[1]);
  });

  it('manualSeed restarts the stream and drops the cached normal', () => {
    const g = new TorchGenerator(3);
    g.randn([1]); // leaves r*sin cached
    g.manualSeed(3);
    expect(g.randn([3])).toEqual(randn(3, [3]));
    g.manualSeed(3n);
    expect(g.randn([40])).toEqual(randn(3, [40]));
  });

  it('handles empty tensors', () => {
    expect(randn(1, [0, 4]).length).toBe(0);
    expect(randn(1, []).length).toBe(1); // a scalar
  });

  it('looks standard normal over a latent-sized draw', () => {
    const v = randn(2024, [1, 4, 64, 64]);
    let sum = 0;
    let sq = 0;
    for (const x of v) {
      sum += x;
      sq += x * x;
    }
    const mean = sum / v.length;
    const variance = sq / v.length - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(0.03);
    expect(Math.abs(variance - 1)).toBeLessThan(0.05);
  });
});

describe('batchNoise', () => {
  const shape = [3, 4, 4, 4];

  it("'batch' is one draw for the whole tensor", () => {
    expect(batchNoise(1234, shape, 'batch')).toEqual(randn(1234, shape));
    expectClose(
      batchNoise(1234, [1, 4, 8, 8], 'batch'),
      recorded.cases.find((c) => c.seed === 1234)!.values,
    );
  });

  it("'per-image' draws image i alone with seed + i", () => {
    const noise = batchNoise(1234, shape, 'per-image');
    const per = 4 * 4 * 4;
    for (let i = 0; i < 3; i++) {
      expect(noise.subarray(i * per, (i + 1) * per)).toEqual(randn(1234 + i, [1, 4, 4, 4]));
    }
    expect(noise).not.toEqual(batchNoise(1234, shape, 'batch'));
  });

  it("'per-image' with bigint seeds crosses the 32-bit boundary like seed + i does", () => {
    const noise = batchNoise(0xffffffffn, [2, 1, 4, 4], 'per-image');
    expect(noise.subarray(0, 16)).toEqual(randn(0xffffffff, [1, 1, 4, 4]));
    expect(noise.subarray(16, 32)).toEqual(randn(0, [1, 1, 4, 4]));
  });

  it('agrees between modes for a single image', () => {
    expect(batchNoise(7, [1, 4, 8, 8], 'per-image')).toEqual(batchNoise(7, [1, 4, 8, 8], 'batch'));
  });

  it('rejects shapes that are not [B, C, H, W]', () => {
    expect(() => batchNoise(1, [4, 8, 8], 'batch')).toThrow(RangeError);
  });
});
