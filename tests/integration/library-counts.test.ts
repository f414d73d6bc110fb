/**
 * Gallery totals read from image_counts (migration 10): after saves, marks, size changes,
 * deletes, undo and deleting for good, every column filter's total equals a real count of the
 * images table, and a library upgraded from version 9 is filled from its images.
 */
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { type GalleryQuery, GalleryQuery as GalleryQuerySchema } from '../../src/shared';
import type { Library } from '../../src/main/library/service';
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
