// Standard normal noise bit-compatible (to float32 rounding of log/sin/cos) with PyTorch's CPU
// generator: `torch.randn(shape, generator=torch.Generator('cpu').manual_seed(seed))`.
//
// Algorithm facts (reference/ENGINE-NOTES.md section 6, from PyTorch's
// aten/src/ATen/core/TransformationHelper.h, DistributionsHelper.h and
// native/cpu/DistributionTemplates.h `normal_fill` / `normal_fill_16`):
// - mt19937 seeded with the low 32 bits of the seed; manual_seed clears the cached normal.
// - float uniform = (u32 & 0xFFFFFF) * 2^-24; double uniform = (u64 & (2^53-1)) * 2^-53 with
//   u64 = first u32 << 32 | second u32.
// - numel >= 16: all values filled with float uniforms, then Box-Muller (Box & Muller 1958) on
//   each block of 16 (pairs j and j+8) in float32; a partial tail redraws the last 16 values.
// - numel < 16: scalar Box-Muller in double from two double uniforms, returning r*cos and
//   caching r*sin in the generator for the next scalar draw.

import { MT19937 } from './mt19937';

const TWO_POW_MINUS_24 = 2 ** -24;
const TWO_POW_32 = 2 ** 32;
const TWO_POW_MINUS_53 = 2 ** -53;
const f32 = Math.fround;
// 2.0f * c10::pi<double>, evaluated in double.
const TWO_PI = 2 * Math.PI;

/** Seed as PyTorch takes it: any integer up to 2^53 as a number, or a bigint. */
export type Seed = number | bigint;

/** The low 32 bits of `seed` (two's complement for negative seeds, as torch wraps them). */
export function seedLow32(seed: Seed): number {
  if (typeof seed === 'number') {
    if (!Number.isSafeInteger(seed)) {
      throw new RangeError(
        `Seed must be an integer of at most 2^53 in magnitude (use a bigint beyond), got ${seed}`,
      );
    }
    return Number(BigInt.asUintN(32, BigInt(seed)));
  }
  return Number(BigInt.asUintN(32, seed));
}

function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0)
      throw new RangeError(`Bad tensor shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

/** A PyTorch-compatible CPU random generator (`torch.Generator('cpu')`). */
export class TorchGenerator {
  private readonly engine: MT19937;
  private cachedNormal: number | undefined;

  constructor(seed: Seed) {
    this.engine = new MT19937(seedLow32(seed));
  }

  /** `generator.manual_seed(seed)`: re-seeds and drops the cached scalar normal. */
  manualSeed(seed: Seed): this {
    this.engine.seed(seedLow32(seed));
    this.cachedNormal = undefined;
    return this;
  }

  /** `torch.randn(shape, generator=this)` as float32, flattened in C order. */
  randn(shape: readonly number[]): Float32Array {
    const n = numelOf(shape);
    const out = new Float32Array(n);
    if (n >= 16) this.fillVectorised(out);
    else for (let i = 0; i < n; i++) out[i] = this.scalarNormal();
    return out;
  }

  private uniformFloat(): number {
    return (this.engine.nextUint32() & 0xffffff) * TWO_POW_MINUS_24;
  }

  private uniformDouble(): number {
    const hi = this.engine.nextUint32();
    const lo = this.engine.nextUint32();
    return ((hi & 0x1fffff) * TWO_POW_32 + lo) * TWO_POW_MINUS_53;
  }

  private scalarNormal(): number {
    if (this.cachedNormal !== undefined) {
      const cached = this.cachedNormal;
      this.cachedNormal = undefined;
      return cached;
    }
    const u1 = this.uniformDouble();
    const u2 = this.uniformDouble();
    const r = Math.sqrt(-2 * Math.log(1 - u2));
    const theta = TWO_PI * u1;
    this.cachedNormal = r * Math.sin(theta);
    return r * Math.cos(theta);
  }

  private fillVectorised(data: Float32Array): void {
    const n = data.length;
    for (let i = 0; i < n; i++) data[i] = this.uniformFloat();
    for (let i = 0; i < n - 15; i += 16) boxMuller16(data, i);
    if (n % 16 !== 0) {
      const start = n - 16;
      for (let i = 0; i < 16; i++) data[start + i] = this.uniformFloat();
      boxMuller16(data, start);
    }
  }
}

/** Box-Muller over data[at..at+15] in float32: pairs (j, j+8) become (r cos, r sin). */
function boxMuller16(data: Float32Array, at: number): void {
  for (let j = 0; j < 8; j++) {
    const u1 = f32(1 - data[at + j]); // (0, 1] so the log is finite
    const u2 = data[at + j + 8];
    const radius = f32(Math.sqrt(f32(-2 * f32(Math.log(u1)))));
    const theta = f32(TWO_PI * u2);
    data[at + j] = f32(radius * f32(Math.cos(theta)));
    data[at + j + 8] = f32(radius * f32(Math.sin(theta)));
  }
}

/** `torch.randn(shape, generator=torch.Generator('cpu').manual_seed(seed))`. */
export function randn(seed: Seed, shape: readonly number[]): Float32Array {
  return new TorchGenerator(seed).randn(shape);
}

/**
 * Starting noise for a batch of latents [B, C, H, W].
 * - `batch`: one draw for the whole tensor (ComfyUI, diffusers with one generator).
 * - `per-image`: image i is drawn alone as [1, C, H, W] with seed + i (A1111 "CPU" RNG).
 */
export function batchNoise(
  seed: Seed,
  shape: readonly number[],
  mode: 'batch' | 'per-image',
): Float32Array {
  if (shape.length !== 4)
    throw new RangeError(`batchNoise expects [B, C, H, W], got [${shape.join(', ')}]`);
  if (mode === 'batch') return randn(seed, shape);
  const [b, c, h, w] = shape;
  const perImage = numelOf([c, h, w]);
  const out = new Float32Array(numelOf(shape));
  seedLow32(seed); // validates a number seed before BigInt() would
  const base = BigInt(seed);
  for (let i = 0; i < b; i++) {
    out.set(randn(base + BigInt(i), [1, c, h, w]), i * perImage);
  }
  return out;
}
