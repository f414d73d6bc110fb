import type { IoSpec } from '../tensor';
import type { ModelFamily } from '../../shared';
import type { OnnxHeader } from './onnx-file';

/** ONNX components a model folder can hold. `vae` is the x4 upscaler's decoder. */
export const onnxComponentNames = [
  'text_encoder',
  'text_encoder_2',
  'unet',
  'vae_encoder',
  'vae_decoder',
  'vae',
  'safety_checker',
] as const;
export type ComponentName = (typeof onnxComponentNames)[number];

export const tokenizerNames = ['tokenizer', 'tokenizer_2'] as const;
export type TokenizerName = (typeof tokenizerNames)[number];

/** A graph's declared inputs and outputs. */
export interface Signature {
  inputs: IoSpec[];
  outputs: IoSpec[];
}

export type JsonObject = Record<string, unknown>;

export interface WeightsFile {
  /** Relative to the model folder, e.g. "unet/weights.pb". */
  file: string;
  path: string;
  bytes: number;
}

/** One ONNX component folder (unet/, text_encoder/...). */
export interface OnnxComponent {
  name: ComponentName;
  /** Absolute folder. */
  dir: string;
  /** Absolute path of model.onnx (sessions load by path so ORT finds external weights). */
  modelPath: string;
  /** Relative to the model folder, e.g. "unet/model.onnx"; used in every message. */
  file: string;
  /** Size of model.onnx plus its external weights. */
  bytes: number;
  /** External weights the graph refers to (weights.pb, model.onnx_data, ...). */
  externalData: WeightsFile[];
  /** Read from the file's header; replaced by the session's own metadata once a session exists. */
  signature: Signature;
  header: Pick<
    OnnxHeader,
    'irVersion' | 'producerName' | 'producerVersion' | 'opsets' | 'convInWeightDims'
  >;
  /** optimum's per-folder config.json (diffusers' script writes none). */
  config: JsonObject | null;
  /** The class model_index.json names for it ("OnnxRuntimeModel", "UNet2DConditionModel"...). */
  className: string | null;
}

export interface TokenizerFolder {
  name: TokenizerName;
  dir: string;
  vocabPath: string;
  mergesPath: string;
  specialTokensMapPath: string | null;
  tokenizerConfigPath: string | null;
}

/** What model_index.json says beyond the component list. */
export interface ModelIndexExtras {
  /** x4 upscaler: the highest noise_level the low-res scheduler accepts (350). */
  maxNoiseLevel?: number;
  /** SDXL: an empty negative prompt means zero embeddings. */
  forceZerosForEmptyPrompt?: boolean;
  requiresSafetyChecker?: boolean;
  /** SDXL refiner. */
  requiresAestheticsScore?: boolean;
  diffusersVersion?: string;
}

/** A model folder, inspected without creating any session. */
export interface ModelInfo {
  /** Absolute path of the folder. */
  dir: string;
  /** Folder name, for messages and the UI. */
  name: string;
  /** 'diffusers' (Onnx* pipeline classes, no per-folder config.json) or 'optimum'. */
  layout: 'diffusers' | 'optimum';
  /** model_index.json `_class_name`, or null when the file is absent. */
  pipelineClass: string | null;
  modelIndex: JsonObject | null;
  extras: ModelIndexExtras;
  components: Partial<Record<ComponentName, OnnxComponent>>;
  tokenizers: Partial<Record<TokenizerName, TokenizerFolder>>;
  /** scheduler/scheduler_config.json, raw (the scheduler module parses it). */
  schedulerConfig: JsonObject;
  /** low_res_scheduler/scheduler_config.json (x4 upscaler), raw. */
  lowResSchedulerConfig: JsonObject | null;
  /** Things worth telling a person that did not stop the load. */
  notes: string[];
}

// The families (and what each can do) are declared once, in src/shared/families.ts.
export { modelFamilies, type ModelFamily } from '../../shared';

export interface FamilyInfo {
  family: ModelFamily;
  /** From scheduler_config.json (default epsilon). */
  predictionType: 'epsilon' | 'v_prediction' | 'sample';
  /** UNet `sample` channels: 4, 9 (inpainting) or 7 (x4). */
  unetInChannels: number;
  /** Latent channels the VAE works in (4). */
  latentChannels: number;
  /** encoder_hidden_states last dim: 768, 1024 or 2048. */
  contextDim: number;
  /** Pixels per latent pixel: 8, or 4 for the x4 upscaler (whose latents are the low-res size). */
  latentScale: number;
  /** The size the model was trained at (for x4: the low-res input size). */
  nativeSize: { width: number; height: number };
  vaeScalingFactor: number;
  /** The VAE is unsafe in fp16 (SDXL); run it in fp32 where there is a choice. */
  vaeForceUpcast: boolean;
  /** SDXL-style conditioning: two text encoders, text_embeds and time_ids. */
  sdxlConditioning: boolean;
  /** LCM guidance embedding width (timestep_cond), or null. */
  timestepCondDim: number | null;
  /** x4: the UNet takes class_labels (the noise level). */
  classLabels: boolean;
  /** One line per clue used, in order, e.g. "unet sample has 9 channels: inpainting". */
  reasons: string[];
}
