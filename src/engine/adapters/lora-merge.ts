/**
 * Merging LoRA factors into a weight: W' = W + sum_i s_i * up_i . down_i, with
 * s_i = weight_i * alpha_i / rank_i (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large
 * Language Models", §4.1, with kohya's alpha scaling). LyCORIS' Tucker variant (LoCon with
 * `lora_mid`) is up . (mid x_1 down): delta[o, c, k, l] = sum_ij up[o, i] mid[i, j, k, l]
 * down[j, c] (Kolda & Bader 2009, "Tensor Decompositions and Applications", §4 Tucker).
 *
 * Several LoRAs on one weight are one product: their factors are concatenated along the rank,
 * [s_1 up_1 | s_2 up_2] . [down_1 ; down_2], so the sum is formed in one MatMul. The products
 * and the addition run in a two-node ONNX graph on ONNX Runtime's CPU provider (its MLAS GEMM
 * is far faster than a JavaScript loop: a full SD 1.5 LoRA is tens of GFLOP), in float32, and
 * the result is cast back to the weight's storage type; the base weight is always the pristine
 * one read from the model's files.
 */
import * as ort from 'onnxruntime-node';
import { transpose2d } from '../convert/emit/layers';
import { encodeModel, type NodeSpec } from '../convert/onnx/proto';
import type { TensorSource } from '../convert/types';
import type { LoraModule } from './lora-file';
import type { PatchTarget } from './lora-names';

/** One LoRA module's contribution to one weight, before it is formed. */
export interface Contribution {
  source: TensorSource;
  module: LoraModule;
  /** The user's multiplier (te or unet weight). */
  weight: number;
}

/** a [M, R] and b [R, N]: the weight's change is a . b in the initializer's own layout. */
export interface Factors {
  a: Float32Array;
  b: Float32Array;
  m: number;
  n: number;
  rank: number;
}

const numel = (dims: readonly number[]): number => dims.reduce((x, y) => x * y, 1);

/**
 * Whether a module's factors produce a weight of `target`'s torch shape: out and in*kh*kw
 * agree, and a kxk factor (k > 1) only meets a kxk convolution. A Linear LoRA on a 1x1 conv
 * (SD 1.x proj_in/proj_out) and a 1x1-conv LoRA on a Linear both fit.
 */
export function factorShape(module: LoraModule): { out: number; inner: number; kernel: number[] } {
  const { down, up, mid } = module;
  const kernel = mid ? mid.shape.slice(2) : down.shape.slice(2);
  const inC = down.shape[1];
  return { out: up.shape[0], inner: inC * numel(kernel), kernel: [...kernel] };
}

export function fits(module: LoraModule, target: PatchTarget): boolean {
  const { out, inner, kernel } = factorShape(module);
  const t = target.torchShape;
  if (t[0] !== out || numel(t.slice(1)) !== inner) return false;
  const k = numel(kernel);
  if (k > 1) return t.length === 4 && t[2] === kernel[0] && t[3] === kernel[1];
  return t.length === 2 || (t[2] === 1 && t[3] === 1);
}

/** The module's factors scaled by weight * alpha / rank, in the target's layout. */
async function moduleFactors(
  c: Contribution,
  target: PatchTarget,
): Promise<{ a: Float32Array; b: Float32Array; rank: number }> {
  const { module, source } = c;
  const rank = module.down.shape[0];
  const alpha = module.alphaKey ? (await source.readFloat32(module.alphaKey))[0] : rank;
  const scale = (c.weight * alpha) / rank;
  const up = await source.readFloat32(module.up.name); // [out, r]
  let down = await source.readFloat32(module.down.name); // [r, in(, kh, kw)]
  const { out, inner } = factorShape(module);
  if (module.mid) {
    // (mid x_1 down)[i, c, k, l] = sum_j mid[i, j, k, l] down[j, c]; down is [r, in, 1, 1].
    const mid = await source.readFloat32(module.mid.name);
    const [ri, rj, kh, kw] = module.mid.shape;
    const inC = module.down.shape[1];
    const kk = kh * kw;
    const t = new Float32Array(ri * inC * kk);
    for (let i = 0; i < ri; i++)
      for (let j = 0; j < rj; j++)
        for (let ch = 0; ch < inC; ch++) {
          const d = down[j * inC + ch];
          if (d === 0) continue;
          const src = (i * rj + j) * kk;
          const dst = (i * inC + ch) * kk;
          for (let q = 0; q < kk; q++) t[dst + q] += mid[src + q] * d;
        }
    down = t;
  }
  if (target.layout === 'in-out') {
    // (up . down)^T = down^T . up^T: [inner, r] . [r, out].
    const a = transpose2d(down, rank, inner);
    for (let i = 0; i < a.length; i++) a[i] *= scale;
    return { a, b: transpose2d(up, out, rank), rank };
  }
  const a = up.slice();
  for (let i = 0; i < a.length; i++) a[i] *= scale;
  return { a, b: down, rank };
}

/** Every contribution to one target, concatenated along the rank. */
export async function gatherFactors(
  target: PatchTarget,
  contributions: readonly Contribution[],
): Promise<Factors> {
  const [tOut, ...rest] = target.torchShape;
  const tIn = numel(rest);
  const m = target.layout === 'in-out' ? tIn : tOut;
  const n = target.layout === 'in-out' ? tOut : tIn;
  const parts = [];
  for (const c of contributions) parts.push(await moduleFactors(c, target));
  const rank = parts.reduce((s, p) => s + p.rank, 0);
  const a = new Float32Array(m * rank);
  const b = new Float32Array(rank * n);
  let r0 = 0;
  for (const p of parts) {
    for (let i = 0; i < m; i++) a.set(p.a.subarray(i * p.rank, (i + 1) * p.rank), i * rank + r0);
    b.set(p.b, r0 * n);
    r0 += p.rank;
  }
  return { a, b, m, n, rank };
}

/** W (stored) + A . B -> stored, as a graph: Cast to float32, MatMul, Add, Cast back. */
function mergeGraph(dtype: 'float32' | 'float16'): Uint8Array {
  const nodes: NodeSpec[] = [
    { opType: 'MatMul', name: 'delta', inputs: ['a', 'b'], outputs: ['d'] },
  ];
  if (dtype === 'float32') {
    nodes.push({ opType: 'Add', name: 'merge', inputs: ['w', 'd'], outputs: ['merged'] });
  } else {
    nodes.push(
      { opType: 'Cast', name: 'widen', inputs: ['w'], outputs: ['w32'], attrs: { to: 1 } },
      { opType: 'Add', name: 'merge', inputs: ['w32', 'd'], outputs: ['m32'] },
      { opType: 'Cast', name: 'narrow', inputs: ['m32'], outputs: ['merged'], attrs: { to: 10 } },
    );
  }
  return encodeModel({
    irVersion: 8,
    opsets: [{ domain: '', version: 17 }],
    producerName: 'latent-studio',
    producerVersion: '1',
    graphName: `lora_merge_${dtype}`,
    nodes,
    initializers: [],
    inputs: [
      { name: 'w', dtype, dims: ['m', 'n'] },
      { name: 'a', dtype: 'float32', dims: ['m', 'r'] },
      { name: 'b', dtype: 'float32', dims: ['r', 'n'] },
    ],
    outputs: [{ name: 'merged', dtype, dims: ['m', 'n'] }],
  });
}

/** Runs merges; holds its two small sessions until `release`. */
export class Merger {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();

  constructor(private readonly threads?: number) {}

  private session(dtype: 'float32' | 'float16'): Promise<ort.InferenceSession> {
    let s = this.sessions.get(dtype);
    if (!s) {
      s = ort.InferenceSession.create(mergeGraph(dtype), {
        executionProviders: ['cpu'],
        graphOptimizationLevel: 'disabled',
        ...(this.threads ? { intraOpNumThreads: this.threads } : {}),
      });
      this.sessions.set(dtype, s);
    }
    return s;
  }

  /**
   * Adds a . b to the weight whose stored bytes are `bytes` (little-endian float32 or float16,
   * the initializer's layout), in place.
   */
  async mergeInto(bytes: Uint8Array, dtype: 'float32' | 'float16', f: Factors): Promise<void> {
    const count = f.m * f.n;
    const width = dtype === 'float32' ? 4 : 2;
    if (bytes.byteLength !== count * width)
      throw new Error(`weight holds ${bytes.byteLength} bytes, not ${count} x ${width}`);
    // A copy at offset 0, aligned for the typed array (the weight's offset in its file may be
    // odd); `new Uint8Array(view)` copies, where a Buffer's slice() would not.
    const copy = new Uint8Array(bytes);
    const w =
      dtype === 'float32'
        ? new ort.Tensor('float32', new Float32Array(copy.buffer, 0, count), [f.m, f.n])
        : new ort.Tensor('float16', new Uint16Array(copy.buffer, 0, count), [f.m, f.n]);
    const session = await this.session(dtype);
    const out = await session.run({
      w,
      a: new ort.Tensor('float32', f.a, [f.m, f.rank]),
      b: new ort.Tensor('float32', f.b, [f.rank, f.n]),
    });
    const merged = out.merged!.data as Float32Array | Uint16Array;
    bytes.set(new Uint8Array(merged.buffer, merged.byteOffset, count * width));
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of all) await (await s).release();
  }
}
