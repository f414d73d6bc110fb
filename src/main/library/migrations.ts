/**
 * The library schema, as migrations keyed on `PRAGMA user_version`. Each step runs with its
 * version bump in one immediate transaction, so a crash (or a failing step) leaves the database
 * at the previous version with none of the step's changes.
 */
import { GenerationSettings, parseNetworkTags } from '../../shared';
import type { Db } from './db';
import { addDateLinks } from './date-links';
import { addImageCounts } from './image-counts';
import { addImageDays } from './image-days';
import { addImageText } from './image-text';
import { addLeadCounts } from './lead-counts';
import { addTextTerms } from './search-text';
import { variantKeyOf } from './variant-key';
import { downloadsReplacesSchema, downloadsSchema } from '../downloads/schema';

export interface Migration {
  /** The user_version this step brings the database to (1, 2, ...). */
  version: number;
  description: string;
  up(db: Db): void;
}

const v1 = `
CREATE TABLE models (
  id TEXT PRIMARY KEY,
  path TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  family TEXT,
  family_reasons TEXT NOT NULL DEFAULT '[]',
  native_width INTEGER,
  native_height INTEGER,
  bytes INTEGER NOT NULL DEFAULT 0,
  file_hashes TEXT NOT NULL DEFAULT '{}',
  built_in INTEGER NOT NULL DEFAULT 0,
  description TEXT,
  status TEXT NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'missing', 'error')),
  error TEXT,
  added_at INTEGER NOT NULL
);

CREATE TABLE prompts (
  id INTEGER PRIMARY KEY,
  text TEXT NOT NULL,
  negative TEXT NOT NULL DEFAULT '',
  UNIQUE (text, negative)
);

CREATE VIRTUAL TABLE prompts_fts USING fts5(
  text, negative, content='prompts', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER prompts_ai AFTER INSERT ON prompts BEGIN
  INSERT INTO prompts_fts(rowid, text, negative) VALUES (new.id, new.text, new.negative);
END;
CREATE TRIGGER prompts_ad AFTER DELETE ON prompts BEGIN
  INSERT INTO prompts_fts(prompts_fts, rowid, text, negative)
    VALUES ('delete', old.id, old.text, old.negative);
END;
CREATE TRIGGER prompts_au AFTER UPDATE ON prompts BEGIN
  INSERT INTO prompts_fts(prompts_fts, rowid, text, negative)
    VALUES ('delete', old.id, old.text, old.negative);
  INSERT INTO prompts_fts(rowid, text, negative) VALUES (new.id, new.text, new.negative);
END;

CREATE TABLE generations (
  id TEXT PRIMARY KEY,
  settings TEXT NOT NULL,
  prompt_id INTEGER NOT NULL REFERENCES prompts(id),
  model_id TEXT REFERENCES models(id) ON DELETE SET NULL,
  model_name TEXT NOT NULL,
  seed INTEGER NOT NULL,
  sampler TEXT NOT NULL,
  mode TEXT NOT NULL,
  steps INTEGER NOT NULL,
  guidance REAL NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  parent_id TEXT REFERENCES generations(id) ON DELETE SET NULL,
  variant_key TEXT NOT NULL,
  timings TEXT NOT NULL DEFAULT '{}',
  provider TEXT,
  fallback_reason TEXT,
  family TEXT,
  status TEXT NOT NULL DEFAULT 'done',
  job_id TEXT,
  created_at INTEGER NOT NULL
);
CREATE INDEX generations_parent ON generations(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX generations_prompt ON generations(prompt_id);

-- Images carry copies of their generation's immutable fields (model, sampler, mode, prompt,
-- variant key) so that gallery filters, sorts and counts read one table through its indexes.
CREATE TABLE images (
  id TEXT PRIMARY KEY,
  generation_id TEXT NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
  file TEXT NOT NULL UNIQUE,
  thumb TEXT,
  sha256 TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  seed INTEGER NOT NULL,
  batch_index INTEGER NOT NULL DEFAULT 0,
  prompt_id INTEGER NOT NULL,
  model_id TEXT,
  sampler TEXT NOT NULL,
  mode TEXT NOT NULL,
  variant_key TEXT NOT NULL,
  favorite INTEGER NOT NULL DEFAULT 0,
  rating INTEGER NOT NULL DEFAULT 0 CHECK (rating BETWEEN 0 AND 5),
  missing INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  deleted_at INTEGER,
  delete_token TEXT
);
CREATE INDEX images_generation ON images(generation_id);
CREATE INDEX images_newest ON images(created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX images_rating ON images(rating, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX images_model ON images(model_id, created_at, id) WHERE deleted_at IS NULL;
-- Text search: matched prompts -> their images, covering the other filters and the sort keys.
CREATE INDEX images_prompt
  ON images(prompt_id, created_at, rating, model_id, sampler, mode, favorite, width, height, id)
  WHERE deleted_at IS NULL;
CREATE INDEX images_variant ON images(variant_key, created_at) WHERE deleted_at IS NULL;
CREATE INDEX images_favorite ON images(created_at, id) WHERE deleted_at IS NULL AND favorite = 1;
CREATE INDEX images_deleted ON images(delete_token) WHERE deleted_at IS NOT NULL;
-- Narrow and covering: counting matches of the column filters scans this, not the table.
CREATE INDEX images_cover ON images(sampler, mode, width, height, favorite, rating, model_id, created_at)
  WHERE deleted_at IS NULL;

CREATE TABLE tags (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE COLLATE NOCASE
);
CREATE TABLE image_tags (
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  tag_id INTEGER NOT NULL REFERENCES tags(id) ON DELETE CASCADE,
  PRIMARY KEY (image_id, tag_id)
) WITHOUT ROWID;
CREATE INDEX image_tags_tag ON image_tags(tag_id, image_id);

-- Images given by the studio: init images, painted masks, imported PNGs.
CREATE TABLE uploads (
  id TEXT PRIMARY KEY,
  file TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  purpose TEXT NOT NULL,
  name TEXT,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX uploads_sha ON uploads(sha256, purpose);

-- The durable job queue (src/main/jobs owns its rows).
CREATE TABLE jobs (
  id TEXT PRIMARY KEY,
  state TEXT NOT NULL CHECK (state IN ('queued','running','paused','done','failed','cancelled')),
  position REAL,
  settings TEXT NOT NULL,
  created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  error_code TEXT, error_message TEXT,
  generation_id TEXT REFERENCES generations(id) ON DELETE SET NULL
);
CREATE INDEX jobs_state_position ON jobs(state, position);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
`;

// Finished jobs newest first (the queue's recent list) and oldest first (retention pruning).
const v2 = `
CREATE INDEX jobs_finished ON jobs(finished_at, created_at)
  WHERE state IN ('done', 'failed', 'cancelled');
`;

// A save in flight: recorded (with the files it is about to write and their hashes) before the
// first file is written, removed in the transaction that adds the generation's rows. At start,
// a save a crash cut short is finished from it when all its files are whole, else its files are
// removed; either way its files are never re-imported as a second generation.
const v3 = `
CREATE TABLE pending_saves (
  generation_id TEXT PRIMARY KEY,
  job_id TEXT,
  record TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
`;

// What a model's card recommends (ModelDefaults as JSON), read when the model is inspected.
const v4 = `ALTER TABLE models ADD COLUMN defaults TEXT;`;

/** The invisible watermark a generation's images carry (its message label); NULL: none. */
const v8 = `ALTER TABLE generations ADD COLUMN watermark TEXT;`;

/**
 * The schedule became a setting of its own (`dpmpp_2m_karras` is now dpmpp_2m with the karras
 * schedule; every setting gained `schedule`). Stored settings are rewritten as the current
 * schema parses them, with their sampler columns and variant keys, so that sampler filters find
 * old images and a generation made again with the same settings is still their seed variant.
 * Settings that no longer parse are left as they are.
 */
function v5(db: Db): void {
  const rows = db.prepare('SELECT id, settings FROM generations').iterate() as IterableIterator<{
    id: string;
    settings: string;
  }>;
  const updates: Array<[string, string, string, string]> = [];
  for (const row of rows) {
    let raw: unknown;
    try {
      raw = JSON.parse(row.settings);
    } catch {
      continue;
    }
    const parsed = GenerationSettings.safeParse(raw);
    if (!parsed.success) continue;
    const s = parsed.data;
    updates.push([JSON.stringify(s), s.sampler, variantKeyOf(s), row.id]);
  }
  const generation = db.prepare(
    'UPDATE generations SET settings = ?, sampler = ?, variant_key = ? WHERE id = ?',
  );
  const images = db.prepare(
    'UPDATE images SET sampler = ?, variant_key = ? WHERE generation_id = ?',
  );
  for (const [settings, sampler, key, id] of updates) {
    generation.run(settings, sampler, key, id);
    images.run(sampler, key, id);
  }
}

/**
 * The LoRAs and embeddings each generation used (issue 12), for the gallery's LoRA filter and
 * the history: one row per (generation, kind, name) with the A1111 short hash when known, in
 * the order the prompt mentions them (rowid order, as the infotext lists them). The
 * LoRAs of generations saved before are filled in from the `<lora:…>` tags of their prompts
 * (without hashes: the files they were made with may have changed since).
 */
function v6(db: Db): void {
  db.exec(`
CREATE TABLE generation_networks (
  generation_id TEXT NOT NULL REFERENCES generations(id) ON DELETE CASCADE,
  kind TEXT NOT NULL CHECK (kind IN ('lora', 'embedding')),
  name TEXT NOT NULL,
  hash TEXT,
  UNIQUE (generation_id, kind, name)
);
CREATE INDEX generation_networks_by_name ON generation_networks (kind, name COLLATE NOCASE);
`);
  const insert = db.prepare(
    "INSERT OR IGNORE INTO generation_networks (generation_id, kind, name) VALUES (?, 'lora', ?)",
  );
  const rows = db
    .prepare(
      `SELECT g.id, p.text, p.negative FROM generations g JOIN prompts p ON p.id = g.prompt_id
       WHERE p.text LIKE '%<%:%>%' OR p.negative LIKE '%<%:%>%'`,
    )
    .all() as Array<{ id: string; text: string; negative: string }>;
  for (const row of rows)
    for (const tag of [...parseNetworkTags(row.text).tags, ...parseNetworkTags(row.negative).tags])
      if (tag.kind === 'lora' && !tag.error) insert.run(row.id, tag.name);
}

/**
 * What each LoRA matched (issue 12): the tensors in its file and those that matched nothing in
 * the model, as the engine reported them; NULL for embeddings and for earlier generations.
 */
const v9 = `
ALTER TABLE generation_networks ADD COLUMN tensors INTEGER;
ALTER TABLE generation_networks ADD COLUMN unmatched_tensors INTEGER;
`;

/**
 * The content filter's verdict on each image (issue 18): 'flagged' or 'clean', NULL when it was
 * not checked (the filter was off, or the image came before it); its scores as JSON
 * ({ flagged, badConcepts, specialScores, conceptScores }). Per image, not per generation: the
 * checker decides image by image, and one image of a batch can be flagged alone. The partial
 * index serves the gallery's "flagged" filter, which stays small.
 */
const v12 = `
ALTER TABLE images ADD COLUMN content_filter TEXT CHECK (content_filter IN ('flagged', 'clean'));
ALTER TABLE images ADD COLUMN content_filter_scores TEXT;
CREATE INDEX images_flagged ON images (created_at) WHERE content_filter = 'flagged';
`;

/**
 * Search pages at a million images (issue 17). Sampler and mode filters in date order: a page
 * deep inside one walks the filter's own rows, as a model filter walks images_model, instead of
 * every image's row in images_newest (gallery.ts, pageKeys). The rating order's index carries
 * the prompt and the counted filter columns, so a search in rating order (text, model, sampler,
 * ...) tests each image it walks past in the index instead of looking up its row: "castle" with
 * a model at offset 300 of 100,000 images, 585 -> 20 ms; "cat", 14 -> 0.7 ms. The words table
 * is addTextTerms.
 */
const v14 = `
CREATE INDEX images_sampler ON images(sampler, created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX images_mode ON images(mode, created_at, id) WHERE deleted_at IS NULL;
DROP INDEX images_rating;
CREATE INDEX images_rating
  ON images(rating, created_at, id, prompt_id, model_id, sampler, mode, width, height, favorite)
  WHERE deleted_at IS NULL;
`;

export const migrations: readonly Migration[] = [
  {
    version: 1,
    description: 'models, prompts (+FTS5), generations, images, tags, uploads, jobs, meta',
    up: (db) => db.exec(v1),
  },
  { version: 2, description: 'index of finished jobs', up: (db) => db.exec(v2) },
  { version: 3, description: 'saves in flight (pending_saves)', up: (db) => db.exec(v3) },
  {
    version: 4,
    description: "models' recommended settings (models.defaults)",
    up: (db) => db.exec(v4),
  },
  { version: 5, description: 'the schedule apart from the sampler (settings, keys)', up: v5 },
  {
    version: 6,
    description: 'LoRAs and embeddings used by each generation (generation_networks)',
    up: v6,
  },
  {
    version: 7,
    description: 'model downloads and their files',
    up: (db) => db.exec(downloadsSchema),
  },
  { version: 8, description: 'the watermark of a generation', up: (db) => db.exec(v8) },
  {
    version: 9,
    description: "what each generation's LoRAs matched (generation_networks tensor counts)",
    up: (db) => db.exec(v9),
  },
  {
    version: 10,
    description: 'gallery totals per filter combination (image_counts), kept by triggers',
    up: addImageCounts,
  },
  {
    version: 11,
    description: 'the model a download replaces (model updates)',
    up: (db) => db.exec(downloadsReplacesSchema),
  },
  {
    version: 12,
    description: "the content filter's verdict and scores of each image",
    up: (db) => db.exec(v12),
  },
  {
    version: 13,
    description:
      'searches in date order: images_fts, image_days, created_at on image_tags and generation_networks',
    up: (db) => {
      addDateLinks(db);
      addImageText(db);
      addImageDays(db);
    },
  },
  {
    version: 14,
    description:
      'search pages at a million: the words of images_fts (images_fts_terms), sampler and mode in date order',
    up: (db) => {
      addTextTerms(db);
      db.exec(v14);
    },
  },
  {
    version: 15,
    description: 'live images per tag and per LoRA (tag_counts, lora_counts), kept by triggers',
    up: addLeadCounts,
  },
];

export const schemaVersion = migrations[migrations.length - 1].version;

export function userVersion(db: Db): number {
  return db.pragma('user_version', { simple: true }) as number;
}

/**
 * Brings the database up to the last migration. Returns the versions applied. A database newer
 * than this build knows is refused (an older app must not write into a newer schema).
 */
export function migrate(db: Db, steps: readonly Migration[] = migrations): number[] {
  const applied: number[] = [];
  const latest = steps.length ? steps[steps.length - 1].version : 0;
  const current = userVersion(db);
  if (current > latest) {
    throw new Error(
      `The library was written by a newer Latent Studio (schema ${current}; this one knows ${latest}).`,
    );
  }
  for (const step of steps) {
    if (step.version <= userVersion(db)) continue;
    db.transaction(() => {
      // Re-read inside the lock: another process may have migrated meanwhile.
      if (userVersion(db) >= step.version) return;
      step.up(db);
      db.pragma(`user_version = ${Math.trunc(step.version)}`);
      applied.push(step.version);
    }).immediate();
  }
  return applied;
}
