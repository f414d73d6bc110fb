// Layers shared by the emitters, each reading its parameters from the checkpoint by ldm key.
//
// `Params` is the one place a key is looked up: it checks that the tensor is there with the shape
// the architecture implies (one sentence naming the key and the file otherwise), records it as
// consumed (the caller checks whole-file coverage with that set), and registers a producer that
// reads the tensor only when the writer reaches it.

import { EngineError } from '../../errors';
import { type Graph, MS_DOMAIN } from '../onnx/graph';
import type { TensorInfo, TensorSource } from '../types';

/** How attention is emitted: ONNX Runtime's fused MultiHeadAttention, or MatMul + Softmax. */
export type AttentionKind = 'fused' | 'matmul';

const numel = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** [rows, cols] -> [cols, rows]: a PyTorch Linear weight [out, in] becomes MatMul's [in, out]. */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  // In 32 x 32 tiles, so both the reads and the strided writes stay in cache.
  const T = 32;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const r1 = Math.min(rows, r0 + T);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const c1 = Math.min(cols, c0 + T);
      for (let r = r0; r < r1; r++) {
        const base = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = src[base + c];
      }
    }
  }
  return out;
}

export class Params {
  /** Every key this component read or deliberately ignored. */
  readonly consumed = new Set<string>();

  constructor(
    readonly source: TensorSource,
    readonly g: Graph,
    /** For messages: "the UNet", "the VAE decoder", ... */
    readonly component: string,
  ) {}

  has(key: string): boolean {
    return this.source.info(key) !== undefined;
  }

  /** The tensor's info, checked against `shape` (any of `alternatives` is accepted too). */
  info(key: string, shape: readonly number[], ...alternatives: (readonly number[])[]): TensorInfo {
    const info = this.source.info(key);
    if (!info) {
      throw new EngineError(
        'model-unsupported',
        `${this.source.path} has no tensor "${key}", which ${this.component} needs.`,
        { file: this.source.path },
      );
    }
    const same = (s: readonly number[]): boolean =>
      s.length === info.shape.length && s.every((d, i) => d === info.shape[i]);
    if (!same(shape) && !alternatives.some(same)) {
      throw new EngineError(
        'model-unsupported',
        `${this.source.path} has "${key}" shaped [${info.shape.join(', ')}] where ${this.component} needs [${shape.join(', ')}].`,
        { file: this.source.path },
      );
    }
    this.consumed.add(key);
    return info;
  }

  /** Marks keys that belong to the component but are not part of the graph, when present. */
  ignore(...keys: string[]): void {
    for (const k of keys) if (this.has(k)) this.consumed.add(k);
  }

  /** The tensor as stored (same layout), as a float32 graph tensor of `shape`. */
  plain(key: string, shape: number[], ...alternatives: (readonly number[])[]): string {
    const info = this.info(key, shape, ...alternatives);
    void info;
    return this.g.weight(key, shape, () => this.source.readFloat32(key));
  }

  /** As `plain`, but always stored float32, whatever the graph's weight precision. */
  exact(key: string, shape: number[]): string {
    this.info(key, shape);
    return this.g.weight(key, shape, () => this.source.readFloat32(key), 'fp32');
  }

  /** A [out, in] Linear weight (or a [out, in, 1, 1] 1x1 conv) as MatMul's [in, out]. */
  matmulWeight(key: string, inF: number, outF: number): string {
    this.info(key, [outF, inF], [outF, inF, 1, 1]);
    return this.g.weight(key, [inF, outF], async () =>
      transpose2d(await this.source.readFloat32(key), outF, inF),
    );
  }

  /** Rows [from, from + rows) of a [*, cols] tensor (OpenCLIP's fused in_proj), transposed. */
  matmulWeightSlice(key: string, fullRows: number, from: number, rows: number, cols: number) {
    this.info(key, [fullRows, cols]);
    return this.g.weight(`${key}[${from}:${from + rows}]`, [cols, rows], async () => {
      const all = await this.source.readFloat32(key);
      return transpose2d(all.subarray(from * cols, (from + rows) * cols), rows, cols);
    });
  }

  /** Elements [from, from + n) of a 1-D tensor of `full` values (OpenCLIP's fused in_proj bias). */
  vectorSlice(key: string, full: number, from: number, n: number): string {
    this.info(key, [full]);
    return this.g.weight(`${key}[${from}:${from + n}]`, [n], async () =>
      (await this.source.readFloat32(key)).slice(from, from + n),
    );
  }
}

/** Layer constructors over a graph and the checkpoint's parameters. */
export class Layers {
  constructor(
    readonly g: Graph,
    readonly p: Params,
  ) {}

  /** x [..., in] -> [..., out] with `key`.weight [out, in] (and `key`.bias [out]). */
  linear(x: string, key: string, inF: number, outF: number, bias = true): string {
    const g = this.g;
    let y = g.op('MatMul', [x, this.p.matmulWeight(`${key}.weight`, inF, outF)], {}, key);
    if (bias) y = g.op('Add', [y, this.p.plain(`${key}.bias`, [outF])], {}, key);
    return y;
  }

  /** Conv2d with `key`.weight [out, in, k, k] and `key`.bias; pads [top, left, bottom, right]. */
  conv(
    x: string,
    key: string,
    inC: number,
    outC: number,
    k: number,
    opts: { stride?: number; pads?: number[] } = {},
  ): string {
    const p = (k - 1) >> 1;
    const s = opts.stride ?? 1;
    return this.g.op(
      'Conv',
      [x, this.p.plain(`${key}.weight`, [outC, inC, k, k]), this.p.plain(`${key}.bias`, [outC])],
      { kernel_shape: [k, k], pads: opts.pads ?? [p, p, p, p], strides: [s, s] },
      key,
    );
  }

  /**
   * GroupNorm over [B, C, H, W] as PyTorch exports it (Reshape, InstanceNormalization over the
   * groups, then the per-channel affine); `key`.weight and `key`.bias are [C].
   */
  groupNorm(x: string, key: string, c: number, eps: number, groups = 32): string {
    const g = this.g;
    if (c % groups !== 0) throw new Error(`${key}: ${c} channels in ${groups} groups`);
    const shape = g.op('Shape', [x], {}, key);
    const grouped = g.op('Reshape', [x, g.i64([0, groups, -1])], {}, key);
    const ones = g.f32(new Float32Array(groups).fill(1));
    const zeros = g.f32(new Float32Array(groups));
    const normed = g.op(
      'InstanceNormalization',
      [grouped, ones, zeros],
      { epsilon: { f: eps } },
      key,
    );
    const back = g.op('Reshape', [normed, shape], {}, key);
    const gamma = g.op('Reshape', [this.p.plain(`${key}.weight`, [c]), g.i64([c, 1, 1])], {}, key);
    const beta = g.op('Reshape', [this.p.plain(`${key}.bias`, [c]), g.i64([c, 1, 1])], {}, key);
    return g.op('Add', [g.op('Mul', [back, gamma], {}, key), beta], {}, key);
  }

  layerNorm(x: string, key: string, d: number, eps: number): string {
    return this.g.op(
      'LayerNormalization',
      [x, this.p.plain(`${key}.weight`, [d]), this.p.plain(`${key}.bias`, [d])],
      { axis: -1, epsilon: { f: eps } },
      key,
    );
  }

  /**
   * Scaled dot-product attention (Vaswani et al. 2017, eq. 1) over projected q [B, N, inner] and
   * k, v [B, M, inner] with `heads` heads; returns [B, N, inner] before the output projection.
   * `mask` [N, M] is added to the scores (the text encoder's causal mask).
   * 'fused' is com.microsoft MultiHeadAttention; 'matmul' is the plain export, which holds every
   * head's N x M scores and their softmax at once. ONNX Runtime 1.30's CPU MultiHeadAttention
   * (contrib_ops/cpu/bert/multihead_attention.cc) takes MLAS's flash-attention path, scores in
   * L2-sized tiles, only for float tensors with no key_padding_mask, attention_bias, past or
   * present and unidirectional 0 (float16 nodes run in float32 behind Casts ORT inserts, so they
   * take it too): the UNet's and VAE's attention here passes q, k, v alone and does; the text
   * encoder's causal mask goes through attention_bias and is materialised, 77 x 77 per head.
   */
  attention(
    q: string,
    k: string,
    v: string,
    heads: number,
    inner: number,
    kind: AttentionKind,
    mask?: string,
  ): string {
    const g = this.g;
    const dh = inner / heads;
    if (kind === 'fused') {
      // Inputs: query, key, value, bias, key_padding_mask, attention_bias [1, 1, N, M].
      const inputs = [q, k, v];
      if (mask) inputs.push('', '', g.op('Unsqueeze', [mask, g.i64([0, 1])], {}, 'mask'));
      return g.op(
        'MultiHeadAttention',
        inputs,
        { num_heads: heads, scale: { f: 1 / Math.sqrt(dh) } },
        'attn',
        MS_DOMAIN,
      );
    }
    const split = (t: string): string =>
      g.op('Transpose', [g.op('Reshape', [t, g.i64([0, 0, heads, dh])])], {
        perm: [0, 2, 1, 3],
      });
    const kt = g.op('Transpose', [g.op('Reshape', [k, g.i64([0, 0, heads, dh])])], {
      perm: [0, 2, 3, 1],
    });
    let scores = g.op(
      'Mul',
      [g.op('MatMul', [split(q), kt]), g.f32(1 / Math.sqrt(dh))],
      {},
      'attn',
    );
    if (mask) scores = g.op('Add', [scores, mask]);
    const probs = g.op('Softmax', [scores], { axis: -1 });
    const ctx = g.op('Transpose', [g.op('MatMul', [probs, split(v)])], { perm: [0, 2, 1, 3] });
    return g.op('Reshape', [ctx, g.i64([0, 0, inner])], {}, 'attn');
  }

  /** [B, C, H, W] -> [B, H W, C]. */
  toTokens(x: string): string {
    const g = this.g;
    const flat = g.op('Reshape', [x, g.i64([0, 0, -1])]);
    return g.op('Transpose', [flat], { perm: [0, 2, 1] });
  }

  /** [B, H W, C] -> [B, C, H, W], with H and W taken from `like` [B, *, H, W]. */
  fromTokens(x: string, like: string, c: number): string {
    const g = this.g;
    const hw = g.op('Slice', [g.op('Shape', [like]), g.i64([2]), g.i64([4])]);
    const shape = g.op('Concat', [g.i64([0, c]), hw], { axis: 0 });
    return g.op('Reshape', [g.op('Transpose', [x], { perm: [0, 2, 1] }), shape]);
  }
}

export { numel };
