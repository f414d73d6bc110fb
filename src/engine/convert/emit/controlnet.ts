// The ControlNet graph (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion
// Models", sec. 3.2 and 3.3; the ControlNet of lllyasviel/ControlNet's cldm.py, whose checkpoint
// keys it reads):
//  - the hint: input_hint_block, 3x3 convs with SiLU between them; the convs that widen the
//    channels from the second one on have stride 2, so a 512-pixel control image becomes a
//    64-wide feature (as diffusers' ControlNetConditioningEmbedding), and the last conv (zero
//    initialised in training) maps it to the model's base width;
//  - the UNet's encoder half (emit/unet.ts buildEncoderHalf) with the hint added to conv_in's
//    output;
//  - one zero conv (1x1) per skip and middle_block_out on the middle block, each output scaled by
//    conditioning_scale.
//
// Inputs and outputs are those of Olive's / OnnxStack's ControlNet ONNX export of diffusers'
// ControlNetModel: sample, timestep, encoder_hidden_states, controlnet_cond [batch, 3, 8h, 8w]
// in [0, 1], conditioning_scale; down_block_N_additional_residual and
// mid_block_additional_residual, which the residual UNet (buildUNet with controlResiduals)
// takes under the same names.

import type { Graph } from '../onnx/graph';
import { silu } from '../onnx/ops';
import type { ControlNetArchitecture, TensorSource } from '../types';
import { type AttentionKind, Layers, Params } from './layers';
import { buildEncoderHalf, controlResidualNames } from './unet';

/** Stride of conv `j` of the hint block: 2 where a later conv widens the channels (ldm: 4, 8, 12). */
export function hintStrides(channels: readonly number[]): number[] {
  return channels.map((c, j) =>
    j > 0 && j < channels.length - 1 && c !== channels[j - 1] ? 2 : 1,
  );
}

/** Builds the ControlNet graph into `g`; returns the keys it consumed. */
export function buildControlNet(
  g: Graph,
  source: TensorSource,
  arch: ControlNetArchitecture,
  attention: AttentionKind,
): Set<string> {
  const p = new Params(source, g, 'the ControlNet');
  const nn = new Layers(g, p);
  const k = (s: string): string => `${arch.prefix}${s}`;
  const strides = hintStrides(arch.hintChannels);
  let cond = '';
  let scale = '';
  const addHint = (h: string): string => {
    // Declared here so the inputs come after sample, timestep, encoder_hidden_states.
    cond = g.input('controlnet_cond', 'float32', [
      'batch',
      arch.hintInChannels,
      'image_height',
      'image_width',
    ]);
    scale = g.input('conditioning_scale', 'float32', []);
    let x = cond;
    let inC = arch.hintInChannels;
    arch.hintChannels.forEach((outC, j) => {
      if (j > 0) x = silu(g, x);
      x = nn.conv(x, k(`input_hint_block.${2 * j}`), inC, outC, 3, { stride: strides[j] });
      inC = outC;
    });
    return g.op('Add', [h, x], {}, 'guided_hint');
  };
  const enc = buildEncoderHalf(g, p, arch.unet, arch.prefix, attention, addHint);
  const names = controlResidualNames(enc.skips.length);
  enc.skips.forEach((s, i) => {
    const z = nn.conv(s.t, k(`zero_convs.${i}.0`), s.c, s.c, 1);
    const out = g.op('Mul', [z, scale], {}, `scaled_${i}`);
    g.output(out, names.down[i], 'float32', ['batch', s.c, `down_${i}_height`, `down_${i}_width`]);
  });
  const mid = nn.conv(enc.mid, k('middle_block_out.0'), enc.ch, enc.ch, 1);
  g.output(g.op('Mul', [mid, scale], {}, 'scaled_mid'), names.mid, 'float32', [
    'batch',
    enc.ch,
    'mid_height',
    'mid_width',
  ]);
  return p.consumed;
}
