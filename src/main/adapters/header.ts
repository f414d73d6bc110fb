/**
 * What a LoRA or embedding file says about itself without reading its weights: the safetensors
 * header (8-byte little-endian length, then JSON), or the pickle of a torch.save zip read by the
 * engine's restricted reader (engine/convert/readers: no code from the file ever runs).
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { PickleRefused, readPickle, type TensorRef } from '../../engine/convert/readers/pickle';
import { readZipDirectory, readZipEntry } from '../../engine/convert/readers/zip';
import type { NetworkFamily } from '../../shared';

/** The safetensors format caps its header at 100 MB (huggingface/safetensors, lib.rs). */
const MAX_HEADER_BYTES = 100_000_000;

export interface TensorShape {
  dtype: string;
  shape: number[];
}

export interface FileHeader {
  tensors: Map<string, TensorShape>;
  /** safetensors `__metadata__` (kohya's `ss_*`, `sshs_model_hash`); empty for torch files. */
  metadata: Record<string, string>;
  /** safetensors: where the tensor data starts (A1111's LoRA hash covers only the bytes after). */
  dataOffset: number | null;
}

/** A file whose header cannot be read; the message is one sentence for the list. */
export class HeaderError extends Error {}

export async function readSafetensorsHeader(file: string): Promise<FileHeader> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    const prefix = Buffer.alloc(8);
    if (size < 8 || (await handle.read(prefix, 0, 8, 0)).bytesRead < 8)
      throw new HeaderError('it is too short to be a .safetensors file');
    const length = Number(prefix.readBigUInt64LE(0));
    if (length < 2 || length > MAX_HEADER_BYTES || 8 + length > size)
      throw new HeaderError('its safetensors header length does not fit the file');
    const json = Buffer.alloc(length);
    await handle.read(json, 0, length, 8);
    let parsed: unknown;
    try {
      parsed = JSON.parse(json.toString('utf8'));
    } catch {
      throw new HeaderError('its safetensors header is not valid JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed))
      throw new HeaderError('its safetensors header is not an object');
    const tensors = new Map<string, TensorShape>();
    let metadata: Record<string, string> = {};
    for (const [name, value] of Object.entries(parsed as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof value === 'object' && value !== null)
          metadata = Object.fromEntries(
            Object.entries(value as Record<string, unknown>).filter(
              (e): e is [string, string] => typeof e[1] === 'string',
            ),
          );
        continue;
      }
      const v = value as { dtype?: unknown; shape?: unknown };
      if (typeof v?.dtype === 'string' && Array.isArray(v.shape))
        tensors.set(name, { dtype: v.dtype, shape: v.shape.map(Number) });
    }
    return { tensors, metadata, dataOffset: 8 + length };
  } finally {
    await handle.close();
  }
}

function isTensor(value: unknown): value is TensorRef {
  return (value as TensorRef | null)?.kind === 'tensor';
}

/** The tensors of a torch.save zip, by dotted path through nested dicts (`string_to_param.*`). */
async function readTorchHeader(file: string): Promise<FileHeader> {
  const handle = await open(file, 'r');
  try {
    const entries = await readZipDirectory(handle, file);
    const pkl = entries.find((e) => e.name.endsWith('data.pkl') && e.name.split('/').length === 2);
    if (!pkl) throw new HeaderError('it is a zip file but not a PyTorch file (no data.pkl)');
    let root: unknown;
    try {
      root = readPickle(await readZipEntry(handle, file, pkl));
    } catch (err) {
      if (err instanceof PickleRefused)
        throw new HeaderError(`it was refused because ${err.message}`);
      throw err;
    }
    const tensors = new Map<string, TensorShape>();
    const walk = (value: unknown, prefix: string, depth: number) => {
      if (isTensor(value)) tensors.set(prefix, { dtype: value.storage.dtype, shape: value.shape });
      else if (value instanceof Map && depth < 4)
        for (const [k, v] of value)
          if (typeof k === 'string') walk(v, prefix ? `${prefix}.${k}` : k, depth + 1);
    };
    walk(root, '', 0);
    return { tensors, metadata: {}, dataOffset: null };
  } finally {
    await handle.close();
  }
}

/**
 * The header of a .safetensors file or a torch.save zip (.pt, .ckpt, .bin), by what the file
 * starts with. Throws HeaderError with a sentence when it is neither or cannot be read.
 */
export async function readFileHeader(file: string): Promise<FileHeader> {
  const handle = await open(file, 'r');
  let head: Buffer;
  try {
    head = Buffer.alloc(9);
    head = head.subarray(0, (await handle.read(head, 0, 9, 0)).bytesRead);
  } finally {
    await handle.close();
  }
  try {
    if (head.length >= 4 && head.readUInt32LE(0) === 0x04034b50) return await readTorchHeader(file);
    if (head.length === 9 && head[8] === 0x7b /* '{' */) return await readSafetensorsHeader(file);
  } catch (err) {
    if (err instanceof HeaderError) throw err;
    throw new HeaderError(`it could not be read (${(err as Error).message.replace(/\.$/, '')})`);
  }
  if (head.length >= 2 && head[0] === 0x80)
    throw new HeaderError('it is a PyTorch file in the pre-1.6 format, which is not read');
  throw new HeaderError(
    `it is neither a .safetensors file nor a PyTorch file (${path.extname(file) || 'no extension'})`,
  );
}

const CONTEXT_FAMILY: Record<number, NetworkFamily> = { 768: 'sd1', 1024: 'sd2', 2048: 'sdxl' };

/**
 * The family a LoRA is for. kohya's metadata first, as A1111 reads it (network.py
 * detect_version: `ss_base_model_version` starting `sdxl_`, `ss_v2` = "True"); then the keys:
 * SDXL LoRAs name two text encoders (`lora_te1_`/`lora_te2_`, diffusers `text_encoder_2.`);
 * otherwise the width of the cross-attention's key projection input is the text encoder's
 * width: 768 (CLIP ViT-L, SD 1.x), 1024 (OpenCLIP ViT-H, SD 2.x), 2048 (SDXL's two, joined).
 */
export function loraFamily(header: FileHeader): NetworkFamily | null {
  const meta = header.metadata;
  if (String(meta.ss_base_model_version ?? '').startsWith('sdxl_')) return 'sdxl';
  if (meta.ss_v2 === 'True') return 'sd2';
  const names = [...header.tensors.keys()];
  if (names.some((n) => /^(lora_te[12]_|text_encoder_2\.|te2\.)/.test(n))) return 'sdxl';
  for (const [name, t] of header.tensors) {
    // kohya `..._attn2_to_k.lora_down.weight` [rank, in]; PEFT `...attn2.to_k.lora_A.weight`.
    if (!/attn2[._]to_k[._].*(lora_down|lora_A|down)\.weight$/.test(name)) continue;
    const width = t.shape.length >= 2 ? t.shape[1] : undefined;
    if (width !== undefined && CONTEXT_FAMILY[width]) return CONTEXT_FAMILY[width];
  }
  for (const [name, t] of header.tensors) {
    // Text-encoder-only LoRAs: the width of a q projection's input.
    if (!/^lora_te_.*q_proj\.lora_down\.weight$/.test(name)) continue;
    if (t.shape[1] === 768) return 'sd1';
    if (t.shape[1] === 1024) return 'sd2';
  }
  return null;
}

export interface EmbeddingShape {
  vectors: number;
  family: NetworkFamily | null;
}

/**
 * Vectors of an embedding, from the layouts A1111 reads (textual_inversion.py
 * load_from_file): `string_to_param` (its own .pt files), `emb_params` (safetensors), SDXL's
 * `clip_l`/`clip_g` pair, or a single tensor (diffusers' learned_embeds.bin: `{token: tensor}`).
 * A 1-D tensor is one vector. Null when none of these is there.
 */
export function embeddingShape(header: FileHeader): EmbeddingShape | null {
  const t = header.tensors;
  const rows = (s: TensorShape) => (s.shape.length >= 2 ? s.shape[0] : 1);
  const width = (s: TensorShape) => s.shape[s.shape.length - 1];
  const family = (w: number | undefined): NetworkFamily | null =>
    w === 768 ? 'sd1' : w === 1024 ? 'sd2' : null;
  const clipL = t.get('clip_l');
  if (clipL && t.has('clip_g')) return { vectors: rows(clipL), family: 'sdxl' };
  const fromParam = [...t.entries()].find(([k]) => k.startsWith('string_to_param.'));
  const chosen =
    fromParam?.[1] ?? t.get('emb_params') ?? (t.size === 1 ? [...t.values()][0] : null);
  if (!chosen) return null;
  return { vectors: rows(chosen), family: family(width(chosen)) };
}
