// The ldm UNet's blocks in the CUDA variant (see cuda.ts): the same computation as unet.ts's
// resBlock and spatialTransformer, written with the fused operators in channels-last layout.

import { silu } from '../onnx/ops';
import type { FusedLayers } from './cuda';
import type { UNetEmitter } from './unet';

/**
 * A ResBlock, NHWC from its first norm to its skip addition: GroupNorm+SiLU, NhwcConv, the time
 * embedding added per channel, GroupNorm+SiLU, NhwcConv, skip (1x1 NhwcConv when the width
 * changes). NCHW in and out; ONNX Runtime removes the transposes that meet between blocks.
 */
export function resBlockCuda(
  e: UNetEmitter,
  f: FusedLayers,
  x: string,
  emb: string,
  key: string,
  inC: number,
  outC: number,
): string {
  const { g, nn } = e;
  const xh = f.nhwc(x);
  let h = f.conv(
    f.groupNorm(xh, `${key}.in_layers.0`, inC, 1e-5, true),
    `${key}.in_layers.2`,
    inC,
    outC,
    3,
  );
  const t = nn.linear(silu(g, emb), `${key}.emb_layers.1`, e.embDim, outC);
  h = g.op('Add', [h, g.op('Unsqueeze', [t, g.i64([1, 2])])], {}, key);
  h = f.conv(
    f.groupNorm(h, `${key}.out_layers.0`, outC, 1e-5, true),
    `${key}.out_layers.3`,
    outC,
    outC,
    3,
  );
  const skip = inC === outC ? xh : f.conv(xh, `${key}.skip_connection`, inC, outC, 1);
  return f.nchw(g.op('Add', [skip, h], {}, key));
}

/**
 * A SpatialTransformer: GroupNorm in NHWC is already the token layout [B, H W, C] (no
 * transpose); proj_in and proj_out are MatMuls whether the checkpoint stores them as Linear or
 * as 1x1 conv; attention through MultiHeadAttention with packed QKV / KV; every projection's
 * bias and residual in one BiasAdd; GEGLU as BiasSplitGelu.
 */
export function spatialTransformerCuda(
  e: UNetEmitter,
  f: FusedLayers,
  x: string,
  ctx: string,
  key: string,
  c: number,
  depth: number,
): string {
  const { g, nn, arch } = e;
  const heads = e.heads(c);
  const xh = f.nhwc(x);
  const tokensOf = (t: string): string => g.op('Reshape', [t, g.i64([0, -1, c])], {}, key);
  let h = tokensOf(f.groupNorm(xh, `${key}.norm`, c, 1e-6, false));
  h = nn.linear(h, `${key}.proj_in`, c, c);
  for (let d = 0; d < depth; d++) {
    const b = `${key}.transformer_blocks.${d}`;
    const a1 = f.selfAttention(nn.layerNorm(h, `${b}.norm1`, c, 1e-5), `${b}.attn1`, c, heads);
    h = f.linearAdd(a1, `${b}.attn1.to_out.0`, c, c, h);
    const n2 = nn.layerNorm(h, `${b}.norm2`, c, 1e-5);
    const a2 = f.crossAttention(n2, ctx, `${b}.attn2`, c, arch.contextDim, heads);
    h = f.linearAdd(a2, `${b}.attn2.to_out.0`, c, c, h);
    const ff = f.geglu(nn.layerNorm(h, `${b}.norm3`, c, 1e-5), `${b}.ff.net.0.proj`, c);
    h = f.linearAdd(ff, `${b}.ff.net.2`, 4 * c, c, h);
  }
  const out = f.linearAdd(h, `${key}.proj_out`, c, c, tokensOf(xh));
  return f.nchw(g.op('Reshape', [out, g.op('Shape', [xh], {}, key)], {}, key));
}
