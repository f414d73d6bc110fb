/**
 * Reading textual-inversion embeddings (Gal et al. 2022, "An Image is Worth One Word") from the
 * files people share, with the layouts AUTOMATIC1111's stable-diffusion-webui accepts
 * (modules/textual_inversion/textual_inversion.py, `create_embedding_from_data`):
 *
 * - A1111 `.pt` (torch.save zip): `string_to_param` = {'*': tensor [n, dim]}, beside `name`,
 *   `step`, `string_to_token`, `sd_checkpoint`...; exactly one term.
 * - diffusers textual_inversion `.bin` (torch.save zip): {token: tensor [dim] or [n, dim]}.
 * - `.safetensors`: `emb_params` [n, dim] (kohya), one tensor of any name, or SDXL's pair
 *   `clip_l` [n, 768] + `clip_g` [n, 1280].
 *
 * Element types fp32, fp16 and bf16 (any type the readers widen). The torch pickle goes through
 * the converter's restricted reader (convert/readers/pickle.ts): a pickle that names any global
 * outside its allow-list is refused before anything of it runs.
 */
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import { SafetensorsSource } from '../convert/readers/safetensors';
import { DTYPE_BYTES, elementCount, toFloat32 } from '../convert/readers/dtype';
import { PickleRefused, readPickle, type TensorRef } from '../convert/readers/pickle';
import { readZipDirectory, readZipEntry, type ZipEntry } from '../convert/readers/zip';

/** `rows` vectors of `width` floats, row-major. */
export interface EmbeddingVectors {
  rows: number;
  width: number;
  data: Float32Array;
}

/** An embedding file's vectors: one block (SD 1.x / 2.x) or SDXL's pair. */
export interface EmbeddingFile {
  path: string;
  /** SHA-256 of the file's bytes, lower-case hex (A1111's `TI hashes:` takes its first 12). */
  sha256: string;
  /** How many tokens it stands for in a prompt. */
  vectors: number;
  /** SD 1.x / 2.x: one block for the single text encoder. */
  single: EmbeddingVectors | null;
  /** SDXL: rows for text_encoder (CLIP ViT-L) and text_encoder_2 (OpenCLIP ViT-bigG). */
  clipL: EmbeddingVectors | null;
  clipG: EmbeddingVectors | null;
}

/** A prompt chunk holds 75 tokens, and an embedding is never split across chunks. */
export const MAX_EMBEDDING_VECTORS = 75;
/** The largest vectors file people share is a few MB; anything far larger is not an embedding. */
const MAX_FILE_BYTES = 64 * 1024 * 1024;

function unreadable(file: string, why: string): EngineError {
  return new EngineError('bad-input', `Embedding ${path.basename(file)} ${why}`, { file });
}

/** Reads, checks and hashes one embedding file; every failure is one sentence naming it. */
export async function readEmbeddingFile(file: string): Promise<EmbeddingFile> {
  let bytes: Buffer;
  try {
    const info = await stat(file);
    if (!info.isFile()) throw unreadable(file, 'is not a regular file.');
    if (info.size > MAX_FILE_BYTES)
      throw unreadable(file, `is ${info.size} bytes, too large to be an embedding.`);
    const handle = await open(file, 'r');
    try {
      bytes = await handle.readFile();
    } finally {
      await handle.close();
    }
  } catch (e) {
    if (e instanceof EngineError) throw e;
    throw new EngineError('bad-input', `Cannot read embedding ${file}: ${(e as Error).message}.`, {
      file,
      cause: e,
    });
  }
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  let blocks: Map<string, EmbeddingVectors>;
  try {
    if (bytes.length >= 4 && bytes.readUInt32LE(0) === 0x04034b50) blocks = await readTorch(file);
    else if (bytes.length >= 9 && bytes[8] === 0x7b /* '{' */) blocks = await readSafetensors(file);
    else if (bytes.length >= 2 && bytes[0] === 0x80 && bytes[1]! <= 5)
      throw unreadable(
        file,
        'is a PyTorch file in the pre-1.6 format; re-save it with a current torch or as .safetensors.',
      );
    else throw unreadable(file, 'is neither a PyTorch .pt/.bin file nor a .safetensors file.');
  } catch (e) {
    if (e instanceof EngineError && e.code !== 'bad-input') {
      // The readers' sentences start with the file name; say it is an embedding that failed.
      throw new EngineError('bad-input', `Embedding ${e.message}`, { file, cause: e });
    }
    throw e;
  }
  const clipL = blocks.get('clip_l') ?? null;
  const clipG = blocks.get('clip_g') ?? null;
  const single = blocks.get('') ?? null;
  const parts = [single, clipL, clipG].filter((p): p is EmbeddingVectors => p !== null);
  const vectors = parts[0]!.rows;
  if (parts.some((p) => p.rows !== vectors))
    throw unreadable(
      file,
      `has ${clipL?.rows} clip_l and ${clipG?.rows} clip_g vectors; SDXL embeddings need as many of each.`,
    );
  if (vectors < 1 || vectors > MAX_EMBEDDING_VECTORS)
    throw unreadable(
      file,
      `has ${vectors} vectors; an embedding must have between 1 and ${MAX_EMBEDDING_VECTORS} (one prompt chunk).`,
    );
  for (const p of parts)
    if (p.data.some((v) => !Number.isFinite(v)))
      throw unreadable(file, 'holds NaN or infinite values.');
  return { path: file, sha256, vectors, single, clipL, clipG };
}

/** Shape [dim] is one vector; [n, dim] is n vectors. */
function asVectors(file: string, name: string, shape: readonly number[], data: Float32Array) {
  if (shape.length === 1) return { rows: 1, width: shape[0]!, data };
  if (shape.length === 2) return { rows: shape[0]!, width: shape[1]!, data };
  throw unreadable(file, `has a ${shape.length}-dimensional tensor ${name}; vectors are [n, dim].`);
}

/** Which tensors of a file are the embedding: '' = a single block, or clip_l + clip_g. */
function pickTensors(file: string, names: readonly string[]): Map<string, string> {
  if (names.includes('clip_l') && names.includes('clip_g'))
    return new Map([
      ['clip_l', 'clip_l'],
      ['clip_g', 'clip_g'],
    ]);
  if (names.includes('emb_params')) return new Map([['', 'emb_params']]);
  if (names.length === 1) return new Map([['', names[0]!]]);
  if (names.length === 0) throw unreadable(file, 'holds no tensor.');
  throw unreadable(
    file,
    `holds ${names.length} tensors (${names.slice(0, 4).join(', ')}); an embedding file holds one term.`,
  );
}

async function readSafetensors(file: string): Promise<Map<string, EmbeddingVectors>> {
  const source = await SafetensorsSource.open(file);
  try {
    const chosen = pickTensors(
      file,
      source.list().map((t) => t.name),
    );
    const out = new Map<string, EmbeddingVectors>();
    for (const [role, name] of chosen) {
      const info = source.info(name)!;
      out.set(role, asVectors(file, name, info.shape, await source.readFloat32(name)));
    }
    return out;
  } finally {
    await source.close();
  }
}

async function readTorch(file: string): Promise<Map<string, EmbeddingVectors>> {
  const handle = await open(file, 'r');
  try {
    const entries = await readZipDirectory(handle, file);
    const pkl = entries.find((e) => e.name.endsWith('data.pkl') && e.name.split('/').length === 2);
    if (!pkl) throw unreadable(file, 'is a zip file but not a PyTorch file (no data.pkl).');
    const root = pkl.name.slice(0, pkl.name.length - 'data.pkl'.length);
    let object: unknown;
    try {
      object = readPickle(await readZipEntry(handle, file, pkl));
    } catch (e) {
      if (e instanceof PickleRefused)
        throw new EngineError(
          'bad-input',
          `Embedding ${path.basename(file)} was refused because ${e.message}; only plain vectors are read from embeddings.`,
          { file, cause: e },
        );
      throw e;
    }
    if (!(object instanceof Map)) throw unreadable(file, 'holds no dictionary of vectors.');
    // A1111's own files keep the vectors under string_to_param; diffusers' are {token: tensor}.
    const params = object.get('string_to_param');
    const dict = params instanceof Map ? params : object;
    const tensors = new Map<string, TensorRef>();
    for (const [key, value] of dict) {
      const ref = value as TensorRef | null;
      if (typeof key === 'string' && ref?.kind === 'tensor') tensors.set(key, ref);
    }
    if (params instanceof Map && tensors.size > 1)
      throw unreadable(file, `holds ${tensors.size} terms; an embedding file holds one.`);
    const byEntry = new Map(entries.map((e) => [e.name, e]));
    const out = new Map<string, EmbeddingVectors>();
    for (const [role, name] of pickTensors(file, [...tensors.keys()])) {
      const ref = tensors.get(name)!;
      const entry = byEntry.get(`${root}data/${ref.storage.key}`);
      if (!entry) throw unreadable(file, `is missing the storage of tensor ${name}.`);
      const data = await readStorage(handle, file, entry, ref, name);
      out.set(role, asVectors(file, name, ref.shape, data));
    }
    return out;
  } finally {
    await handle.close();
  }
}

/** A contiguous tensor's values from its (small) storage entry. */
async function readStorage(
  handle: Parameters<typeof readZipEntry>[0],
  file: string,
  entry: ZipEntry,
  ref: TensorRef,
  name: string,
): Promise<Float32Array> {
  let expected = 1;
  for (let d = ref.shape.length - 1; d >= 0; d--) {
    if (ref.shape[d]! !== 1 && ref.stride[d]! !== expected)
      throw unreadable(file, `stores tensor ${name} as a strided view; save it contiguous.`);
    expected *= ref.shape[d]!;
  }
  const itemBytes = DTYPE_BYTES[ref.storage.dtype];
  const count = elementCount(ref.shape);
  const start = ref.storageOffset * itemBytes;
  const storage = await readZipEntry(handle, file, entry);
  if (start + count * itemBytes > storage.length)
    throw unreadable(file, `has tensor ${name} reaching past the end of its storage.`);
  return toFloat32(storage.subarray(start, start + count * itemBytes), ref.storage.dtype, count);
}
