// The library with real SQLite and real files in temp folders: schema and migrations, saving,
// gallery queries (FTS, filters, paging), lineage, seed variants, uploads, delete/undo,
// the reconciler and the models registry.
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type GalleryQuery,
  GalleryQuery as GalleryQuerySchema,
  StudioError,
} from '../../src/shared';
import { openDatabase } from '../../src/main/library/db';
import { countAhead } from '../../src/main/library/gallery';
import { ftsQuery } from '../../src/main/library/search-text';
import {
  type Migration,
  migrate,
  migrations,
  schemaVersion,
  userVersion,
} from '../../src/main/library/migrations';
import {
  addPngTextChunks,
  readGenerationMetadata,
  readPngTextChunks,
} from '../../src/main/library/png-metadata';
import type { Library } from '../../src/main/library/service';
import { variantKeyOf } from '../../src/main/library/variant-key';
import { fixtureModel } from '../fixtures/models';
import { openLibrary, pngOf, saveOne, settingsOf, tempDir } from './library-helpers';

const dirs: string[] = [];
function dir(): string {
  const d = tempDir();
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const q = (query: Partial<GalleryQuery> = {}) => GalleryQuerySchema.parse(query);

async function rejectsWith(p: unknown, code: string, message?: RegExp) {
  const err = await Promise.resolve(p).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StudioError);
  expect((err as StudioError).code).toBe(code);
  if (message) expect((err as StudioError).message).toMatch(message);
}

function throwsWith(fn: () => unknown, code: string) {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(StudioError);
    expect((e as StudioError).code).toBe(code);
    return;
  }
  throw new Error('expected a throw');
}

describe('migrations', () => {
  it('creates the schema on a fresh file, and re-opening applies nothing', () => {
    const file = path.join(dir(), 'm.sqlite');
    const db = openDatabase(file);
    expect(migrate(db)).toEqual(migrations.map((m) => m.version));
    expect(userVersion(db)).toBe(schemaVersion);
    const tables = (
      db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table')").all() as Array<{
        name: string;
      }>
    ).map((r) => r.name);
    for (const t of [
      'models',
      'prompts',
      'generations',
      'images',
      'tags',
      'image_tags',
      'jobs',
      'meta',
      'uploads',
      'prompts_fts',
      'pending_saves',
    ])
      expect(tables).toContain(t);
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
    db.close();
    const again = openDatabase(file);
    expect(migrate(again)).toEqual([]);
    expect(userVersion(again)).toBe(schemaVersion);
    again.close();
  });

  it('upgrades a version 1 library in place, keeping its rows', () => {
    const file = path.join(dir(), 'm.sqlite');
    const db = openDatabase(file);
    expect(migrate(db, migrations.slice(0, 1))).toEqual([1]);
    db.prepare(
      `INSERT INTO jobs (id, state, settings, created_at, finished_at) VALUES ('j1', 'done', '{}', 1, 2)`,
    ).run();
    db.prepare(
      `INSERT INTO models (id, path, name, family_reasons, bytes, file_hashes, built_in, status, added_at)
       VALUES ('m1', '/models/m1', 'm1', '[]', 1, '{}', 0, 'ok', 1)`,
    ).run();
    expect(migrate(db)).toEqual(migrations.map((m) => m.version).filter((v) => v > 1));
    expect(db.prepare('SELECT id FROM jobs').pluck().all()).toEqual(['j1']);
    // Models from before version 4 have no recommended settings.
    expect(db.prepare('SELECT id, defaults FROM models').all()).toEqual([
      { id: 'm1', defaults: null },
    ]);
    const plan = db
      .prepare(
        `EXPLAIN QUERY PLAN SELECT id FROM jobs INDEXED BY jobs_finished
         WHERE state IN ('done', 'failed', 'cancelled') ORDER BY finished_at DESC LIMIT 5`,
      )
      .all() as Array<{ detail: string }>;
    expect(plan.map((p) => p.detail).join(' ')).toMatch(/jobs_finished/);
    expect(plan.map((p) => p.detail).join(' ')).not.toMatch(/TEMP B-TREE/);
    db.close();
  });

  it('rewrites settings stored before the schedule was its own setting (version 5)', () => {
    const file = path.join(dir(), 'm.sqlite');
    const db = openDatabase(file);
    expect(migrate(db, migrations.slice(0, 4))).toEqual([1, 2, 3, 4]);
    // As version 4 stored them: no `schedule`, the Karras variant named in the sampler.
    const { schedule: _schedule, ...current } = settingsOf({ steps: 30 });
    const old = { ...current, sampler: 'dpmpp_2m_karras' };
    db.prepare("INSERT INTO prompts (id, text, negative) VALUES (1, 'a cat', '')").run();
    const insertGeneration = db.prepare(
      `INSERT INTO generations (id, settings, prompt_id, model_name, seed, sampler, mode, steps,
         guidance, width, height, variant_key, created_at)
       VALUES (?, ?, 1, 'model-x', 1, ?, 'txt2img', 30, 7, 512, 512, 'old-key', 1)`,
    );
    insertGeneration.run('g1', JSON.stringify(old), 'dpmpp_2m_karras');
    insertGeneration.run('g2', '{"not": "settings"}', 'euler');
    db.prepare(
      `INSERT INTO images (id, generation_id, file, sha256, width, height, bytes, seed, prompt_id,
         sampler, mode, variant_key, created_at)
       VALUES ('i1', 'g1', 'i1.png', 'x', 512, 512, 1, 1, 1, 'dpmpp_2m_karras', 'txt2img', 'old-key', 1)`,
    ).run();

    expect(migrate(db)).toEqual(migrations.map((m) => m.version).filter((v) => v >= 5));
    const made = settingsOf({ steps: 30, sampler: 'dpmpp_2m', schedule: 'karras' });
    const g1 = db
      .prepare("SELECT settings, sampler, variant_key FROM generations WHERE id = 'g1'")
      .get() as { settings: string; sampler: string; variant_key: string };
    expect(JSON.parse(g1.settings)).toEqual(made);
    expect(g1.sampler).toBe('dpmpp_2m');
    // The same settings made today are its seed variants.
    expect(g1.variant_key).toBe(variantKeyOf(made));
    expect(db.prepare("SELECT sampler, variant_key FROM images WHERE id = 'i1'").get()).toEqual({
      sampler: 'dpmpp_2m',
      variant_key: variantKeyOf(made),
    });
    // What does not parse is left alone.
    expect(
      db.prepare("SELECT settings, variant_key FROM generations WHERE id = 'g2'").get(),
    ).toEqual({ settings: '{"not": "settings"}', variant_key: 'old-key' });
    db.close();
  });

  it('rolls a failing step back with its version bump', () => {
    const file = path.join(dir(), 'm.sqlite');
    const db = openDatabase(file);
    migrate(db);
    const next = schemaVersion + 1;
    const failing: Migration[] = [
      ...migrations,
      {
        version: next,
        description: 'fails halfway',
        up: (d) => {
          d.exec('CREATE TABLE half (x); INSERT INTO half VALUES (1);');
          throw new Error('boom');
        },
      },
    ];
    expect(() => migrate(db, failing)).toThrow('boom');
    expect(userVersion(db)).toBe(schemaVersion);
    expect(db.prepare("SELECT name FROM sqlite_master WHERE name = 'half'").get()).toBeUndefined();
    // A good next step then applies.
    const good: Migration[] = [
      ...migrations,
      { version: next, description: 'ok', up: (d) => d.exec('CREATE TABLE half (x)') },
    ];
    expect(migrate(db, good)).toEqual([next]);
    expect(userVersion(db)).toBe(next);
    // An app that does not know that step refuses the newer schema.
    expect(() => migrate(db)).toThrow(/newer Latent Studio/);
    db.close();
  });
});

describe('saving and the gallery', () => {
  let library: Library;
  let emitted: Array<{ event: string; payload: unknown }>;
  let dataDir: string;

  beforeAll(async () => {
    dataDir = dir();
    const opened = await openLibrary(dataDir);
    library = opened.library;
    emitted = opened.context.emitted;
  });
  afterAll(() => library.close());

  it('saves a generation durably and reads it back', async () => {
    const saved = await saveOne(
      library,
      { prompt: 'a red fox in the snow', seed: 42 },
      { images: 2 },
    );
    expect(saved.imageIds).toHaveLength(2);
    expect(emitted.at(-1)).toEqual({
      event: 'galleryChanged',
      payload: { added: saved.imageIds, updated: [], removed: [] },
    });
    // The models view hears about the disk use that changed with it.
    const models = emitted.at(-2) as {
      event: string;
      payload: Array<{ name: string; imageBytes: number }>;
    };
    expect(models.event).toBe('modelsChanged');
    const row = library.db
      .prepare('SELECT file, thumb, sha256, bytes FROM images WHERE id = ?')
      .get(saved.imageIds[0]) as { file: string; thumb: string; sha256: string; bytes: number };
    expect(row.file).toMatch(/^images\/\d{4}\/\d{2}\/[0-9a-z]+\.png$/);
    const png = fs.readFileSync(path.join(dataDir, row.file));
    expect(png.length).toBe(row.bytes);
    expect(readGenerationMetadata(png)).toMatchObject({
      source: 'latent-studio',
      settings: { prompt: 'a red fox in the snow' },
    });
    const thumb = await sharp(path.join(dataDir, row.thumb)).metadata();
    expect(thumb.format).toBe('webp');
    // No temp files left behind.
    const all = fs.readdirSync(path.join(dataDir, path.dirname(row.file)));
    expect(all.filter((f) => f.startsWith('.'))).toEqual([]);

    const detail = library.gallery.getGeneration(saved.generationId);
    expect(detail).toMatchObject({
      generationId: saved.generationId,
      settings: { prompt: 'a red fox in the snow', seed: 42 },
      modelName: 'model-x',
      family: 'sd1',
      provider: 'cpu',
      timings: { total: 12.5 },
      parentId: null,
      childIds: [],
    });
    expect(detail.images.map((i) => i.seed)).toEqual([42, 43]);
    expect(detail.parametersText).toMatch(
      /^a red fox in the snow\nSteps: 25, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512/,
    );
    const page = library.gallery.searchGallery(q());
    expect(page.items[0]).toMatchObject({
      url: `/media/images/${page.items[0].imageId}`,
      thumbUrl: `/media/thumbs/${page.items[0].imageId}`,
      prompt: 'a red fox in the snow',
      width: 64,
      missing: false,
      favorite: false,
      rating: 0,
      tags: [],
    });
    expect(library.readMedia(page.items[0].url)).toMatchObject({ contentType: 'image/png' });
    expect(library.readMedia(page.items[0].thumbUrl)).toMatchObject({ contentType: 'image/webp' });
    expect(library.readMedia('/media/images/../../library.sqlite')).toBeNull();
    expect(library.resolveImage(saved.imageIds[0]).file).toBe(path.join(dataDir, row.file));
    expect(library.getLibraryStatus()).toMatchObject({
      readOnly: false,
      images: 2,
      generations: 1,
    });
  });

  it('leaves PNGs without metadata when the user turned it off', async () => {
    const own = await openLibrary(dir());
    try {
      own.context.settings.update({ embedMetadata: false });
      const settings = settingsOf({ prompt: 'no metadata please' });
      const saved = await own.library.saveGeneration({
        settings,
        images: [{ png: await pngOf(null, 3), width: 64, height: 64, seed: 3, batchIndex: 0 }],
        family: null,
        provider: null,
        fallbackReason: null,
        timings: {},
      });
      const row = own.library.db
        .prepare('SELECT file FROM images WHERE id = ?')
        .get(saved.imageIds[0]) as { file: string };
      const png = fs.readFileSync(path.join(own.context.dataDir, row.file));
      expect(readPngTextChunks(png)).toEqual([]);
      // The history still has every setting.
      expect(own.library.gallery.getGeneration(saved.generationId).settings.prompt).toBe(
        'no metadata please',
      );
    } finally {
      own.library.close();
    }
  });

  it('searches prompts with FTS5, escaping hostile input', async () => {
    await saveOne(library, {
      prompt: 'blue whale under the sea',
      negativePrompt: 'blurry, lowres',
      seed: 5,
    });
    await saveOne(library, { prompt: 'NEAR the "castle" (at night) *stars*', seed: 6 });
    const texts = (text: string) =>
      library.gallery.searchGallery(q({ text })).items.map((i) => i.prompt);
    expect(texts('fox')).toEqual(['a red fox in the snow', 'a red fox in the snow']);
    expect(texts('whal')).toEqual(['blue whale under the sea']); // prefix
    expect(texts('blurry')).toEqual(['blue whale under the sea']); // negative prompt
    expect(texts('FOX snow')).toHaveLength(2);
    expect(texts('fox whale')).toEqual([]); // all terms must match
    expect(texts('castle')).toEqual(['NEAR the "castle" (at night) *stars*']);
    for (const hostile of [
      '"',
      '""',
      '*',
      'fox*',
      '"fox',
      'NEAR(fox snow)',
      'fox OR whale',
      'fox AND',
      'NOT fox',
      'text:fox',
      '{text negative}: fox',
      '^fox',
      '(',
      ')',
      '-fox',
      '+',
      "'; DROP TABLE images; --",
      'x'.repeat(1000),
      'a '.repeat(500),
      '🦊 ☃ fox',
      '\u0000fox',
    ]) {
      expect(() => library.gallery.searchGallery(q({ text: hostile }))).not.toThrow();
    }
    expect(texts('"fox')).toHaveLength(2);
    expect(texts('NEAR(fox snow)')).toHaveLength(0); // "near" is a term here, and no prompt has it with fox
    expect(texts('*stars*')).toHaveLength(1);
    expect(texts('***')).toHaveLength(4); // nothing searchable: no text filter
    expect(ftsQuery('a "b" c*')).toBe('"a"* "b"* "c"*');
    expect(ftsQuery('*** ()')).toBeNull();
  });

  it('filters, sorts, tags, favorites and ratings', async () => {
    const l = library;
    const a = await saveOne(
      l,
      { prompt: 'filter a', sampler: 'ddim', width: 768, height: 512, seed: 1 },
      { size: 96 },
    );
    const b = await saveOne(l, {
      prompt: 'filter b',
      mode: 'img2img',
      initImage: a.imageIds[0],
      seed: 2,
    });
    const c = await saveOne(l, { prompt: 'filter c', model: 'other-model', seed: 3 });
    l.gallery.setFavorite([a.imageIds[0], c.imageIds[0]], true);
    l.gallery.setRating([b.imageIds[0]], 5);
    l.gallery.setRating([c.imageIds[0]], 3);
    l.gallery.setTags(a.imageIds[0], ['Portrait', 'keep', 'portrait ']);
    l.gallery.setTags(c.imageIds[0], ['keep']);
    expect(emitted.at(-1)).toMatchObject({
      event: 'galleryChanged',
      payload: { updated: [c.imageIds[0]] },
    });
    const ids = (query: Partial<GalleryQuery>) =>
      l.gallery.searchGallery(q({ text: 'filter', ...query })).items.map((i) => i.prompt);
    expect(ids({})).toEqual(['filter c', 'filter b', 'filter a']);
    expect(ids({ sort: 'oldest' })).toEqual(['filter a', 'filter b', 'filter c']);
    expect(ids({ sort: 'rating' })).toEqual(['filter b', 'filter c', 'filter a']);
    expect(ids({ sampler: 'ddim' })).toEqual(['filter a']);
    expect(ids({ mode: 'img2img' })).toEqual(['filter b']);
    expect(ids({ width: 96, height: 96 })).toEqual(['filter a']);
    expect(ids({ width: 64 })).toEqual(['filter c', 'filter b']);
    expect(ids({ favorite: true })).toEqual(['filter c', 'filter a']);
    expect(ids({ favorite: false })).toEqual(['filter b']);
    expect(ids({ minRating: 3 })).toEqual(['filter c', 'filter b']);
    expect(ids({ tag: 'keep' })).toEqual(['filter c', 'filter a']);
    expect(ids({ tag: 'PORTRAIT' })).toEqual(['filter a']);
    const created = l.gallery.getGeneration(b.generationId).createdAt;
    expect(ids({ from: created, to: created })).toContain('filter b');
    expect(ids({ to: 0 })).toEqual([]);
    const item = l.gallery.searchGallery(q({ text: 'filter a' })).items[0];
    expect(item.tags).toEqual(['keep', 'Portrait']);
    expect(item.favorite).toBe(true);
    // Rating sort pages through ties with the cursor too.
    const p1 = l.gallery.searchGallery(q({ text: 'filter', sort: 'rating', limit: 2 }));
    const p2 = l.gallery.searchGallery(
      q({ text: 'filter', sort: 'rating', limit: 2, cursor: p1.nextCursor }),
    );
    expect([...p1.items, ...p2.items].map((i) => i.prompt)).toEqual([
      'filter b',
      'filter c',
      'filter a',
    ]);
    expect(p2.nextCursor).toBeNull();
    expect(p1.total).toBe(3);
    throwsWith(() => l.gallery.searchGallery(q({ cursor: p1.nextCursor })), 'invalid-argument'); // other sort
    throwsWith(() => l.gallery.searchGallery(q({ cursor: 'garbage' })), 'invalid-argument');
    throwsWith(() => l.gallery.setTags('nope', ['x']), 'not-found');
  });

  it('records lineage: an img2img from a library image is its child', async () => {
    const parent = await saveOne(library, { prompt: 'lineage parent', seed: 10 });
    const child = await saveOne(library, {
      prompt: 'lineage child',
      mode: 'img2img',
      initImage: parent.imageIds[0],
      seed: 11,
    });
    const explicit = await saveOne(
      library,
      { prompt: 'lineage explicit', seed: 12 },
      { parentId: parent.generationId },
    );
    expect(library.gallery.getGeneration(child.generationId).parentId).toBe(parent.generationId);
    expect(library.gallery.getGeneration(parent.generationId).childIds).toEqual([
      child.generationId,
      explicit.generationId,
    ]);
    // An image id also finds its generation.
    expect(library.gallery.getGeneration(child.imageIds[0]).generationId).toBe(child.generationId);
    throwsWith(() => library.gallery.getGeneration('missing'), 'not-found');
  });

  it('groups seed variants: same prompt and settings, any seed', async () => {
    const base = { prompt: 'variant test', steps: 20 };
    const v1 = await saveOne(library, { ...base, seed: 100 }, { images: 2 });
    await saveOne(library, { ...base, seed: 200 });
    await saveOne(library, { ...base, seed: 300, batchCount: 4 });
    await saveOne(library, { ...base, seed: 400, steps: 21 });
    await saveOne(library, { prompt: 'variant test!', seed: 500, steps: 20 });
    const page = library.gallery.searchGallery(
      q({ seedVariantsOf: v1.imageIds[0], sort: 'oldest' }),
    );
    expect(page.items.map((i) => i.seed)).toEqual([100, 101, 200, 300]);
    expect(library.gallery.searchGallery(q({ seedVariantsOf: v1.generationId })).total).toBe(4);
    throwsWith(() => library.gallery.searchGallery(q({ seedVariantsOf: 'nope' })), 'not-found');
  });

  it('pages with a stable cursor while new images arrive', async () => {
    const d = dir();
    const { library: l } = await openLibrary(d);
    const original: string[] = [];
    for (let i = 0; i < 25; i++)
      original.push(...(await saveOne(l, { seed: i, prompt: `page ${i}` })).imageIds);
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    let lastKey = Infinity;
    do {
      const page = l.gallery.searchGallery(q({ limit: 4, cursor }));
      for (const item of page.items) {
        expect(item.createdAt).toBeLessThanOrEqual(lastKey);
        lastKey = item.createdAt;
        seen.push(item.imageId);
      }
      cursor = page.nextCursor;
      // New images arrive between pages: they sort before the cursor and never shift it.
      await saveOne(l, { seed: 1000 + pages, prompt: 'arrived later' });
      pages++;
    } while (cursor);
    expect(new Set(seen).size).toBe(seen.length); // no duplicates
    expect(seen).toEqual([...original].reverse()); // nothing skipped, newest first
    expect(pages).toBe(7);
    l.close();
  });

  it('jumps to any page by offset, matching what the cursor walk gives', async () => {
    const { library: l } = await openLibrary(dir());
    for (let i = 0; i < 30; i++) await saveOne(l, { seed: i, prompt: `offset ${i % 3}` });
    for (const sort of ['newest', 'oldest', 'rating'] as const) {
      const walked: string[] = [];
      let cursor: string | null = null;
      do {
        const page = l.gallery.searchGallery(q({ sort, limit: 7, cursor }));
        walked.push(...page.items.map((i) => i.imageId));
        cursor = page.nextCursor;
      } while (cursor);
      for (const offset of [0, 7, 13, 28, 30, 45]) {
        const page = l.gallery.searchGallery(q({ sort, limit: 7, offset }));
        expect(
          page.items.map((i) => i.imageId),
          `${sort} @${offset}`,
        ).toEqual(walked.slice(offset, offset + 7));
        expect(page.total).toBe(30);
      }
    }
    const filtered = l.gallery.searchGallery(q({ text: 'offset', limit: 5, offset: 25 }));
    expect(filtered.items).toHaveLength(5);
    l.close();
  });
});

describe('gallery totals', () => {
  /** `n` more image rows like `imageId`'s (rows only: the gallery reads rows, not files). */
  function cloneRows(l: Library, imageId: string, n: number) {
    l.db
      .prepare(
        `WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < ?)
         INSERT INTO images (id, generation_id, file, thumb, sha256, width, height, bytes, seed,
           batch_index, prompt_id, model_id, sampler, mode, variant_key, created_at)
         SELECT 'clone' || k.n, generation_id, 'images/clone/' || k.n || '.png', NULL, sha256,
           width, height, bytes, seed + k.n, 0, prompt_id, model_id, sampler, mode, variant_key,
           created_at - k.n
         FROM images, k WHERE images.id = ?`,
      )
      .run(n, imageId);
  }

  it('huge text searches give a lower bound and an estimate; column filters count exactly', async () => {
    const { library: l } = await openLibrary(dir());
    const big = await saveOne(l, { prompt: 'a harbour at dawn', sampler: 'ddim' });
    await saveOne(l, { prompt: 'a quiet meadow', sampler: 'euler' });
    cloneRows(l, big.imageIds[0], 7999); // 8,000 harbours, 1 meadow

    const first = l.gallery.searchGallery(q({ text: 'harbour', limit: 100 }));
    expect(countAhead).toBeLessThan(7000);
    // At least the page and one more; about 8,000 from the share of matches among the images
    // the page walked (lead-counts.ts).
    expect(first).toMatchObject({ total: 101, totalExact: false });
    expect(Math.abs(first.totalEstimate! - 8000)).toBeLessThan(400);
    expect(first.items).toHaveLength(100);
    // Later pages by offset raise the lower bound; the page with the last match makes it exact.
    expect(l.gallery.searchGallery(q({ text: 'harbour', limit: 100, offset: 7000 }))).toMatchObject(
      { total: 7101, totalExact: false },
    );
    expect(l.gallery.searchGallery(q({ text: 'harbour', limit: 100, offset: 7950 }))).toMatchObject(
      { total: 8000, totalExact: true },
    );
    const deep = l.gallery.searchGallery(q({ text: 'harbour', limit: 100, offset: 2000 }));
    expect(deep.total).toBeGreaterThanOrEqual(2000 + 100 + 1);
    // A jump past the last match counts (up to a cap), so the scroll bar learns the end.
    expect(l.gallery.searchGallery(q({ text: 'harbour', limit: 100, offset: 9000 }))).toMatchObject(
      { items: [], total: 8000, totalExact: true },
    );
    // Tag searches are bounded the same way; few matches are exact.
    l.gallery.setTags(big.imageIds[0], ['boats']);
    expect(l.gallery.searchGallery(q({ tag: 'boats' }))).toMatchObject({
      total: 1,
      totalExact: true,
    });
    expect(l.gallery.searchGallery(q({ text: 'meadow' }))).toMatchObject({
      total: 1,
      totalExact: true,
    });
    // No filter, or the image's own columns: exact however many.
    expect(l.gallery.searchGallery(q({ limit: 10 }))).toMatchObject({
      total: 8001,
      totalExact: true,
    });
    expect(l.gallery.searchGallery(q({ sampler: 'ddim', limit: 10 }))).toMatchObject({
      total: 8000,
      totalExact: true,
    });
    l.close();
  });

  it('cached totals follow saves, edits and deletes exactly', async () => {
    const { library: l } = await openLibrary(dir());
    for (let i = 0; i < 3; i++) await saveOne(l, { prompt: `lantern ${i}`, seed: i });
    await saveOne(l, { prompt: 'a kite', seed: 9 });
    // A page that holds every match: the text search's total is exact.
    const lanterns = () => l.gallery.searchGallery(q({ text: 'lantern', limit: 10 }));
    const favorites = () => l.gallery.searchGallery(q({ favorite: true, limit: 2 }));
    const everything = () => l.gallery.searchGallery(q({ limit: 2 }));
    expect(lanterns().total).toBe(3);
    expect(favorites().total).toBe(0);
    expect(everything().total).toBe(4);
    // Saves add to the totals they match, and only to those.
    await saveOne(l, { prompt: 'lantern 4', seed: 4 }, { images: 2 });
    await saveOne(l, { prompt: 'another kite', seed: 10 });
    expect(lanterns().total).toBe(5);
    expect(favorites().total).toBe(0);
    expect(everything().total).toBe(7);
    // An edit or a delete counts again.
    const ids = lanterns()
      .items.slice(0, 2)
      .map((i) => i.imageId);
    l.gallery.setFavorite(ids, true);
    expect(favorites().total).toBe(2);
    await l.trash.deleteImages([ids[0]]);
    expect(lanterns().total).toBe(4);
    expect(favorites().total).toBe(1);
    expect(everything().total).toBe(6);
    l.close();
  });
});

describe('uploads', () => {
  let library: Library;
  beforeAll(async () => {
    library = (await openLibrary(dir())).library;
  });
  afterAll(() => library.close());

  it('stores init images and masks, and reads import metadata from an A1111 PNG', async () => {
    const plain = await pngOf(null, 3, 96);
    const init = await library.uploads.uploadImage({
      data: Buffer.from(plain).toString('base64'),
      purpose: 'init',
    });
    expect(init).toMatchObject({ width: 96, height: 96, metadata: null });
    expect(library.resolveImage(init.imageId)).toMatchObject({ width: 96, height: 96 });
    expect(fs.readFileSync(library.resolveImage(init.imageId).file)).toEqual(Buffer.from(plain));
    expect(library.readMedia(`/media/uploads/${init.imageId}`)?.contentType).toBe('image/png');
    // Same bytes again: the same upload.
    const again = await library.uploads.uploadImage({
      data: Buffer.from(plain).toString('base64'),
      purpose: 'init',
    });
    expect(again.imageId).toBe(init.imageId);

    const jpeg = await sharp(Buffer.from(plain)).jpeg().toBuffer();
    const mask = await library.uploads.uploadImage({
      data: jpeg.toString('base64'),
      purpose: 'mask',
    });
    expect(mask).toMatchObject({ width: 96, height: 96, metadata: null });
    expect(library.resolveImage(mask.imageId).file).toMatch(/\.jpg$/);

    const a1111 = addPngTextChunks(plain, [
      {
        keyword: 'parameters',
        text: 'masterpiece, a lighthouse\nNegative prompt: fog\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 96x96, Model: v1-5',
      },
    ]);
    const imported = await library.uploads.uploadImage({
      data: `data:image/png;base64,${Buffer.from(a1111).toString('base64')}`,
      purpose: 'import',
      name: 'lighthouse.png',
    });
    expect(imported.metadata).toMatchObject({
      source: 'a1111',
      settings: {
        prompt: 'masterpiece, a lighthouse',
        negativePrompt: 'fog',
        steps: 30,
        sampler: 'dpmpp_2m',
        schedule: 'karras',
        guidance: 6.5,
        seed: 1234,
      },
    });
    const ours = await library.uploads.uploadImage({
      data: Buffer.from(await pngOf(settingsOf({ prompt: 'ours', seed: 9 }), 9)).toString('base64'),
      purpose: 'import',
    });
    expect(ours.metadata).toMatchObject({
      source: 'latent-studio',
      settings: { prompt: 'ours', seed: 9 },
    });
    const none = await library.uploads.uploadImage({
      data: jpeg.toString('base64'),
      purpose: 'import',
    });
    expect(none.metadata).toEqual({ source: 'none', settings: {}, networks: [] });
  });

  it('refuses broken and unsupported images with a clear sentence', async () => {
    const png = Buffer.from(await pngOf(null, 4, 64, true));
    const truncated = png.subarray(0, Math.floor(png.length / 2));
    await rejectsWith(
      library.uploads.uploadImage({
        data: truncated.toString('base64'),
        purpose: 'init',
        name: 'half.png',
      }),
      'invalid-argument',
      /"half.png" could not be read: it is damaged or not a PNG, JPEG or WebP image/,
    );
    await rejectsWith(
      library.uploads.uploadImage({
        data: Buffer.from('hello, not an image').toString('base64'),
        purpose: 'init',
      }),
      'invalid-argument',
      /could not be read/,
    );
    const gif = await sharp(png).gif().toBuffer();
    await rejectsWith(
      library.uploads.uploadImage({ data: gif.toString('base64'), purpose: 'init' }),
      'invalid-argument',
      /Only PNG, JPEG and WebP images can be used \(this one is GIF\)/,
    );
    throwsWith(() => library.resolveImage('nothing-here'), 'not-found');
  });
});

describe('delete and undo', () => {
  it('headless: moves files to the app trash and back; rows hidden then restored', async () => {
    const d = dir();
    const { library, context } = await openLibrary(d);
    const a = await saveOne(library, { prompt: 'delete me', seed: 1 }, { images: 3 });
    const file = (id: string) =>
      path.join(
        d,
        (library.db.prepare('SELECT file FROM images WHERE id = ?').get(id) as { file: string })
          .file,
      );
    const files = a.imageIds.map(file);
    const result = await library.trash.deleteImages(a.imageIds.slice(0, 2));
    expect(result).toMatchObject({ deleted: 2, trashedTo: 'app-trash' });
    expect(context.emitted.at(-1)).toMatchObject({ payload: { removed: a.imageIds.slice(0, 2) } });
    expect(files.map((f) => fs.existsSync(f))).toEqual([false, false, true]);
    expect(fs.readdirSync(path.join(d, 'trash', result.undoToken!))).toHaveLength(4); // 2 images + 2 thumbs
    expect(library.gallery.searchGallery(q()).items.map((i) => i.imageId)).toEqual([a.imageIds[2]]);
    expect(library.readMedia(`/media/images/${a.imageIds[0]}`)).toBeNull();
    throwsWith(() => library.resolveImage(a.imageIds[0]), 'not-found');
    expect(await library.trash.deleteImages(a.imageIds.slice(0, 2))).toMatchObject({
      deleted: 0,
      undoToken: null,
    });

    expect(await library.trash.undoDelete(result.undoToken!)).toEqual({ restored: 2 });
    expect(files.map((f) => fs.existsSync(f))).toEqual([true, true, true]);
    expect(library.gallery.searchGallery(q()).total).toBe(3);
    expect(library.readMedia(`/media/thumbs/${a.imageIds[0]}`)?.contentType).toBe('image/webp');
    await rejectsWith(library.trash.undoDelete(result.undoToken!), 'not-found');

    // A delete not undone: at the next start the rows go, the files stay in the trash and are
    // not re-imported.
    const again = await library.trash.deleteImages([a.imageIds[0]]);
    library.close();
    const reopened = await openLibrary(d);
    expect(reopened.library.gallery.searchGallery(q()).total).toBe(2);
    expect(reopened.library.db.prepare('SELECT count(*) AS n FROM images').get()).toEqual({ n: 2 });
    expect(fs.existsSync(path.join(d, 'trash', again.undoToken!, path.basename(files[0])))).toBe(
      true,
    );
    await rejectsWith(reopened.library.trash.undoDelete(again.undoToken!), 'not-found');
    reopened.library.close();
  });

  it('desktop: the OS trash gets the file, a link in the app trash makes undo work', async () => {
    const d = dir();
    const osTrash = path.join(d, 'os-trash');
    fs.mkdirSync(osTrash);
    const revealed: string[] = [];
    const desktop = {
      trash: async (f: string) => fs.renameSync(f, path.join(osTrash, path.basename(f))),
      reveal: (f: string) => void revealed.push(f),
    };
    const { library } = await openLibrary(d, { desktop });
    const a = await saveOne(library, { prompt: 'desktop delete', seed: 1 });
    const file = library.resolveImage(a.imageIds[0]).file;
    library.trash.revealImage(a.imageIds[0]);
    expect(revealed).toEqual([file]);
    const result = await library.trash.deleteImages(a.imageIds);
    expect(result.trashedTo).toBe('os-trash');
    expect(fs.existsSync(file)).toBe(false);
    expect(fs.readdirSync(osTrash)).toEqual([path.basename(file)]);
    expect(await library.trash.undoDelete(result.undoToken!)).toEqual({ restored: 1 });
    expect(fs.existsSync(file)).toBe(true);
    expect(library.gallery.searchGallery(q()).total).toBe(1);
    library.close();

    // Headless has no file manager.
    const headless = await openLibrary(dir());
    const b = await saveOne(headless.library, {});
    throwsWith(() => headless.library.trash.revealImage(b.imageIds[0]), 'unavailable');
    headless.library.close();
  });
});

describe('the reconciler', () => {
  it('re-imports orphans, quarantines strangers, marks missing files, removes temp files', async () => {
    const d = dir();
    const { library } = await openLibrary(d);
    const kept = await saveOne(library, { prompt: 'kept', seed: 1 });
    const lost = await saveOne(library, { prompt: 'lost', seed: 2 });
    const orphan = await saveOne(library, { prompt: 'orphan', seed: 3 });
    const rel = (id: string) =>
      library.db.prepare('SELECT file, thumb FROM images WHERE id = ?').get(id) as {
        file: string;
        thumb: string;
      };
    const lostFile = path.join(d, rel(lost.imageIds[0]).file);
    const orphanRel = rel(orphan.imageIds[0]);
    const keptThumb = path.join(d, rel(kept.imageIds[0]).thumb);
    // A crash after the rename and before the row: simulate by dropping the orphan's rows.
    library.db.prepare('DELETE FROM generations WHERE id = ?').run(orphan.generationId);
    library.close();
    fs.rmSync(lostFile);
    fs.rmSync(keptThumb);
    const monthDir = path.dirname(lostFile);
    fs.writeFileSync(path.join(monthDir, `.xyz.png.tmp-999-abcd`), 'half');
    fs.writeFileSync(path.join(monthDir, 'stranger.png'), await pngOf(null, 7));
    fs.writeFileSync(path.join(monthDir, 'notes.txt'), 'hello');

    const { library: l, context } = await openLibrary(d);
    expect(fs.existsSync(path.join(monthDir, '.xyz.png.tmp-999-abcd'))).toBe(false);
    expect(
      fs.existsSync(path.join(d, 'quarantine', path.relative(d, monthDir), 'stranger.png')),
    ).toBe(true);
    expect(fs.existsSync(path.join(d, 'quarantine', path.relative(d, monthDir), 'notes.txt'))).toBe(
      true,
    );
    expect(fs.existsSync(keptThumb)).toBe(true); // thumbnail rebuilt
    const items = l.gallery.searchGallery(q({ sort: 'oldest' })).items;
    expect(items.map((i) => [i.prompt, i.missing])).toEqual([
      ['kept', false],
      ['lost', true],
      ['orphan', false],
    ]);
    // The re-imported image keeps its id, file, settings and creation time.
    const re = items[2];
    expect(re.imageId).toBe(orphan.imageIds[0]);
    expect(l.resolveImage(re.imageId).file).toBe(path.join(d, orphanRel.file));
    expect(l.gallery.getGeneration(re.generationId).settings).toMatchObject({
      prompt: 'orphan',
      seed: 3,
    });
    expect(Math.abs(re.createdAt - items[1].createdAt)).toBeLessThan(60_000);
    expect(l.readMedia(`/media/images/${lost.imageIds[0]}`)).toBeNull();
    expect(context.logs.join('\n')).toMatch(/reconciled/);
    // The file coming back clears the mark on the next start.
    l.close();
    fs.writeFileSync(lostFile, await pngOf(settingsOf({ prompt: 'lost', seed: 2 }), 2));
    const { library: l2 } = await openLibrary(d);
    expect(l2.gallery.searchGallery(q()).items.every((i) => !i.missing)).toBe(true);
    l2.close();
  });
});

describe('models', () => {
  it('registers built-in models, adds, removes and counts tokens', async () => {
    const fixture = await fixtureModel('sd15', {});
    const d = dir();
    const resourcesDir = path.join(d, 'resources');
    const builtInDir = path.join(resourcesDir, 'models', 'tiny-sd');
    fs.cpSync(fixture, builtInDir, { recursive: true });
    fs.writeFileSync(
      path.join(builtInDir, 'README.md'),
      '---\nlicense: mit\n---\n# Tiny SD\n\nA tiny model made for the tests,\nfrom random weights.\n\nMore text.\n',
    );
    // What its card recommends (as the built-in models' about.json says it); a value out of
    // range is left out rather than refusing the model.
    fs.writeFileSync(
      path.join(builtInDir, 'about.json'),
      JSON.stringify({
        recommended: { sampler: 'dpmpp_2m', steps: 12, guidance: 900 },
        example_prompts: ['a tiny test picture', 'another'],
      }),
    );
    const dataDir = path.join(d, 'data');
    const { library, context } = await openLibrary(dataDir, { resourcesDir });
    const models = library.listModels();
    expect(models).toHaveLength(1);
    expect(models[0]).toMatchObject({
      name: 'tiny-sd',
      path: builtInDir,
      family: 'sd1',
      builtIn: true,
      status: 'ok',
      description: 'A tiny model made for the tests, from random weights.',
      defaults: {
        sampler: 'dpmpp_2m',
        steps: 12,
        guidance: null,
        examplePrompt: 'a tiny test picture',
      },
      imageBytes: 0,
    });
    expect(models[0].familyReasons.length).toBeGreaterThan(0);
    expect(models[0].bytes).toBeGreaterThan(0);
    expect(context.emitted.some((e) => e.event === 'modelsChanged')).toBe(true);
    const hashes = JSON.parse(
      (library.db.prepare('SELECT file_hashes FROM models').get() as { file_hashes: string })
        .file_hashes,
    ) as Record<string, string>;
    expect(hashes['unet/model.onnx']).toMatch(/^sha256:[0-9a-f]{64}$/);

    throwsWith(() => library.models.removeModel(models[0].id), 'forbidden');
    const added = await library.addModel(fixture);
    expect(added).toMatchObject({ path: fixture, builtIn: false, family: 'sd1', defaults: null });
    expect(library.resolveModel(added.id).path).toBe(fixture);
    expect(library.resolveModel(fixture).id).toBe(added.id);
    throwsWith(() => library.resolveModel('nope'), 'not-found');
    await rejectsWith(library.addModel(path.join(d, 'no-such-folder')), 'model', /does not exist/);
    const broken = path.join(d, 'broken');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'model_index.json'), '{not json');
    await rejectsWith(library.addModel(broken), 'model');

    // Disk use per model.
    const saved = await saveOne(
      library,
      { model: added.id, prompt: 'uses the model' },
      { images: 2 },
    );
    const bytes = (library.db.prepare('SELECT sum(bytes) AS n FROM images').get() as { n: number })
      .n;
    expect(library.listModels().find((m) => m.id === added.id)?.imageBytes).toBe(bytes);
    expect(
      library.gallery.searchGallery(q({ modelId: added.id })).items.map((i) => i.modelName),
    ).toEqual([added.name, added.name]);

    const tokens = await library.models.countTokens(added.id, 'a cat');
    expect(tokens.chunks).toHaveLength(1);
    expect(tokens.total).toBe(tokens.chunks[0]);
    expect(tokens.total).toBeGreaterThan(0);
    const long = await library.models.countTokens(added.id, 'cat, '.repeat(60));
    expect(long.chunks.length).toBeGreaterThan(1);

    expect(await library.models.removeModel(added.id)).toBeNull();
    expect(library.listModels()).toHaveLength(1);
    // Its images stay, with the model's name.
    expect(library.gallery.getGeneration(saved.generationId).modelName).toBe(added.name);
    throwsWith(() => library.models.removeModel(added.id), 'not-found');
    library.close();

    // An update of the app ships new weights and a new model card for the same folder: the next
    // start sees both (same row, same id); a start with nothing new writes nothing.
    const other = await fixtureModel('sd15', { unet: 'known-answer' });
    fs.copyFileSync(
      path.join(other, 'unet', 'model.onnx'),
      path.join(builtInDir, 'unet', 'model.onnx'),
    );
    fs.writeFileSync(path.join(builtInDir, 'README.md'), '# Tiny SD\n\nVersion two of it.\n');
    const again = await openLibrary(dataDir, { resourcesDir });
    const [updated] = again.library.listModels();
    expect(updated).toMatchObject({ id: models[0].id, description: 'Version two of it.' });
    expect(updated.bytes).not.toBe(models[0].bytes);
    const rehashed = JSON.parse(
      (again.library.db.prepare('SELECT file_hashes FROM models').get() as { file_hashes: string })
        .file_hashes,
    ) as Record<string, string>;
    expect(rehashed['unet/model.onnx']).not.toBe(hashes['unet/model.onnx']);
    expect(again.context.emitted.some((e) => e.event === 'modelsChanged')).toBe(true);
    again.library.close();
    const third = await openLibrary(dataDir, { resourcesDir });
    expect(third.library.listModels()[0]).toMatchObject({ description: 'Version two of it.' });
    expect(third.context.emitted.some((e) => e.event === 'modelsChanged')).toBe(false);
    third.library.close();
    // An unchanged start reads no weights: the files' names, sizes and times are compared, so
    // even garbage of the same size with the old time goes unnoticed (and costs nothing).
    const unetFile = path.join(builtInDir, 'unet', 'model.onnx');
    const st = fs.statSync(unetFile);
    fs.writeFileSync(unetFile, Buffer.alloc(st.size, 7));
    fs.utimesSync(unetFile, st.atime, st.mtime);
    const fourth = await openLibrary(dataDir, { resourcesDir });
    expect(fourth.library.listModels()[0]).toMatchObject({ status: 'ok' });
    expect(fourth.context.emitted.some((e) => e.event === 'modelsChanged')).toBe(false);
    fourth.library.close();
  });
});
