/**
 * The JSON files around the graphs of a converted model: model_index.json, the scheduler
 * config of each family, and the small config.json files the loader reads beside model.onnx
 * (native size, VAE scaling). Values are those of the published diffusers repositories
 * (runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1(-base),
 * stabilityai/stable-diffusion-xl-base-1.0) and of the ldm yaml files: their "linear" beta
 * schedule (0.00085 .. 0.012 over 1000 steps) is diffusers' `scaled_linear`, with steps_offset 1.
 */
import type { CheckpointArchitecture } from './types';

type Json = Record<string, unknown>;

const BETAS = {
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  num_train_timesteps: 1000,
} as const;

/** Fields every published SD scheduler config carries. */
const COMMON = {
  ...BETAS,
  clip_sample: false,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
} as const;

/** scheduler/scheduler_config.json */
export function schedulerConfig(arch: CheckpointArchitecture, prediction: string): Json {
  if (arch.family === 'sdxl') {
    return {
      _class_name: 'EulerDiscreteScheduler',
      _diffusers_version: '0.19.0',
      ...COMMON,
      interpolation_type: 'linear',
      prediction_type: prediction,
      sample_max_value: 1.0,
      timestep_spacing: 'leading',
      use_karras_sigmas: false,
    };
  }
  // SD 2.x v models publish DDIM, the epsilon ones PNDM.
  return prediction === 'v_prediction'
    ? {
        _class_name: 'DDIMScheduler',
        _diffusers_version: '0.8.0',
        ...COMMON,
        prediction_type: prediction,
      }
    : {
        _class_name: 'PNDMScheduler',
        _diffusers_version: '0.6.0',
        ...COMMON,
        prediction_type: prediction,
      };
}

/** model_index.json of diffusers' ONNX layout. */
export function modelIndex(arch: CheckpointArchitecture, schedulerClass: string): Json {
  const ort = ['diffusers', 'OnnxRuntimeModel'];
  const index: Json = {
    // optimum's ORT pipeline classes for SDXL (its inpainting one included), diffusers' ONNX ones else.
    _class_name:
      arch.family === 'sdxl'
        ? arch.inpainting
          ? 'ORTStableDiffusionXLInpaintPipeline'
          : 'ORTStableDiffusionXLPipeline'
        : arch.inpainting
          ? 'OnnxStableDiffusionInpaintPipeline'
          : 'OnnxStableDiffusionPipeline',
    _diffusers_version: '0.14.0',
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ['diffusers', schedulerClass],
    text_encoder: ort,
    tokenizer: ['transformers', 'CLIPTokenizer'],
    unet: ort,
    vae_decoder: ort,
    vae_encoder: ort,
  };
  if (arch.family === 'sdxl') {
    Object.assign(index, {
      force_zeros_for_empty_prompt: true,
      text_encoder_2: ort,
      tokenizer_2: ['transformers', 'CLIPTokenizer'],
    });
  }
  return index;
}

/** unet/config.json: what the loader cannot see in the graph (native size). */
export function unetConfig(arch: CheckpointArchitecture, sampleSize: number): Json {
  return {
    _class_name: 'UNet2DConditionModel',
    in_channels: arch.unet.inChannels,
    out_channels: arch.unet.outChannels,
    cross_attention_dim: arch.unet.contextDim,
    sample_size: sampleSize / 8,
  };
}

/** vae_encoder/ and vae_decoder/config.json: the latent scale lives outside both graphs. */
export function vaeConfig(arch: CheckpointArchitecture, sampleSize: number): Json {
  return {
    _class_name: 'AutoencoderKL',
    latent_channels: arch.vae.zChannels,
    sample_size: sampleSize,
    scaling_factor: arch.vae.scalingFactor,
    // SDXL's original VAE overflows in fp16 (diffusers' force_upcast).
    force_upcast: arch.family === 'sdxl',
  };
}
