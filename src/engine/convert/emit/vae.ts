// ldm's AutoencoderKL (Rombach et al. 2022, §3.1 and appendix G; the Encoder/Decoder of
// CompVis/stable-diffusion's ldm/modules/diffusionmodules/model.py), from its checkpoint keys.
//  - ResnetBlocks: GroupNorm (32 groups, eps 1e-6), SiLU, 3x3 conv, twice; a 1x1 nin_shortcut
//    when the width changes.
//  - The mid block's single-head self-attention over all positions (q/k/v/proj_out as 1x1 convs,
//    or Linear weights in files re-saved from diffusers).
//  - The encoder downsamples with a stride-2 3x3 conv after padding (0, 1, 0, 1): right and
//    bottom only. The decoder upsamples nearest x2, then a 3x3 conv.
//  - quant_conv belongs to the encoder, post_quant_conv to the decoder; the latent scale
//    (scalingFactor) is applied by the pipeline, outside both graphs.
//
// The encoder's output is `latent_parameters` [batch, 2 z, h, w], the mean and log-variance
// (optimum's export since 1.23; the engine samples from it with a fixed generator); the
// decoder's input is `latent_sample` and its output `sample`, as diffusers exports them.

import type { Graph } from '../onnx/graph';
import type { TensorSource, VaeArchitecture } from '../types';
import { silu } from '../onnx/ops';
import { type AttentionKind, Layers, Params } from './layers';

class VaeEmitter {
  readonly p: Params;
  readonly nn: Layers;
  constructor(
    readonly g: Graph,
    source: TensorSource,
    readonly attention: AttentionKind,
    component: string,
  ) {
    this.p = new Params(source, g, component);
    this.nn = new Layers(g, this.p);
  }

  resBlock(x: string, key: string, inC: number, outC: number): string {
    const { g, nn } = this;
    let h = nn.conv(
      silu(g, nn.groupNorm(x, `${key}.norm1`, inC, 1e-6)),
      `${key}.conv1`,
      inC,
      outC,
      3,
    );
    h = nn.conv(
      silu(g, nn.groupNorm(h, `${key}.norm2`, outC, 1e-6)),
      `${key}.conv2`,
      outC,
      outC,
      3,
    );
    const skip = inC === outC ? x : nn.conv(x, `${key}.nin_shortcut`, inC, outC, 1);
    return g.op('Add', [skip, h], {}, key);
  }

  attnBlock(x: string, key: string, c: number): string {
    const { g, nn } = this;
    const h = nn.toTokens(nn.groupNorm(x, `${key}.norm`, c, 1e-6));
    const proj = (name: string): string => nn.linear(h, `${key}.${name}`, c, c);
    const a = nn.attention(proj('q'), proj('k'), proj('v'), 1, c, this.attention);
    const out = nn.fromTokens(nn.linear(a, `${key}.proj_out`, c, c), x, c);
    return g.op('Add', [x, out], {}, key);
  }

  mid(x: string, key: string, c: number): string {
    let h = this.resBlock(x, `${key}.block_1`, c, c);
    h = this.attnBlock(h, `${key}.attn_1`, c);
    return this.resBlock(h, `${key}.block_2`, c, c);
  }

  /** The encoder graph; returns the keys it consumed. */
  encoder(arch: VaeArchitecture, prefix: string): Set<string> {
    const { g, nn } = this;
    const k = (s: string): string => `${prefix}encoder.${s}`;

    const x = g.input('sample', 'float32', ['batch', 'channels', 'height', 'width']);
    let h = nn.conv(x, k('conv_in'), arch.inChannels, arch.ch, 3);
    let ch = arch.ch;
    for (let level = 0; level < arch.chMult.length; level++) {
      const out = arch.ch * arch.chMult[level];
      for (let r = 0; r < arch.numResBlocks; r++) {
        h = this.resBlock(h, k(`down.${level}.block.${r}`), ch, out);
        ch = out;
      }
      if (level < arch.chMult.length - 1)
        h = nn.conv(h, k(`down.${level}.downsample.conv`), ch, ch, 3, {
          stride: 2,
          pads: [0, 0, 1, 1],
        });
    }
    h = this.mid(h, k('mid'), ch);
    h = silu(g, nn.groupNorm(h, k('norm_out'), ch, 1e-6));
    h = nn.conv(h, k('conv_out'), ch, 2 * arch.zChannels, 3);
    h = nn.conv(h, `${prefix}quant_conv`, 2 * arch.zChannels, 2 * arch.embedDim, 1);
    g.output(h, 'latent_parameters', 'float32', [
      'batch',
      2 * arch.embedDim,
      'latent_height',
      'latent_width',
    ]);
    return this.p.consumed;
  }

  /** The decoder graph; returns the keys it consumed. */
  decoder(arch: VaeArchitecture, prefix: string): Set<string> {
    const { g, nn } = this;
    const k = (s: string): string => `${prefix}decoder.${s}`;

    const z = g.input('latent_sample', 'float32', ['batch', 'channels', 'height', 'width']);
    let h = nn.conv(z, `${prefix}post_quant_conv`, arch.embedDim, arch.zChannels, 1);
    let ch = arch.ch * arch.chMult[arch.chMult.length - 1];
    h = nn.conv(h, k('conv_in'), arch.zChannels, ch, 3);
    h = this.mid(h, k('mid'), ch);
    for (let level = arch.chMult.length - 1; level >= 0; level--) {
      const out = arch.ch * arch.chMult[level];
      for (let r = 0; r <= arch.numResBlocks; r++) {
        h = this.resBlock(h, k(`up.${level}.block.${r}`), ch, out);
        ch = out;
      }
      if (level > 0) {
        h = g.op(
          'Resize',
          [h, '', g.f32(Float32Array.of(1, 1, 2, 2))],
          {
            mode: 'nearest',
            coordinate_transformation_mode: 'asymmetric',
            nearest_mode: 'floor',
          },
          'upsample',
        );
        h = nn.conv(h, k(`up.${level}.upsample.conv`), ch, ch, 3);
      }
    }
    h = silu(g, nn.groupNorm(h, k('norm_out'), ch, 1e-6));
    h = nn.conv(h, k('conv_out'), ch, arch.outChannels, 3);
    g.output(h, 'sample', 'float32', ['batch', arch.outChannels, 'image_height', 'image_width']);
    return this.p.consumed;
  }
}

/** Builds the VAE encoder or decoder graph into `g`; returns the keys it consumed. */
export function buildVae(
  part: 'encoder' | 'decoder',
  g: Graph,
  source: TensorSource,
  arch: VaeArchitecture,
  prefix: string,
  attention: AttentionKind,
): Set<string> {
  const e = new VaeEmitter(g, source, attention, `the VAE ${part}`);
  return part === 'encoder' ? e.encoder(arch, prefix) : e.decoder(arch, prefix);
}
