/**
 * Host-side tensors and their conversion to the exact form a graph input asks for.
 *
 * Exporters disagree on dtypes (int32 vs int64 ids, float vs int64 vs rank-0 timesteps, fp16 vs
 * fp32 everything), so the engine computes in float32 and converts at the session boundary,
 * driven by the input's signature as read from the model (see models/signature.ts).
 */
import * as ort from 'onnxruntime-node';
import { EngineError } from './errors';

/**
 * Element types as ONNX Runtime names them (`ort.Tensor.Type`), plus the two a declared
 * signature can hold that ORT's JS API cannot feed: bfloat16 and non-tensor values.
 */
export type TensorType = ort.Tensor.Type | 'bfloat16' | 'non-tensor';

/** One dimension of a declared shape: a size, or a symbolic name such as "batch". */
export type Dim = number | string;

/** A graph input or output as declared in the model. */
export interface IoSpec {
  name: string;
  type: TensorType;
  /** Declared shape; its length is the rank. `[]` is a scalar (rank 0). */
  shape: readonly Dim[];
}

/**
 * A tensor on the host. float16 data is kept as IEEE half bit patterns in a Uint16Array
 * (Node 20 has no Float16Array; ONNX Runtime accepts Uint16Array for 'float16').
 */
export type HostTensor =
  | { type: 'float32'; data: Float32Array; dims: readonly number[] }
  | { type: 'float16'; data: Uint16Array; dims: readonly number[] }
  | { type: 'int32'; data: Int32Array; dims: readonly number[] }
  | { type: 'int64'; data: BigInt64Array; dims: readonly number[] };

export function numel(dims: readonly number[]): number {
  let n = 1;
  for (const d of dims) n *= d;
  return n;
}

// ---------------------------------------------------------------------------------------------
// float16 <-> float32 (IEEE 754 binary16), round to nearest, ties to even.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * The binary16 bit pattern nearest to `value` (ties to even; overflow to ±Inf; NaN kept).
 * `value` is first rounded to float32, so this is exact for the engine's float32 data.
 */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;

  if (exp === 0xff) {
    // Inf stays Inf; NaN stays a quiet NaN (keep the top mantissa bits, force one bit on).
    return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  }
  // Unbiased exponent, rebiased for half (bias 15).
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // too large: Inf
  if (e <= 0) {
    // Subnormal half (or zero). The value is mant_with_implicit * 2^(exp-150); a half subnormal
    // unit is 2^-24, so shift right by (1 - e) + 13 with correct rounding.
    if (e < -10) return sign; // below half the smallest subnormal: ±0
    mant |= 0x800000;
    const shift = 14 - e; // 1 - e + 13
    const half = 1 << (shift - 1);
    const rem = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rem > half || (rem === half && (h & 1) === 1)) h += 1;
    return sign | h; // a carry into the exponent field gives the smallest normal, as it should
  }
  // Normal: keep 10 mantissa bits, round on the 13 dropped ones.
  const rem = mant & 0x1fff;
  let h = (e << 10) | (mant >>> 13);
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h += 1; // may carry into exp -> Inf
  return sign | h;
}

/** The float value of a binary16 bit pattern (exact). */
export function float16BitsToFloat32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

export function toFloat16(src: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = float32ToFloat16Bits(src[i]);
  return out;
}

// A lookup table makes fp16 -> fp32 cheap for the large outputs of fp16 models.
let halfTable: Float32Array | undefined;
export function fromFloat16(src: Uint16Array): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) halfTable[i] = float16BitsToFloat32(i);
  }
  const t = halfTable;
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = t[src[i]];
  return out;
}

// ---------------------------------------------------------------------------------------------
// Building inputs for a signature.

function describeShape(shape: readonly Dim[]): string {
  return `[${shape.join(',')}]`;
}

/**
 * Check `dims` against the declared shape: same rank, equal where the model fixes a size.
 * `model` names the component in the error ("unet/model.onnx").
 */
export function checkDims(spec: IoSpec, dims: readonly number[], model?: string): void {
  const where = model ? `${model} input "${spec.name}"` : `input "${spec.name}"`;
  if (spec.shape.length !== dims.length) {
    throw new EngineError(
      'model-shape',
      `${where} has rank ${spec.shape.length} ${describeShape(spec.shape)} but the engine built rank ${dims.length} [${dims.join(',')}].`,
      model ? { file: model } : {},
    );
  }
  for (let i = 0; i < dims.length; i++) {
    const want = spec.shape[i];
    if (typeof want === 'number' && want >= 0 && want !== dims[i]) {
      throw new EngineError(
        'model-shape',
        `${where} expects shape ${describeShape(spec.shape)} but got [${dims.join(',')}].`,
        model ? { file: model } : {},
      );
    }
  }
}

/**
 * Make an `ort.Tensor` of the dtype `spec` asks for from float values.
 * float32/float16/float64 convert (fp16 rounds to nearest even); integer types require
 * integral values unless `truncate` is set, in which case they truncate toward zero.
 */
export function floatsToOrt(
  values: Float32Array | readonly number[],
  dims: readonly number[],
  spec: IoSpec,
  opts: { model?: string; truncate?: boolean } = {},
): ort.Tensor {
  checkDims(spec, dims, opts.model);
  if (values.length !== numel(dims)) {
    throw new EngineError(
      'bad-input',
      `Input "${spec.name}" has ${values.length} values but shape [${dims.join(',')}] needs ${numel(dims)}.`,
    );
  }
  const d = dims as number[];
  switch (spec.type) {
    case 'float32':
      return new ort.Tensor(
        'float32',
        values instanceof Float32Array ? values : Float32Array.from(values),
        d,
      );
    case 'float16':
      return new ort.Tensor('float16', toFloat16(values), d);
    case 'float64':
      return new ort.Tensor('float64', Float64Array.from(values), d);
    case 'int64':
    case 'int32': {
      const n = values.length;
      const ints = spec.type === 'int64' ? new BigInt64Array(n) : new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (!Number.isFinite(v))
          throw new EngineError('bad-input', `Input "${spec.name}" got a non-finite value.`);
        if (!opts.truncate && !Number.isInteger(v)) {
          throw new EngineError(
            'bad-input',
            `Input "${spec.name}" is ${spec.type} but got the fractional value ${v}.`,
          );
        }
        const t = Math.trunc(v);
        if (ints instanceof BigInt64Array) ints[i] = BigInt(t);
        else ints[i] = t;
      }
      return new ort.Tensor(spec.type, ints as Int32Array & BigInt64Array, d);
    }
    default:
      throw new EngineError(
        'model-unsupported',
        `${opts.model ? opts.model + ' input' : 'Input'} "${spec.name}" has dtype ${spec.type}, which the engine does not feed.`,
        opts.model ? { file: opts.model } : {},
      );
  }
}

/**
 * Token ids as the text encoder asks for them (int32 from the diffusers script and Olive, int64
 * from optimum). `ids` is row-major [batch, seq].
 */
export function idsToOrt(
  ids: ArrayLike<number>,
  dims: readonly number[],
  spec: IoSpec,
  model?: string,
): ort.Tensor {
  if (spec.type !== 'int32' && spec.type !== 'int64') {
    throw new EngineError(
      'model-shape',
      `${model ?? 'The text encoder'} input "${spec.name}" should be int32 or int64 but is ${spec.type}.`,
      model ? { file: model } : {},
    );
  }
  return floatsToOrt(Array.from(ids), dims, spec, model === undefined ? {} : { model });
}

/**
 * The UNet `timestep` input for one scheduler timestep `t`, shaped and typed as declared:
 * float [B], int64 [B] or a rank-0 float (see ENGINE-NOTES §2).
 *
 * Fractional timesteps (Euler-family with linspace spacing) are fed as the model asks:
 * - float32: as is; float16: rounded to the nearest half (ties to even), as numpy's astype does.
 * - int64/int32: truncated toward zero. That is what diffusers' ONNX pipelines do:
 *   `np.array([t], dtype=timestep_dtype)` casts the float scheduler timestep with numpy's C cast
 *   (truncation), the same as torch's `.long()`. Timesteps are >= 0, so this is floor.
 */
export function timestepToOrt(t: number, batch: number, spec: IoSpec, model?: string): ort.Tensor {
  const rank = spec.shape.length;
  if (rank > 1) {
    throw new EngineError(
      'model-shape',
      `${model ?? 'The UNet'} input "${spec.name}" should be a scalar or [batch] but is declared ${describeShape(spec.shape)}.`,
      model ? { file: model } : {},
    );
  }
  const dims =
    rank === 0 ? [] : [typeof spec.shape[0] === 'number' && spec.shape[0] === 1 ? 1 : batch];
  const values = new Array<number>(numel(dims)).fill(t);
  return floatsToOrt(values, dims, spec, {
    ...(model === undefined ? {} : { model }),
    truncate: true,
  });
}

/** Convert any host tensor to an `ort.Tensor` of the dtype `spec` asks for. */
export function hostToOrt(t: HostTensor, spec: IoSpec, model?: string): ort.Tensor {
  checkDims(spec, t.dims, model);
  if (t.type === spec.type)
    return new ort.Tensor(t.type, t.data as Float32Array, t.dims as number[]);
  if (spec.type === 'int32' || spec.type === 'int64') {
    if (t.type === 'int32' || t.type === 'int64') {
      const ints = Array.from(t.data as ArrayLike<number | bigint>, Number);
      return floatsToOrt(ints, t.dims, spec, model === undefined ? {} : { model });
    }
  }
  const floats = hostToFloat32(t);
  return floatsToOrt(floats, t.dims, spec, model === undefined ? {} : { model });
}

export function hostToFloat32(t: HostTensor): Float32Array {
  switch (t.type) {
    case 'float32':
      return t.data;
    case 'float16':
      return fromFloat16(t.data);
    case 'int32':
      return Float32Array.from(t.data);
    case 'int64': {
      const out = new Float32Array(t.data.length);
      for (let i = 0; i < out.length; i++) out[i] = Number(t.data[i]);
      return out;
    }
  }
}

/** Read an output tensor as float32 (fp16 and fp64 convert; integers convert exactly enough). */
export function ortToFloat32(t: ort.Tensor, name = 'output'): Float32Array {
  switch (t.type) {
    case 'float32':
      return t.data as Float32Array;
    case 'float16': {
      const data = t.data as unknown;
      // onnxruntime-node hands fp16 out as Uint16Array (or Float16Array where the runtime has it).
      if (data instanceof Uint16Array) return fromFloat16(data);
      return Float32Array.from(data as ArrayLike<number>);
    }
    case 'float64':
    case 'int32':
    case 'int8':
    case 'uint8':
    case 'int16':
    case 'uint16':
      return Float32Array.from(t.data as ArrayLike<number>);
    case 'int64': {
      const src = t.data as BigInt64Array;
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]);
      return out;
    }
    default:
      throw new EngineError(
        'model-shape',
        `The model output "${name}" has dtype ${t.type}, which is not numeric.`,
      );
  }
}

/** The float dtype a model uses for its float inputs: 'float16' for fp16 exports. */
export function floatTypeOf(spec: IoSpec | undefined): 'float32' | 'float16' {
  return spec?.type === 'float16' ? 'float16' : 'float32';
}
