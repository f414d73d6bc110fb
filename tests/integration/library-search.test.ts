/**
 * Every gallery search against a naive reference: a generated library of a few thousand images
 * (generations of 1 to 3 images sharing their creation time, and several generations sharing
 * one millisecond, so created_at ties both within and across generations; deleted images; tags,
 * LoRAs and embeddings; common, rare and prefix words), searched with each query kind and sort,
 * page by page along the cursors and by offsets. The reference filters and sorts the rows in
 * JavaScript, so the SQL's indexes, hints and query shapes are checked against plain rules.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GalleryQuery, GalleryQuery as GalleryQuerySchema } from '../../src/shared';
import type { Library } from '../../src/main/library/service';
import { type Row, fillLibrary, naive } from './library-fill';
import { openLibrary, replayMigration, saveOne, tempDir } from './library-helpers';
import { openDatabase } from '../../src/main/library/db';
import { suspendTextIndexes } from '../../src/main/library/image-text';
import { migrations } from '../../src/main/library/migrations';
import { maxWordsPerPrefix, textMatch, textSearch } from '../../src/main/library/search-text';

/** The migration that dates tags and LoRAs and adds images_fts and image_days. */
const dateLinksVersion = migrations.find((m) =>
  m.description.startsWith('searches in date order'),
)!.version;

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

const queries: Array<Partial<GalleryQuery>> = [
  {},
  { text: 'cat' },
  { text: 'light' }, // a prefix: "light" and "lighthouse"
  { text: 'l' }, // a prefix of "light", "lighthouse" and nothing else
  { text: 'LIGHTHOUSE' }, // a whole word, in capitals
  { text: 'ca wat' }, // two prefixes: "cat" or "castle", "watercolor" or "watermark"
  { text: 'light', tag: 'keep' },
  { text: 'ca', sampler: 'ddim' },
  { text: 'wat', lora: 'detail', minRating: 1 },
  { text: 'pix', favorite: true },
  { text: 'zanzibar' },
  { text: 'watermark' }, // negative prompts
  { text: 'castle watercolor' },
  { text: 'nothingmatches' },
  { text: 'dog', modelId: 'm1', minRating: 2 },
  { tag: 'keep' },
  { tag: 'print' },
  { tag: 'keep', favorite: true },
  { tag: 'nosuchtag' },
  { lora: 'detail' },
  { lora: 'RARE-STYLE' },
  { lora: 'detail', text: 'cat' },
  { lora: 'detail', tag: 'keep' },
  { text: 'li', tag: 'keep', lora: 'detail' }, // a word within a tag's and a LoRA's times
  { text: 'cat', tag: 'nosuchtag' },
  { lora: 'nosuchlora' },
  { sampler: 'ddim' },
  { mode: 'img2img' },
  { favorite: true },
  { sampler: 'ddim', mode: 'img2img' },
  { modelId: 'm1', sampler: 'ddim' },
  { sampler: 'heun', mode: 'img2img', favorite: false },
  { modelId: 'm2', width: 768 },
  { minRating: 4 },
  { from: 1_700_036_000_000, to: 1_700_144_000_000 },
];

const q = (query: Partial<GalleryQuery>) => GalleryQuerySchema.parse(query);

describe('gallery searches equal the naive query', () => {
  let l: Library;
  let rows: Row[];
  beforeAll(async () => {
    const d = tempDir();
    dirs.push(d);
    ({ library: l } = await openLibrary(d));
    rows = fillLibrary(l, 1500);
    l.db.exec('ANALYZE');
  });
  afterAll(() => l.close());

  it('has ties within and across generations', () => {
    const times = new Map<number, number>();
    for (const r of rows) times.set(r.createdAt, (times.get(r.createdAt) ?? 0) + 1);
    expect(rows.length).toBeGreaterThan(2500);
    expect(Math.max(...times.values())).toBeGreaterThanOrEqual(6);
  });

  for (const sort of ['newest', 'oldest', 'rating'] as const)
    for (const query of queries)
      it(`${sort}: ${JSON.stringify(query)}`, () => {
        const want = naive(rows, q({ ...query, sort }));
        // Along the cursors, as the studio scrolls.
        const walked: string[] = [];
        let cursor: string | null = null;
        let pages = 0;
        do {
          const page = l.gallery.searchGallery(q({ ...query, sort, limit: 100, cursor }));
          if (pages === 0) {
            if (page.totalExact) expect(page.total).toBe(want.length);
            else expect(page.total).toBeLessThan(want.length);
          }
          walked.push(...page.items.map((i) => i.imageId));
          cursor = page.nextCursor;
          pages++;
        } while (cursor && pages < 100);
        expect(walked).toEqual(want);
        // Jumps, as the scroll bar asks.
        for (const offset of [0, 150, Math.floor(want.length / 2), want.length - 3]) {
          if (offset < 0) continue;
          const page = l.gallery.searchGallery(q({ ...query, sort, limit: 40, offset }));
          expect(
            page.items.map((i) => i.imageId),
            `offset ${offset}`,
          ).toEqual(want.slice(offset, offset + 40));
        }
      });
});

/** A library of 1,200 generations taken back to an earlier schema by `undo` (SQL). */
async function filledBefore(seed: number, undo: string) {
  const d = tempDir();
  dirs.push(d);
  const first = await openLibrary(d);
  const rows = fillLibrary(first.library, 1200, seed);
  first.library.db.exec(undo);
  return { d, rows, first };
}

describe('migration 11 (text, tags and LoRAs in date order)', () => {
  it('upgrades a library from before the date links, with data, and tags added later are dated', async () => {
    // Back to the version before the date links as it was: no date columns, triggers or indexes.
    const { d, rows, first } = await filledBefore(
      11,
      `
      DROP TRIGGER image_tags_created; DROP INDEX image_tags_newest;
      ALTER TABLE image_tags DROP COLUMN created_at;
      CREATE INDEX image_tags_tag ON image_tags(tag_id, image_id);
      DROP TRIGGER generation_networks_created; DROP INDEX generation_networks_newest;
      ALTER TABLE generation_networks DROP COLUMN created_at;
      CREATE INDEX generation_networks_by_name ON generation_networks (kind, name COLLATE NOCASE);
      DROP TRIGGER images_fts_ai; DROP TRIGGER images_fts_ad; DROP TABLE images_fts;
      DROP TRIGGER image_days_ai; DROP TRIGGER image_days_ad; DROP TRIGGER image_days_au_old;
      DROP TRIGGER image_days_au_new; DROP TABLE image_days;`,
    );
    replayMigration(first.library.db, dateLinksVersion);
    first.library.close();
    const { library: l } = await openLibrary(d);
    const undated = l.db
      .prepare(
        `SELECT (SELECT count(*) FROM image_tags WHERE created_at IS NULL)
              + (SELECT count(*) FROM generation_networks WHERE created_at IS NULL) AS n`,
      )
      .get() as { n: number };
    expect(undated.n).toBe(0);
    for (const query of [
      { tag: 'keep' },
      { lora: 'detail' },
      { tag: 'print', lora: 'Detail' },
      { text: 'cat' },
      { text: 'light', lora: 'detail' },
    ])
      for (const sort of ['newest', 'oldest'] as const) {
        const page = l.gallery.searchGallery(q({ ...query, sort, limit: 500 }));
        expect(page.items.map((i) => i.imageId)).toEqual(
          naive(rows, q({ ...query, sort })).slice(0, 500),
        );
      }
    // Tagged after the upgrade: dated by the trigger, found in its place.
    const oldest = naive(rows, q({ sort: 'oldest' }))[0];
    l.gallery.setTags(oldest, ['late']);
    const row = rows.find((r) => r.id === oldest)!;
    row.tags.push('late');
    expect(l.gallery.searchGallery(q({ tag: 'LATE' })).items.map((i) => i.imageId)).toEqual([
      oldest,
    ]);
    // Rated and deleted after the upgrade: jumps deep into the gallery still land right.
    const rated = naive(rows, q({})).slice(100, 400);
    l.gallery.setRating(rated, 5);
    for (const r of rows) if (rated.includes(r.id)) r.rating = 5;
    const gone = naive(rows, q({ sort: 'oldest' })).slice(50, 60);
    await l.trash.deleteImages(gone);
    for (const r of rows) if (gone.includes(r.id)) r.deleted = true;
    for (const sort of ['newest', 'oldest', 'rating'] as const) {
      const want = naive(rows, q({ sort }));
      for (const offset of [10, 300, want.length - 5]) {
        const page = l.gallery.searchGallery(q({ sort, offset, limit: 20 }));
        expect(
          page.items.map((i) => i.imageId),
          `${sort} @${offset}`,
        ).toEqual(want.slice(offset, offset + 20));
      }
    }
    const keep = l.gallery.searchGallery(q({ tag: 'keep', sort: 'oldest', limit: 500 }));
    expect(keep.items.map((i) => i.imageId)).toEqual(
      naive(rows, q({ tag: 'keep', sort: 'oldest' })).slice(0, 500),
    );
    l.close();
  });
});

describe('migration 14 (prefixes as words, sampler and mode in date order)', () => {
  it('upgrades a library from migration 13, with data, and its searches still equal the naive query', async () => {
    // Back to migration 13 as it was: no words table, no sampler or mode index, the narrow
    // rating index.
    const { d, rows, first } = await filledBefore(
      17,
      `DROP TABLE images_fts_terms; DROP INDEX images_sampler; DROP INDEX images_mode;
       DROP INDEX images_rating;
       CREATE INDEX images_rating ON images(rating, created_at, id) WHERE deleted_at IS NULL;`,
    );
    expect(() => textMatch(first.library.db, 'cat')).toThrow(/no such table/);
    replayMigration(first.library.db, 14);
    first.library.close();
    const { library: l } = await openLibrary(d);
    const names = (
      l.db.prepare("SELECT name FROM sqlite_master WHERE name LIKE 'images_%'").all() as Array<{
        name: string;
      }>
    ).map((r) => r.name);
    expect(names).toEqual(
      expect.arrayContaining(['images_fts_terms', 'images_sampler', 'images_mode']),
    );
    const rating = l.db
      .prepare("SELECT sql FROM sqlite_master WHERE name = 'images_rating'")
      .get() as {
      sql: string;
    };
    expect(rating.sql).toMatch(/prompt_id, model_id, sampler, mode, width, height, favorite/);
    const upgraded: Array<Partial<GalleryQuery>> = [
      { text: 'li wat' },
      { text: 'ca', tag: 'keep' },
      { sampler: 'ddim' },
      { mode: 'img2img', favorite: true },
    ];
    for (const query of upgraded)
      for (const sort of ['newest', 'oldest', 'rating'] as const) {
        const want = naive(rows, q({ ...query, sort }));
        for (const offset of [0, Math.floor(want.length / 2)]) {
          const page = l.gallery.searchGallery(q({ ...query, sort, offset, limit: 100 }));
          expect(
            page.items.map((i) => i.imageId),
            `${sort} @${offset} ${JSON.stringify(query)}`,
          ).toEqual(want.slice(offset, offset + 100));
        }
      }
    // Saved after the upgrade, with a word no prompt had: the words table sees it at once,
    // and the words kept for a prefix are read again.
    const db = l.db;
    expect(textMatch(db, 'LIGHT')).toBe('("light" OR "lighthouse")');
    db.prepare("INSERT INTO prompts (text, negative) VALUES ('a lightning bolt', '')").run();
    const promptId = (db.prepare('SELECT max(id) AS id FROM prompts').get() as { id: number }).id;
    db.prepare(
      `INSERT INTO images (id, generation_id, file, sha256, width, height, bytes, seed, batch_index,
         prompt_id, model_id, sampler, mode, variant_key, favorite, rating, created_at)
       SELECT 'late', generation_id, 'images/late.png', '', width, height, 1, seed, 9, ?, model_id,
         sampler, mode, variant_key, 0, 0, 1_800_000_000_000 FROM images LIMIT 1`,
    ).run(promptId);
    expect(textMatch(db, 'LIGHT')).toBe('("light" OR "lighthouse" OR "lightning")');
    const lit = l.gallery.searchGallery(q({ text: 'lightn' }));
    expect(lit.items.map((i) => i.imageId)).toEqual(['late']);
    l.close();
  });
});

describe('prefix terms spelled out as words (textMatch)', () => {
  let l: Library;
  beforeAll(async () => {
    const d = tempDir();
    dirs.push(d);
    ({ library: l } = await openLibrary(d));
    fillLibrary(l, 200, 3);
  });
  afterAll(() => l.close());

  it('spells out plain prefixes, joins terms with AND, and leaves the rest prefixes', () => {
    expect(textMatch(l.db, 'li WAT')).toBe(
      '("light" OR "lighthouse") AND ("watercolor" OR "watermark")',
    );
    expect(textMatch(l.db, 'cat')).toBe('"cat"');
    // No word starts with it, it is not plain ASCII, or it splits into a phrase: a prefix.
    expect(textMatch(l.db, 'zz café dog-house')).toBe('"zz"* AND "café"* AND "dog-house"*');
    expect(textMatch(l.db, '*** ()')).toBeNull();
  });

  it("bounds the images a text matches by its words' rows, and knows no bound for a prefix", () => {
    const rows = (word: string) =>
      (
        l.db
          .prepare('SELECT count(*) AS n FROM images_fts WHERE images_fts MATCH ?')
          .get(`"${word}"`) as { n: number }
      ).n;
    // An OR of words: at most their rows added up (a row with two of them counts twice).
    expect(textSearch(l.db, 'li')?.atMost).toBe(rows('light') + rows('lighthouse'));
    // Terms joined by AND: at most the fewest of any term.
    expect(textSearch(l.db, 'cat li')?.atMost).toBe(
      Math.min(rows('cat'), rows('light') + rows('lighthouse')),
    );
    expect(textSearch(l.db, 'cat café')?.atMost).toBeNull();
    expect(textSearch(l.db, '()')).toBeNull();
  });

  it('reads the words again once another connection has written', () => {
    expect(textMatch(l.db, 'zeb')).toBe('"zeb"*');
    const other = openDatabase(l.dbFile);
    other.prepare("INSERT INTO images_fts (rowid, text, negative) VALUES (2, 'zebra', '')").run();
    other.close();
    expect(textMatch(l.db, 'zeb')).toBe('"zebra"');
  });

  it('leaves a prefix of more than maxWordsPerPrefix words a prefix', () => {
    const words = Array.from({ length: maxWordsPerPrefix + 1 }, (_, i) => `qx${i}`);
    // images_fts is contentless: its rows need no image for the vocabulary to list them.
    l.db
      .prepare('INSERT INTO images_fts (rowid, text, negative) VALUES (1, ?, ?)')
      .run(words.join(' '), '');
    expect(textMatch(l.db, 'qx')).toBe('"qx"*');
    expect(textMatch(l.db, 'qx1')).toBe(
      `(${words
        .filter((w) => w.startsWith('qx1'))
        .sort()
        .map((w) => `"${w}"`)
        .join(' OR ')})`,
    );
  });
});

describe('a bulk fill with the text indexes suspended (bench:library)', () => {
  it('finds every image and prompt once resumed, and indexes later saves again', async () => {
    const d = tempDir();
    dirs.push(d);
    const { library: l } = await openLibrary(d);
    const resume = suspendTextIndexes(l.db);
    const rows = fillLibrary(l, 400, 9);
    expect(l.gallery.searchGallery(q({ text: 'cat' })).items).toEqual([]);
    resume();
    for (const text of ['cat', 'li', 'watermark', 'castle watercolor'])
      for (const sort of ['newest', 'rating'] as const) {
        const page = l.gallery.searchGallery(q({ text, sort, limit: 100 }));
        expect(
          page.items.map((i) => i.imageId),
          `${sort} ${text}`,
        ).toEqual(naive(rows, q({ text, sort })).slice(0, 100));
      }
    const saved = await saveOne(l, { prompt: 'a quokka at noon', seed: 3 });
    expect(l.gallery.searchGallery(q({ text: 'quokka' })).items.map((i) => i.imageId)).toEqual(
      saved.imageIds,
    );
    l.close();
  });
});
