/**
 * Saving generations (the job queue calls this): the durable save of a finished generation
 * (pending_saves record, files written atomically, one transaction for the rows), finishing
 * or undoing at open a save that a crash cut short, and the rows of one generation.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  type ContentFilterVerdict,
  GenerationSettings,
  StudioError,
  parseNetworkTags,
} from '../../shared';
import type { ModelRow } from '../models/models';
import type { HostContext } from '../services';
import type { LibraryDatabase } from './database';
import { type Db, immediate, isDiskFull } from './db';
import { exportImages } from './export';
import type { FileStore } from './file-store';
import { newId, sha256 } from './ids';
import { variantKeyOf } from './variant-key';
import {
  LATENT_STUDIO_KEYWORD,
  type PngGenerationMetadata,
  addPngTextChunks,
  generationTextEntries,
  readPngTextChunks,
} from './png-metadata';

/** One image of a finished generation, as the job queue hands it over. */
export interface SaveImageInput {
  /**
   * The encoded PNG. The library alone decides what it carries: unless the person turned PNG
   * metadata off, `metadata` (default: the generation's settings) is added as our text chunks
   * when the PNG does not carry them yet.
   */
  png: Uint8Array;
  /** What this image's PNG says made it (its own seed, one batch). */
  metadata?: PngGenerationMetadata;
  width: number;
  height: number;
  seed: number;
  batchIndex: number;
  /** The content filter's verdict on it; absent or null: not checked (the filter was off). */
  contentFilter?: ContentFilterVerdict | null;
}

export interface SaveGenerationInput {
  settings: GenerationSettings;
  images: SaveImageInput[];
  family: string | null;
  provider: string | null;
  fallbackReason: string | null;
  timings: Record<string, number>;
  /** Lineage; when absent and settings.initImage is a library image, its generation. */
  parentId?: string | null;
  /** The job that made it: its row's generation_id is set in the same transaction. */
  jobId?: string | null;
  /** The invisible watermark its images carry (the message label); absent or null: none. */
  watermark?: string | null;
  /**
   * The LoRAs and embeddings it used (resolved by the job); when absent, the LoRAs of the
   * prompt's `<lora:…>` tags are recorded without hashes.
   */
  networks?: GenerationNetwork[];
}

/** A LoRA or embedding one generation used, as the history records it. */
export interface GenerationNetwork {
  kind: 'lora' | 'embedding';
  /** As the prompt names it (the tag's name, the embedding's word). */
  name: string;
  /** A1111's short hash (12 hex digits), when known. */
  hash: string | null;
  /** LoRAs: tensors in the file and those that matched nothing (the engine's LoraReport). */
  tensors?: number;
  unmatchedTensors?: number;
}

export interface SaveGenerationResult {
  generationId: string;
  imageIds: string[];
}

/** A generation's rows to insert; a save in flight, as pending_saves records it. */
export interface PendingSave {
  generationId: string;
  settings: GenerationSettings;
  family: string | null;
  provider: string | null;
  fallbackReason: string | null;
  timings: Record<string, number>;
  parentId: string | null;
  jobId: string | null;
  created: number;
  images: ImageRecord[];
  /** Absent in records written before generation_networks existed. */
  networks?: GenerationNetwork[];
  /** Absent in records written before the watermark existed. */
  watermark?: string | null;
}

interface ImageRecord {
  id: string;
  file: string;
  thumb: string | null;
  sha256: string;
  width: number;
  height: number;
  bytes: number;
  seed: number;
  batchIndex: number;
  /** Absent in records written before the content filter existed, and when not checked. */
  contentFilter?: ContentFilterVerdict | null;
}

/** Ids the library makes (newId) and accepts from outside (uploads, file names). */
export const idPattern = /^[A-Za-z0-9_-]{1,64}$/;

function isPng(data: Uint8Array): boolean {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  return data.length > 8 && sig.every((b, i) => data[i] === b);
}

/** The saving service; `changed` tells the gallery what was added. */
export class GenerationSaver {
  /**
   * Test hook: called when a save's files are all written, before its rows are committed (a
   * kill -9 test stops the process here).
   */
  beforeCommit: ((generationId: string) => void) | null = null;

  constructor(
    readonly context: HostContext,
    readonly database: LibraryDatabase,
    readonly store: FileStore,
    readonly deps: {
      /** Start-up is done (the reconciler must not see a save's files before its record). */
      ready: () => Promise<void>;
      modelRowFor: (idOrPath: string) => ModelRow | undefined;
      added: (imageIds: string[]) => void;
    },
  ) {}

  get #db(): Db {
    return this.database.db;
  }

  /**
   * Saves a crash cut short (pending_saves, migration 3). When every image file is there, whole
   * (its recorded hash), the save is finished with the ids it was given, so the job that made it
   * is marked done at its recovery and never runs again; otherwise the files it wrote are removed
   * and its job runs again. Synchronous, at open: before the job queue recovers its jobs and
   * before the reconciler looks for files without rows.
   */
  finishPendingSaves(): void {
    const db = this.#db;
    const rows = db.prepare('SELECT generation_id, record FROM pending_saves').all() as Array<{
      generation_id: string;
      record: string;
    }>;
    for (const row of rows)
      try {
        this.#finishPendingSave(row.generation_id, row.record);
      } catch (err) {
        // Left recorded for the next start; the reconciler leaves its files alone meanwhile.
        this.context.log(
          `library: the save of generation ${row.generation_id} cut short could not be finished: ${String(err)}`,
        );
      }
  }

  #finishPendingSave(generationId: string, record: string): void {
    const db = this.#db;
    let pending: PendingSave | null;
    try {
      const parsed = JSON.parse(record) as PendingSave;
      pending = { ...parsed, settings: GenerationSettings.parse(parsed.settings) };
    } catch {
      pending = null;
    }
    const whole =
      pending !== null &&
      pending.images.length > 0 &&
      pending.images.every((i) => this.#hashOf(i.file) === i.sha256);
    if (pending && whole) {
      const saved = pending;
      immediate(db, () => {
        if (!db.prepare('SELECT 1 FROM generations WHERE id = ?').get(generationId))
          this.insertGeneration(saved);
        db.prepare('DELETE FROM pending_saves WHERE generation_id = ?').run(generationId);
      });
      this.context.log(
        `library: finished the save of generation ${generationId} that the app was stopped in${saved.jobId ? ` (job ${saved.jobId})` : ''}`,
      );
      return;
    }
    // Files first, then the record: a crash in between leaves the record to finish this.
    for (const i of pending?.images ?? [])
      for (const f of [i.file, i.thumb])
        if (f)
          try {
            fs.rmSync(this.store.abs(f), { force: true });
          } catch {
            // a path outside the library: never ours to remove
          }
    immediate(db, () =>
      db.prepare('DELETE FROM pending_saves WHERE generation_id = ?').run(generationId),
    );
    this.context.log(
      `library: removed the incomplete save of generation ${generationId}${pending?.jobId ? `; job ${pending.jobId} runs again` : ''}`,
    );
  }

  /** SHA-256 of a library file (relative path), or null when it cannot be read. */
  #hashOf(rel: string): string | null {
    try {
      return sha256(fs.readFileSync(this.store.abs(rel)));
    } catch {
      return null;
    }
  }

  /**
   * Stores a finished generation: each PNG (with our metadata) and its thumbnail are written
   * durably first, then the prompt, generation and image rows go in one transaction. On any
   * failure the files written so far are removed and nothing changes; a full disk gives
   * StudioError 'disk-full'. Emits galleryChanged { added }.
   */
  async saveGeneration(input: SaveGenerationInput): Promise<SaveGenerationResult> {
    await this.deps.ready();
    this.database.assertWritable();
    const settings = GenerationSettings.parse(input.settings);
    if (input.images.length === 0)
      throw new StudioError('invalid-argument', 'A generation to save needs at least one image.');
    const created = Date.now();
    const generationId = newId(created);
    const written: string[] = [];
    let recorded = false;
    const db = this.#db;
    let pending: PendingSave;
    const exported: Array<{ id: string; png: Uint8Array }> = [];
    try {
      // Everything to write, in memory first: each PNG with our metadata and its thumbnail.
      const prepared: Array<{ record: ImageRecord; png: Uint8Array; thumb: Uint8Array | null }> =
        [];
      for (const image of input.images) {
        if (!isPng(image.png))
          throw new StudioError('invalid-argument', 'An image to save must be a PNG.');
        const id = newId(created);
        const { file, thumb } = this.store.imagePaths(id, created);
        const png = this.#withMetadata(image.png, image.metadata ?? { settings });
        const thumbData = await this.store.makeThumb(png).catch(() => null);
        prepared.push({
          png,
          thumb: thumbData,
          record: {
            id,
            file,
            thumb: thumbData ? thumb : null,
            sha256: sha256(png),
            width: image.width,
            height: image.height,
            bytes: png.length,
            seed: image.seed,
            batchIndex: image.batchIndex,
            ...(image.contentFilter ? { contentFilter: image.contentFilter } : {}),
          },
        });
      }
      pending = {
        generationId,
        settings,
        family: input.family,
        provider: input.provider,
        fallbackReason: input.fallbackReason,
        timings: input.timings,
        parentId: input.parentId ?? null,
        jobId: input.jobId ?? null,
        watermark: input.watermark ?? null,
        created,
        images: prepared.map((p) => p.record),
        ...(input.networks ? { networks: input.networks } : {}),
      };
      // The save is on record before its first file exists: a crash from here on is finished or
      // undone at the next start (#finishPendingSaves), never re-imported as a second generation.
      immediate(db, () =>
        db
          .prepare(
            'INSERT INTO pending_saves (generation_id, job_id, record, created_at) VALUES (?, ?, ?, ?)',
          )
          .run(generationId, pending.jobId, JSON.stringify(pending), created),
      );
      recorded = true;
      for (const { record, png, thumb } of prepared) {
        exported.push({ id: record.id, png });
        await this.store.writeAtomic(this.store.abs(record.file), png);
        written.push(this.store.abs(record.file));
        if (!thumb || !record.thumb) continue;
        try {
          await this.store.writeAtomic(this.store.abs(record.thumb), thumb);
          written.push(this.store.abs(record.thumb));
        } catch (err) {
          if (isDiskFull(err)) throw err;
          record.thumb = null;
        }
      }
      this.beforeCommit?.(generationId);
      immediate(db, () => {
        this.insertGeneration(pending);
        db.prepare('DELETE FROM pending_saves WHERE generation_id = ?').run(generationId);
      });
    } catch (err) {
      for (const f of written.reverse()) await fsp.rm(f, { force: true }).catch(() => {});
      if (recorded)
        try {
          immediate(db, () =>
            db.prepare('DELETE FROM pending_saves WHERE generation_id = ?').run(generationId),
          );
        } catch {
          // left for the next start, which finds its files gone and drops it
        }
      throw this.database.mapError(err, 'the image was not saved');
    }
    const images = pending.images;
    const imageIds = images.map((i) => i.id);
    this.deps.added(imageIds);
    await this.#export(exported);
    return { generationId, imageIds };
  }

  /** Copies of the saved images in the output folder, when one is set (after the commit). */
  async #export(images: Array<{ id: string; png: Uint8Array }>): Promise<void> {
    const dir = this.context.settings.get().outputDir;
    if (!dir) return;
    for (const problem of await exportImages(this.store, dir, images))
      this.context.log(`library: ${problem}`);
  }

  /**
   * Adds our text chunks to a PNG that does not carry them yet, unless the user turned PNG
   * metadata off (then the file stays as given; the database still holds every setting, and a
   * crash between file and row is finished from pending_saves; only a restored backup that
   * predates the image leaves a file that can be quarantined, not re-imported).
   */
  #withMetadata(png: Uint8Array, metadata: PngGenerationMetadata): Uint8Array {
    try {
      if (!this.context.settings.get().embedMetadata) return png;
      if (readPngTextChunks(png).some((c) => c.keyword === LATENT_STUDIO_KEYWORD)) return png;
      return addPngTextChunks(png, generationTextEntries(metadata));
    } catch {
      throw new StudioError('invalid-argument', 'An image to save is not a readable PNG.');
    }
  }

  /** Rows of one generation; call inside a transaction. */
  insertGeneration(g: PendingSave): void {
    const db = this.#db;
    const s = g.settings;
    db.prepare(
      'INSERT INTO prompts (text, negative) VALUES (?, ?) ON CONFLICT (text, negative) DO NOTHING',
    ).run(s.prompt, s.negativePrompt);
    const promptId = (
      db
        .prepare('SELECT id FROM prompts WHERE text = ? AND negative = ?')
        .get(s.prompt, s.negativePrompt) as { id: number }
    ).id;
    const model = this.deps.modelRowFor(s.model);
    let parentId = g.parentId;
    if (parentId && !db.prepare('SELECT 1 FROM generations WHERE id = ?').get(parentId))
      parentId = null;
    if (!parentId && s.initImage && idPattern.test(s.initImage)) {
      const parent = db
        .prepare('SELECT generation_id FROM images WHERE id = ?')
        .get(s.initImage) as { generation_id: string } | undefined;
      parentId = parent?.generation_id ?? null;
    }
    const variantKey = variantKeyOf(s);
    db.prepare(
      `INSERT INTO generations (id, settings, prompt_id, model_id, model_name, seed, sampler, mode,
         steps, guidance, width, height, parent_id, variant_key, timings, provider,
         fallback_reason, family, status, job_id, created_at, watermark)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'done', ?, ?, ?)`,
    ).run(
      g.generationId,
      JSON.stringify(s),
      promptId,
      model?.id ?? null,
      model?.name ?? path.basename(s.model),
      s.seed,
      s.sampler,
      s.mode,
      s.steps,
      s.guidance,
      s.width,
      s.height,
      parentId,
      variantKey,
      JSON.stringify(g.timings),
      g.provider,
      g.fallbackReason,
      g.family ?? model?.family ?? null,
      g.jobId,
      g.created,
      g.watermark ?? null,
    );
    const insertImage = db.prepare(
      `INSERT INTO images (id, generation_id, file, thumb, sha256, width, height, bytes, seed,
         batch_index, prompt_id, model_id, sampler, mode, variant_key, created_at,
         content_filter, content_filter_scores)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    for (const i of g.images)
      insertImage.run(
        i.id,
        g.generationId,
        i.file,
        i.thumb,
        i.sha256,
        i.width,
        i.height,
        i.bytes,
        i.seed,
        i.batchIndex,
        promptId,
        model?.id ?? null,
        s.sampler,
        s.mode,
        variantKey,
        g.created,
        i.contentFilter ? (i.contentFilter.flagged ? 'flagged' : 'clean') : null,
        i.contentFilter ? JSON.stringify(i.contentFilter) : null,
      );
    const insertNetwork = db.prepare(
      `INSERT INTO generation_networks (generation_id, kind, name, hash, tensors, unmatched_tensors)
       VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT DO UPDATE SET hash = coalesce(excluded.hash, hash),
         tensors = coalesce(excluded.tensors, tensors),
         unmatched_tensors = coalesce(excluded.unmatched_tensors, unmatched_tensors)`,
    );
    const networks: readonly GenerationNetwork[] =
      g.networks ??
      [...parseNetworkTags(s.prompt).tags, ...parseNetworkTags(s.negativePrompt).tags]
        .filter((t) => t.kind === 'lora' && !t.error)
        .map((t) => ({ kind: 'lora' as const, name: t.name, hash: null }));
    for (const n of networks)
      insertNetwork.run(
        g.generationId,
        n.kind,
        n.name,
        n.hash,
        n.tensors ?? null,
        n.unmatchedTensors ?? null,
      );
    if (g.jobId)
      db.prepare('UPDATE jobs SET generation_id = ? WHERE id = ?').run(g.generationId, g.jobId);
  }
}
