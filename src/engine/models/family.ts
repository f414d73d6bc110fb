/**
 * Telling a model's family from what its files declare (ENGINE-NOTES §2-3):
 * UNet input channels (4 / 9 inpainting / 7 x4), the context width of encoder_hidden_states,
 * extra UNet inputs (text_embeds + time_ids: SDXL; timestep_cond: LCM; class_labels: x4), the
 * scheduler's prediction_type and timestep_spacing, and model_index.json's pipeline class.
 * Every clue used is recorded in `reasons`, so the UI can say why.
 */
import { EngineError } from '../errors';
import { findInput, findOutput, staticDim, validateSignature } from './signature';
import type {
  ComponentName,
  FamilyInfo,
  JsonObject,
  ModelFamily,
  ModelInfo,
  Signature,
} from './types';

type PipelineHint = 'sd' | 'inpaint' | 'x4' | 'sdxl' | 'lcm';

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
  ORTStableDiffusionXLInpaintPipeline: 'sdxl',
  ORTLatentConsistencyModelPipeline: 'lcm',
  ORTLatentConsistencyModelImg2ImgPipeline: 'lcm',
  StableDiffusionPipeline: 'sd',
  StableDiffusionImg2ImgPipeline: 'sd',
  StableDiffusionInpaintPipeline: 'inpaint',
  StableDiffusionUpscalePipeline: 'x4',
  StableDiffusionXLPipeline: 'sdxl',
  StableDiffusionXLImg2ImgPipeline: 'sdxl',
  StableDiffusionXLInpaintPipeline: 'sdxl',
  LatentConsistencyModelPipeline: 'lcm',
  LatentConsistencyModelImg2ImgPipeline: 'lcm',
};

/** Defaults from ENGINE-NOTES §2's table, used when no config says otherwise. */
const FAMILY_DEFAULTS: Record<
  ModelFamily,
  { size: number; vaeScale: number; forceUpcast: boolean }
> = {
  sd1: { size: 512, vaeScale: 0.18215, forceUpcast: false },
  sd2: { size: 512, vaeScale: 0.18215, forceUpcast: false },
  'sd2-v': { size: 768, vaeScale: 0.18215, forceUpcast: false },
  'sd-turbo': { size: 512, vaeScale: 0.18215, forceUpcast: false },
  lcm: { size: 512, vaeScale: 0.18215, forceUpcast: false },
  sdxl: { size: 1024, vaeScale: 0.13025, forceUpcast: true },
  'sdxl-turbo': { size: 512, vaeScale: 0.13025, forceUpcast: true },
  inpaint: { size: 512, vaeScale: 0.18215, forceUpcast: false },
  // The x4 upscaler's latents are the low-res image itself; its VAE breaks in fp16.
  'x4-upscaler': { size: 128, vaeScale: 0.08333, forceUpcast: true },
};

function num(v: unknown): number | null {
  return typeof v === 'number' && Number.isFinite(v) ? v : null;
}

function unsupported(message: string, file?: string): EngineError {
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

/**
 * Decide the family of an inspected model folder. `signatures` overrides the header-read
 * signatures (loadModel passes the ones the sessions report). Throws EngineError
 * 'model-unsupported' for combinations the engine does not run, 'model-shape' for graphs that
 * contradict each other, 'model-missing-file' for components a family needs.
 */
export function detectFamily(
  info: ModelInfo,
  signatures: Partial<Record<ComponentName, Signature>> = {},
): FamilyInfo {
  const reasons: string[] = [];
  const unet = info.components.unet;
  if (!unet) {
    throw new EngineError(
      'model-missing-file',
      'unet/model.onnx is missing from the model folder.',
      {
        file: 'unet/model.onnx',
      },
    );
  }
  const sigOf = (name: ComponentName): Signature | undefined =>
    signatures[name] ?? info.components[name]?.signature;
  for (const name of Object.keys(info.components) as ComponentName[]) {
    validateSignature(name, sigOf(name)!, info.components[name]!.file);
  }
  const usig = sigOf('unet')!;
  const ucfg: JsonObject = unet.config ?? {};
  const sched = info.schedulerConfig;
  const hint = info.pipelineClass ? PIPELINE_HINTS[info.pipelineClass] : undefined;
  if (info.pipelineClass) {
    reasons.push(
      hint
        ? `model_index.json names ${info.pipelineClass}`
        : `model_index.json names ${info.pipelineClass}, a pipeline class not known here; going by the graphs`,
    );
  }

  const has = (n: string) => findInput(usig, n) !== undefined;
  const sdxlInputs = has('text_embeds') || has('time_ids');
  const timestepCond = findInput(usig, 'timestep_cond');
  const classLabels = has('class_labels');
  if (sdxlInputs) reasons.push('the UNet takes text_embeds/time_ids (SDXL conditioning)');
  if (timestepCond) reasons.push('the UNet takes timestep_cond (LCM guidance embedding)');
  if (classLabels) reasons.push('the UNet takes class_labels (the x4 upscaler noise level)');

  // --- UNet input channels: declared dim, optimum's config, conv_in weight, pipeline class.
  const sample = findInput(usig, 'sample')!;
  let channels = staticDim(sample, 1);
  if (channels !== null) reasons.push(`the UNet sample input declares ${channels} channels`);
  if (channels === null && num(ucfg.in_channels) !== null) {
    channels = num(ucfg.in_channels);
    reasons.push(`unet/config.json in_channels is ${channels}`);
  }
  if (channels === null) {
    const convIn = unet.header.convInWeightDims?.[1] ?? null;
    if (convIn !== null && convIn > 0) {
      channels = convIn;
      reasons.push(`the UNet's conv_in weight takes ${channels} channels`);
    }
  }
  if (channels === null) {
    channels = hint === 'inpaint' ? 9 : hint === 'x4' || classLabels ? 7 : 4;
    reasons.push(
      hint === 'inpaint' || hint === 'x4'
        ? `${channels} UNet channels, as ${info.pipelineClass} implies (the channel dim is dynamic)`
        : classLabels
          ? '7 UNet channels, as class_labels implies (the channel dim is dynamic)'
          : '4 UNet channels assumed (the channel dim is dynamic and nothing says otherwise)',
    );
  }

  // --- Context width, checked against the text encoder(s).
  const ehs = findInput(usig, 'encoder_hidden_states')!;
  let ctx = staticDim(ehs, 2);
  if (ctx === null && num(ucfg.cross_attention_dim) !== null) ctx = num(ucfg.cross_attention_dim);
  const te1 = textWidth(sigOf('text_encoder'));
  const te2 = textWidth(sigOf('text_encoder_2'));
  const teCtx = sdxlInputs ? (te1 !== null && te2 !== null ? te1 + te2 : null) : te1;
  if (ctx === null) ctx = teCtx;
  if (ctx === null) {
    throw unsupported(
      `Cannot tell the context width of ${unet.file}: encoder_hidden_states has no fixed last dimension and no config gives it.`,
      unet.file,
    );
  }
  if (teCtx !== null && teCtx !== ctx) {
    throw new EngineError(
      'model-shape',
      sdxlInputs
        ? `${unet.file} expects a ${ctx}-wide context but text_encoder and text_encoder_2 give ${te1} + ${te2} = ${teCtx}.`
        : `${unet.file} expects a ${ctx}-wide context but text_encoder/model.onnx gives ${teCtx}.`,
      { file: unet.file },
    );
  }
  reasons.push(
    `the context is ${ctx} wide${ctx === 768 ? ' (SD 1.x CLIP)' : ctx === 1024 ? ' (SD 2.x OpenCLIP)' : ctx === 2048 ? ' (SDXL)' : ''}`,
  );

  // --- VAE latent channels.
  const vae = info.components.vae_decoder ?? info.components.vae!;
  const vcfg: JsonObject = vae.config ?? info.components.vae_encoder?.config ?? {};
  const latentChannels =
    staticDim(findInput(sigOf(vae.name)!, 'latent_sample'), 1) ?? num(vcfg.latent_channels) ?? 4;
  if (latentChannels !== 4) {
    throw unsupported(
      `${vae.file} works on ${latentChannels}-channel latents; the engine runs 4-channel VAEs only.`,
      vae.file,
    );
  }

  // --- Scheduler clues.
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
  const prediction = predictionRaw;
  if (prediction !== 'epsilon') reasons.push(`the scheduler's prediction_type is ${prediction}`);
  const spacing = typeof sched.timestep_spacing === 'string' ? sched.timestep_spacing : 'leading';
  const schedulerClass = typeof sched._class_name === 'string' ? sched._class_name : '';
  const turboName =
    /turbo/i.test(info.name) || /turbo/i.test(String(info.modelIndex?._name_or_path ?? ''));
  const turbo = spacing === 'trailing' || turboName;

  // --- Decide.
  let family: ModelFamily;
  if (channels === 7) {
    if (!classLabels) {
      throw unsupported(
        `${unet.file} takes 7 channels like the x4 upscaler but has no class_labels input.`,
        unet.file,
      );
    }
    family = 'x4-upscaler';
  } else if (channels === 9) {
    if (sdxlInputs)
      throw unsupported(
        'SDXL inpainting UNets (9 channels with SDXL conditioning) are not supported yet.',
        unet.file,
      );
    if (timestepCond)
      throw unsupported(
        'LCM inpainting UNets (9 channels with timestep_cond) are not supported.',
        unet.file,
      );
    family = 'inpaint';
    reasons.push('9 input channels: an inpainting UNet (latents + mask + masked image)');
  } else if (channels === 4) {
    if (classLabels)
      throw unsupported(
        `${unet.file} takes class_labels but has 4 channels; only the x4 upscaler uses class labels.`,
        unet.file,
      );
    if (sdxlInputs) {
      if (!has('text_embeds') || !has('time_ids')) {
        throw new EngineError(
          'model-shape',
          `${unet.file} has ${has('text_embeds') ? 'text_embeds but no time_ids' : 'time_ids but no text_embeds'}; SDXL UNets take both.`,
          { file: unet.file },
        );
      }
      if (timestepCond)
        throw unsupported(
          'LCM-SDXL UNets (SDXL conditioning with timestep_cond) are not supported yet.',
          unet.file,
        );
      const timeIds = staticDim(findInput(usig, 'time_ids'), 1);
      if (timeIds !== null && timeIds !== 6) {
        throw unsupported(
          `${unet.file} takes ${timeIds} time_ids; the SDXL refiner (5 time_ids) is not supported.`,
          unet.file,
        );
      }
      family = turbo ? 'sdxl-turbo' : 'sdxl';
      if (turbo)
        reasons.push(
          spacing === 'trailing'
            ? 'trailing timestep spacing: a few-step (turbo) model'
            : 'the name says turbo',
        );
    } else if (timestepCond || schedulerClass === 'LCMScheduler' || hint === 'lcm') {
      family = 'lcm';
      if (!timestepCond)
        reasons.push(
          schedulerClass === 'LCMScheduler'
            ? 'the scheduler is LCMScheduler'
            : `${info.pipelineClass} is an LCM pipeline`,
        );
    } else if (prediction === 'v_prediction') {
      family = 'sd2-v';
    } else if (turbo && ctx !== 768) {
      family = 'sd-turbo';
      reasons.push(
        spacing === 'trailing'
          ? 'trailing timestep spacing: a few-step (turbo) model'
          : 'the name says turbo',
      );
    } else if (ctx === 1024) {
      family = 'sd2';
    } else {
      family = 'sd1';
      if (ctx !== 768)
        reasons.push(`context width ${ctx} is not a published one; treated as SD 1.x`);
    }
  } else {
    throw unsupported(
      `${unet.file} takes ${channels} input channels; the engine runs 4 (text-to-image), 9 (inpainting) and 7 (x4 upscaler).`,
      unet.file,
    );
  }

  if (hint && hint !== 'sd') {
    const agrees =
      (hint === 'sdxl' && (family === 'sdxl' || family === 'sdxl-turbo')) ||
      (hint === 'lcm' && family === 'lcm') ||
      (hint === 'inpaint' && family === 'inpaint') ||
      (hint === 'x4' && family === 'x4-upscaler');
    if (!agrees) reasons.push(`${info.pipelineClass} suggests otherwise; the UNet's inputs decide`);
  }

  // --- Components the family needs.
  const need = (
    name: ComponentName | 'tokenizer_2' | 'low_res_scheduler',
    file: string,
    why: string,
  ) => {
    const ok =
      name === 'tokenizer_2'
        ? !!info.tokenizers.tokenizer_2
        : name === 'low_res_scheduler'
          ? !!info.lowResSchedulerConfig
          : !!info.components[name];
    if (!ok)
      throw new EngineError(
        'model-missing-file',
        `${file} is missing from the model folder (${why}).`,
        { file },
      );
  };
  if (family === 'sdxl' || family === 'sdxl-turbo') {
    need('text_encoder_2', 'text_encoder_2/model.onnx', 'SDXL needs its second text encoder');
    need('tokenizer_2', 'tokenizer_2/vocab.json', 'SDXL needs its second tokenizer');
  }
  if (family === 'x4-upscaler') {
    need('vae', 'vae/model.onnx', 'the x4 upscaler decodes with vae/');
    need(
      'low_res_scheduler',
      'low_res_scheduler/scheduler_config.json',
      'the x4 upscaler noises its input with it',
    );
  }

  // --- Size and VAE scaling.
  const defaults = FAMILY_DEFAULTS[family];
  const latentScale = family === 'x4-upscaler' ? 4 : 8;
  const perLatent = family === 'x4-upscaler' ? 1 : latentScale; // x4: latents are the low-res image
  let nativeSize: FamilyInfo['nativeSize'];
  const sh = staticDim(sample, 2);
  const sw = staticDim(sample, 3);
  const cfgSize = ucfg.sample_size;
  if (sh !== null && sw !== null) {
    nativeSize = { width: sw * perLatent, height: sh * perLatent };
    reasons.push(
      `native size ${nativeSize.width}x${nativeSize.height} from the UNet's fixed sample shape`,
    );
  } else if (num(cfgSize) !== null || (Array.isArray(cfgSize) && cfgSize.length === 2)) {
    const [h, w] = Array.isArray(cfgSize)
      ? (cfgSize as number[])
      : [cfgSize as number, cfgSize as number];
    nativeSize = { width: w * perLatent, height: h * perLatent };
    reasons.push(
      `native size ${nativeSize.width}x${nativeSize.height} from unet/config.json sample_size`,
    );
  } else {
    nativeSize = { width: defaults.size, height: defaults.size };
    reasons.push(`native size ${defaults.size}x${defaults.size}, the ${family} default`);
  }

  const cfgScale = num(vcfg.scaling_factor);
  const vaeScalingFactor = cfgScale ?? defaults.vaeScale;
  reasons.push(
    cfgScale !== null
      ? `VAE scaling factor ${cfgScale} from ${vae.name}/config.json`
      : `VAE scaling factor ${defaults.vaeScale}, the ${family} default`,
  );
  const vaeForceUpcast =
    typeof vcfg.force_upcast === 'boolean' ? vcfg.force_upcast : defaults.forceUpcast;

  return {
    family,
    predictionType: prediction,
    unetInChannels: channels,
    latentChannels,
    contextDim: ctx,
    latentScale,
    nativeSize,
    vaeScalingFactor,
    vaeForceUpcast,
    sdxlConditioning: family === 'sdxl' || family === 'sdxl-turbo',
    timestepCondDim: timestepCond
      ? (staticDim(timestepCond, 1) ?? num(ucfg.time_cond_proj_dim) ?? 256)
      : null,
    classLabels,
    reasons,
  };
}
