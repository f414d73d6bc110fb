// The ldm UNet (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
// Models", appendix; the UNetModel of CompVis/stable-diffusion and Stability-AI/generative-models)
// from its checkpoint keys:
//  - time embedding: the sinusoidal embedding [cos | sin] of Vaswani et al. 2017 §3.5 with
//    max period 10000, then Linear, SiLU, Linear (time_embed.0/.2);
//  - SDXL adds label_emb(y), y = [pooled text_embeds, sinusoidal(time_ids, 256) flattened]
//    (Podell et al. 2023, "SDXL", §2.2 micro-conditioning);
//  - ResBlocks (GroupNorm eps 1e-5, SiLU, conv; the time embedding added after the first conv;
//    a 1x1 skip when the width changes);
//  - SpatialTransformers (GroupNorm eps 1e-6, proj_in as 1x1 conv or Linear, blocks of
//    self-attention, cross-attention and a GEGLU feed-forward (Shazeer 2020) with the first
//    half of the projection as the value and the second half, through exact GELU, as the gate);
//  - Downsample is a stride-2 3x3 conv; Upsample is nearest x2 (to the skip's size, so odd
//    latent sizes work as diffusers' upsample_size does) then a 3x3 conv.
//
// Inputs and output follow diffusers' ONNX export: sample [batch, channels, height, width],
// timestep float [batch] (one value broadcasts), encoder_hidden_states [batch, sequence, ctx]
// and, for SDXL, text_embeds [batch, 1280] and time_ids [batch, 6]; out_sample.

import type { Graph } from '../onnx/graph';
import { gelu, silu, timestepEmbedding, upsampleNearestLike } from '../onnx/ops';
import type { TensorSource, UNetArchitecture } from '../types';
import { FusedLayers } from './cuda';
import { type AttentionKind, Layers, Params } from './layers';
import { resBlockCuda, spatialTransformerCuda } from './unet-cuda';

/** The CUDA variant's fused operators (cuda.ts); `decompose` writes their decompositions. */
export interface CudaBuild {
  decompose: boolean;
}

/** The ldm UNet's building blocks over one graph and one checkpoint's parameters. */
export class UNetEmitter {
  readonly nn: Layers;
  /** Set for the CUDA variant: ResBlocks and SpatialTransformers use fused operators. */
  readonly fused: FusedLayers | null;
  constructor(
    readonly g: Graph,
    readonly p: Params,
    readonly arch: UNetArchitecture,
    readonly pre: string,
    readonly attention: AttentionKind,
    cuda: CudaBuild | null = null,
  ) {
    this.nn = new Layers(g, p);
    this.fused = cuda ? new FusedLayers(g, p, this.nn, cuda.decompose) : null;
  }

  get embDim(): number {
    return 4 * this.arch.modelChannels;
  }

  resBlock(x: string, emb: string, key: string, inC: number, outC: number): string {
    if (this.fused) return resBlockCuda(this, this.fused, x, emb, key, inC, outC);
    const { g, nn } = this;
    let h = nn.groupNorm(x, `${key}.in_layers.0`, inC, 1e-5);
    h = nn.conv(silu(g, h), `${key}.in_layers.2`, inC, outC, 3);
    const e = nn.linear(silu(g, emb), `${key}.emb_layers.1`, this.embDim, outC);
    h = g.op('Add', [h, g.op('Unsqueeze', [e, g.i64([2, 3])])], {}, key);
    h = nn.groupNorm(h, `${key}.out_layers.0`, outC, 1e-5);
    h = nn.conv(silu(g, h), `${key}.out_layers.3`, outC, outC, 3);
    const skip = inC === outC ? x : nn.conv(x, `${key}.skip_connection`, inC, outC, 1);
    return g.op('Add', [skip, h], {}, key);
  }

  /** Heads and head width at a level of `channels` (fixed heads for SD 1, fixed width else). */
  heads(channels: number): number {
    const { numHeads, headChannels } = this.arch;
    if (numHeads !== null) return numHeads;
    if (headChannels === null) throw new Error('UNetArchitecture needs numHeads or headChannels');
    return channels / headChannels;
  }

  spatialTransformer(x: string, ctx: string, key: string, c: number, depth: number): string {
    if (this.fused) return spatialTransformerCuda(this, this.fused, x, ctx, key, c, depth);
    const { g, nn, arch } = this;
    const heads = this.heads(c);
    let h = nn.groupNorm(x, `${key}.norm`, c, 1e-6);
    if (arch.linearProjection) h = nn.linear(nn.toTokens(h), `${key}.proj_in`, c, c);
    else h = nn.toTokens(nn.conv(h, `${key}.proj_in`, c, c, 1));
    for (let d = 0; d < depth; d++) {
      const b = `${key}.transformer_blocks.${d}`;
      const n1 = nn.layerNorm(h, `${b}.norm1`, c, 1e-5);
      const a1 = nn.attention(
        nn.linear(n1, `${b}.attn1.to_q`, c, c, false),
        nn.linear(n1, `${b}.attn1.to_k`, c, c, false),
        nn.linear(n1, `${b}.attn1.to_v`, c, c, false),
        heads,
        c,
        this.attention,
      );
      h = g.op('Add', [h, nn.linear(a1, `${b}.attn1.to_out.0`, c, c)], {}, b);
      const n2 = nn.layerNorm(h, `${b}.norm2`, c, 1e-5);
      const a2 = nn.attention(
        nn.linear(n2, `${b}.attn2.to_q`, c, c, false),
        nn.linear(ctx, `${b}.attn2.to_k`, arch.contextDim, c, false),
        nn.linear(ctx, `${b}.attn2.to_v`, arch.contextDim, c, false),
        heads,
        c,
        this.attention,
      );
      h = g.op('Add', [h, nn.linear(a2, `${b}.attn2.to_out.0`, c, c)], {}, b);
      const n3 = nn.layerNorm(h, `${b}.norm3`, c, 1e-5);
      const proj = nn.linear(n3, `${b}.ff.net.0.proj`, c, 8 * c);
      const [value, gate] = this.splitLast(proj, 4 * c);
      const ff = nn.linear(g.op('Mul', [value, gelu(g, gate)]), `${b}.ff.net.2`, 4 * c, c);
      h = g.op('Add', [h, ff], {}, b);
    }
    let out: string;
    if (arch.linearProjection) out = nn.fromTokens(nn.linear(h, `${key}.proj_out`, c, c), x, c);
    else out = nn.conv(nn.fromTokens(h, x, c), `${key}.proj_out`, c, c, 1);
    return g.op('Add', [out, x], {}, key);
  }

  private splitLast(x: string, half: number): [string, string] {
    const g = this.g;
    const a = g.op('Slice', [x, g.i64([0]), g.i64([half]), g.i64([-1])], {}, 'geglu_value');
    const b = g.op('Slice', [x, g.i64([half]), g.i64([2 * half]), g.i64([-1])], {}, 'geglu_gate');
    return [a, b];
  }

  /** Transformer depth of the middle block: counted from the keys (SDXL: 10; else 1). */
  middleDepth(): number {
    let d = 0;
    while (this.p.has(`${this.pre}middle_block.1.transformer_blocks.${d}.norm1.weight`)) d++;
    return Math.max(d, 1);
  }
}

/** The encoder half's results: the time embedding, the context, and every skip tensor. */
export interface EncoderHalf {
  readonly e: UNetEmitter;
  /** The time (plus SDXL label) embedding, [batch, 4 * modelChannels]. */
  readonly emb: string;
  /** The encoder_hidden_states input. */
  readonly ctx: string;
  /** Each input block's output in order (conv_in first), with its channel count. */
  readonly skips: { t: string; c: number }[];
  /** The middle block's output and its channels. */
  readonly mid: string;
  readonly ch: number;
}

/**
 * The part the UNet and the ControlNet share (Zhang et al. 2023, "Adding Conditional Control to
 * Text-to-Image Diffusion Models", sec. 3.2: the ControlNet is a trainable copy of the encoder
 * and middle block): the inputs sample, timestep, encoder_hidden_states (and SDXL's
 * text_embeds, time_ids), the time embedding, the input blocks and the middle block.
 * `afterConvIn` may change conv_in's output before the first skip is taken (the ControlNet adds
 * its hint there).
 */
export function buildEncoderHalf(
  g: Graph,
  p: Params,
  arch: UNetArchitecture,
  prefix: string,
  attention: AttentionKind,
  afterConvIn: (h: string) => string = (h) => h,
  cuda: CudaBuild | null = null,
): EncoderHalf {
  const e = new UNetEmitter(g, p, arch, prefix, attention, cuda);
  const nn = e.nn;
  const mc = arch.modelChannels;
  const levels = arch.channelMult.length;
  const k = (s: string): string => `${prefix}${s}`;

  // Inputs and output stay float32 in a float16 graph (the engine's contract); the sinusoidal
  // embeddings are computed in float32 too (t x frequency needs more than fp16's 11 bits).
  const sample = g.input('sample', 'float32', ['batch', 'channels', 'height', 'width']);
  const tIn = g.input('timestep', 'float32', ['batch']);
  const ctxIn = g.input('encoder_hidden_states', 'float32', ['batch', 'sequence', arch.contextDim]);
  const ctx = g.toCompute(ctxIn, 'encoder_hidden_states');
  const t = g.op('Reshape', [tIn, g.i64([-1])], {}, 'timestep_flat');

  let emb = nn.linear(
    silu(
      g,
      nn.linear(
        g.toCompute(timestepEmbedding(g, t, mc, 'time_proj'), 'time_proj'),
        k('time_embed.0'),
        mc,
        4 * mc,
      ),
    ),
    k('time_embed.2'),
    4 * mc,
    4 * mc,
  );
  if (arch.admInChannels !== null) {
    const pooledDim = arch.admInChannels - 6 * 256;
    const textEmbeds = g.input('text_embeds', 'float32', ['batch', pooledDim]);
    const timeIds = g.input('time_ids', 'float32', ['batch', 6]);
    const ids = timestepEmbedding(g, g.op('Reshape', [timeIds, g.i64([-1])]), 256, 'time_ids');
    const idsFlat = g.op('Reshape', [ids, g.i64([-1, 6 * 256])], {}, 'time_ids');
    const y = g.toCompute(g.op('Concat', [textEmbeds, idsFlat], { axis: 1 }, 'label'), 'label');
    const label = nn.linear(
      silu(g, nn.linear(y, k('label_emb.0.0'), arch.admInChannels, 4 * mc)),
      k('label_emb.0.2'),
      4 * mc,
      4 * mc,
    );
    emb = g.op('Add', [emb, label], {}, 'emb');
  }

  // Input blocks.
  let h = afterConvIn(
    nn.conv(g.toCompute(sample, 'sample'), k('input_blocks.0.0'), arch.inChannels, mc, 3),
  );
  const skips: { t: string; c: number }[] = [{ t: h, c: mc }];
  let ch = mc;
  let block = 1;
  for (let level = 0; level < levels; level++) {
    const out = arch.channelMult[level] * mc;
    for (let r = 0; r < arch.numResBlocks; r++) {
      h = e.resBlock(h, emb, k(`input_blocks.${block}.0`), ch, out);
      ch = out;
      if (arch.attentionLevels[level])
        h = e.spatialTransformer(
          h,
          ctx,
          k(`input_blocks.${block}.1`),
          ch,
          arch.transformerDepth[level],
        );
      skips.push({ t: h, c: ch });
      block++;
    }
    if (level < levels - 1) {
      h = nn.conv(h, k(`input_blocks.${block}.0.op`), ch, ch, 3, { stride: 2 });
      skips.push({ t: h, c: ch });
      block++;
    }
  }

  // Middle block.
  h = e.resBlock(h, emb, k('middle_block.0'), ch, ch);
  h = e.spatialTransformer(h, ctx, k('middle_block.1'), ch, e.middleDepth());
  h = e.resBlock(h, emb, k('middle_block.2'), ch, ch);
  return { e, emb, ctx, skips, mid: h, ch };
}

/** The names of the residual inputs a ControlNet-ready UNet takes (and a ControlNet emits). */
export function controlResidualNames(downCount: number): { down: string[]; mid: string } {
  const down = Array.from({ length: downCount }, (_, i) => `down_block_${i}_additional_residual`);
  return { down, mid: 'mid_block_additional_residual' };
}

/** What buildUNet adds to the plain UNet. */
export interface UNetBuildOptions {
  /**
   * Take a ControlNet's residuals as extra inputs (one per skip, `down_block_N_additional_residual`,
   * and `mid_block_additional_residual`, the names of Olive's and OnnxStack's ControlNet exports),
   * added to each skip and to the middle block's output as diffusers' UNet does with
   * down_block_additional_residuals. Zeros give the plain UNet's result.
   */
  controlResiduals?: boolean;
  /** The CUDA variant (fused operators, channels-last ResBlocks); absent: the plain graph. */
  cuda?: CudaBuild;
}

/** Builds the UNet graph into `g`; returns the keys it consumed. */
export function buildUNet(
  g: Graph,
  source: TensorSource,
  arch: UNetArchitecture,
  prefix: string,
  attention: AttentionKind,
  options: UNetBuildOptions = {},
): Set<string> {
  const p = new Params(source, g, 'the UNet');
  const enc = buildEncoderHalf(g, p, arch, prefix, attention, undefined, options.cuda ?? null);
  const { e, emb, ctx } = enc;
  const nn = e.nn;
  const mc = arch.modelChannels;
  const levels = arch.channelMult.length;
  const k = (s: string): string => `${prefix}${s}`;
  let skips = enc.skips;
  let h = enc.mid;
  let ch = enc.ch;
  if (options.controlResiduals) {
    const names = controlResidualNames(skips.length);
    skips = skips.map((s, i) => {
      const r = g.input(names.down[i], 'float32', [
        'batch',
        s.c,
        `down_${i}_height`,
        `down_${i}_width`,
      ]);
      return { t: g.op('Add', [s.t, g.toCompute(r)], {}, `control_${i}`), c: s.c };
    });
    const r = g.input(names.mid, 'float32', ['batch', ch, 'mid_height', 'mid_width']);
    h = g.op('Add', [h, g.toCompute(r)], {}, 'control_mid');
  }
  let block: number;

  // Output blocks.
  block = 0;
  for (let level = levels - 1; level >= 0; level--) {
    const out = arch.channelMult[level] * mc;
    for (let r = 0; r <= arch.numResBlocks; r++) {
      const skip = skips.pop()!;
      h = g.op('Concat', [h, skip.t], { axis: 1 }, `output_blocks.${block}`);
      h = e.resBlock(h, emb, k(`output_blocks.${block}.0`), ch + skip.c, out);
      ch = out;
      let sub = 1;
      if (arch.attentionLevels[level]) {
        h = e.spatialTransformer(
          h,
          ctx,
          k(`output_blocks.${block}.1`),
          ch,
          arch.transformerDepth[level],
        );
        sub = 2;
      }
      if (level > 0 && r === arch.numResBlocks) {
        h = upsampleNearestLike(g, h, skips[skips.length - 1].t);
        h = nn.conv(h, k(`output_blocks.${block}.${sub}.conv`), ch, ch, 3);
      }
      block++;
    }
  }

  const f = e.fused;
  if (f) {
    const n = f.groupNorm(f.nhwc(h), k('out.0'), ch, 1e-5, true);
    h = f.nchw(f.conv(n, k('out.2'), ch, arch.outChannels, 3));
  } else {
    h = silu(g, nn.groupNorm(h, k('out.0'), ch, 1e-5));
    h = nn.conv(h, k('out.2'), ch, arch.outChannels, 3);
  }
  h = g.toFloat32(h, 'out_sample');
  g.output(h, 'out_sample', 'float32', ['batch', arch.outChannels, 'height', 'width']);
  return p.consumed;
}
