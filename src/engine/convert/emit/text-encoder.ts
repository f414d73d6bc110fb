// CLIP text transformers (Radford et al. 2021, "Learning Transferable Visual Models From Natural
// Language Supervision", §2.4: a pre-LayerNorm GPT-2-style transformer with a causal mask, the
// features of the EOS token, the highest id, as the pooled output), in the two namings
// checkpoints use:
//  - 'hf': Hugging Face's CLIPTextModel (SD 1.x, SDXL's first encoder), separate q/k/v
//    projections, quick_gelu for ViT-L;
//  - 'openclip': OpenCLIP's (SD 2.x, SDXL's second encoder), fused in_proj split here into q/k/v,
//    exact GELU, `text_projection` applied as x @ P.
//
// Outputs follow diffusers' ONNX export: `last_hidden_state` and `pooler_output` (or `text_embeds`
// for a projecting encoder), plus `hidden_states.0..L` for SDXL, whose engine conditions on the
// penultimate one. SD 2.x conditions on the penultimate layer with the final LayerNorm applied,
// so its graph stops one layer early (diffusers' conversion drops the last layer likewise).

import type { CheckpointFamily, TextEncoderArchitecture, TensorSource } from '../types';
import type { Graph } from '../onnx/graph';
import { clipLayer, clipLayerBase, type ClipLayerSpec } from './clip-layer';
import { type AttentionKind, Layers, Params } from './layers';

export interface TextEncoderPlan {
  /** Transformer layers the graph runs. */
  layers: number;
  /** Emit hidden_states.0..layers (SDXL). */
  hiddenStates: boolean;
}

/** How many layers run, and which outputs exist, for an encoder of `family`. */
export function textEncoderPlan(
  family: CheckpointFamily,
  arch: TextEncoderArchitecture,
): TextEncoderPlan {
  if (family === 'sd2') return { layers: arch.layers - 1, hiddenStates: false };
  return { layers: arch.layers, hiddenStates: family === 'sdxl' };
}

/**
 * Builds the text encoder graph into `g`; returns the keys it consumed. input_ids is int32
 * [batch, sequence] (diffusers' export), sequence at most `arch.maxPositions`.
 */
export function buildTextEncoder(
  g: Graph,
  source: TensorSource,
  arch: TextEncoderArchitecture,
  family: CheckpointFamily,
  attention: AttentionKind,
): Set<string> {
  const p = new Params(source, g, 'the text encoder');
  const nn = new Layers(g, p);
  const D = arch.width;
  const P = arch.maxPositions;
  const plan = textEncoderPlan(family, arch);
  let pre = arch.prefix;
  if (arch.naming === 'hf' && p.has(`${pre}text_model.embeddings.token_embedding.weight`))
    pre += 'text_model.';

  const idsIn = g.input('input_ids', 'int32', ['batch', 'sequence']);
  const ids = g.op('Cast', [idsIn], { to: 7 }, 'input_ids_int64');
  const len = g.op('Slice', [g.op('Shape', [ids]), g.i64([1]), g.i64([2])], {}, 'seq_len');

  const hf = arch.naming === 'hf';
  const tokKey = hf ? `${pre}embeddings.token_embedding.weight` : `${pre}token_embedding.weight`;
  const posKey = hf ? `${pre}embeddings.position_embedding.weight` : `${pre}positional_embedding`;
  // Stored position_ids are not read: they may be missing or floats that lost precision
  // (issue 11); positions are 0..sequence-1.
  p.ignore(`${pre}embeddings.position_ids`, `${pre}logit_scale`, `${pre}attn_mask`);
  const tok = p.plain(tokKey, [arch.vocabSize, D]);
  const pos = p.plain(posKey, [P, D]);
  const posL = g.op('Slice', [pos, g.i64([0]), len, g.i64([0])], {}, 'positions');
  let x = g.op('Add', [g.op('Gather', [tok, ids], { axis: 0 }), posL], {}, 'embeddings');

  const causal = new Float32Array(P * P);
  for (let i = 0; i < P; i++) for (let j = i + 1; j < P; j++) causal[i * P + j] = -Infinity;
  const mask = g.op(
    'Slice',
    [g.f32(causal, [P, P]), g.i64([0, 0]), g.op('Concat', [len, len], { axis: 0 }), g.i64([0, 1])],
    {},
    'causal_mask',
  );

  const spec: ClipLayerSpec = {
    naming: arch.naming,
    width: D,
    heads: arch.heads,
    activation: arch.activation,
    attention,
  };
  const hidden: string[] = [x];
  for (let l = 0; l < arch.layers; l++) {
    const base = clipLayerBase(pre, arch.naming, l);
    if (l >= plan.layers) {
      // SD 2.x's last layer: part of the file, not of the graph.
      for (const k of source.list()) if (k.name.startsWith(base)) p.consumed.add(k.name);
      continue;
    }
    x = clipLayer(g, nn, x, base, spec, mask);
    hidden.push(x);
  }
  const last = nn.layerNorm(x, hf ? `${pre}final_layer_norm` : `${pre}ln_final`, D, 1e-5);

  // Pool at the EOS token: the first position of the highest id (CLIP's text.argmax(dim=-1)).
  const eos = g.op('ArgMax', [ids], { axis: 1, keepdims: 1 }, 'eos_position');
  const idx = g.op('Unsqueeze', [eos, g.i64([2])]);
  const batch = g.op('Slice', [g.op('Shape', [ids]), g.i64([0]), g.i64([1])]);
  const gatherIdx = g.op('Expand', [idx, g.op('Concat', [batch, g.i64([1, D])], { axis: 0 })]);
  const pooled = g.op(
    'Reshape',
    [g.op('GatherElements', [last, gatherIdx], { axis: 1 }), g.i64([-1, D])],
    {},
    'pooled',
  );

  const projKey = `${pre}text_projection`;
  if (arch.projectionDim !== null) {
    // OpenCLIP stores text_projection [width, dim] used as x @ P; Hugging Face's
    // CLIPTextModelWithProjection stores a Linear `text_projection.weight` [dim, width].
    const proj = p.has(projKey)
      ? p.plain(projKey, [D, arch.projectionDim])
      : p.matmulWeight(`${projKey}.weight`, D, arch.projectionDim);
    const embeds = g.op('MatMul', [pooled, proj], {}, 'text_projection');
    g.output(embeds, 'text_embeds', 'float32', ['batch', arch.projectionDim]);
    g.output(last, 'last_hidden_state', 'float32', ['batch', 'sequence', D]);
  } else {
    p.ignore(projKey, `${projKey}.weight`);
    g.output(last, 'last_hidden_state', 'float32', ['batch', 'sequence', D]);
    g.output(pooled, 'pooler_output', 'float32', ['batch', D]);
  }
  if (plan.hiddenStates)
    hidden.forEach((t, i) =>
      g.output(t, `hidden_states.${i}`, 'float32', ['batch', 'sequence', D]),
    );
  return p.consumed;
}
