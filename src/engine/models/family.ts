/**
 * Telling a model's family from what its files declare (ENGINE-NOTES §2-3):
 * UNet input channels (4 / 9 inpainting / 7 x4), the context width of encoder_hidden_states,
 * extra UNet inputs (text_embeds + time_ids: SDXL; timestep_cond: LCM; class_labels: x4), the
 * scheduler's prediction_type and timestep_spacing, and model_index.json's pipeline class.
 * Every clue used is recorded in `reasons`, so the UI can say why.
 *
 * detectFamily is a list of small named steps: the clues are read by family-clues.ts, then the
 * family is decided (by channels, then conditioning and scheduler clues), checked for the
 * components it needs, and its native size and VAE scaling are settled. What each family can do
 * in the studio is declared with the families in src/shared/families.ts.
 */
import { isSdxlFamily } from '../../shared';
import { EngineError } from '../errors';
import {
  contextWidth,
  num,
  pipelineHint,
  schedulerClues,
  unetChannels,
  unetInputs,
  unsupported,
  vaeOf,
  type PipelineHint,
  type SchedulerClues,
  type UNetInputs,
} from './family-clues';
import { findInput, staticDim, validateSignature } from './signature';
import type {
  ComponentName,
  FamilyInfo,
  JsonObject,
  ModelFamily,
  ModelInfo,
  Signature,
} from './types';

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
  'sdxl-inpaint': { size: 1024, vaeScale: 0.13025, forceUpcast: true },
  // The x4 upscaler's latents are the low-res image itself; its VAE breaks in fp16.
  'x4-upscaler': { size: 128, vaeScale: 0.08333, forceUpcast: true },
};

function turboReason(sched: SchedulerClues): string {
  return sched.spacing === 'trailing'
    ? 'trailing timestep spacing: a few-step (turbo) model'
    : 'the name says turbo';
}

/** 7 channels: the x4 upscaler, which must also take class_labels. */
function x4Family(unet: UNetInputs, file: string): ModelFamily {
  if (!unet.classLabels) {
    throw unsupported(
      `${file} takes 7 channels like the x4 upscaler but has no class_labels input.`,
      file,
    );
  }
  return 'x4-upscaler';
}

/**
 * SDXL conditioning as the engine runs it: both text_embeds and time_ids, no LCM timestep_cond,
 * and the base models' 6 time_ids (original size, crop, target size). The refiner's 5 (original
 * size, crop, aesthetic score: diffusers' requires_aesthetics_score) are not run.
 */
function checkSdxlConditioning(unet: UNetInputs, file: string): void {
  if (!unet.has('text_embeds') || !unet.has('time_ids')) {
    throw new EngineError(
      'model-shape',
      `${file} has ${unet.has('text_embeds') ? 'text_embeds but no time_ids' : 'time_ids but no text_embeds'}; SDXL UNets take both.`,
      { file },
    );
  }
  if (unet.timestepCond)
    throw unsupported(
      'LCM-SDXL UNets (SDXL conditioning with timestep_cond) are not supported yet.',
      file,
    );
  const timeIds = staticDim(findInput(unet.sig, 'time_ids'), 1);
  if (timeIds !== null && timeIds !== 6) {
    throw unsupported(
      `${file} takes ${timeIds} time_ids; the SDXL refiner (5 time_ids) is not supported.`,
      file,
    );
  }
}

/** 9 channels: an SD or SDXL inpainting UNet (LCM inpainting is not run). */
function inpaintFamily(unet: UNetInputs, file: string, reasons: string[]): ModelFamily {
  if (unet.sdxl) {
    checkSdxlConditioning(unet, file);
    reasons.push(
      '9 input channels with SDXL conditioning: an SDXL inpainting UNet (latents + mask + masked image)',
    );
    return 'sdxl-inpaint';
  }
  if (unet.timestepCond)
    throw unsupported(
      'LCM inpainting UNets (9 channels with timestep_cond) are not supported.',
      file,
    );
  reasons.push('9 input channels: an inpainting UNet (latents + mask + masked image)');
  return 'inpaint';
}

/** 4 channels with SDXL conditioning: SDXL or SDXL-Turbo (base models with 6 time_ids only). */
function sdxlFamily(
  unet: UNetInputs,
  file: string,
  sched: SchedulerClues,
  reasons: string[],
): ModelFamily {
  checkSdxlConditioning(unet, file);
  if (sched.turbo) reasons.push(turboReason(sched));
  return sched.turbo ? 'sdxl-turbo' : 'sdxl';
}

/** The clues the steps of detectFamily read, for the decision. */
interface Clues {
  info: ModelInfo;
  unet: UNetInputs;
  channels: number;
  ctx: number;
  sched: SchedulerClues;
  hint: PipelineHint | undefined;
  reasons: string[];
}

/** 4 channels: SDXL, LCM, SD 2.x (v), SD-Turbo, SD 2.x or SD 1.x, in that order of evidence. */
function fourChannelFamily({ info, unet, ctx, sched, hint, reasons }: Clues): ModelFamily {
  const file = info.components.unet!.file;
  if (unet.classLabels)
    throw unsupported(
      `${file} takes class_labels but has 4 channels; only the x4 upscaler uses class labels.`,
      file,
    );
  if (unet.sdxl) return sdxlFamily(unet, file, sched, reasons);
  if (unet.timestepCond || sched.schedulerClass === 'LCMScheduler' || hint === 'lcm') {
    if (!unet.timestepCond)
      reasons.push(
        sched.schedulerClass === 'LCMScheduler'
          ? 'the scheduler is LCMScheduler'
          : `${info.pipelineClass} is an LCM pipeline`,
      );
    return 'lcm';
  }
  if (sched.prediction === 'v_prediction') return 'sd2-v';
  if (sched.turbo && ctx !== 768) {
    reasons.push(turboReason(sched));
    return 'sd-turbo';
  }
  if (ctx === 1024) return 'sd2';
  if (ctx !== 768) reasons.push(`context width ${ctx} is not a published one; treated as SD 1.x`);
  return 'sd1';
}

/** The family by UNet channels (4 / 9 / 7), then by conditioning and scheduler clues. */
function decideFamily(clues: Clues): ModelFamily {
  const { info, unet, channels, reasons } = clues;
  const file = info.components.unet!.file;
  if (channels === 7) return x4Family(unet, file);
  if (channels === 9) return inpaintFamily(unet, file, reasons);
  if (channels === 4) return fourChannelFamily(clues);
  throw unsupported(
    `${file} takes ${channels} input channels; the engine runs 4 (text-to-image), 9 (inpainting) and 7 (x4 upscaler).`,
    file,
  );
}

/** A pipeline class that names another family is noted; the UNet's inputs decide. */
function noteHintDisagreement(
  info: ModelInfo,
  hint: PipelineHint | undefined,
  family: ModelFamily,
  reasons: string[],
): void {
  if (!hint || hint === 'sd') return;
  const agrees =
    (hint === 'sdxl' && (family === 'sdxl' || family === 'sdxl-turbo')) ||
    (hint === 'lcm' && family === 'lcm') ||
    (hint === 'inpaint' && family === 'inpaint') ||
    (hint === 'sdxl-inpaint' && family === 'sdxl-inpaint') ||
    (hint === 'x4' && family === 'x4-upscaler');
  if (!agrees) reasons.push(`${info.pipelineClass} suggests otherwise; the UNet's inputs decide`);
}

/** Components a family needs beyond every model's UNet, text encoder and VAE decoder. */
function requireFamilyComponents(info: ModelInfo, family: ModelFamily): void {
  const need = (ok: boolean, file: string, why: string) => {
    if (!ok)
      throw new EngineError(
        'model-missing-file',
        `${file} is missing from the model folder (${why}).`,
        { file },
      );
  };
  if (isSdxlFamily(family)) {
    need(
      !!info.components.text_encoder_2,
      'text_encoder_2/model.onnx',
      'SDXL needs its second text encoder',
    );
    need(
      !!info.tokenizers.tokenizer_2,
      'tokenizer_2/vocab.json',
      'SDXL needs its second tokenizer',
    );
  }
  if (family === 'x4-upscaler') {
    need(!!info.components.vae, 'vae/model.onnx', 'the x4 upscaler decodes with vae/');
    need(
      !!info.lowResSchedulerConfig,
      'low_res_scheduler/scheduler_config.json',
      'the x4 upscaler noises its input with it',
    );
  }
}

/** The size the model was trained at: the UNet's fixed sample shape, its config, the default. */
function nativeSizeOf(
  unet: UNetInputs,
  ucfg: JsonObject,
  family: ModelFamily,
  reasons: string[],
): FamilyInfo['nativeSize'] {
  const sample = findInput(unet.sig, 'sample');
  const perLatent = family === 'x4-upscaler' ? 1 : 8; // x4: latents are the low-res image
  const sh = staticDim(sample, 2);
  const sw = staticDim(sample, 3);
  const cfgSize = ucfg.sample_size;
  if (sh !== null && sw !== null) {
    const size = { width: sw * perLatent, height: sh * perLatent };
    reasons.push(`native size ${size.width}x${size.height} from the UNet's fixed sample shape`);
    return size;
  }
  if (num(cfgSize) !== null || (Array.isArray(cfgSize) && cfgSize.length === 2)) {
    const [h, w] = Array.isArray(cfgSize)
      ? (cfgSize as number[])
      : [cfgSize as number, cfgSize as number];
    const size = { width: w * perLatent, height: h * perLatent };
    reasons.push(`native size ${size.width}x${size.height} from unet/config.json sample_size`);
    return size;
  }
  const side = FAMILY_DEFAULTS[family].size;
  reasons.push(`native size ${side}x${side}, the ${family} default`);
  return { width: side, height: side };
}

/** The VAE's scaling factor and fp16 safety: its config, else the family's default. */
function vaeScaling(
  vaeName: ComponentName,
  vcfg: JsonObject,
  family: ModelFamily,
  reasons: string[],
): { vaeScalingFactor: number; vaeForceUpcast: boolean } {
  const defaults = FAMILY_DEFAULTS[family];
  const cfgScale = num(vcfg.scaling_factor);
  reasons.push(
    cfgScale !== null
      ? `VAE scaling factor ${cfgScale} from ${vaeName}/config.json`
      : `VAE scaling factor ${defaults.vaeScale}, the ${family} default`,
  );
  return {
    vaeScalingFactor: cfgScale ?? defaults.vaeScale,
    vaeForceUpcast:
      typeof vcfg.force_upcast === 'boolean' ? vcfg.force_upcast : defaults.forceUpcast,
  };
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
  const unetComponent = info.components.unet;
  if (!unetComponent) {
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
  const ucfg: JsonObject = unetComponent.config ?? {};

  const hint = pipelineHint(info, reasons);
  const unet = unetInputs(sigOf('unet')!, reasons);
  const channels = unetChannels(info, unet, ucfg, hint, reasons);
  const ctx = contextWidth(info, unet, ucfg, sigOf, reasons);
  const { vae, config: vcfg, latentChannels } = vaeOf(info, sigOf);
  const sched = schedulerClues(info, reasons);
  const family = decideFamily({ info, unet, channels, ctx, sched, hint, reasons });
  noteHintDisagreement(info, hint, family, reasons);
  requireFamilyComponents(info, family);
  const nativeSize = nativeSizeOf(unet, ucfg, family, reasons);
  const { vaeScalingFactor, vaeForceUpcast } = vaeScaling(vae.name, vcfg, family, reasons);

  return {
    family,
    predictionType: sched.prediction,
    unetInChannels: channels,
    latentChannels,
    contextDim: ctx,
    latentScale: family === 'x4-upscaler' ? 4 : 8,
    nativeSize,
    vaeScalingFactor,
    vaeForceUpcast,
    sdxlConditioning: isSdxlFamily(family),
    timestepCondDim: unet.timestepCond
      ? (staticDim(unet.timestepCond, 1) ?? num(ucfg.time_cond_proj_dim) ?? 256)
      : null,
    classLabels: unet.classLabels,
    reasons,
  };
}
