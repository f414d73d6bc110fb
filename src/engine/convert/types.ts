// The seam between the two halves of the checkpoint converter:
//  - readers/ and detect.ts turn a single-file checkpoint into a TensorSource plus an
//    architecture (configs below) recognised from its keys and shapes;
//  - emit/ turns ldm-named tensors and those configs into ONNX graphs with the input and output
//    names of diffusers' ONNX export, so the result is an ordinary diffusers ONNX folder.
// Names follow the original ldm / CLIP / OpenCLIP checkpoints (what people's files hold), not
// diffusers' renamed modules.

/** A tensor's storage type in a checkpoint file (safetensors' names). */
export type CheckpointDType =
  'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export interface TensorInfo {
  readonly name: string;
  readonly dtype: CheckpointDType;
  readonly shape: readonly number[];
  /** Bytes the tensor occupies in the file. */
  readonly byteLength: number;
}

/**
 * The tensors of one checkpoint file (safetensors or a torch zip), read lazily by name. An
 * implementation never holds the whole file in memory: each read touches only that tensor.
 */
export interface TensorSource {
  /** The file, for messages. */
  readonly path: string;
  /** Every tensor, in file order. */
  list(): readonly TensorInfo[];
  info(name: string): TensorInfo | undefined;
  /** The values widened or narrowed to float32 (fp16, bf16, f64 and integer types convert). */
  readFloat32(name: string): Promise<Float32Array>;
  close(): Promise<void>;
}

/** ldm's UNetModel hyper-parameters (the `unet_config` of the original yaml files). */
export interface UNetArchitecture {
  inChannels: number; // 4, or 9 for inpainting variants
  outChannels: number;
  modelChannels: number; // 320
  channelMult: number[]; // [1, 2, 4, 4] SD 1/2, [1, 2, 4] SDXL
  numResBlocks: number; // 2
  /** Per level: does it have transformer blocks (ldm attention_resolutions as levels). */
  attentionLevels: boolean[]; // SD 1/2 [true, true, true, false], SDXL [false, true, true]
  /** Transformer blocks per attention level (SDXL [0, 2, 10]; 1 elsewhere). */
  transformerDepth: number[];
  /** Exactly one of these two: fixed heads (SD 1: 8) or fixed head width (SD 2, SDXL: 64). */
  numHeads: number | null;
  headChannels: number | null;
  contextDim: number; // 768 SD 1, 1024 SD 2, 2048 SDXL
  /** proj_in/proj_out are Linear (SD 2, SDXL) rather than 1x1 Conv (SD 1). */
  linearProjection: boolean;
  /** SDXL: label_emb input width (2816 = pooled 1280 + 6 time ids x 256); null without. */
  admInChannels: number | null;
}

/** ldm's AutoencoderKL (the `ddconfig`). */
export interface VaeArchitecture {
  inChannels: number; // 3
  outChannels: number; // 3
  ch: number; // 128
  chMult: number[]; // [1, 2, 4, 4]
  numResBlocks: number; // 2
  zChannels: number; // 4
  embedDim: number; // 4
  /** Outside both graphs: diffusers' `scaling_factor` (0.18215 SD 1/2, 0.13025 SDXL). */
  scalingFactor: number;
}

/**
 * A CLIP text transformer. `hf` is Hugging Face's CLIPTextModel naming (SD 1.x
 * `cond_stage_model.transformer.text_model.*`, SDXL `conditioner.embedders.0.transformer.*`);
 * `openclip` is OpenCLIP's (SD 2.x `cond_stage_model.model.*`, SDXL
 * `conditioner.embedders.1.model.*`, fused in_proj q/k/v).
 */
export interface TextEncoderArchitecture {
  naming: 'hf' | 'openclip';
  /** Key prefix in the checkpoint, ending in '.'. */
  prefix: string;
  width: number; // 768 ViT-L, 1024 ViT-H, 1280 ViT-bigG
  layers: number; // as stored (SD 2.x checkpoints hold 24 even though 23 are used)
  heads: number;
  vocabSize: number; // 49408
  maxPositions: number; // 77
  activation: 'quick_gelu' | 'gelu';
  /** SDXL text_encoder_2: text_projection [width, projectionDim] for the pooled text_embeds. */
  projectionDim: number | null;
}

export type CheckpointFamily = 'sd1' | 'sd2' | 'sdxl';

/** What detection decided about a checkpoint, with the reasons a person can read. */
export interface CheckpointArchitecture {
  family: CheckpointFamily;
  inpainting: boolean;
  /** null when the file cannot tell (SD 2.x 768 vs 512): the caller asks. */
  prediction: 'epsilon' | 'v_prediction' | null;
  /** Native resolution in pixels (512, 768, 1024). */
  sampleSize: number;
  /** Key prefixes: 'model.diffusion_model.', 'first_stage_model.'; EMA handled by the reader. */
  unetPrefix: string;
  vaePrefix: string;
  unet: UNetArchitecture;
  vae: VaeArchitecture;
  /** One encoder (SD 1/2) or two (SDXL: [CLIP ViT-L, OpenCLIP bigG]). */
  textEncoders: TextEncoderArchitecture[];
  reasons: string[];
}

/**
 * Stable Diffusion's safety checker (diffusers' StableDiffusionSafetyChecker, as
 * CompVis/stable-diffusion-safety-checker stores it): a CLIP vision tower in Hugging Face naming
 * under `prefix`, `visual_projection.weight`, and the concept embeddings with their thresholds.
 */
export interface SafetyCheckerArchitecture {
  /** 'vision_model.vision_model.' (CLIPVisionModel inside the checker). */
  prefix: string;
  width: number; // 1024 for ViT-L/14
  layers: number; // 24
  heads: number; // 16 (head width 64)
  patch: number; // 14
  /** Input side in pixels: sqrt(positions - 1) x patch (224). */
  imageSize: number;
  projectionDim: number; // 768
  /** Rows of concept_embeds (17) and special_care_embeds (3). */
  concepts: number;
  specialConcepts: number;
}

/**
 * A ControlNet (Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion
 * Models"): a copy of a UNet's encoder and middle block, a small conv stack that turns the
 * control image into a latent-sized feature (the "hint"), and a zero-initialised 1x1 conv per
 * skip plus one for the middle block. Keys follow lllyasviel/ControlNet's ldm naming
 * (`input_hint_block`, `zero_convs`, `middle_block_out`), under `prefix`.
 */
export interface ControlNetArchitecture {
  family: CheckpointFamily;
  /** '' or 'control_model.' (the prefix ControlNet 1.0 and most .safetensors files carry). */
  prefix: string;
  /** The encoder's hyper-parameters (outChannels is unused: a ControlNet has no output blocks). */
  unet: UNetArchitecture;
  /** Control image channels (3). */
  hintInChannels: number;
  /** Output channels of each conv of input_hint_block, in order (SD: 16,16,32,32,96,96,256,320). */
  hintChannels: number[];
  reasons: string[];
}
