// The graph emitters' public API: one call per diffusers component, each writing
// `<dir>/model.onnx` and `<dir>/model.onnx_data` from a checkpoint's ldm-named tensors.

import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { type ComputeType, Graph, type SaveProgress, type WeightPrecision } from '../onnx/graph';
import type {
  CheckpointFamily,
  SafetyCheckerArchitecture,
  ControlNetArchitecture,
  TensorSource,
  TextEncoderArchitecture,
  UNetArchitecture,
  VaeArchitecture,
} from '../types';
import type { ConvertTarget } from './cuda';
import type { AttentionKind } from './layers';
import { buildSafetyChecker } from './safety-checker';
import { buildTextEncoder } from './text-encoder';
import { buildControlNet } from './controlnet';
import { buildTaesdDecoder } from './taesd';
import { buildUNet, type UNetBuildOptions } from './unet';
import { buildVae } from './vae';

export type { AttentionKind } from './layers';
export type { ConvertTarget } from './cuda';
export type { SaveProgress, WeightPrecision } from '../onnx/graph';
export { textEncoderPlan } from './text-encoder';
export { controlResidualNames, type UNetBuildOptions } from './unet';

export interface EmitOptions {
  /** The component folder (created if missing): model.onnx and model.onnx_data go there. */
  dir: string;
  /** Stored weight type; computation is float32 either way. Default fp16. */
  precision?: WeightPrecision;
  /** Default 'fused' (com.microsoft MultiHeadAttention); 'matmul' writes MatMul + Softmax. */
  attention?: AttentionKind;
  /**
   * The UNet's variant (other components ignore it): 'cpu' (default) the plain float32-compute
   * graph any provider runs; 'cuda' computed in float16 with the fused operators ONNX Runtime's
   * CUDA provider runs (emit/cuda.ts; they have no CPU kernels). Inputs and outputs are float32
   * either way.
   */
  target?: ConvertTarget;
  /**
   * With target 'cuda', for checking on a CPU: each fused operator written as the standard
   * operators its schema defines, computed in float32 (a slow graph; not for use).
   */
  decomposeFused?: boolean;
  /** Checked before each tensor; an abort rejects with EngineError 'cancelled'. */
  signal?: AbortSignal;
  /** Called after each tensor is written. */
  onTensor?: (p: SaveProgress) => void;
  /**
   * Build the graph and check every key, but write nothing: the result's `bytes` is then the
   * weight bytes the component will take (for a disk-space check before writing).
   */
  dryRun?: boolean;
}

export interface EmitResult {
  /** Every checkpoint key the component used or knowingly ignored (for whole-file coverage). */
  consumed: Set<string>;
  /** Files written (to be written, on a dry run), and their total size in bytes. */
  model: string;
  data: string;
  bytes: number;
  /** Tensors in the external data file (the `total` of onTensor), known before writing. */
  tensors: number;
}

/** Builds a graph with `build`, then streams it to `opts.dir`. */
async function emit(
  name: string,
  opts: EmitOptions,
  build: (g: Graph, attention: AttentionKind) => Set<string>,
  compute: ComputeType = 'float32',
): Promise<EmitResult> {
  const g = new Graph(name, opts.precision ?? 'fp16', compute);
  const consumed = build(g, opts.attention ?? 'fused');
  const model = path.join(opts.dir, 'model.onnx');
  const data = path.join(opts.dir, 'model.onnx_data');
  if (opts.dryRun) return { consumed, model, data, bytes: g.weightBytes(), tensors: g.weightCount };
  await mkdir(opts.dir, { recursive: true });
  const bytes = await g.save(model, {
    externalData: 'model.onnx_data',
    signal: opts.signal,
    onTensor: opts.onTensor,
    docString: `${name} converted from a single-file checkpoint by Latent Studio`,
  });
  return {
    consumed,
    model,
    data,
    bytes,
    tensors: g.weightCount,
  };
}

/**
 * The UNet (`unet/`): keys under `prefix` (the architecture's unetPrefix). With
 * `unet.controlResiduals` it also takes a ControlNet's residuals as inputs.
 */
export function emitUnet(
  source: TensorSource,
  arch: UNetArchitecture,
  prefix: string,
  opts: EmitOptions,
  unet: UNetBuildOptions = {},
): Promise<EmitResult> {
  if (opts.target !== 'cuda')
    return emit('unet', opts, (g, a) => buildUNet(g, source, arch, prefix, a, unet));
  const decompose = opts.decomposeFused ?? false;
  return emit(
    'unet',
    opts,
    (g, a) => buildUNet(g, source, arch, prefix, a, { ...unet, cuda: { decompose } }),
    decompose ? 'float32' : 'float16',
  );
}

/**
 * A ControlNet (`controlnet/`): sample, timestep, encoder_hidden_states, controlnet_cond,
 * conditioning_scale -> down_block_N_additional_residual, mid_block_additional_residual.
 */
export function emitControlNet(
  source: TensorSource,
  arch: ControlNetArchitecture,
  opts: EmitOptions,
): Promise<EmitResult> {
  return emit('controlnet', opts, (g, a) => buildControlNet(g, source, arch, a));
}

/**
 * A text encoder (`text_encoder/` or `text_encoder_2/`). `family` decides the layers and outputs:
 * SD 2.x stops one layer early; SDXL adds hidden_states.0..L.
 */
export function emitTextEncoder(
  source: TensorSource,
  arch: TextEncoderArchitecture,
  family: CheckpointFamily,
  opts: EmitOptions,
): Promise<EmitResult> {
  return emit('text_encoder', opts, (g, a) => buildTextEncoder(g, source, arch, family, a));
}

/** The VAE encoder (`vae_encoder/`), quant_conv included: sample -> latent_parameters. */
export function emitVaeEncoder(
  source: TensorSource,
  arch: VaeArchitecture,
  prefix: string,
  opts: EmitOptions,
): Promise<EmitResult> {
  return emit('vae_encoder', opts, (g, a) => buildVae('encoder', g, source, arch, prefix, a));
}

/** The VAE decoder (`vae_decoder/`), post_quant_conv included: latent_sample -> sample. */
export function emitVaeDecoder(
  source: TensorSource,
  arch: VaeArchitecture,
  prefix: string,
  opts: EmitOptions,
): Promise<EmitResult> {
  return emit('vae_decoder', opts, (g, a) => buildVae('decoder', g, source, arch, prefix, a));
}

/**
 * Stable Diffusion's safety checker (`safety_checker/`): clip_input [N, 3, S, S] ->
 * image_embeds, special_cos_dist [N, 3], cos_dist [N, 17], and the thresholds
 * special_care_embeds_weights [3] and concept_embeds_weights [17] (always stored float32).
 */
export function emitSafetyChecker(
  source: TensorSource,
  arch: SafetyCheckerArchitecture,
  opts: EmitOptions,
): Promise<EmitResult> {
  return emit('safety_checker', opts, (g, a) => buildSafetyChecker(g, source, arch, a));
}

/**
 * TAESD's tiny decoder (`taesd_decoder/`, emit/taesd.ts) from a taesd_decoder or
 * taesdxl_decoder file: latent_sample (the UNet's latents, unscaled) -> sample in [-1, 1].
 */
export function emitTaesdDecoder(source: TensorSource, opts: EmitOptions): Promise<EmitResult> {
  return emit('taesd_decoder', opts, (g) => buildTaesdDecoder(g, source));
}
