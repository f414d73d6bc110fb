// Stable Diffusion's safety checker: diffusers' StableDiffusionSafetyChecker
// (src/diffusers/pipelines/stable_diffusion/safety_checker.py) over transformers'
// CLIPVisionModel (modeling_clip.py: CLIPVisionEmbeddings, CLIPVisionTransformer).
//
// clip_input [N, 3, S, S] (CLIP-normalised) -> patch embedding (Conv, no bias, stride = patch),
// the class embedding prepended, learned positions added, `pre_layrnorm` (sic), the encoder
// layers (pre-LN, quick_gelu), `post_layernorm` on the class token = pooled output,
// `visual_projection` (no bias) = image_embeds, then diffusers' cosine_distance: the normalised
// image embeds against the normalised concept embeddings (F.normalize, eps 1e-12).
//
// The graph stops at the cosines and returns the thresholds (`*_weights`) beside them: the
// decision (the 0.01 special-care adjustment, rounding to 3 decimals) is diffusers' Python loop,
// kept in TypeScript (src/engine/safety/decision.ts) where it reads as that loop and records
// every per-concept score, and the converted file stays self-contained.

import type { SafetyCheckerArchitecture, TensorSource } from '../types';
import type { Graph } from '../onnx/graph';
import { clipLayer, clipLayerBase, type ClipLayerSpec } from './clip-layer';
import { type AttentionKind, Layers, Params } from './layers';

/** F.normalize(x, dim=1): x / max(||x||_2, 1e-12) over the last axis of a 2-D tensor. */
function normalizeRows(g: Graph, x: string, hint: string): string {
  const sq = g.op('ReduceSum', [g.op('Mul', [x, x]), g.i64([1])], { keepdims: 1 }, hint);
  const norm = g.op('Max', [g.op('Sqrt', [sq]), g.f32(1e-12)], {}, hint);
  return g.op('Div', [x, norm], {}, hint);
}

/** Builds the checker into `g`; returns the keys it consumed. */
export function buildSafetyChecker(
  g: Graph,
  source: TensorSource,
  arch: SafetyCheckerArchitecture,
  attention: AttentionKind,
): Set<string> {
  const p = new Params(source, g, 'the safety checker');
  const nn = new Layers(g, p);
  const D = arch.width;
  const pre = arch.prefix;
  const grid = arch.imageSize / arch.patch;
  const positions = grid * grid + 1;
  p.ignore(`${pre}embeddings.position_ids`);

  const input = g.input('clip_input', 'float32', ['batch', 3, arch.imageSize, arch.imageSize]);
  const patches = g.op(
    'Conv',
    [input, p.plain(`${pre}embeddings.patch_embedding.weight`, [D, 3, arch.patch, arch.patch])],
    { kernel_shape: [arch.patch, arch.patch], strides: [arch.patch, arch.patch] },
    'patch_embedding',
  );
  const tokens = nn.toTokens(patches);
  const batch = g.op('Slice', [g.op('Shape', [input]), g.i64([0]), g.i64([1])], {}, 'batch');
  const cls = g.op(
    'Expand',
    [
      g.op('Reshape', [p.plain(`${pre}embeddings.class_embedding`, [D]), g.i64([1, 1, D])]),
      g.op('Concat', [batch, g.i64([1, D])], { axis: 0 }),
    ],
    {},
    'class_embedding',
  );
  let x = g.op(
    'Add',
    [
      g.op('Concat', [cls, tokens], { axis: 1 }),
      p.plain(`${pre}embeddings.position_embedding.weight`, [positions, D]),
    ],
    {},
    'embeddings',
  );
  x = nn.layerNorm(x, `${pre}pre_layrnorm`, D, 1e-5);

  const spec: ClipLayerSpec = {
    naming: 'hf',
    width: D,
    heads: arch.heads,
    activation: 'quick_gelu',
    attention,
  };
  for (let l = 0; l < arch.layers; l++) x = clipLayer(g, nn, x, clipLayerBase(pre, 'hf', l), spec);

  const first = g.op('Slice', [x, g.i64([0]), g.i64([1]), g.i64([1])], {}, 'class_token');
  const pooled = nn.layerNorm(
    g.op('Reshape', [first, g.i64([-1, D])]),
    `${pre}post_layernorm`,
    D,
    1e-5,
  );
  const embeds = nn.linear(pooled, 'visual_projection', D, arch.projectionDim, false);
  g.output(embeds, 'image_embeds', 'float32', ['batch', arch.projectionDim]);

  const image = normalizeRows(g, embeds, 'normalized_image_embeds');
  const cosines = (key: string, rows: number): string => {
    const concepts = normalizeRows(g, p.exact(key, [rows, arch.projectionDim]), key);
    return g.op('MatMul', [image, g.op('Transpose', [concepts], { perm: [1, 0] })], {}, key);
  };
  g.output(cosines('special_care_embeds', arch.specialConcepts), 'special_cos_dist', 'float32', [
    'batch',
    arch.specialConcepts,
  ]);
  g.output(cosines('concept_embeds', arch.concepts), 'cos_dist', 'float32', [
    'batch',
    arch.concepts,
  ]);
  g.output(
    p.exact('special_care_embeds_weights', [arch.specialConcepts]),
    'special_care_embeds_weights',
    'float32',
    [arch.specialConcepts],
  );
  g.output(
    p.exact('concept_embeds_weights', [arch.concepts]),
    'concept_embeds_weights',
    'float32',
    [arch.concepts],
  );
  return p.consumed;
}
