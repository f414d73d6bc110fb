// An ONNX graph under construction, and its streaming writer.
//
// Weights are registered with an async producer and pulled one at a time while saving, straight
// into the external data file through a large write buffer, so a multi-GB model never sits in
// memory: the peak is one weight (as float32) plus the buffer plus the graph.

import { open } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../../errors';
import { float32ToFloat16Bits } from '../../tensor';
import {
  type AttrValue,
  type Dim,
  type ElemType,
  type InitializerSpec,
  type NodeSpec,
  type ValueInfoSpec,
  encodeModel,
} from './proto';

export const OPSET = 17;
export const IR_VERSION = 8;
/** com.microsoft contrib operators (MultiHeadAttention) are version 1. */
export const MS_DOMAIN = 'com.microsoft';

/** How float weights are stored: fp16 is converted back to float32 by a Cast node at load. */
export type WeightPrecision = 'fp16' | 'fp32';

/**
 * The float type activations are computed in: float32 (every CPU graph), or float16 (the
 * converter's CUDA variant, whose weights then need no Cast).
 */
export type ComputeType = 'float32' | 'float16';

/** A weight's values, produced when the writer reaches it. */
export type WeightProducer = () => Promise<Float32Array>;

interface Weight {
  name: string;
  dims: number[];
  stored: 'float32' | 'float16';
  produce: WeightProducer;
}

export interface SaveProgress {
  /** The weight just written. */
  name: string;
  bytes: number;
  /** Weights written so far, and of how many. */
  done: number;
  total: number;
  /** Weight bytes written so far, and of how many (for MB/s and an ETA). */
  bytesDone: number;
  bytesTotal: number;
}

export interface SaveOptions {
  /** External data file beside `file` (one per component), e.g. `model.onnx_data`. */
  externalData: string;
  signal?: AbortSignal;
  onTensor?: (p: SaveProgress) => void;
  producerName?: string;
  docString?: string;
}

const numel = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** Writes go through a buffer this large (large sequential writes; no per-tensor syscalls). */
const WRITE_BUFFER = 32 << 20;

export class Graph {
  readonly nodes: NodeSpec[] = [];
  readonly inputs: ValueInfoSpec[] = [];
  readonly outputs: ValueInfoSpec[] = [];
  private readonly inline: InitializerSpec[] = [];
  private readonly weights: Weight[] = [];
  private readonly names = new Set<string>();
  private readonly constants = new Map<string, string>();
  private counter = 0;
  private usesMs = false;

  constructor(
    readonly name: string,
    readonly precision: WeightPrecision,
    readonly compute: ComputeType = 'float32',
  ) {}

  /** A fresh tensor name built from a hint. */
  unique(hint: string): string {
    let n = hint;
    while (this.names.has(n)) n = `${hint}_${++this.counter}`;
    this.names.add(n);
    return n;
  }

  input(name: string, dtype: ElemType, dims: readonly Dim[]): string {
    if (this.names.has(name)) throw new Error(`duplicate graph name ${name}`);
    this.names.add(name);
    this.inputs.push({ name, dtype, dims });
    return name;
  }

  /** Marks `tensor` as the graph output `name` (through an Identity when the names differ). */
  output(tensor: string, name: string, dtype: ElemType, dims: readonly Dim[]): void {
    if (tensor !== name) {
      if (this.names.has(name)) throw new Error(`duplicate graph name ${name}`);
      this.names.add(name);
      this.nodes.push({
        opType: 'Identity',
        name: this.unique(`Identity_${name}`),
        inputs: [tensor],
        outputs: [name],
      });
    }
    this.outputs.push({ name, dtype, dims });
  }

  /** Adds a node; returns its single output. */
  op(
    opType: string,
    inputs: readonly string[],
    attrs: Record<string, AttrValue> = {},
    hint?: string,
    domain?: string,
  ): string {
    const base = hint ?? opType;
    const out = this.unique(`${base}/${opType}`);
    if (domain === MS_DOMAIN) this.usesMs = true;
    this.nodes.push({
      opType,
      domain,
      name: this.unique(`${base}/${opType}_node`),
      inputs,
      outputs: [out],
      attrs,
    });
    return out;
  }

  private constant(dtype: ElemType, dims: number[], raw: Uint8Array, key: string): string {
    const hit = this.constants.get(key);
    if (hit) return hit;
    const name = this.unique(`const_${this.constants.size}`);
    this.inline.push({ name, dtype, dims, raw });
    this.constants.set(key, name);
    return name;
  }

  /** An int64 constant (1-D unless `dims` is given; [] for a scalar). */
  i64(values: number | readonly number[], dims?: number[]): string {
    const arr = typeof values === 'number' ? [values] : values;
    const shape = dims ?? (typeof values === 'number' ? [] : [arr.length]);
    const data = BigInt64Array.from(arr, (x) => BigInt(x));
    return this.constant('int64', shape, new Uint8Array(data.buffer), `i:${shape}:${arr}`);
  }

  /** A float32 constant (scalar when `values` is a number). */
  f32(values: number | Float32Array, dims?: number[]): string {
    const data = typeof values === 'number' ? Float32Array.of(values) : values;
    const shape = dims ?? (typeof values === 'number' ? [] : [data.length]);
    const key = data.length <= 16 ? `f:${shape}:${Array.from(data)}` : `f#${this.counter++}`;
    return this.constant('float32', shape, new Uint8Array(data.buffer.slice(0)), key);
  }

  /**
   * A float weight of `dims`, produced at save time. Returns a float32 tensor name: behind a
   * Cast when weights are stored as fp16 (ONNX Runtime folds the Cast at load, so compute stays
   * float32, as tools/model/export.py does for the built-in model). `precision` overrides the
   * graph's for values that must not be rounded (the safety checker's thresholds). In a float16
   * graph the tensor is float16 instead: fp16 weights as stored, others behind a Cast; `asStored`
   * returns the stored tensor whatever the compute type (operators whose parameters are float32
   * in a float16 graph).
   */
  weight(
    name: string,
    dims: number[],
    produce: WeightProducer,
    precision: WeightPrecision = this.precision,
    asStored = false,
  ): string {
    if (this.names.has(name)) throw new Error(`weight ${name} registered twice`);
    this.names.add(name);
    const stored = precision === 'fp16' ? 'float16' : 'float32';
    this.weights.push({ name, dims, stored, produce });
    if (asStored || stored === this.compute) return name;
    return this.op('Cast', [name], { to: this.compute === 'float16' ? 10 : 1 }, name);
  }

  /** `x` (float32) in the compute type: itself, or behind a Cast in a float16 graph. */
  toCompute(x: string, hint?: string): string {
    return this.compute === 'float16' ? this.op('Cast', [x], { to: 10 }, hint) : x;
  }

  /** `x` (in the compute type) as float32: for the graph's float32 outputs. */
  toFloat32(x: string, hint?: string): string {
    return this.compute === 'float16' ? this.op('Cast', [x], { to: 1 }, hint) : x;
  }

  /** Stored weight bytes (what the external data file will hold, before alignment). */
  weightBytes(): number {
    let n = 0;
    for (const w of this.weights) n += numel(w.dims) * (w.stored === 'float16' ? 2 : 4);
    return n;
  }

  get weightCount(): number {
    return this.weights.length;
  }

  /**
   * Writes `file` (the graph) and `opts.externalData` beside it (every weight, in registration
   * order, each pulled from its producer only when it is written). Returns the bytes written.
   */
  async save(file: string, opts: SaveOptions): Promise<number> {
    const dataPath = path.join(path.dirname(file), opts.externalData);
    const initializers: InitializerSpec[] = [...this.inline];
    const fh = await open(dataPath, 'w');
    let offset = 0;
    const buffer = Buffer.allocUnsafe(WRITE_BUFFER);
    let filled = 0;
    const flush = async (): Promise<void> => {
      let written = 0;
      while (written < filled) {
        const r = await fh.write(buffer, written, filled - written);
        written += r.bytesWritten;
      }
      filled = 0;
    };
    /** Appends `n` bytes made by `fill(target, at)` (into the buffer, or a one-off array). */
    const append = async (n: number, fill: (dst: Uint8Array) => void): Promise<void> => {
      if (n > buffer.byteLength - filled) await flush();
      if (n <= buffer.byteLength) {
        fill(buffer.subarray(filled, filled + n));
        filled += n;
        return;
      }
      const big = new Uint8Array(n);
      fill(big);
      let written = 0;
      while (written < n) written += (await fh.write(big, written, n - written)).bytesWritten;
    };
    const bytesTotal = this.weightBytes();
    let bytesDone = 0;
    try {
      let done = 0;
      for (const w of this.weights) {
        if (opts.signal?.aborted) throw cancelled();
        const values = await w.produce();
        const count = numel(w.dims);
        if (values.length !== count)
          throw new Error(`weight ${w.name}: ${values.length} values for [${w.dims}]`);
        const width = w.stored === 'float16' ? 2 : 4;
        const length = count * width;
        // Align each weight as onnx's external-data writer does, so ORT can map it.
        const pad = (-offset & (length >= 1 << 20 ? 4095 : 63)) >>> 0;
        if (pad) await append(pad, (d) => d.fill(0));
        offset += pad;
        await append(length, (d) => {
          if (width === 4) {
            d.set(new Uint8Array(values.buffer, values.byteOffset, length));
            return;
          }
          toHalfInto(values, new Uint16Array(d.buffer, d.byteOffset, count));
        });
        initializers.push({
          name: w.name,
          dtype: w.stored,
          dims: w.dims,
          external: { location: opts.externalData, offset, length },
        });
        offset += length;
        bytesDone += length;
        opts.onTensor?.({
          name: w.name,
          bytes: length,
          done: ++done,
          total: this.weights.length,
          bytesDone,
          bytesTotal,
        });
      }
      await flush();
    } finally {
      await fh.close();
    }
    const model = encodeModel({
      irVersion: IR_VERSION,
      opsets: this.usesMs
        ? [
            { domain: '', version: OPSET },
            { domain: MS_DOMAIN, version: 1 },
          ]
        : [{ domain: '', version: OPSET }],
      producerName: opts.producerName ?? 'latent-studio-convert',
      producerVersion: '1',
      docString: opts.docString,
      graphName: this.name,
      nodes: this.nodes,
      initializers,
      inputs: this.inputs,
      outputs: this.outputs,
    });
    const mh = await open(file, 'w');
    try {
      let written = 0;
      while (written < model.byteLength)
        written += (await mh.write(model, written, model.byteLength - written)).bytesWritten;
    } finally {
      await mh.close();
    }
    return offset + model.byteLength;
  }
}

/**
 * float32 -> binary16 bits, round to nearest even, as float32ToFloat16Bits, with the common case
 * (a normal half) inlined over the raw bits: this loop runs once per weight value of the model.
 */
export function toHalfInto(src: Float32Array, dst: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i];
    const e = ((x >>> 23) & 0xff) - 112; // rebias 127 -> 15
    if (e > 0 && e < 31) {
      const mant = x & 0x7fffff;
      let h = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && (h & 1) === 1)) h++; // may carry into Inf: right
      dst[i] = ((x >>> 16) & 0x8000) | h;
    } else {
      dst[i] = float32ToFloat16Bits(src[i]); // zero, subnormal, overflow, Inf, NaN
    }
  }
}

function cancelled(): EngineError {
  return new EngineError('cancelled', 'The conversion was cancelled.');
}
