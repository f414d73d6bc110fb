/**
 * The gallery service: searches, generation details, favorites, ratings and tags, and the
 * galleryChanged notices every other library service sends through `changed` (it owns the
 * count cache those notices keep fresh).
 */
import {
  type GalleryPage,
  ContentFilterVerdict,
  type GenerationDetail,
  GenerationSettings,
  type ModelEntry,
  type StudioService,
  StudioError,
  type UsedNetwork,
  networkInfotextFields,
} from '../../shared';
import type { HostContext, LibraryMethods } from '../services';
import type { LibraryDatabase } from './database';
import { type Db, immediate } from './db';
import {
  type CountCache,
  type ItemRow,
  countAdded,
  itemSelect,
  searchGallery,
  toItems,
} from './gallery';
import fs from 'node:fs';
import path from 'node:path';
import { formatA1111Parameters, readGenerationMetadata } from './png-metadata';
import { taesdInfotextFields } from '../models/taesd';

/** The `name: hash` pairs of one kind whose hash was recorded. */
function hashed(
  networks: GenerationDetail['networks'],
  kind: 'lora' | 'embedding',
): Array<{ name: string; hash: string }> {
  return networks
    .filter((n) => n.kind === kind && n.hash !== null)
    .map((n) => ({ name: n.name.replace(/[:,]/g, ''), hash: n.hash! }));
}

interface GenerationRow {
  id: string;
  settings: string;
  model_name: string;
  family: string | null;
  provider: string | null;
  fallback_reason: string | null;
  timings: string;
  created_at: number;
  parent_id: string | null;
  watermark: string | null;
}

export class GalleryService {
  #countCache: CountCache = new Map();
  /** This slice of the contract (the type check holds it to the contract's schemas). */
  readonly methods;

  constructor(
    readonly context: HostContext,
    readonly database: LibraryDatabase,
    /** The model list, sent with modelsChanged when images come or go (disk use per model). */
    readonly listModels: () => ModelEntry[],
  ) {
    const guard = database.guard.bind(database);
    this.methods = {
      searchGallery: (input) => guard(() => this.searchGallery(input)),
      getGeneration: (input) => guard(() => this.getGeneration(input.id)),
      setFavorite: (input) => guard(() => this.setFavorite(input.imageIds, input.favorite)),
      setRating: (input) => guard(() => this.setRating(input.imageIds, input.rating)),
      setTags: (input) => guard(() => this.setTags(input.imageId, input.tags)),
    } satisfies Pick<
      StudioService,
      'searchGallery' | 'getGeneration' | 'setFavorite' | 'setRating' | 'setTags'
    >;
    database.on('reopened', () => this.#countCache.clear());
  }

  get #db(): Db {
    return this.database.db;
  }

  /**
   * `countNew`: the added rows were committed in the same turn of the event loop (no search can
   * have counted them yet), so they join the cached totals they match instead of every search
   * being counted again: a gallery search stays cheap while the queue keeps saving.
   */
  changed(
    added: string[],
    updated: string[],
    removed: string[],
    { countNew = false }: { countNew?: boolean } = {},
  ): void {
    if (countNew && updated.length === 0 && removed.length === 0)
      try {
        countAdded(this.#db, this.#countCache, added);
      } catch {
        this.#countCache.clear();
      }
    else this.#countCache.clear();
    // Disk use per model follows the images; the models view shows it.
    if (added.length || removed.length)
      this.context.events.emit('modelsChanged', this.listModels());
    this.context.events.emit('galleryChanged', { added, updated, removed });
  }

  searchGallery(query: Parameters<LibraryMethods['searchGallery']>[0]): GalleryPage {
    return searchGallery(this.#db, query, this.#countCache);
  }

  getGeneration(id: string): GenerationDetail {
    const db = this.#db;
    let g = db.prepare('SELECT * FROM generations WHERE id = ?').get(id) as
      GenerationRow | undefined;
    if (!g) {
      const img = db.prepare('SELECT generation_id FROM images WHERE id = ?').get(id) as
        { generation_id: string } | undefined;
      if (img)
        g = db.prepare('SELECT * FROM generations WHERE id = ?').get(img.generation_id) as
          GenerationRow | undefined;
    }
    if (!g) throw new StudioError('not-found', 'That generation is not in the library.');
    const settings = GenerationSettings.parse(JSON.parse(g.settings));
    const rows = db
      .prepare(
        `${itemSelect} WHERE i.generation_id = ? AND i.deleted_at IS NULL ORDER BY i.batch_index, i.id`,
      )
      .all(g.id) as ItemRow[];
    const childIds = (
      db
        .prepare('SELECT id FROM generations WHERE parent_id = ? ORDER BY created_at, id')
        .all(g.id) as Array<{ id: string }>
    ).map((r) => r.id);
    const networks = (
      db
        .prepare(
          `SELECT kind, name, hash, tensors, unmatched_tensors AS unmatchedTensors
           FROM generation_networks WHERE generation_id = ? ORDER BY rowid`,
        )
        .all(g.id) as Array<
        Pick<UsedNetwork, 'kind' | 'name' | 'hash'> & {
          tensors: number | null;
          unmatchedTensors: number | null;
        }
      >
    ).map(({ tensors, unmatchedTensors, ...n }): UsedNetwork => ({
      ...n,
      ...(tensors !== null && unmatchedTensors !== null ? { tensors, unmatchedTensors } : {}),
    }));
    // The content filter's scores of the images it checked (images.content_filter_scores).
    const contentFilter: GenerationDetail['contentFilter'] = {};
    for (const r of db
      .prepare(
        `SELECT id, content_filter_scores AS scores FROM images
         WHERE generation_id = ? AND deleted_at IS NULL AND content_filter_scores IS NOT NULL`,
      )
      .all(g.id) as Array<{ id: string; scores: string }>) {
      const parsed = ContentFilterVerdict.safeParse(JSON.parse(r.scores));
      if (parsed.success) contentFilter[r.id] = parsed.data;
    }
    return {
      generationId: g.id,
      settings,
      images: toItems(db, rows),
      modelName: g.model_name,
      family: g.family,
      provider: g.provider,
      fallbackReason: g.fallback_reason,
      timings: JSON.parse(g.timings) as Record<string, number>,
      createdAt: g.created_at,
      parentId: g.parent_id,
      childIds,
      parametersText: formatA1111Parameters(settings, {
        modelName: g.model_name,
        ...this.#vaeFields(g.id, settings),
        ...taesdInfotextFields(settings),
        ...networkInfotextFields({
          loraHashes: hashed(networks, 'lora'),
          tiHashes: hashed(networks, 'embedding'),
        }),
        ...this.#controlNetFields(g.id, settings),
      }),
      networks,
      watermark: g.watermark,
      contentFilter,
    };
  }

  /**
   * A replacement VAE's infotext fields: its name from the settings, its hash (known only once
   * the file was hashed for the job) from the first image's own metadata when it carries one.
   */
  #vaeFields(generationId: string, settings: GenerationSettings): Record<string, string> {
    if (!settings.vae) return {};
    const name = path.basename(settings.vae);
    const raw = this.#firstImageFields(generationId);
    const hash =
      raw.VAE === name && /^[0-9a-f]{10}$/.test(raw['VAE hash'] ?? '') ? raw['VAE hash'] : null;
    return hash ? { 'VAE hash': hash, VAE: name } : { VAE: name };
  }

  /**
   * The `ControlNet N` fields of the units (their model names and hashes are known only once the
   * files were hashed for the job), from the first image's own metadata.
   */
  #controlNetFields(generationId: string, settings: GenerationSettings): Record<string, string> {
    if (!settings.controlnets.length) return {};
    const raw = this.#firstImageFields(generationId);
    return Object.fromEntries(Object.entries(raw).filter(([k]) => /^ControlNet \d+$/.test(k)));
  }

  /** The infotext fields of the generation's first image; none when its file is missing. */
  #firstImageFields(generationId: string): Record<string, string> {
    const row = this.#db
      .prepare(
        'SELECT file FROM images WHERE generation_id = ? AND deleted_at IS NULL ORDER BY batch_index LIMIT 1',
      )
      .get(generationId) as { file: string } | undefined;
    try {
      if (row)
        return readGenerationMetadata(fs.readFileSync(path.resolve(this.context.dataDir, row.file)))
          .raw;
    } catch {
      // a missing file: no fields
    }
    return {};
  }

  #liveIds(ids: string[]): string[] {
    return (
      this.#db
        .prepare(
          'SELECT id FROM images WHERE id IN (SELECT value FROM json_each(?)) AND deleted_at IS NULL',
        )
        .all(JSON.stringify(ids)) as Array<{ id: string }>
    ).map((r) => r.id);
  }

  setFavorite(imageIds: string[], favorite: boolean): null {
    return this.#setMark('favorite', imageIds, favorite ? 1 : 0);
  }

  setRating(imageIds: string[], rating: number): null {
    return this.#setMark('rating', imageIds, rating);
  }

  /** One mark (favorite, rating) of the live images among `imageIds`. */
  #setMark(column: 'favorite' | 'rating', imageIds: string[], value: number): null {
    this.database.assertWritable();
    const ids = this.#liveIds(imageIds);
    immediate(this.#db, () =>
      this.#db
        .prepare(`UPDATE images SET ${column} = ? WHERE id IN (SELECT value FROM json_each(?))`)
        .run(value, JSON.stringify(ids)),
    );
    this.changed([], ids, []);
    return null;
  }

  setTags(imageId: string, tags: string[]): null {
    this.database.assertWritable();
    if (this.#liveIds([imageId]).length === 0)
      throw new StudioError('not-found', 'That image is not in the library.');
    const byKey = new Map<string, string>();
    for (const t of tags)
      if (!byKey.has(t.trim().toLowerCase())) byKey.set(t.trim().toLowerCase(), t.trim());
    const unique = [...byKey.values()];
    immediate(this.#db, () => {
      const db = this.#db;
      db.prepare('DELETE FROM image_tags WHERE image_id = ?').run(imageId);
      const addTag = db.prepare('INSERT INTO tags (name) VALUES (?) ON CONFLICT (name) DO NOTHING');
      const tagId = db.prepare('SELECT id FROM tags WHERE name = ?');
      const link = db.prepare('INSERT OR IGNORE INTO image_tags (image_id, tag_id) VALUES (?, ?)');
      for (const t of unique) {
        addTag.run(t);
        link.run(imageId, (tagId.get(t) as { id: number }).id);
      }
      db.prepare('DELETE FROM tags WHERE id NOT IN (SELECT tag_id FROM image_tags)').run();
    });
    this.changed([], [imageId], []);
    return null;
  }
}
