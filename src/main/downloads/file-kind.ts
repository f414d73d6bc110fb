/**
 * What a downloaded single file is, from its header (never its name alone): a checkpoint for
 * the checkpoint import, or a LoRA, VAE, embedding or ControlNet for its folder in Settings. The tensor
 * names are the ones the engine's readers and the converter's detection go by
 * (engine/convert/detect.ts describeOtherFile; adapters/header.ts for LoRAs and embeddings).
 */
import path from 'node:path';
import { describeOtherFile } from '../../engine/convert/detect';
import { type FileHeader, HeaderError, embeddingShape, readFileHeader } from '../adapters/header';

export type DownloadedFileKind = 'checkpoint' | 'lora' | 'vae' | 'embedding' | 'controlnet';

export type FileKindResult =
  | { kind: DownloadedFileKind }
  /** `problem`: one sentence saying what the file is instead. */
  | { kind: null; problem: string };

const wanted = 'not a checkpoint, LoRA, VAE, embedding or ControlNet, so the studio cannot use it';

const loraKey =
  /lora_(up|down)\.weight$|\.lora_[AB]\.weight$|^lora_(unet|te\d?)_|\.hada_w1_a$|\.lokr_w1$/;
const embeddingKey = /^(emb_params|string_to_param\.|string_to_token)/;
// ldm naming (with or without `control_model.`) and diffusers' ControlNetModel naming.
const controlNetKey = /^(control_model\.)?input_hint_block\.|^controlnet_cond_embedding\./;

/** The kind of file `header` describes; `name` is the file's, for the sentence. */
export function fileKindOf(header: FileHeader, name: string): FileKindResult {
  const names = [...header.tensors.keys()];
  const has = (re: RegExp): boolean => names.some((n) => re.test(n));
  if (names.length === 0)
    return { kind: null, problem: `${name} holds no tensors; it is ${wanted}.` };
  if (has(/^model\.diffusion_model\./)) return { kind: 'checkpoint' };
  if (has(loraKey)) return { kind: 'lora' };
  if (has(controlNetKey)) return { kind: 'controlnet' };
  if (
    has(embeddingKey) ||
    (header.tensors.has('clip_l') && header.tensors.has('clip_g') && names.length <= 4)
  )
    return { kind: 'embedding' };
  // diffusers' learned_embeds.bin: one {token: [vectors, width]} of a known text width.
  const one = embeddingShape(header);
  if (names.length === 1 && one?.family) return { kind: 'embedding' };
  if (
    (has(/^(first_stage_model\.)?encoder\.conv_in\.weight$/) &&
      has(/^(first_stage_model\.)?decoder\.conv_out\.weight$/)) ||
    (has(/^encoder\.down_blocks\./) && has(/^decoder\.up_blocks\./))
  )
    return { kind: 'vae' };
  const what = describeOtherFile(names)?.replace(/ \((choose|put)[^)]*\)$/, '');
  return { kind: null, problem: `${name} is ${what ? `${what}, ` : ''}${wanted}.` };
}

/** Reads `file`'s header and says what it is; a file that is neither format says so. */
export async function detectFileKind(file: string): Promise<FileKindResult> {
  const name = path.basename(file);
  try {
    return fileKindOf(await readFileHeader(file), name);
  } catch (err) {
    if (err instanceof HeaderError)
      return { kind: null, problem: `${name} cannot be used: ${err.message}.` };
    throw err;
  }
}
