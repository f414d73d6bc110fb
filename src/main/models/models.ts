/**
 * The models registry: model folders the studio knows (the built-in ones under
 * resources/models and those a person added), inspected with the engine (no sessions).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { ModelDefaults, type ModelEntry, SamplerName, StudioError } from '../../shared';
import {
  ClipTokenizer,
  inspectFolder,
  inspectFolderInWorker,
  inspectionTimedOut,
  isEngineError,
  type FolderInspection,
  openRegularFile,
  readRegularFileSync,
  UnreadableFileError,
} from '../../engine';
import type { Db } from '../library/db';
import { newId } from '../library/ids';

export interface ModelRow {
  id: string;
  path: string;
  name: string;
  family: string | null;
  family_reasons: string;
  native_width: number | null;
  native_height: number | null;
  bytes: number;
  file_hashes: string;
  built_in: number;
  description: string | null;
  /** ModelDefaults as JSON, or null. */
  defaults: string | null;
  status: 'ok' | 'missing' | 'error';
  error: string | null;
  added_at: number;
}

export interface Inspected {
  name: string;
  family: string | null;
  familyReasons: string[];
  nativeWidth: number | null;
  nativeHeight: number | null;
  bytes: number;
  fileHashes: Record<string, string>;
  description: string | null;
  defaults: ModelDefaults | null;
}

/** Files up to this size are hashed whole; larger ones by their size and first and last MiB. */
const fullHashLimit = 16 * 1024 * 1024;
const sampleBytes = 1024 * 1024;

/** How long an inspection may take before the folder is reported as unreadable. */
export const inspectTimeLimitMs = 30_000;

async function fingerprint(file: string): Promise<string> {
  // Opened as the inspector opens everything (regular files only, never blocking on a FIFO).
  const { handle, size } = await openRegularFile(file, 'weights');
  try {
    const hash = crypto.createHash('sha256');
    if (size <= fullHashLimit) {
      const whole = Buffer.alloc(size);
      await readFully(handle, whole, 0);
      hash.update(whole);
      return `sha256:${hash.digest('hex')}`;
    }
    const head = Buffer.alloc(sampleBytes);
    const tail = Buffer.alloc(sampleBytes);
    await readFully(handle, head, 0);
    await readFully(handle, tail, size - sampleBytes);
    hash.update(`${size}:`).update(head).update(tail);
    return `sha256-sampled:${hash.digest('hex')}`;
  } finally {
    await handle.close();
  }
}

/** Fills `buf` from `position` (a file that shrank leaves the rest zero). */
async function readFully(handle: FileHandle, buf: Buffer, position: number): Promise<void> {
  let got = 0;
  while (got < buf.length) {
    const { bytesRead } = await handle.read(buf, got, buf.length - got, position + got);
    if (bytesRead === 0) return;
    got += bytesRead;
  }
}

/** StudioError 'model' for a model-folder file that is not a regular file or is too large. */
function unreadableFile(dir: string, name: string, err: unknown): StudioError {
  if (err instanceof UnreadableFileError) return new StudioError('model', err.sentence(name));
  const code = (err as NodeJS.ErrnoException).code;
  return new StudioError(
    'model',
    `${name} in ${path.basename(dir)} could not be read (${code ?? 'error'}).`,
  );
}

/**
 * The first paragraph of the folder's model card (README.md / MODEL_CARD.md / model-card.md),
 * from at most its first 256 KiB. A card that is not a regular file (a FIFO, a device, a
 * folder) throws StudioError 'model' naming it; a missing one is skipped.
 */
export function readModelCard(dir: string): string | null {
  for (const name of ['MODEL_CARD.md', 'model-card.md', 'README.md', 'readme.md']) {
    let buf: Buffer | null;
    try {
      buf = readRegularFileSync(path.join(dir, name), 'card', { truncate: true });
    } catch (err) {
      throw unreadableFile(dir, name, err);
    }
    if (buf === null) continue;
    // Skip YAML front matter and headings; keep the first paragraph of prose.
    const text = buf.toString('utf8').replace(/^---\n[\s\S]*?\n---\n/, '');
    const paragraph: string[] = [];
    for (const line of text.split(/\r?\n/)) {
      const t = line.trim();
      if (t.startsWith('#') || t.startsWith('<!--')) {
        if (paragraph.length) break;
        continue;
      }
      if (t === '') {
        if (paragraph.length) break;
        continue;
      }
      paragraph.push(t);
    }
    const out = paragraph.join(' ').slice(0, 1000);
    if (out) return out;
  }
  return null;
}

/** readModelCard for a folder that failed inspection: whatever card can be read, or null. */
function cardOrNull(dir: string): string | null {
  try {
    return readModelCard(dir);
  } catch {
    return null;
  }
}

/**
 * The settings a model folder recommends, from an `about.json` beside model_index.json (the
 * built-in models carry one: `recommended` {sampler, steps, guidance} and `example_prompts`).
 * Anything missing, malformed or out of range is left out; null when nothing is left. An
 * about.json that is not a regular file or is over 1 MiB throws StudioError 'model' naming it.
 */
export function readModelDefaults(dir: string): ModelDefaults | null {
  let buf: Buffer | null;
  try {
    buf = readRegularFileSync(path.join(dir, 'about.json'), 'about');
  } catch (err) {
    throw unreadableFile(dir, 'about.json', err);
  }
  if (buf === null) return null;
  let about: unknown;
  try {
    about = JSON.parse(buf.toString('utf8'));
  } catch {
    return null;
  }
  if (!about || typeof about !== 'object') return null;
  const a = about as { recommended?: Record<string, unknown>; example_prompts?: unknown };
  const r = a.recommended && typeof a.recommended === 'object' ? a.recommended : {};
  const pick = <T>(
    schema: { safeParse(v: unknown): { success: boolean; data?: T } },
    v: unknown,
  ) => {
    const parsed = schema.safeParse(v);
    return parsed.success ? (parsed.data as T) : null;
  };
  const defaults = ModelDefaults.parse({
    sampler: pick(SamplerName, r.sampler),
    steps: pick(ModelDefaults.shape.steps, r.steps),
    guidance: pick(ModelDefaults.shape.guidance, r.guidance),
    examplePrompt: Array.isArray(a.example_prompts)
      ? pick(ModelDefaults.shape.examplePrompt, a.example_prompts[0])
      : null,
  });
  return Object.values(defaults).some((v) => v !== null) ? defaults : null;
}

/** Sentence for a model folder that cannot be used. */
function describeModelError(dir: string, err: unknown): string {
  if (isEngineError(err)) return err.message;
  if (err instanceof Error && err.message) return `${path.basename(dir)}: ${err.message}`;
  return `${path.basename(dir)} could not be read as a model folder.`;
}

/**
 * Inspects a model folder: layout, family, native size, sizes and file fingerprints. The folder
 * is read and classified in a worker thread of `workerPath` (the engine worker bundle) when one
 * is given, in this thread otherwise (tests of the library alone); every file is read through
 * the engine's safe reads (regular files only, capped per kind); the whole inspection gives up
 * after `timeLimitMs` with StudioError 'model'. So a hostile or stalled folder (a FIFO, a
 * network mount that stops answering) never holds the host.
 */
export async function inspectModel(
  dir: string,
  {
    timeLimitMs = inspectTimeLimitMs,
    workerPath = null,
  }: { timeLimitMs?: number; workerPath?: string | null } = {},
): Promise<Inspected> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new StudioError('model', inspectionTimedOut(dir, timeLimitMs))),
      timeLimitMs,
    );
  });
  try {
    return await Promise.race([inspectAndFingerprint(dir, timeLimitMs, workerPath), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function inspectAndFingerprint(
  dir: string,
  timeLimitMs: number,
  workerPath: string | null,
): Promise<Inspected> {
  let inspection;
  try {
    inspection = await inspectFolderOffThread(dir, timeLimitMs, workerPath);
  } catch (err) {
    throw new StudioError('model', describeModelError(dir, err));
  }
  const { info, family } = inspection;
  const fileHashes: Record<string, string> = {};
  let bytes = 0;
  for (const c of Object.values(info.components)) {
    if (!c) continue;
    bytes += c.bytes;
    fileHashes[c.file] = await fingerprintOrThrow(info.dir, c.file, c.modelPath);
    for (const w of c.externalData)
      fileHashes[w.file] = await fingerprintOrThrow(info.dir, w.file, w.path);
  }
  return {
    name: info.name,
    family: family.family,
    familyReasons: family.reasons,
    nativeWidth: family.nativeSize.width,
    nativeHeight: family.nativeSize.height,
    bytes,
    fileHashes,
    description: readModelCard(info.dir),
    defaults: readModelDefaults(info.dir),
  };
}

/** openModelFolder + detectFamily, in a worker thread where there is a worker bundle. */
async function inspectFolderOffThread(
  dir: string,
  timeLimitMs: number,
  workerPath: string | null,
): Promise<FolderInspection> {
  if (!workerPath) return inspectFolder(dir);
  try {
    return await inspectFolderInWorker(workerPath, dir, { timeLimitMs });
  } catch (err) {
    // A worker that cannot start (a broken install) must not take the model registry down with
    // it: the folder is then read here, with the same safe reads, within the same time limit.
    if (isEngineError(err, 'internal')) return inspectFolder(dir);
    throw err;
  }
}

async function fingerprintOrThrow(dir: string, name: string, file: string): Promise<string> {
  try {
    return await fingerprint(file);
  } catch (err) {
    throw unreadableFile(dir, name, err);
  }
}

export function toModelEntry(row: ModelRow, imageBytes: number): ModelEntry {
  const present = fs.existsSync(row.path);
  return {
    id: row.id,
    name: row.name,
    path: row.path,
    family: row.family,
    familyReasons: JSON.parse(row.family_reasons) as string[],
    nativeWidth: row.native_width,
    nativeHeight: row.native_height,
    bytes: row.bytes,
    builtIn: row.built_in === 1,
    description: row.description,
    defaults: row.defaults ? (JSON.parse(row.defaults) as ModelDefaults) : null,
    status: present ? row.status : 'missing',
    error: present ? row.error : `The model folder ${row.path} is not there any more.`,
    addedAt: row.added_at,
    imageBytes,
  };
}

/** Inserts or refreshes a model row (keyed on its path); returns its id. */
export function upsertModel(
  db: Db,
  dir: string,
  inspected: Inspected | null,
  opts: { builtIn: boolean; error?: string | null; now: number },
): string {
  const existing = db.prepare('SELECT id FROM models WHERE path = ?').get(dir) as
    { id: string } | undefined;
  const id = existing?.id ?? newId(opts.now);
  const i = inspected;
  db.prepare(
    `INSERT INTO models (id, path, name, family, family_reasons, native_width, native_height, bytes,
       file_hashes, built_in, description, defaults, status, error, added_at)
     VALUES (@id, @path, @name, @family, @reasons, @w, @h, @bytes, @hashes, @builtIn, @description,
       @defaults, @status, @error, @now)
     ON CONFLICT(path) DO UPDATE SET name = excluded.name, family = excluded.family,
       family_reasons = excluded.family_reasons, native_width = excluded.native_width,
       native_height = excluded.native_height, bytes = excluded.bytes,
       file_hashes = excluded.file_hashes, built_in = excluded.built_in,
       description = excluded.description, defaults = excluded.defaults, status = excluded.status,
       error = excluded.error`,
  ).run({
    id,
    path: dir,
    name: i?.name ?? path.basename(dir),
    family: i?.family ?? null,
    reasons: JSON.stringify(i?.familyReasons ?? []),
    w: i?.nativeWidth ?? null,
    h: i?.nativeHeight ?? null,
    bytes: i?.bytes ?? 0,
    hashes: JSON.stringify(i?.fileHashes ?? {}),
    builtIn: opts.builtIn ? 1 : 0,
    description: i?.description ?? (inspected ? null : cardOrNull(dir)),
    defaults: i?.defaults ? JSON.stringify(i.defaults) : null,
    status: inspected ? 'ok' : 'error',
    error: inspected ? null : (opts.error ?? 'The model folder could not be read.'),
    now: opts.now,
  });
  return id;
}

/** Tokenizers by model id, loaded once. */
export class TokenizerCache {
  #cache = new Map<string, Promise<ClipTokenizer>>();

  get(modelId: string, modelDir: string): Promise<ClipTokenizer> {
    let p = this.#cache.get(modelId);
    if (!p) {
      p = ClipTokenizer.fromFolder(path.join(modelDir, 'tokenizer')).catch((err: unknown) => {
        this.#cache.delete(modelId);
        throw new StudioError(
          'model',
          `The tokenizer of ${path.basename(modelDir)} could not be read: ${(err as Error).message}`,
        );
      });
      this.#cache.set(modelId, p);
    }
    return p;
  }

  forget(modelId: string): void {
    this.#cache.delete(modelId);
  }
}
