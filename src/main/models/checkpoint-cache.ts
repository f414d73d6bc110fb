/**
 * Single-file checkpoints used as models: each is converted once (engine/convert) into the data
 * folder's cache, keyed by the file's sha256 (and the precision and replacement VAE), and the
 * converted folder is reused afterwards. The same hash gives A1111's short model hash (its first
 * 10 hex digits) for the infotext's `Model hash:`.
 */
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rmdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import {
  CONVERSION_RECORD,
  type ConversionRecord,
  type ConvertProgress,
  convertCheckpoint,
} from '../../engine/convert/convert';
import {
  CONTROLNET_RECORD,
  type ControlNetConversionRecord,
  controlNetModelFile,
  convertControlNet,
} from '../../engine/convert/convert-controlnet';
import { VAE_RECORD, type VaeConversionRecord, convertVae } from '../../engine/convert/convert-vae';
import {
  SAFETY_MODEL,
  SAFETY_RECORD,
  type SafetyConversionRecord,
  convertSafetyChecker,
} from '../../engine/convert/convert-safety';
import { convertTaesd } from '../../engine/convert/convert-taesd';
import {
  convertCheckpointInWorker,
  convertControlNetInWorker,
  convertSafetyCheckerInWorker,
  convertVaeInWorker,
} from '../../engine/convert/in-worker';
import { EngineError } from '../../engine/errors';
import { checkpointFileExtensions, isCheckpointFileName } from '../../shared';

/** File name endings taken as single-file checkpoints rather than model folders. */
export const CHECKPOINT_EXTENSIONS: readonly string[] = checkpointFileExtensions;

export function isCheckpointFile(file: string): boolean {
  return isCheckpointFileName(path.basename(file));
}

/** sha256 of a file, streamed; `onBytes` gets the bytes hashed so far. */
export async function sha256File(
  file: string,
  opts: { signal?: AbortSignal; onBytes?: (done: number) => void } = {},
): Promise<string> {
  const hash = createHash('sha256');
  let done = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 4 << 20 })) {
    if (opts.signal?.aborted) throw new EngineError('cancelled', 'The conversion was cancelled.');
    hash.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    opts.onBytes?.(done);
  }
  return hash.digest('hex');
}

/** A1111's short model hash: the first 10 hex digits of the file's sha256. */
export const shortHash = (sha256: string): string => sha256.slice(0, 10);

/** In the data folder, beside converted/ (whose entries are all conversions). */
const HASHES_FILE = 'checkpoint-hashes.json';

/**
 * The sha256 of files already hashed, by path, size and modification time, so that using the
 * same checkpoint again does not read gigabytes before finding its conversion. A file changed in
 * place gets a new size or time and is hashed again.
 */
class KnownHashes {
  constructor(private readonly file: string) {}

  async #read(): Promise<Record<string, string>> {
    try {
      const data = JSON.parse(await readFile(this.file, 'utf8')) as unknown;
      return data && typeof data === 'object' ? (data as Record<string, string>) : {};
    } catch {
      return {};
    }
  }

  async hash(
    file: string,
    options: Pick<CachedConversionOptions, 'signal' | 'onProgress'>,
  ): Promise<string> {
    const st = await stat(file);
    const id = `${path.resolve(file)}|${st.size}|${st.mtimeMs}`;
    const known = await this.#read();
    const cached = known[id];
    if (typeof cached === 'string' && /^[0-9a-f]{64}$/.test(cached)) return cached;
    const sha256 = await sha256File(file, {
      ...(options.signal ? { signal: options.signal } : {}),
      onBytes: (bytesDone) =>
        options.onProgress?.({ phase: 'hashing', bytesDone, bytesTotal: st.size }),
    });
    await this.#write(id, sha256);
    return sha256;
  }

  /** Records the hash of `file` as it is now, computed by a caller that wrote it. */
  async remember(file: string, sha256: string): Promise<void> {
    const st = await stat(file);
    await this.#write(`${path.resolve(file)}|${st.size}|${st.mtimeMs}`, sha256);
  }

  async #write(id: string, sha256: string): Promise<void> {
    // Written whole to a temp file and renamed: a crash never leaves half a JSON file.
    const next = { ...(await this.#read()), [id]: sha256 };
    await mkdir(path.dirname(this.file), { recursive: true });
    const temp = `${this.file}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(temp, JSON.stringify(next));
    await rename(temp, this.file);
  }
}

/**
 * Tells the cache the sha256 of a file its caller hashed while writing it (a checkpoint uploaded
 * to the headless server), so that converting it does not read it through a second time.
 */
export async function rememberHash(dataDir: string, file: string, sha256: string): Promise<void> {
  await new KnownHashes(path.join(dataDir, HASHES_FILE)).remember(file, sha256);
}

export interface CachedConversionOptions {
  /** The data folder; conversions go under `converted/<sha256 prefix>-<precision>[-vae-...]/<name>/`. */
  dataDir: string;
  /** CLIP's BPE list shipped in resources/clip-bpe. */
  vocabularyFile: string;
  precision?: 'fp16' | 'fp32';
  vae?: string;
  prediction?: 'epsilon' | 'v_prediction';
  /** A UNet that takes ControlNet residuals (cached apart: `-cn` in the key). */
  controlResiduals?: boolean;
  signal?: AbortSignal;
  /**
   * The engine worker bundle: when given, the conversion runs in a worker thread of it, so this
   * thread's event loop keeps answering (the studio's host); without it, in this thread (CLI).
   */
  workerPath?: string | null;
  /** Hashing is reported as phase 'hashing' with bytes; then the conversion's own progress. */
  onProgress?: (
    p: ConvertProgress | { phase: 'hashing'; bytesDone: number; bytesTotal: number },
  ) => void;
}

export interface CachedConversion {
  dir: string;
  sha256: string;
  record: ConversionRecord;
  /** False when an earlier conversion was reused. */
  converted: boolean;
}

/** The file's name as a folder name: the model's (or VAE's) name in the studio. */
const folderName = (file: string, fallback: string): string =>
  path.basename(file, path.extname(file)).replace(/[^\p{L}\p{N} ._()+-]/gu, '_') || fallback;

async function readRecord(dir: string): Promise<ConversionRecord | null> {
  try {
    const record = JSON.parse(await readFile(path.join(dir, CONVERSION_RECORD), 'utf8'));
    await stat(path.join(dir, 'model_index.json'));
    return record as ConversionRecord;
  } catch {
    return null;
  }
}

/**
 * A cache slot's conversion: the finished one in `slot` when there is one (read back by
 * `read`), else `convert(dir)` into `slot/<name>`. Two processes converting the same file at
 * once both succeed; the second reuses the first's. Nothing of a failed conversion stays in the
 * cache, not even its (empty) slot: rmdir refuses a slot another process is converting into.
 */
async function inSlot<R>(
  slot: string,
  name: string,
  read: (dir: string) => Promise<R | null>,
  convert: (dir: string) => Promise<R>,
): Promise<{ dir: string; record: R; converted: boolean }> {
  for (const entry of await readdir(slot).catch(() => [] as string[])) {
    if (entry.startsWith('.')) continue;
    const existing = await read(path.join(slot, entry));
    if (existing) return { dir: path.join(slot, entry), record: existing, converted: false };
  }
  const dir = path.join(slot, name);
  try {
    return { dir, record: await convert(dir), converted: true };
  } catch (e) {
    const raced = await read(dir);
    if (raced) return { dir, record: raced, converted: false };
    await rmdir(slot).catch(() => undefined);
    throw e;
  }
}

/**
 * The converted folder of `file`: reused when the cache has it, converted into it otherwise.
 * Two processes converting the same file at once both succeed; the second reuses the first's.
 */
export async function ensureConverted(
  file: string,
  options: CachedConversionOptions,
): Promise<CachedConversion> {
  const precision = options.precision ?? 'fp16';
  const known = new KnownHashes(path.join(options.dataDir, HASHES_FILE));
  const sha256 = await known.hash(file, options);
  let key = `${sha256.slice(0, 16)}-${precision}`;
  if (options.vae) key += `-vae-${(await known.hash(options.vae, {})).slice(0, 10)}`;
  if (options.prediction) key += `-${options.prediction === 'epsilon' ? 'eps' : 'v'}`;
  if (options.controlResiduals) key += '-cn';
  // converted/<key>/<file name>: the folder's name is the model's name in the studio.
  const slot = path.join(options.dataDir, 'converted', key);
  const convertOptions = {
    vocabularyFile: options.vocabularyFile,
    precision,
    sha256,
    ...(options.vae ? { vae: options.vae } : {}),
    ...(options.prediction ? { prediction: options.prediction } : {}),
    ...(options.controlResiduals ? { controlResiduals: true } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  };
  const found = await inSlot(slot, folderName(file, 'model'), readRecord, async (dir) => {
    const result = options.workerPath
      ? await convertCheckpointInWorker(options.workerPath, file, dir, convertOptions)
      : await convertCheckpoint(file, dir, convertOptions);
    const { dir: _dir, bytesWritten: _b, seconds: _s, ...record } = result;
    return record;
  });
  return { ...found, sha256 };
}

export interface CachedVae {
  dir: string;
  sha256: string;
  record: VaeConversionRecord;
  /** False when an earlier conversion was reused. */
  converted: boolean;
}

async function readVaeRecord(dir: string): Promise<VaeConversionRecord | null> {
  try {
    return JSON.parse(await readFile(path.join(dir, VAE_RECORD), 'utf8')) as VaeConversionRecord;
  } catch {
    return null;
  }
}

export interface CachedControlNet {
  dir: string;
  /** The ControlNet graph to hand the engine (GenerateRequest.controlnets[].file). */
  modelFile: string;
  sha256: string;
  record: ControlNetConversionRecord;
  converted: boolean;
}

/**
 * The converted ControlNet of `file`: reused when the cache has it, converted into
 * `converted/controlnet-<sha256 prefix>-<precision>/<name>/` otherwise (in a worker thread of
 * `workerPath` when given, else in this thread).
 */
export async function ensureControlNetConverted(
  file: string,
  options: Pick<
    CachedConversionOptions,
    'dataDir' | 'precision' | 'signal' | 'onProgress' | 'workerPath'
  >,
): Promise<CachedControlNet> {
  const precision = options.precision ?? 'fp16';
  const sha256 = await new KnownHashes(path.join(options.dataDir, HASHES_FILE)).hash(file, options);
  const slot = path.join(
    options.dataDir,
    'converted',
    `controlnet-${sha256.slice(0, 16)}-${precision}`,
  );
  const read = async (dir: string): Promise<ControlNetConversionRecord | null> => {
    try {
      const text = await readFile(path.join(dir, CONTROLNET_RECORD), 'utf8');
      return JSON.parse(text) as ControlNetConversionRecord;
    } catch {
      return null;
    }
  };
  const found = await inSlot(slot, folderName(file, 'controlnet'), read, async (dir) => {
    const controlNetOptions = {
      precision,
      sha256,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    };
    // In a worker thread when given one, as checkpoints and VAEs are: a 1.4 GB ControlNet
    // converted here would hold every IPC and WebSocket reply of the host until it is done.
    const { dir: _dir, ...record } = options.workerPath
      ? await convertControlNetInWorker(options.workerPath, file, dir, controlNetOptions)
      : await convertControlNet(file, dir, controlNetOptions);
    return record;
  });
  return { ...found, modelFile: controlNetModelFile(found.dir), sha256 };
}

/**
 * The converted folder (vae_encoder/, vae_decoder/) of the VAE-only `file`, for a generation to
 * use instead of its model's: reused when the cache has it, converted into
 * `converted/vae-<sha256 prefix>-<precision>/<name>/` otherwise.
 */
export async function ensureVaeConverted(
  file: string,
  options: Pick<
    CachedConversionOptions,
    'dataDir' | 'precision' | 'signal' | 'onProgress' | 'workerPath'
  >,
): Promise<CachedVae> {
  const precision = options.precision ?? 'fp16';
  const sha256 = await new KnownHashes(path.join(options.dataDir, HASHES_FILE)).hash(file, options);
  const slot = path.join(options.dataDir, 'converted', `vae-${sha256.slice(0, 16)}-${precision}`);
  const found = await inSlot(slot, folderName(file, 'vae'), readVaeRecord, async (dir) => {
    const vaeOptions = {
      precision,
      sha256,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    };
    // In a worker thread when given one, so the studio's host keeps answering meanwhile.
    const { dir: _dir, ...record } = options.workerPath
      ? await convertVaeInWorker(options.workerPath, file, dir, vaeOptions)
      : await convertVae(file, dir, vaeOptions);
    return record;
  });
  return { ...found, sha256 };
}

export interface CachedTaesd {
  /** The converted decoder's folder (model.onnx): GenerateRequest.taesdDir. */
  dir: string;
  sha256: string;
  /** False when an earlier conversion was reused. */
  converted: boolean;
}

/**
 * The converted TAESD decoder of `file` (madebyollin/taesd's taesd_decoder / taesdxl_decoder,
 * .pth or .safetensors): reused when the cache has it, converted into
 * `converted/taesd-<sha256 prefix>-fp32/<name>/` otherwise (in this thread: the whole decoder is
 * 5 MB). convertTaesd renames a finished folder into place, so a model.onnx there is complete.
 */
export async function ensureTaesdConverted(
  file: string,
  options: Pick<CachedConversionOptions, 'dataDir' | 'signal' | 'onProgress'>,
): Promise<CachedTaesd> {
  const sha256 = await new KnownHashes(path.join(options.dataDir, HASHES_FILE)).hash(file, options);
  const slot = path.join(options.dataDir, 'converted', `taesd-${sha256.slice(0, 16)}-fp32`);
  const read = async (dir: string) =>
    (await stat(path.join(dir, 'model.onnx')).catch(() => null))?.isFile() ? {} : null;
  const found = await inSlot(slot, folderName(file, 'taesd'), read, async (dir) => {
    await convertTaesd(file, dir, {
      precision: 'fp32',
      ...(options.signal ? { signal: options.signal } : {}),
    });
    return {};
  });
  return { dir: found.dir, sha256, converted: found.converted };
}

export interface CachedSafetyChecker {
  dir: string;
  /** The converted graph: `<dir>/safety_checker/model.onnx`. */
  model: string;
  sha256: string;
  record: SafetyConversionRecord;
  /** False when an earlier conversion was reused. */
  converted: boolean;
}

async function readSafetyRecord(dir: string): Promise<SafetyConversionRecord | null> {
  try {
    const record = JSON.parse(await readFile(path.join(dir, SAFETY_RECORD), 'utf8'));
    await stat(path.join(dir, SAFETY_MODEL));
    return record as SafetyConversionRecord;
  } catch {
    return null;
  }
}

/**
 * The content filter's converted checker for `file` (Stable Diffusion's safety checker as
 * diffusers saves it): reused when the cache has it, converted into
 * `converted/safety-<sha256 prefix>-<precision>/<name>/` otherwise (in a worker thread of
 * `workerPath` when given, else in this thread).
 */
export async function ensureSafetyCheckerConverted(
  file: string,
  options: Pick<CachedConversionOptions, 'dataDir' | 'precision' | 'signal' | 'workerPath'>,
): Promise<CachedSafetyChecker> {
  const precision = options.precision ?? 'fp16';
  const sha256 = await new KnownHashes(path.join(options.dataDir, HASHES_FILE)).hash(file, options);
  const slot = path.join(
    options.dataDir,
    'converted',
    `safety-${sha256.slice(0, 16)}-${precision}`,
  );
  const found = await inSlot(
    slot,
    folderName(file, 'safety-checker'),
    readSafetyRecord,
    async (dir) => {
      const safetyOptions = {
        precision,
        sha256,
        ...(options.signal ? { signal: options.signal } : {}),
      };
      // In a worker thread when given one, as checkpoints and VAEs are: the host keeps answering.
      const { dir: _dir, ...record } = options.workerPath
        ? await convertSafetyCheckerInWorker(options.workerPath, file, dir, safetyOptions)
        : await convertSafetyChecker(file, dir, safetyOptions);
      return record;
    },
  );
  return { ...found, model: path.join(found.dir, SAFETY_MODEL), sha256 };
}

/** Where resources/ is for the node entry points in out/main (LATENT_STUDIO_RESOURCES_DIR wins). */
export function resourcesDirFrom(here: string): string {
  return path.resolve(
    process.env.LATENT_STUDIO_RESOURCES_DIR ?? path.join(here, '..', '..', 'resources'),
  );
}

/** CLIP's BPE list inside a resources folder. */
export const vocabularyIn = (resourcesDir: string): string =>
  path.join(resourcesDir, 'clip-bpe', 'bpe_simple_vocab_16e6.txt.gz');

/** One progress line for a terminal: phase, tensors, MB/s, ETA. */
export function formatConvertProgress(
  p: ConvertProgress | { phase: 'hashing'; bytesDone: number; bytesTotal: number },
): string {
  if (p.phase === 'hashing') {
    return `hashing ${((100 * p.bytesDone) / Math.max(1, p.bytesTotal)).toFixed(0)}%`;
  }
  const eta = p.etaSeconds === null ? '' : `, ${Math.ceil(p.etaSeconds)} s left`;
  return `${p.phase.replace('_', ' ')}: ${p.tensorsDone}/${p.tensorsTotal} tensors, ${p.mbPerSecond.toFixed(0)} MB/s${eta}`;
}

/**
 * The infotext fields of a model folder converted from a checkpoint (`Model hash`, and `VAE`
 * when a replacement VAE was used), from its conversion.json; empty for other folders.
 */
export function convertedModelFields(dir: string): { modelHash?: string; VAE?: string } {
  let record: Partial<ConversionRecord>;
  try {
    record = JSON.parse(readFileSync(path.join(dir, CONVERSION_RECORD), 'utf8'));
  } catch {
    return {};
  }
  return {
    ...(typeof record.sha256 === 'string' ? { modelHash: shortHash(record.sha256) } : {}),
    // A1111 writes the VAE's file name with its extension (sd_vae.get_loaded_vae_name).
    ...(typeof record.vae === 'string' ? { VAE: path.basename(record.vae) } : {}),
  };
}
