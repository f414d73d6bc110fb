/**
 * Recognising a single-file checkpoint's architecture from its tensor names and shapes, with
 * the reasons a person can read (as models/family.ts does for folders).
 *
 * Facts used (from the original sources' configs: CompVis/stable-diffusion v1-inference.yaml,
 * Stability-AI/stablediffusion v2-inference(-v).yaml, Stability-AI/generative-models
 * sd_xl_base.yaml; and from diffusers' single-file loader for the prediction type):
 * - SD 1.x: `cond_stage_model.transformer.[text_model.]*` (CLIP ViT-L/14 in Hugging Face
 *   naming), 1x1-conv proj_in/out, 8 heads, context 768.
 * - SD 2.x: `cond_stage_model.model.*` (OpenCLIP ViT-H/14), linear proj_in/out, 64-wide heads,
 *   context 1024. The file does not say epsilon or v: diffusers decides v-prediction unless the
 *   checkpoint's global_step is 875000 (the 512 base model); without a global_step we return
 *   null and the caller asks. Inpainting SD 2 is epsilon at 512.
 * - SDXL base: `conditioner.embedders.0` (CLIP ViT-L) and `.1` (OpenCLIP bigG),
 *   `label_emb` of width 2816, channel_mult [1, 2, 4], transformer depth [0, 2, 10].
 * - Inpainting variants: 9 UNet input channels (4 latent + 1 mask + 4 masked-image latent).
 */
import { EngineError } from '../errors';
import { isDiffusersControlNet, ldmControlNetNames } from './readers/diffusers-controlnet';
import type {
  CheckpointArchitecture,
  ControlNetArchitecture,
  CheckpointFamily,
  TensorInfo,
  TextEncoderArchitecture,
  UNetArchitecture,
  SafetyCheckerArchitecture,
  VaeArchitecture,
} from './types';

/** What a file says about itself beyond its tensors (torch's global_step, safetensors metadata). */
export interface CheckpointHints {
  /** The training step torch checkpoints record beside the weights. */
  globalStep?: number;
  /** safetensors `__metadata__` (e.g. `modelspec.architecture`, `modelspec.prediction_type`). */
  metadata?: Readonly<Record<string, string>>;
}

const UNET = 'model.diffusion_model.';
const VAE = 'first_stage_model.';

type Shapes = ReadonlyMap<string, readonly number[]>;

function notAModel(file: string, what: string): EngineError {
  return new EngineError(
    'model-unsupported',
    `${file} is ${what}, not a Stable Diffusion 1.x, 2.x or SDXL checkpoint that can be converted.`,
    { file },
  );
}

/** What to do with weights in diffusers' PyTorch naming, which the converter does not map. */
const DIFFUSERS_ADVICE =
  "the converter reads the original ldm naming, so use the model's single-file release, " +
  'or export its diffusers folder to ONNX with `optimum-cli export onnx` and open that folder';

/**
 * A whole pipeline saved as one file in diffusers naming (`unet.`, `text_encoder.`,
 * `text_encoder_2.`, `vae.` prefixes, as diffusers' state dicts of each component are named
 * inside a pipeline), with the family its key names show, or undefined.
 */
function diffusersPipelineFile(names: readonly string[]): string | undefined {
  const has = (re: RegExp): boolean => names.some((n) => re.test(n));
  if (!has(/^unet\.(conv_in|time_embedding|down_blocks|mid_block|up_blocks)\./)) return undefined;
  if (!has(/^(text_encoder|text_encoder_2|vae)\./)) return undefined;
  // SDXL has a second text encoder and the UNet's add_embedding (text_embeds + time_ids);
  // SD 2.x's OpenCLIP ViT-H in Hugging Face naming keeps 23 of its 24 layers, SD 1.x's CLIP 12.
  const textLayers = new Set(
    names.map((n) => /^text_encoder\.text_model\.encoder\.layers\.(\d+)\./.exec(n)?.[1]),
  );
  textLayers.delete(undefined);
  const family =
    has(/^text_encoder_2\./) || has(/^unet\.add_embedding\./)
      ? 'an SDXL'
      : textLayers.size >= 23
        ? 'an SD 2.x'
        : textLayers.size > 0
          ? 'an SD 1.x'
          : 'a Stable Diffusion';
  const parts = ['unet', 'text_encoder', 'text_encoder_2', 'vae'].filter((p) =>
    names.some((n) => n.startsWith(`${p}.`)),
  );
  const keys = parts.map((p) => `${p}.`).join(', ');
  return `${family} pipeline in diffusers naming saved as one file (${keys} keys; ${DIFFUSERS_ADVICE})`;
}

/** A sentence saying what a file that is not a full SD 1/2/XL checkpoint is, or undefined. */
export function describeOtherFile(names: readonly string[]): string | undefined {
  const has = (re: RegExp): boolean => names.some((n) => re.test(n));
  if (
    has(/lora_(up|down)\.weight$|\.lora_[AB]\.weight$|^lora_(unet|te\d?)_|\.hada_w1_a$|\.lokr_w1$/)
  ) {
    return 'a LoRA (small add-on weights that change a model; put it in the LoRA folder)';
  }
  if (
    has(/^(emb_params|string_to_param\.|string_to_token)/) ||
    (names.length <= 4 && has(/^clip_[lg]$/))
  ) {
    return 'a textual-inversion embedding (put it in the embeddings folder)';
  }
  if (has(/^vision_model\.vision_model\.encoder\.layers\./) && has(/^concept_embeds$/)) {
    return "Stable Diffusion's safety checker (choose it as the content filter's model in Settings)";
  }
  if (has(/(^|\.)joint_blocks\.\d+\./)) return 'a Stable Diffusion 3 model';
  if (has(/(^|\.)double_blocks\.\d+\./)) return 'a Flux model';
  if (has(/(^|\.)(clip_txt_mapper|effnet_mapper|clip_txt_pooled_mapper)\./)) {
    return 'a Stable Cascade model';
  }
  if (has(/(^|\.)(input_hint_block|controlnet_cond_embedding)\./) || has(/^control_model\./)) {
    return 'a ControlNet';
  }
  if (has(/\.time_stack\./) || has(/\.time_mixer\./)) return 'a Stable Video Diffusion model';
  if (has(/(^|\.)(x_embedder|t_embedder)\./) && has(/(^|\.)blocks\.\d+\./)) {
    return 'a diffusion transformer (DiT/PixArt-style) model';
  }
  if (!has(/^model\.diffusion_model\./)) {
    const pipeline = diffusersPipelineFile(names);
    if (pipeline) return pipeline;
    if (
      has(/^(first_stage_model\.)?encoder\.conv_in\.weight$/) &&
      has(/decoder\.conv_out\.weight$/)
    ) {
      return 'a VAE on its own (choose it as a replacement VAE with --vae)';
    }
    if (has(/^(encoder|decoder)\.(down|up)_blocks\./)) {
      return 'a VAE in diffusers naming (choose it as a replacement VAE with --vae)';
    }
    if (
      has(/^(down_blocks|up_blocks|mid_block)\.\d+\..*attentions/) ||
      has(/^time_embedding\.linear_1/)
    ) {
      return `a UNet in diffusers naming on its own (${DIFFUSERS_ADVICE})`;
    }
    if (has(/text_model\.encoder\.layers\./) || has(/^transformer\.resblocks\./)) {
      return 'a text encoder on its own';
    }
    return 'not a diffusion model we recognise (it has no model.diffusion_model.* weights)';
  }
  return undefined;
}

function shapeOf(shapes: Shapes, name: string): readonly number[] {
  const s = shapes.get(name);
  if (!s) throw new EngineError('model-unsupported', `The checkpoint has no ${name}.`);
  return s;
}

/** Indices N of `${prefix}N.` present in the file, sorted. */
function indices(shapes: Shapes, prefix: string): number[] {
  const found = new Set<number>();
  for (const name of shapes.keys()) {
    if (!name.startsWith(prefix)) continue;
    const n = Number.parseInt(name.slice(prefix.length), 10);
    if (Number.isInteger(n)) found.add(n);
  }
  return [...found].sort((a, b) => a - b);
}

function detectUnet(
  shapes: Shapes,
  family: CheckpointFamily,
  reasons: string[],
  UNET = 'model.diffusion_model.',
): UNetArchitecture {
  const convIn = shapeOf(shapes, `${UNET}input_blocks.0.0.weight`);
  const modelChannels = convIn[0]!;
  const inChannels = convIn[1]!;
  // A ControlNet has no output blocks: its "output" is the residuals, at the input's width.
  const outChannels = shapes.get(`${UNET}out.2.weight`)?.[0] ?? inChannels;
  const channelMult: number[] = [];
  const attentionLevels: boolean[] = [];
  const transformerDepth: number[] = [];
  let numResBlocks = 0;
  let inLevel = 0;
  let levelHasAttention = false;
  let levelDepth = 0;
  let levelChannels = 0;
  const closeLevel = (): void => {
    channelMult.push(levelChannels / modelChannels);
    attentionLevels.push(levelHasAttention);
    transformerDepth.push(levelDepth);
    if (channelMult.length === 1) numResBlocks = inLevel;
    inLevel = 0;
    levelHasAttention = false;
    levelDepth = 0;
  };
  for (const i of indices(shapes, `${UNET}input_blocks.`).filter((i) => i > 0)) {
    const block = `${UNET}input_blocks.${i}.`;
    if (shapes.has(`${block}0.op.weight`)) {
      closeLevel();
      continue;
    }
    inLevel++;
    levelChannels = shapeOf(shapes, `${block}0.out_layers.3.weight`)[0]!;
    if (shapes.has(`${block}1.proj_in.weight`)) {
      levelHasAttention = true;
      levelDepth = indices(shapes, `${block}1.transformer_blocks.`).length;
    }
  }
  closeLevel();
  const projIn = [...shapes].find(([n]) => /\.proj_in\.weight$/.test(n) && n.startsWith(UNET));
  const linearProjection = projIn !== undefined && projIn[1].length === 2;
  const toK = [...shapes].find(
    ([n]) => n.startsWith(UNET) && /transformer_blocks\.0\.attn2\.to_k\.weight$/.test(n),
  );
  if (!toK) throw new EngineError('model-unsupported', 'The UNet has no cross-attention layers.');
  const contextDim = toK[1][1]!;
  const labelEmb = shapes.get(`${UNET}label_emb.0.0.weight`);
  reasons.push(
    `UNet: ${inChannels} input channels, ${modelChannels} base channels x [${channelMult.join(', ')}], ` +
      `transformer depth [${transformerDepth.join(', ')}], ${linearProjection ? 'linear' : '1x1-conv'} proj_in/out, context ${contextDim}` +
      (labelEmb ? `, label_emb of width ${labelEmb[1]}` : ''),
  );
  return {
    inChannels,
    outChannels,
    modelChannels,
    channelMult,
    numResBlocks,
    attentionLevels,
    transformerDepth,
    // ldm configs: SD 1 fixes 8 heads; SD 2 and SDXL fix 64-wide heads (num_head_channels).
    numHeads: family === 'sd1' ? 8 : null,
    headChannels: family === 'sd1' ? null : 64,
    contextDim,
    linearProjection,
    admInChannels: labelEmb ? labelEmb[1]! : null,
  };
}

/** ldm's AutoencoderKL ddconfig, read back from the encoder/decoder shapes. */
export function detectVae(shapes: Shapes, prefix: string, scalingFactor: number): VaeArchitecture {
  const convIn = shapes.get(`${prefix}encoder.conv_in.weight`);
  if (!convIn) {
    // No VAE in the file: the SD default (a replacement VAE must then be given).
    return {
      inChannels: 3,
      outChannels: 3,
      ch: 128,
      chMult: [1, 2, 4, 4],
      numResBlocks: 2,
      zChannels: 4,
      embedDim: 4,
      scalingFactor,
    };
  }
  const ch = convIn[0]!;
  const levels = indices(shapes, `${prefix}encoder.down.`);
  const chMult = levels.map(
    (l) => shapeOf(shapes, `${prefix}encoder.down.${l}.block.0.conv2.weight`)[0]! / ch,
  );
  return {
    inChannels: convIn[1]!,
    outChannels: shapeOf(shapes, `${prefix}decoder.conv_out.weight`)[0]!,
    ch,
    chMult,
    numResBlocks: indices(shapes, `${prefix}encoder.down.0.block.`).length,
    zChannels: shapeOf(shapes, `${prefix}decoder.conv_in.weight`)[1]!,
    embedDim: shapeOf(shapes, `${prefix}post_quant_conv.weight`)[1]!,
    scalingFactor,
  };
}

function hfEncoder(shapes: Shapes, prefix: string): TextEncoderArchitecture {
  const token = shapeOf(shapes, `${prefix}embeddings.token_embedding.weight`);
  const width = token[1]!;
  return {
    naming: 'hf',
    prefix,
    width,
    layers: indices(shapes, `${prefix}encoder.layers.`).length,
    heads: width / 64,
    vocabSize: token[0]!,
    maxPositions: shapeOf(shapes, `${prefix}embeddings.position_embedding.weight`)[0]!,
    // CLIP ViT-L/14 (openai) uses QuickGELU.
    activation: 'quick_gelu',
    projectionDim: null,
  };
}

function openClipEncoder(shapes: Shapes, prefix: string, pooled: boolean): TextEncoderArchitecture {
  const token = shapeOf(shapes, `${prefix}token_embedding.weight`);
  const width = token[1]!;
  return {
    naming: 'openclip',
    prefix,
    width,
    layers: indices(shapes, `${prefix}transformer.resblocks.`).length,
    heads: width / 64,
    vocabSize: token[0]!,
    maxPositions: shapeOf(shapes, `${prefix}positional_embedding`)[0]!,
    // OpenCLIP ViT-H/14 and ViT-bigG/14 use exact GELU.
    activation: 'gelu',
    projectionDim: pooled ? shapeOf(shapes, `${prefix}text_projection`)[1]! : null,
  };
}

/** The HF CLIP prefix under `base` (`...transformer.text_model.` or `...transformer.`). */
function hfPrefix(shapes: Shapes, base: string): string | undefined {
  for (const prefix of [`${base}text_model.`, base]) {
    if (shapes.has(`${prefix}embeddings.token_embedding.weight`)) return prefix;
  }
  return undefined;
}

function predictionFromHints(
  names: ReadonlySet<string>,
  hints: CheckpointHints,
  reasons: string[],
): 'epsilon' | 'v_prediction' | undefined {
  if (names.has('v_pred')) {
    reasons.push('a v_pred marker tensor says v-prediction');
    return 'v_prediction';
  }
  const declared = hints.metadata?.['modelspec.prediction_type'];
  if (declared === 'v' || declared === 'v_prediction' || declared === 'epsilon') {
    reasons.push(`the file's metadata declares prediction type ${declared}`);
    return declared === 'epsilon' ? 'epsilon' : 'v_prediction';
  }
  return undefined;
}

/**
 * Decides what `tensors` (one checkpoint's listing) hold. Throws `model-unsupported` with one
 * sentence saying what the file is when it is not an SD 1.x, 2.x or SDXL base checkpoint.
 */
export function detectArchitecture(
  tensors: readonly TensorInfo[],
  file: string,
  hints: CheckpointHints = {},
): CheckpointArchitecture {
  const shapes: Shapes = new Map(tensors.map((t) => [t.name, t.shape]));
  const names = new Set(shapes.keys());
  const other = describeOtherFile([...names]);
  if (other) throw notAModel(file, other);
  const reasons: string[] = [];

  let family: CheckpointFamily;
  const textEncoders: TextEncoderArchitecture[] = [];
  const sdxlClip = hfPrefix(shapes, 'conditioner.embedders.0.transformer.');
  const sd1Clip = hfPrefix(shapes, 'cond_stage_model.transformer.');
  if (shapes.has('conditioner.embedders.1.model.token_embedding.weight') && sdxlClip) {
    family = 'sdxl';
    textEncoders.push(hfEncoder(shapes, sdxlClip));
    textEncoders.push(openClipEncoder(shapes, 'conditioner.embedders.1.model.', true));
    reasons.push(
      'conditioner.embedders.0 (CLIP ViT-L) and conditioner.embedders.1 (OpenCLIP) text encoders: SDXL',
    );
  } else if (shapes.has('conditioner.embedders.0.model.token_embedding.weight')) {
    throw notAModel(
      file,
      'the SDXL refiner (it has only the OpenCLIP bigG text encoder), which the converter does not handle yet',
    );
  } else if (shapes.has('cond_stage_model.model.token_embedding.weight')) {
    family = 'sd2';
    textEncoders.push(openClipEncoder(shapes, 'cond_stage_model.model.', false));
    reasons.push('cond_stage_model.model.* (OpenCLIP ViT-H) text encoder: SD 2.x');
  } else if (sd1Clip) {
    family = 'sd1';
    textEncoders.push(hfEncoder(shapes, sd1Clip));
    reasons.push(
      `cond_stage_model.transformer.* (CLIP ViT-L, Hugging Face naming${sd1Clip.endsWith('text_model.') ? '' : ' without text_model.'}) text encoder: SD 1.x`,
    );
  } else {
    throw notAModel(
      file,
      'a diffusion UNet without a text encoder we recognise (no cond_stage_model or conditioner weights)',
    );
  }

  const unet = detectUnet(shapes, family, reasons);
  if (unet.inChannels !== 4 && unet.inChannels !== 9) {
    const what =
      unet.inChannels === 7
        ? 'the x4 upscaler'
        : unet.inChannels === 5
          ? 'a depth-conditioned model'
          : unet.inChannels === 8
            ? 'an InstructPix2Pix model'
            : `a UNet with ${unet.inChannels} input channels`;
    throw notAModel(file, what);
  }
  const inpainting = unet.inChannels === 9;
  if (inpainting) reasons.push('9 UNet input channels: an inpainting model');
  const expectedContext = { sd1: 768, sd2: 1024, sdxl: 2048 }[family];
  if (unet.contextDim !== expectedContext) {
    throw notAModel(
      file,
      `a ${family} text encoder with a UNet of context width ${unet.contextDim} (expected ${expectedContext})`,
    );
  }
  if (family === 'sdxl' && unet.admInChannels !== 2816) {
    throw notAModel(
      file,
      `an SDXL-like model whose label_emb width is ${unet.admInChannels ?? 'missing'} (SDXL base has 2816)`,
    );
  }
  if (family !== 'sdxl' && unet.linearProjection !== (family === 'sd2')) {
    reasons.push(
      `proj_in/out are ${unet.linearProjection ? 'linear' : '1x1 convolutions'}, unusual for ${family}`,
    );
  }

  let prediction: 'epsilon' | 'v_prediction' | null = 'epsilon';
  let sampleSize = family === 'sdxl' ? 1024 : 512;
  const declared = predictionFromHints(names, hints, reasons);
  if (declared) prediction = declared;
  else if (family === 'sd2' && !inpainting) {
    // diffusers (single_file_utils / convert_from_ckpt): epsilon only for global_step 875000.
    if (hints.globalStep !== undefined) {
      prediction = hints.globalStep === 875000 ? 'epsilon' : 'v_prediction';
      reasons.push(`global_step ${hints.globalStep}: ${prediction} (as diffusers decides)`);
    } else {
      prediction = null;
      reasons.push(
        'SD 2.x without a global_step: epsilon (512) or v-prediction (768) must be chosen',
      );
    }
  }
  if (family === 'sd2' && prediction !== 'epsilon') sampleSize = 768;

  const hasVae = names.has(`${VAE}encoder.conv_in.weight`);
  if (!hasVae) reasons.push('no VAE in the file: a replacement VAE is needed');
  const vae = detectVae(shapes, VAE, family === 'sdxl' ? 0.13025 : 0.18215);
  return {
    family,
    inpainting,
    prediction,
    sampleSize,
    unetPrefix: UNET,
    vaePrefix: VAE,
    unet,
    vae,
    textEncoders,
    reasons,
  };
}

const SAFETY = 'vision_model.vision_model.';

/**
 * The architecture of Stable Diffusion's safety checker (diffusers'
 * StableDiffusionSafetyChecker: `vision_model.vision_model.*`, `visual_projection.weight`,
 * `concept_embeds`, `special_care_embeds` and their `*_weights`), or undefined for any other
 * file. Heads are not stored: CLIP's vision towers use 64-wide heads (ViT-L/14: 16 of them).
 */
export function detectSafetyChecker(
  tensors: readonly TensorInfo[],
): SafetyCheckerArchitecture | undefined {
  const shapes: Shapes = new Map(tensors.map((t) => [t.name, t.shape]));
  if (!shapes.has('concept_embeds') || !shapes.has(`${SAFETY}embeddings.patch_embedding.weight`)) {
    return undefined;
  }
  const [width, , patch] = shapeOf(shapes, `${SAFETY}embeddings.patch_embedding.weight`);
  const [positions] = shapeOf(shapes, `${SAFETY}embeddings.position_embedding.weight`);
  const [projectionDim] = shapeOf(shapes, 'visual_projection.weight');
  const grid = Math.round(Math.sqrt(positions - 1));
  if (grid * grid + 1 !== positions || width % 64 !== 0) {
    throw new EngineError(
      'model-unsupported',
      `This safety checker has ${positions} positions at width ${width}, which is not a CLIP vision tower the converter knows.`,
    );
  }
  return {
    prefix: SAFETY,
    width,
    layers: indices(shapes, `${SAFETY}encoder.layers.`).length,
    heads: width / 64,
    patch,
    imageSize: grid * patch,
    projectionDim,
    concepts: shapeOf(shapes, 'concept_embeds')[0],
    specialConcepts: shapeOf(shapes, 'special_care_embeds')[0],
  };
}

/** The family a UNet's context width (and SDXL's label_emb) implies, or undefined. */
function familyOfContext(contextDim: number, adm: number | null): CheckpointFamily | undefined {
  if (contextDim === 768 && adm === null) return 'sd1';
  if (contextDim === 1024 && adm === null) return 'sd2';
  if (contextDim === 2048 && adm === 2816) return 'sdxl';
  return undefined;
}

/**
 * Recognises a ControlNet file: lllyasviel/ControlNet's ldm naming (`input_hint_block`,
 * `zero_convs`, `middle_block_out`, under `control_model.` or no prefix) or diffusers' naming
 * (`controlnet_cond_embedding`, `controlnet_down_blocks`; read under the ldm names, see
 * readers/diffusers-controlnet.ts, which the converter reads through as well). Anything else
 * throws `model-unsupported` with one sentence saying why. A context width outside SD 1/2/XL
 * (small test models) is accepted, with the family read from the projection and label_emb.
 */
export function detectControlNet(
  tensors: readonly TensorInfo[],
  file: string,
): ControlNetArchitecture {
  const diffusers = isDiffusersControlNet(tensors.map((t) => t.name));
  if (diffusers) {
    const toLdm = ldmControlNetNames(tensors.map((t) => t.name));
    tensors = tensors.map((t) => ({ ...t, name: toLdm.get(t.name)! }));
  }
  const shapes: Shapes = new Map(tensors.map((t) => [t.name, t.shape]));
  const names = [...shapes.keys()];
  const notControlNet = (what: string): EngineError =>
    new EngineError('model-unsupported', `${file} is ${what}, not a ControlNet that can be used.`, {
      file,
    });
  const prefix = shapes.has('control_model.input_hint_block.0.weight')
    ? 'control_model.'
    : shapes.has('input_hint_block.0.weight')
      ? ''
      : undefined;
  if (prefix === undefined) {
    throw notControlNet(describeOtherFile(names) ?? 'a Stable Diffusion model or other weights');
  }
  const reasons = [
    diffusers
      ? 'controlnet_cond_embedding.*, controlnet_down_blocks.*: a ControlNet in diffusers naming'
      : `${prefix}input_hint_block.*, zero_convs.*, middle_block_out.*: a ControlNet`,
  ];
  const toK = names.find(
    (n) => n.startsWith(prefix) && /transformer_blocks\.0\.attn2\.to_k\.weight$/.test(n),
  );
  if (!toK) throw notControlNet('a ControlNet without cross-attention layers');
  const contextDim = shapes.get(toK)![1]!;
  const adm = shapes.get(`${prefix}label_emb.0.0.weight`)?.[1] ?? null;
  const projIn = names.find((n) => n.startsWith(prefix) && /\.proj_in\.weight$/.test(n));
  const linear = projIn !== undefined && shapes.get(projIn)!.length === 2;
  // Real files: the context width decides; small test models: the projection and label_emb do.
  const family =
    familyOfContext(contextDim, adm) ?? (adm !== null ? 'sdxl' : linear ? 'sd2' : 'sd1');
  reasons.push(`context ${contextDim}${adm !== null ? `, label_emb ${adm}` : ''}: ${family}`);
  const unet = detectUnet(shapes, family, reasons, prefix);
  const hintChannels: number[] = [];
  for (let j = 0; shapes.has(`${prefix}input_hint_block.${2 * j}.weight`); j++) {
    hintChannels.push(shapes.get(`${prefix}input_hint_block.${2 * j}.weight`)![0]!);
  }
  if (hintChannels[hintChannels.length - 1] !== unet.modelChannels) {
    throw notControlNet(
      `a ControlNet whose hint block ends at ${hintChannels[hintChannels.length - 1]} channels where its UNet starts at ${unet.modelChannels}`,
    );
  }
  for (let i = 0; i < indices(shapes, `${prefix}input_blocks.`).length; i++) {
    if (!shapes.has(`${prefix}zero_convs.${i}.0.weight`)) {
      throw notControlNet(`a ControlNet without zero_convs.${i} (a T2I-Adapter or a damaged file)`);
    }
  }
  return {
    family,
    prefix,
    unet,
    hintInChannels: shapes.get(`${prefix}input_hint_block.0.weight`)![1]!,
    hintChannels,
    reasons,
  };
}
