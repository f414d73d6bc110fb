// The UNet's CUDA variant: the fused com.microsoft operators that ONNX Runtime's own Stable
// Diffusion optimizer writes for its CUDA provider (onnxruntime/python/tools/transformers:
// fusion_attention_unet.py, fusion_group_norm.py, fusion_bias_split_gelu.py, fusion_bias_add.py,
// fusion_nhwc_conv.py), emitted directly instead of found by pattern matching afterwards:
//  - GroupNorm, channels last, with SiLU fused where one follows (ResBlocks, the output norm);
//  - NhwcConv for the convolutions that follow such a norm, weights stored [M, kH, kW, C] (the
//    layout fusion_nhwc_conv.py writes with update_weight), so a ResBlock stays NHWC throughout;
//  - MultiHeadAttention with packed QKV for self-attention (query [B, N, heads, 3, head]) and
//    packed KV for cross-attention (key [B, M, heads, 2, head]), from one MatMul each;
//  - BiasSplitGelu for GEGLU's bias, split and gate, and BiasAdd for each projection's bias
//    plus the residual.
// Schemas: onnxruntime docs/ContribOperators.md. The CUDA kernels (contrib_ops/cuda/diffusion)
// take what SD 1.x, 2.x and SDXL have and nothing else: BiasAdd 320, 640 or 1280 channels,
// BiasSplitGelu 2560, 5120 or 10240 (8 x those), GroupNorm gamma and beta float32 and channels
// last; another width is refused at run time with ONNX Runtime's own message naming it.
// Only MultiHeadAttention has a CPU kernel; the
// others run on CUDA (and ROCm) alone. `decompose` writes each fused operator as the standard
// operators its schema defines instead, computed in float32, so the CPU provider can check
// everything on our side (weight packing, layouts, which tensors meet where) against the plain
// graph; the kernels themselves are checked on a GPU (tools/bench/gpu-check.sh).

import { type Graph, MS_DOMAIN } from '../onnx/graph';
import { gelu, silu } from '../onnx/ops';
import { type Layers, type Params, transpose2d } from './layers';

/** Where a converted UNet will run: the plain graph (any provider), or fused for CUDA. */
export type ConvertTarget = 'cpu' | 'cuda';

const NCHW_TO_NHWC = [0, 2, 3, 1];
const NHWC_TO_NCHW = [0, 3, 1, 2];

/** [M, C, kH, kW] -> [M, kH, kW, C]. */
export function convWeightNhwc(w: Float32Array, m: number, c: number, k: number): Float32Array {
  const out = new Float32Array(w.length);
  const kk = k * k;
  for (let o = 0; o < m; o++)
    for (let i = 0; i < c; i++)
      for (let s = 0; s < kk; s++) out[(o * kk + s) * c + i] = w[(o * c + i) * kk + s];
  return out;
}

/**
 * Linear weights [out, in] of `parts` projections with the same `out` = heads x head, as one
 * MatMul weight [in, parts x out] whose columns run head by head, part by part: the packed
 * layout MultiHeadAttention reads as [B, N, heads, parts, head] (fusion_attention_unet.py packs
 * the same way).
 */
export function packHeads(
  ws: readonly Float32Array[],
  inF: number,
  heads: number,
  head: number,
): Float32Array {
  const parts = ws.length;
  const out = heads * head;
  const width = parts * out;
  const packed = new Float32Array(inF * width);
  ws.forEach((w, j) => {
    const t = transpose2d(w, out, inF); // [in, out]
    for (let i = 0; i < inF; i++)
      for (let h = 0; h < heads; h++) {
        const from = i * out + h * head;
        packed.set(t.subarray(from, from + head), i * width + (h * parts + j) * head);
      }
  });
  return packed;
}

/** The fused operators, or their decompositions, over one graph and checkpoint. */
export class FusedLayers {
  constructor(
    readonly g: Graph,
    readonly p: Params,
    readonly nn: Layers,
    readonly decompose: boolean,
  ) {}

  nhwc(x: string): string {
    return this.g.op('Transpose', [x], { perm: NCHW_TO_NHWC }, 'to_nhwc');
  }

  nchw(x: string): string {
    return this.g.op('Transpose', [x], { perm: NHWC_TO_NCHW }, 'to_nchw');
  }

  /** com.microsoft GroupNorm over NHWC `x`, with SiLU when `act`; gamma and beta float32. */
  groupNorm(x: string, key: string, c: number, eps: number, act: boolean, groups = 32): string {
    const { g, p } = this;
    if (this.decompose) {
      const y = this.nn.groupNorm(this.nchw(x), key, c, eps, groups);
      return this.nhwc(act ? silu(g, y) : y);
    }
    // ORT's fusion_group_norm.py stores gamma and beta as float32 in fp16 models as well.
    const gamma = exact32(p, `${key}.weight`, c);
    const beta = exact32(p, `${key}.bias`, c);
    return g.op(
      'GroupNorm',
      [x, gamma, beta],
      { activation: act ? 1 : 0, channels_last: 1, epsilon: { f: eps }, groups },
      key,
      MS_DOMAIN,
    );
  }

  /** A k x k convolution over NHWC `x` (pads (k - 1) / 2, stride 1), NHWC out. */
  conv(x: string, key: string, inC: number, outC: number, k: number): string {
    const { g, p } = this;
    p.info(`${key}.weight`, [outC, inC, k, k]);
    const w = g.weight(`${key}.weight`, [outC, k, k, inC], async () =>
      convWeightNhwc(await p.source.readFloat32(`${key}.weight`), outC, inC, k),
    );
    const b = p.plain(`${key}.bias`, [outC]);
    const pad = (k - 1) >> 1;
    const attrs = { kernel_shape: [k, k], pads: [pad, pad, pad, pad], strides: [1, 1] };
    if (!this.decompose) return g.op('NhwcConv', [x, w, b], attrs, key, MS_DOMAIN);
    const wNchw = g.op('Transpose', [w], { perm: NHWC_TO_NCHW }, key);
    return this.nhwc(g.op('Conv', [this.nchw(x), wNchw, b], attrs, key));
  }

  /** BiasSplitGelu: (x + bias) split in halves on the last axis, left x GELU(right). */
  biasSplitGelu(x: string, bias: string, half: number): string {
    const g = this.g;
    if (!this.decompose) return g.op('BiasSplitGelu', [x, bias], {}, 'geglu', MS_DOMAIN);
    const y = g.op('Add', [x, bias], {}, 'geglu');
    const left = g.op('Slice', [y, g.i64([0]), g.i64([half]), g.i64([-1])], {}, 'geglu');
    const right = g.op('Slice', [y, g.i64([half]), g.i64([2 * half]), g.i64([-1])], {}, 'geglu');
    return g.op('Mul', [left, gelu(g, right)], {}, 'geglu');
  }

  /** BiasAdd: x + bias + skip over [N, S, C]. */
  biasAdd(x: string, bias: string, skip: string, hint: string): string {
    const g = this.g;
    if (!this.decompose) return g.op('BiasAdd', [x, bias, skip], {}, hint, MS_DOMAIN);
    return g.op('Add', [g.op('Add', [x, bias], {}, hint), skip], {}, hint);
  }

  /** `key`.weight (and `key`.bias) as MatMul, bias and residual in one BiasAdd. */
  linearAdd(x: string, key: string, inF: number, outF: number, skip: string): string {
    const y = this.nn.linear(x, key, inF, outF, false);
    return this.biasAdd(y, this.p.plain(`${key}.bias`, [outF]), skip, key);
  }

  /** A GEGLU feed-forward's first projection and gate (`key` = ff.net.0.proj), [.., 4c] out. */
  geglu(x: string, key: string, c: number): string {
    const y = this.nn.linear(x, key, c, 8 * c, false);
    return this.biasSplitGelu(y, this.p.plain(`${key}.bias`, [8 * c]), 4 * c);
  }

  /** Self-attention from tokens `x` [B, N, c] with to_q/to_k/to_v packed into one MatMul. */
  selfAttention(x: string, key: string, c: number, heads: number): string {
    const qkv = this.packed(x, key, ['to_q', 'to_k', 'to_v'], c, c, heads);
    if (!this.decompose) return this.mha([qkv], heads, c / heads, key);
    const [q, k, v] = [0, 1, 2].map((i) => this.unpack(qkv, i, c, key));
    return this.nn.attention(q!, k!, v!, heads, c, 'matmul');
  }

  /** Cross-attention: q from `x` [B, N, c]; to_k/to_v of `ctx` [B, M, ctxDim] packed as KV. */
  crossAttention(x: string, ctx: string, key: string, c: number, ctxDim: number, heads: number) {
    const q = this.nn.linear(x, `${key}.to_q`, c, c, false);
    const kv = this.packed(ctx, key, ['to_k', 'to_v'], ctxDim, c, heads);
    if (!this.decompose) return this.mha([q, kv], heads, c / heads, key);
    const [k, v] = [0, 1].map((i) => this.unpack(kv, i, c, key));
    return this.nn.attention(q, k!, v!, heads, c, 'matmul');
  }

  /** `parts` bias-free projections of `x` [B, N, inF] as one MatMul: [B, N, heads, parts, head]. */
  private packed(x: string, key: string, parts: string[], inF: number, c: number, heads: number) {
    const { g, p } = this;
    const names = parts.map((n) => `${key}.${n}.weight`);
    for (const n of names) p.info(n, [c, inF]);
    const dh = c / heads;
    const suffix = parts.map((n) => n.slice(3)).join('');
    const w = g.weight(`${key}.to_${suffix}.weight`, [inF, parts.length * c], async () =>
      packHeads(await Promise.all(names.map((n) => p.source.readFloat32(n))), inF, heads, dh),
    );
    const y = g.op('MatMul', [x, w], {}, key);
    return g.op('Reshape', [y, g.i64([0, 0, heads, parts.length, dh])], {}, key);
  }

  private mha(inputs: string[], heads: number, dh: number, hint: string): string {
    return this.g.op(
      'MultiHeadAttention',
      inputs,
      { num_heads: heads, scale: { f: 1 / Math.sqrt(dh) } },
      hint,
      MS_DOMAIN,
    );
  }

  /** Part `i` of a packed [B, N, heads, parts, head] tensor as [B, N, heads x head]. */
  private unpack(packed: string, i: number, c: number, hint: string): string {
    const g = this.g;
    const part = g.op('Slice', [packed, g.i64([i]), g.i64([i + 1]), g.i64([3])], {}, hint);
    return g.op('Reshape', [part, g.i64([0, 0, c])], {}, hint);
  }
}

/** A [n] parameter stored and used as float32, in any graph. */
function exact32(p: Params, key: string, n: number): string {
  p.info(key, [n]);
  return p.g.weight(key, [n], () => p.source.readFloat32(key), 'fp32', true);
}
