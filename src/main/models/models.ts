/**
 * The models registry: model folders the studio knows (the built-in ones under
 * resources/models and those a person added), inspected with the engine (no sessions).
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ModelDefaults, type ModelEntry, SamplerName, StudioError } from '../../shared';
import { ClipTokenizer, detectFamily, isEngineError, openModelFolder } from '../../engine';
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

async function fingerprint(file: string): Promise<string> {
  const st = await fsp.stat(file);
  const hash = crypto.createHash('sha256');
  if (st.size <= fullHashLimit) {
    hash.update(await fsp.readFile(file));
    return `sha256:${hash.digest('hex')}`;
  }
  const handle = await fsp.open(file, 'r');
  try {
    const head = Buffer.alloc(sampleBytes);
    const tail = Buffer.alloc(sampleBytes);
    await handle.read(head, 0, sampleBytes, 0);
    await handle.read(tail, 0, sampleBytes, st.size - sampleBytes);
    hash.update(`${st.size}:`).update(head).update(tail);
    return `sha256-sampled:${hash.digest('hex')}`;
  } finally {
    await handle.close();
  }
}

/** The first paragraph of the folder's model card (README.md / MODEL_CARD.md / model-card.md). */
export function readModelCard(dir: string): string | null {
  for (const name of ['MODEL_CARD.md', 'model-card.md', 'README.md', 'readme.md']) {
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, name), 'utf8');
    } catch {
      continue;
    }
    // Skip YAML front matter and headings; keep the first paragraph of prose.
    text = text.replace(/^---\n[\s\S]*?\n---\n/, '');
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

/**
 * The settings a model folder recommends, from an `about.json` beside model_index.json (the
 * built-in models carry one: `recommended` {sampler, steps, guidance} and `example_prompts`).
 * Anything missing, unreadable or out of range is left out; null when nothing is left.
 */
export function readModelDefaults(dir: string): ModelDefaults | null {
  let about: unknown;
  try {
    about = JSON.parse(fs.readFileSync(path.join(dir, 'about.json'), 'utf8'));
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

/** Inspects a model folder: layout, family, native size, sizes and file fingerprints. */
export async function inspectModel(dir: string): Promise<Inspected> {
  let info;
  let family;
  try {
    info = await openModelFolder(dir);
    family = detectFamily(info);
  } catch (err) {
    throw new StudioError('model', describeModelError(dir, err));
  }
  const fileHashes: Record<string, string> = {};
  let bytes = 0;
  for (const c of Object.values(info.components)) {
    if (!c) continue;
    bytes += c.bytes;
    fileHashes[c.file] = await fingerprint(c.modelPath);
    for (const w of c.externalData) fileHashes[w.file] = await fingerprint(w.path);
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
    description: i?.description ?? (inspected ? null : readModelCard(dir)),
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
