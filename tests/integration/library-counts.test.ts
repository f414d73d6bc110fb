/**
 * Gallery totals. Read from image_counts (migration 10): after saves, marks, size changes,
 * deletes, undo and deleting for good, every column filter's total equals a real count of the
 * images table, and a library upgraded from version 9 is filled from its images. Of tag, LoRA
 * and text searches (lead-counts.ts, migration 15): the kept counts per tag and per LoRA equal
 * a count of the live images after every kind of change; a search by one tag or one LoRA alone
 * is exact; any other search with more matches than its first page holds gives a lower bound
 * and an estimate within a stated bound of the naive count; a library upgraded from migration
 * 13 is filled from its rows.
 */
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type GalleryQuery, GalleryQuery as GalleryQuerySchema } from '../../src/shared';
import type { Library } from '../../src/main/library/service';
import { migrations } from '../../src/main/library/migrations';
import { searchGallery } from '../../src/main/library/gallery';
import { type Row, fillLibrary, naive } from './library-fill';
import { openLibrary, replayMigration, saveOne, tempDir } from './library-helpers';

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

/** Filter mixes with their conditions counted directly over `images`. */
const cases: Array<[Partial<GalleryQuery>, string, unknown[]]> = [
  [{}, '1', []],
  [{ sampler: 'ddim' }, 'sampler = ?', ['ddim']],
  [{ sampler: 'euler', favorite: true }, 'sampler = ? AND favorite = 1', ['euler']],
  [{ minRating: 3 }, 'rating >= 3', []],
  [{ favorite: false, minRating: 1 }, 'favorite = 0 AND rating >= 1', []],
  [{ width: 64, height: 64 }, 'width = 64 AND height = 64', []],
  [{ mode: 'txt2img', sampler: 'ddim' }, "mode = 'txt2img' AND sampler = ?", ['ddim']],
];

function expectTotalsMatchRows(l: Library) {
  for (const [query, where, params] of cases) {
    const direct = l.db
      .prepare(`SELECT count(*) AS n FROM images WHERE deleted_at IS NULL AND ${where}`)
      .get(...params) as { n: number };
    // A new gallery service each time would share nothing; an empty cache is the same.
    const page = l.gallery.searchGallery(q({ ...query, limit: 1 }));
    expect({ query, total: page.total, exact: page.totalExact }).toEqual({
      query,
      total: direct.n,
      exact: true,
    });
  }
}

describe('gallery totals from image_counts', () => {
  it('agree with the images after saves, marks, deletes, undo and deleting for good', async () => {
    const { library: l } = await openLibrary(dir());
    await saveOne(l, { prompt: 'a harbour', sampler: 'ddim', seed: 1 }, { images: 3 });
    await saveOne(l, { prompt: 'a meadow', sampler: 'euler', seed: 2 }, { images: 2 });
    await saveOne(l, { prompt: 'a kite', sampler: 'ddim', seed: 3 }, { size: 32 });
    expectTotalsMatchRows(l);
    const ids = l.gallery.searchGallery(q({ limit: 10 })).items.map((i) => i.imageId);
    expect(ids).toHaveLength(6);
    l.gallery.setFavorite(ids.slice(0, 3), true);
    l.gallery.setRating(ids.slice(2, 5), 4);
    expectTotalsMatchRows(l);
    const deleted = await l.trash.deleteImages(ids.slice(1, 4));
    expect(l.gallery.searchGallery(q({ limit: 1 })).total).toBe(3);
    expectTotalsMatchRows(l);
    await l.trash.undoDelete(deleted.undoToken!);
    expect(l.gallery.searchGallery(q({ limit: 1 })).total).toBe(6);
    expectTotalsMatchRows(l);
    // Rows deleted for good after being trashed are not counted twice.
    await l.trash.deleteImages([ids[5]]);
    l.db.prepare('DELETE FROM images WHERE deleted_at IS NOT NULL').run();
    expectTotalsMatchRows(l);
    expect(l.db.prepare('SELECT sum(n) AS n FROM image_counts').get()).toEqual({ n: 5 });
    l.close();
  });

  it('are filled from the images of a library upgraded from version 9', async () => {
    const folder = dir();
    const first = await openLibrary(folder);
    await saveOne(first.library, { prompt: 'a harbour', sampler: 'ddim', seed: 1 }, { images: 2 });
    await saveOne(first.library, { prompt: 'a kite', sampler: 'euler', seed: 5 });
    // Back to version 9 as it was: no table, no triggers.
    first.library.db.exec(`
      DROP TRIGGER image_counts_ai; DROP TRIGGER image_counts_ad;
      DROP TRIGGER image_counts_au_old; DROP TRIGGER image_counts_au_new;
      DROP TABLE image_counts;`);
    replayMigration(first.library.db, 10);
    first.library.close();
    const { library: l } = await openLibrary(folder);
    expect(l.gallery.searchGallery(q({ sampler: 'ddim', limit: 1 })).total).toBe(2);
    expectTotalsMatchRows(l);
    l.close();
  });
});

const leadCountsVersion = migrations.find((m) => m.description.includes('tag_counts'))!.version;

/** The kept counts and the same counted from the rows, per tag id and per LoRA (lower case). */
function keptAndCounted(l: Library) {
  const db = l.db;
  const nonZero = <T extends { n: number }>(rows: T[]) => rows.filter((r) => r.n !== 0);
  return {
    kept: {
      tags: nonZero(db.prepare('SELECT tag_id AS id, n FROM tag_counts ORDER BY 1').all() as []),
      loras: db
        .prepare(
          `SELECT lower(name) AS name, images AS n, generations FROM lora_counts
           WHERE images <> 0 OR generations <> 0 ORDER BY 1`,
        )
        .all(),
    },
    counted: {
      tags: db
        .prepare(
          `SELECT it.tag_id AS id, count(*) AS n FROM image_tags it
           JOIN images i ON i.id = it.image_id AND i.deleted_at IS NULL GROUP BY 1 ORDER BY 1`,
        )
        .all(),
      loras: db
        .prepare(
          `SELECT lower(gn.name) AS name,
             (SELECT count(*) FROM images i WHERE i.deleted_at IS NULL AND i.generation_id IN
               (SELECT generation_id FROM generation_networks
                WHERE kind = 'lora' AND lower(name) = lower(gn.name))) AS n,
             count(DISTINCT gn.generation_id) AS generations
           FROM generation_networks gn WHERE gn.kind = 'lora' GROUP BY 1 ORDER BY 1`,
        )
        .all(),
    },
  };
}

function expectKeptCounts(l: Library, step: string) {
  // Rows changed by SQL here, as the library services announce their own changes.
  l.gallery.changed([], [], []);
  const { kept, counted } = keptAndCounted(l);
  expect(kept, step).toEqual(counted);
  // And the gallery reads them: exact totals of a tag or a LoRA alone.
  for (const { id, n } of counted.tags as Array<{ id: number; n: number }>) {
    const name = (l.db.prepare('SELECT name FROM tags WHERE id = ?').get(id) as { name: string })
      .name;
    const page = l.gallery.searchGallery(q({ tag: name, limit: 5 }));
    expect({ step, name, total: page.total, exact: page.totalExact }).toEqual({
      step,
      name,
      total: n,
      exact: true,
    });
  }
  for (const { name, n } of counted.loras as Array<{ name: string; n: number }>) {
    const page = l.gallery.searchGallery(q({ lora: name.toUpperCase(), limit: 5 }));
    expect({ step, name, total: page.total, exact: page.totalExact }).toEqual({
      step,
      name,
      total: n,
      exact: true,
    });
  }
}

describe('tag_counts and lora_counts', () => {
  it('equal a count of the live images after saves, tags, trash, undo and deletes', async () => {
    const { library: l } = await openLibrary(dir());
    fillLibrary(l, 120);
    expectKeptCounts(l, 'filled');
    // Saves: the images go in before the generation's LoRAs.
    const saved = await saveOne(l, { prompt: 'a kite <lora:Detail:0.5>', seed: 1 }, { images: 2 });
    await saveOne(l, { prompt: 'a boat <lora:new-style:1> <lora:NEW-STYLE:0.2>', seed: 2 });
    expectKeptCounts(l, 'saved');
    // Tag and untag, a new tag and the last image of a tag untagged (the tag goes).
    l.gallery.setTags(saved.imageIds[0], ['keep', 'Fresh']);
    l.gallery.setTags(saved.imageIds[1], ['fresh']);
    expectKeptCounts(l, 'tagged');
    l.gallery.setTags(saved.imageIds[0], []);
    l.gallery.setTags(saved.imageIds[1], ['keep']);
    expectKeptCounts(l, 'untagged');
    // Trash and undo (restore), then trash again and delete for good.
    const kept = l.db
      .prepare(
        `SELECT i.id FROM images i JOIN image_tags it ON it.image_id = i.id
         WHERE i.deleted_at IS NULL AND i.generation_id IN
           (SELECT generation_id FROM generation_networks WHERE kind = 'lora')
         ORDER BY i.id LIMIT 6`,
      )
      .all()
      .map((r) => (r as { id: string }).id);
    expect(kept.length).toBeGreaterThan(2);
    const trashed = await l.trash.deleteImages([...kept, saved.imageIds[1]]);
    expectKeptCounts(l, 'trashed');
    await l.trash.undoDelete(trashed.undoToken!);
    expectKeptCounts(l, 'restored');
    await l.trash.deleteImages(kept.slice(0, 2));
    l.db.prepare('DELETE FROM images WHERE deleted_at IS NOT NULL').run();
    expectKeptCounts(l, 'deleted for good after the trash');
    // Rows deleted straight away (live images, a whole generation: the cascades).
    l.db.prepare('DELETE FROM images WHERE id = ?').run(kept[2]);
    l.db.prepare('DELETE FROM generations WHERE id = ?').run(saved.generationId);
    expectKeptCounts(l, 'live rows deleted');
    // A LoRA named twice in two cases, then once, then not at all.
    const gid = (
      l.db
        .prepare(
          `SELECT generation_id AS id FROM generation_networks
           WHERE kind = 'lora' AND name = 'Detail' LIMIT 1`,
        )
        .get() as { id: string }
    ).id;
    l.db
      .prepare("INSERT INTO generation_networks (generation_id, kind, name) VALUES (?, 'lora', ?)")
      .run(gid, 'DETAIL');
    expectKeptCounts(l, 'twin added');
    l.db
      .prepare("DELETE FROM generation_networks WHERE generation_id = ? AND name = 'Detail'")
      .run(gid);
    expectKeptCounts(l, 'one twin removed');
    l.db.prepare('DELETE FROM generation_networks WHERE generation_id = ?').run(gid);
    expectKeptCounts(l, 'LoRA removed');
    l.close();
  });

  it('are filled from the rows of a library upgraded from migration 13', async () => {
    const folder = dir();
    const first = await openLibrary(folder);
    fillLibrary(first.library, 300, 5);
    const before = keptAndCounted(first.library).counted;
    // Back to migration 13 as it was: no tables, no triggers.
    const db = first.library.db;
    for (const { name } of db
      .prepare(
        `SELECT name FROM sqlite_schema WHERE type = 'trigger'
         AND (name LIKE 'tag_counts%' OR name LIKE 'lora_counts%' OR name LIKE 'lead_counts%')`,
      )
      .all() as Array<{ name: string }>)
      db.exec(`DROP TRIGGER ${name}`);
    db.exec('DROP TABLE tag_counts; DROP TABLE lora_counts;');
    replayMigration(db, leadCountsVersion);
    first.library.close();
    const { library: l } = await openLibrary(folder);
    const { kept, counted } = keptAndCounted(l);
    expect(counted).toEqual(before);
    expect(kept).toEqual(counted);
    expectKeptCounts(l, 'upgraded');
    l.close();
  });
});

describe('totals of other text, tag and LoRA searches', () => {
  let l: Library;
  let rows: Row[];
  beforeAll(async () => {
    ({ library: l } = await openLibrary(dir()));
    rows = fillLibrary(l, 1500, 3);
  });
  afterAll(() => l.close());

  const searches: Array<Partial<GalleryQuery>> = [
    { text: 'cat' },
    { text: 'light' },
    { text: 'watermark' },
    { text: 'castle watercolor' },
    { text: 'zanzibar' },
    { text: 'dog', favorite: false },
    { tag: 'keep', minRating: 1 },
    { tag: 'keep', text: 'cat' },
    { lora: 'detail', sampler: 'ddim' },
    { lora: 'detail', text: 'light' },
    { lora: 'detail', tag: 'keep' },
  ];

  for (const sort of ['newest', 'oldest'] as const)
    for (const search of searches)
      it(`${sort}: ${JSON.stringify(search)} is exact, or at least the page with an estimate`, () => {
        const want = naive(rows, q({ ...search, sort })).length;
        const limit = 60;
        const page = l.gallery.searchGallery(q({ ...search, sort, limit }));
        if (want <= limit) {
          expect(page).toMatchObject({ total: want, totalExact: true });
          expect(page.totalEstimate).toBeUndefined();
          return;
        }
        expect(page.totalExact).toBe(false);
        // The lower bound: the page and the one match past it.
        expect(page.total).toBe(limit + 1);
        expect(page.total).toBeLessThanOrEqual(want);
        // The estimate, from a sample of limit + 1 matches: within 3/sqrt(61) = 38% (the
        // generated library spreads its words, tags and LoRAs evenly over time).
        expect(page.totalEstimate).toBeDefined();
        expect(Math.abs(page.totalEstimate! - want) / want).toBeLessThan(3 / Math.sqrt(limit + 1));
      });

  it('an estimate stays with the search as it pages on, and grows with images added', async () => {
    const first = l.gallery.searchGallery(q({ text: 'cat', limit: 60 }));
    const next = l.gallery.searchGallery(q({ text: 'cat', limit: 60, cursor: first.nextCursor }));
    expect(next).toMatchObject({ total: 61, totalExact: false });
    expect(next.totalEstimate).toBe(first.totalEstimate);
    await saveOne(l, { prompt: 'a cat on a roof', seed: 9 });
    const again = l.gallery.searchGallery(q({ text: 'cat', limit: 60 }));
    expect(again.totalEstimate).toBe(first.totalEstimate! + 1);
  });
});

describe('totals of text, tag and LoRA searches in rating order', () => {
  let l: Library;
  let rows: Row[];
  beforeAll(async () => {
    ({ library: l } = await openLibrary(dir()));
    // Enough that the common words, the tag and the LoRA match more than countAhead + a page
    // (2,100): they are estimated, not counted.
    rows = fillLibrary(l, 6000, 11);
  });
  afterAll(() => l.close());

  const searches: Array<Partial<GalleryQuery>> = [
    { text: 'light' },
    { text: 'li' },
    { text: 'watermark' },
    { text: 'light', sampler: 'ddim' },
    { text: 'li', favorite: true, minRating: 2 },
    { tag: 'keep', favorite: true },
    // Bands too thin for a walk of the tag's rows: the gathering page, not counted.
    { tag: 'keep', sampler: 'heun' },
    { lora: 'detail', mode: 'img2img' },
    { text: 'castle watercolor' },
    { tag: 'keep', text: 'cat' },
    { lora: 'detail', text: 'light' },
  ];
  const limit = 60;

  for (const search of searches)
    it(`${JSON.stringify(search)}: the page in order, exact or at least the page with an estimate`, () => {
      const want = naive(rows, q({ ...search, sort: 'rating' }));
      const page = l.gallery.searchGallery(q({ ...search, sort: 'rating', limit }));
      expect(page.items.map((i) => i.imageId)).toEqual(want.slice(0, limit));
      if (page.totalExact) {
        expect(page.total).toBe(want.length);
        return;
      }
      // Never "2,100+": at least the matches found, and about how many there are.
      expect(page.total).toBeLessThanOrEqual(want.length);
      expect(page.totalEstimate).toBeDefined();
      // Within 3/sqrt(61) = 38% (the generated library spreads words, tags, LoRAs and ratings
      // evenly over time).
      expect(Math.abs(page.totalEstimate! - want.length) / want.length).toBeLessThan(
        3 / Math.sqrt(limit + 1),
      );
    });

  // A word with a tag or LoRA keeps within their creation times (image-text.ts); with few
  // matches next to the word's, a page reads them all at once, sorted and counted (bandsOrAll),
  // and a page of a band walk (the bottom band alone, cheaper) gives the keys it found.
  for (const [search, all] of [
    [{ text: 'light', tag: 'print' }, true],
    [{ text: 'li', lora: 'rare-style' }, true],
    // 254 matches: the top bands hold a page, walked within both links' times.
    [{ text: 'light', tag: 'keep', lora: 'detail' }, false],
  ] as const)
    it(`${JSON.stringify(search)}: every page along the cursors in order, the first ${all ? 'counted exactly' : 'estimated'}`, () => {
      const want = naive(rows, q({ ...search, sort: 'rating' }));
      expect(want.length).toBeGreaterThan(40);
      // The word alone has more matches than a first page counts (so the rating order's own
      // page is asked for, not the gathering count).
      expect(naive(rows, q({ text: search.text, sort: 'rating' })).length).toBeGreaterThan(
        2100 + 40,
      );
      const walked: string[] = [];
      let cursor: string | null = null;
      do {
        // A new cache each page, as after an edit cleared it.
        const page = searchGallery(
          l.db,
          q({ ...search, sort: 'rating', limit: 40, cursor }),
          new Map(),
        );
        if (!cursor && all) expect(page).toMatchObject({ total: want.length, totalExact: true });
        else if (!cursor)
          expect(Math.abs(page.totalEstimate! - want.length) / want.length).toBeLessThan(
            3 / Math.sqrt(41),
          );
        else if (!page.totalExact) expect(page.total).toBeLessThanOrEqual(want.length);
        else expect(page.total).toBe(want.length);
        walked.push(...page.items.map((i) => i.imageId));
        cursor = page.nextCursor;
      } while (cursor);
      expect(walked).toEqual(want);
    });

  it('a search with more matches than it counts is estimated, and exact on its last page', () => {
    const search = { text: 'light', sort: 'rating' as const };
    const want = naive(rows, q(search));
    expect(want.length).toBeGreaterThan(2100 + limit);
    const first = l.gallery.searchGallery(q({ ...search, limit }));
    expect(first).toMatchObject({ total: limit + 1, totalExact: false });
    // Along the cursors to the end: every match once, in order; the estimate stays.
    const walked = first.items.map((i) => i.imageId);
    let cursor = first.nextCursor;
    while (cursor) {
      const page = l.gallery.searchGallery(q({ ...search, limit: 500, cursor }));
      expect(page.totalEstimate).toBe(first.totalEstimate);
      walked.push(...page.items.map((i) => i.imageId));
      cursor = page.nextCursor;
    }
    expect(walked).toEqual(want);
  });
});
