// One CLIP transformer layer (Radford et al. 2021, §2.4: pre-LayerNorm residual attention and
// MLP blocks), shared by the text encoders and the safety checker's vision tower, in the two
// namings checkpoints use:
//  - 'hf': Hugging Face's CLIPEncoderLayer (`encoder.layers.N.`), separate q/k/v projections;
//  - 'openclip': OpenCLIP's ResidualAttentionBlock (`transformer.resblocks.N.`), fused in_proj
//    split here into q/k/v.

import type { Graph } from '../onnx/graph';
import { gelu, quickGelu } from '../onnx/ops';
import type { AttentionKind, Layers } from './layers';

/** The shape of a CLIP transformer and how its layers are emitted. */
export interface ClipLayerSpec {
  naming: 'hf' | 'openclip';
  /** Model width (the MLP is 4x as wide, as in every CLIP). */
  width: number;
  heads: number;
  activation: 'quick_gelu' | 'gelu';
  attention: AttentionKind;
}

/** The key prefix of layer `l` under `pre` (which ends in '.'), per naming. */
export function clipLayerBase(pre: string, naming: ClipLayerSpec['naming'], l: number): string {
  return naming === 'hf' ? `${pre}encoder.layers.${l}.` : `${pre}transformer.resblocks.${l}.`;
}

/**
 * x [B, N, width] -> the layer's output; `mask` [N, N] is added to the attention scores (the
 * text encoder's causal mask; the vision tower has none).
 */
export function clipLayer(
  g: Graph,
  nn: Layers,
  x: string,
  base: string,
  spec: ClipLayerSpec,
  mask?: string,
): string {
  const D = spec.width;
  const p = nn.p;
  const hf = spec.naming === 'hf';
  const keys = hf
    ? {
        ln1: `${base}layer_norm1`,
        ln2: `${base}layer_norm2`,
        fc1: `${base}mlp.fc1`,
        fc2: `${base}mlp.fc2`,
        outProj: `${base}self_attn.out_proj`,
      }
    : {
        ln1: `${base}ln_1`,
        ln2: `${base}ln_2`,
        fc1: `${base}mlp.c_fc`,
        fc2: `${base}mlp.c_proj`,
        outProj: `${base}attn.out_proj`,
      };
  const h1 = nn.layerNorm(x, keys.ln1, D, 1e-5);
  let q: string, k: string, v: string;
  if (hf) {
    q = nn.linear(h1, `${base}self_attn.q_proj`, D, D);
    k = nn.linear(h1, `${base}self_attn.k_proj`, D, D);
    v = nn.linear(h1, `${base}self_attn.v_proj`, D, D);
  } else {
    const [wq, wk, wv] = [0, 1, 2].map((i) =>
      p.matmulWeightSlice(`${base}attn.in_proj_weight`, 3 * D, i * D, D, D),
    );
    const [bq, bk, bv] = [0, 1, 2].map((i) =>
      p.vectorSlice(`${base}attn.in_proj_bias`, 3 * D, i * D, D),
    );
    q = g.op('Add', [g.op('MatMul', [h1, wq]), bq], {}, `${base}q`);
    k = g.op('Add', [g.op('MatMul', [h1, wk]), bk], {}, `${base}k`);
    v = g.op('Add', [g.op('MatMul', [h1, wv]), bv], {}, `${base}v`);
  }
  const attn = nn.attention(q, k, v, spec.heads, D, spec.attention, mask);
  x = g.op('Add', [x, nn.linear(attn, keys.outProj, D, D)], {}, `${base}attn_residual`);
  const h2 = nn.layerNorm(x, keys.ln2, D, 1e-5);
  const up = nn.linear(h2, keys.fc1, D, 4 * D);
  const act = spec.activation === 'quick_gelu' ? quickGelu(g, up) : gelu(g, up);
  return g.op('Add', [x, nn.linear(act, keys.fc2, 4 * D, D)], {}, `${base}mlp_residual`);
}
