/**
 * The clues a model folder gives about its family (ENGINE-NOTES §2-3), each read by one small
 * step that also records, in `reasons`, what it found: model_index.json's pipeline class, the
 * UNet's extra inputs, its input channels, the context width (checked against the text
 * encoders), the VAE's latent channels and the scheduler config. family.ts decides from them.
 */
import { EngineError } from '../errors';
import type { IoSpec } from '../tensor';
import { findInput, findOutput, staticDim } from './signature';
import type { ComponentName, FamilyInfo, JsonObject, ModelInfo, Signature } from './types';

export type PipelineHint = 'sd' | 'inpaint' | 'x4' | 'sdxl' | 'sdxl-inpaint' | 'lcm';

/** Pipeline classes of diffusers' ONNX pipelines, optimum's ORT pipelines and the PyTorch ones optimum writes. */
const PIPELINE_HINTS: Record<string, PipelineHint> = {
  OnnxStableDiffusionPipeline: 'sd',
  StableDiffusionOnnxPipeline: 'sd',
  OnnxStableDiffusionImg2ImgPipeline: 'sd',
  OnnxStableDiffusionInpaintPipeline: 'inpaint',
  OnnxStableDiffusionInpaintPipelineLegacy: 'sd',
  OnnxStableDiffusionUpscalePipeline: 'x4',
  ORTStableDiffusionPipeline: 'sd',
  ORTStableDiffusionImg2ImgPipeline: 'sd',
  ORTStableDiffusionInpaintPipeline: 'inpaint',
  ORTStableDiffusionXLPipeline: 'sdxl',
  ORTStableDiffusionXLImg2ImgPipeline: 'sdxl',
  ORTStableDiffusionXLInpaintPipeline: 'sdxl-inpaint',
  ORTLatentConsistencyModelPipeline: 'lcm',
  ORTLatentConsistencyModelImg2ImgPipeline: 'lcm',
  StableDiffusionPipeline: 'sd',
  StableDiffusionImg2ImgPipeline: 'sd',
  StableDiffusionInpaintPipeline: 'inpaint',
  StableDiffusionUpscalePipeline: 'x4',
  StableDiffusionXLPipeline: 'sdxl',
  StableDiffusionXLImg2ImgPipeline: 'sdxl',
  StableDiffusionXLInpaintPipeline: 'sdxl-inpaint',
  LatentConsistencyModelPipeline: 'lcm',
  LatentConsistencyModelImg2ImgPipeline: 'lcm',
};

export function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

export function unsupported(message: string, file?: string): EngineError {
  return new EngineError('model-unsupported', message, file ? { file } : {});
}

/** The text encoder's hidden width from its declared outputs (last dim of a rank-3 output). */
function textWidth(sig: Signature | undefined): number | null {
  if (!sig) return null;
  const out =
    findOutput(sig, 'last_hidden_state') ??
    sig.outputs.find((o) => o.name.startsWith('hidden_states')) ??
    sig.outputs.find((o) => o.shape.length === 3);
  return out && out.shape.length === 3 ? staticDim(out, 2) : null;
}

/** What the UNet's declared inputs say, beyond `sample` and `encoder_hidden_states`. */
export interface UNetInputs {
  sig: Signature;
  has(name: string): boolean;
  /** text_embeds or time_ids: SDXL conditioning. */
  sdxl: boolean;
  timestepCond: IoSpec | undefined;
  classLabels: boolean;
}

/** The scheduler config's clues. */
export interface SchedulerClues {
  prediction: FamilyInfo['predictionType'];
  spacing: string;
  schedulerClass: string;
  /** Trailing timestep spacing or "turbo" in the name: a few-step model. */
  turbo: boolean;
}

/** The pipeline class model_index.json names, as a hint (graphs decide where they disagree). */
export function pipelineHint(info: ModelInfo, reasons: string[]): PipelineHint | undefined {
  const hint = info.pipelineClass ? PIPELINE_HINTS[info.pipelineClass] : undefined;
  if (info.pipelineClass) {
    reasons.push(
      hint
        ? `model_index.json names ${info.pipelineClass}`
        : `model_index.json names ${info.pipelineClass}, a pipeline class not known here; going by the graphs`,
    );
  }
  return hint;
}

export function unetInputs(sig: Signature, reasons: string[]): UNetInputs {
  const has = (n: string) => findInput(sig, n) !== undefined;
  const inputs: UNetInputs = {
    sig,
    has,
    sdxl: has('text_embeds') || has('time_ids'),
    timestepCond: findInput(sig, 'timestep_cond'),
    classLabels: has('class_labels'),
  };
  if (inputs.sdxl) reasons.push('the UNet takes text_embeds/time_ids (SDXL conditioning)');
  if (inputs.timestepCond) reasons.push('the UNet takes timestep_cond (LCM guidance embedding)');
  if (inputs.classLabels) reasons.push('the UNet takes class_labels (the x4 upscaler noise level)');
  return inputs;
}

/** UNet input channels: the declared dim, optimum's config, the conv_in weight, the pipeline class. */
export function unetChannels(
  info: ModelInfo,
  unet: UNetInputs,
  ucfg: JsonObject,
  hint: PipelineHint | undefined,
  reasons: string[],
): number {
  const declared = staticDim(findInput(unet.sig, 'sample'), 1);
  if (declared !== null) {
    reasons.push(`the UNet sample input declares ${declared} channels`);
    return declared;
  }
  const configured = num(ucfg.in_channels);
  if (configured !== null) {
    reasons.push(`unet/config.json in_channels is ${configured}`);
    return configured;
  }
  const convIn = info.components.unet!.header.convInWeightDims?.[1] ?? null;
  if (convIn !== null && convIn > 0) {
    reasons.push(`the UNet's conv_in weight takes ${convIn} channels`);
    return convIn;
  }
  const inpaintHint = hint === 'inpaint' || hint === 'sdxl-inpaint';
  const implied = inpaintHint ? 9 : hint === 'x4' || unet.classLabels ? 7 : 4;
  reasons.push(
    inpaintHint || hint === 'x4'
      ? `${implied} UNet channels, as ${info.pipelineClass} implies (the channel dim is dynamic)`
      : unet.classLabels
        ? '7 UNet channels, as class_labels implies (the channel dim is dynamic)'
        : '4 UNet channels assumed (the channel dim is dynamic and nothing says otherwise)',
  );
  return implied;
}

/** The context width encoder_hidden_states takes, checked against the text encoder(s). */
export function contextWidth(
  info: ModelInfo,
  unet: UNetInputs,
  ucfg: JsonObject,
  sigOf: (name: ComponentName) => Signature | undefined,
  reasons: string[],
): number {
  const file = info.components.unet!.file;
  let ctx = staticDim(findInput(unet.sig, 'encoder_hidden_states'), 2);
  if (ctx === null && num(ucfg.cross_attention_dim) !== null) ctx = num(ucfg.cross_attention_dim);
  const te1 = textWidth(sigOf('text_encoder'));
  const te2 = textWidth(sigOf('text_encoder_2'));
  const teCtx = unet.sdxl ? (te1 !== null && te2 !== null ? te1 + te2 : null) : te1;
  if (ctx === null) ctx = teCtx;
  if (ctx === null) {
    throw unsupported(
      `Cannot tell the context width of ${file}: encoder_hidden_states has no fixed last dimension and no config gives it.`,
      file,
    );
  }
  if (teCtx !== null && teCtx !== ctx) {
    throw new EngineError(
      'model-shape',
      unet.sdxl
        ? `${file} expects a ${ctx}-wide context but text_encoder and text_encoder_2 give ${te1} + ${te2} = ${teCtx}.`
        : `${file} expects a ${ctx}-wide context but text_encoder/model.onnx gives ${teCtx}.`,
      { file },
    );
  }
  reasons.push(
    `the context is ${ctx} wide${ctx === 768 ? ' (SD 1.x CLIP)' : ctx === 1024 ? ' (SD 2.x OpenCLIP)' : ctx === 2048 ? ' (SDXL)' : ''}`,
  );
  return ctx;
}

/** The decoding VAE, its config and its latent channels (4 is all the engine runs). */
export function vaeOf(info: ModelInfo, sigOf: (name: ComponentName) => Signature | undefined) {
  const vae = info.components.vae_decoder ?? info.components.vae!;
  const config: JsonObject = vae.config ?? info.components.vae_encoder?.config ?? {};
  const latentChannels =
    staticDim(findInput(sigOf(vae.name)!, 'latent_sample'), 1) ?? num(config.latent_channels) ?? 4;
  if (latentChannels !== 4) {
    throw unsupported(
      `${vae.file} works on ${latentChannels}-channel latents; the engine runs 4-channel VAEs only.`,
      vae.file,
    );
  }
  return { vae, config, latentChannels };
}

export function schedulerClues(info: ModelInfo, reasons: string[]): SchedulerClues {
  const sched = info.schedulerConfig;
  const predictionRaw =
    typeof sched.prediction_type === 'string' ? sched.prediction_type : 'epsilon';
  if (
    predictionRaw !== 'epsilon' &&
    predictionRaw !== 'v_prediction' &&
    predictionRaw !== 'sample'
  ) {
    throw unsupported(
      `scheduler/scheduler_config.json has prediction_type "${predictionRaw}", which the engine does not support.`,
      'scheduler/scheduler_config.json',
    );
  }
  if (predictionRaw !== 'epsilon')
    reasons.push(`the scheduler's prediction_type is ${predictionRaw}`);
  const spacing = typeof sched.timestep_spacing === 'string' ? sched.timestep_spacing : 'leading';
  const turboName =
    /turbo/i.test(info.name) || /turbo/i.test(String(info.modelIndex?._name_or_path ?? ''));
  return {
    prediction: predictionRaw,
    spacing,
    schedulerClass: typeof sched._class_name === 'string' ? sched._class_name : '',
    turbo: spacing === 'trailing' || turboName,
  };
}
