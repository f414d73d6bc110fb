/**
 * Gallery totals without counting: `image_counts` holds how many live (not deleted) images
 * share each combination of the columns the gallery filters on exactly (model, sampler, mode,
 * size, favourite, rating), kept by triggers on `images`. A total for any mix of those filters
 * (or none: the whole gallery) is then a sum over a few thousand rows instead of a walk over up
 * to a million index entries (40-90 ms at 1,000,000 images, npm run bench:library).
 */
import type { Db } from './db';

/** The columns a count row is keyed on, as the gallery's filters name them on `images i`. */
export const countedColumns = [
  'model_id',
  'sampler',
  'mode',
  'width',
  'height',
  'favorite',
  'rating',
] as const;

const key = countedColumns.join(', ');
const values = (row: 'new' | 'old') =>
  countedColumns.map((c) => (c === 'model_id' ? `coalesce(${row}.model_id, '')` : `${row}.${c}`));
const matches = (row: 'old') =>
  countedColumns.map((c, i) => `${c} = ${values(row)[i]}`).join(' AND ');
const add = (row: 'new') => `
  INSERT INTO image_counts (${key}, n) VALUES (${values(row).join(', ')}, 1)
  ON CONFLICT (${key}) DO UPDATE SET n = n + 1;`;
const remove = (row: 'old') => `
  UPDATE image_counts SET n = n - 1 WHERE ${matches(row)};`;

/**
 * Migration 7: the table, filled from the images there are (one GROUP BY, a few seconds at a
 * million), and its triggers. `model_id` is '' for images without a model (a primary key
 * column holds no NULL), which no model filter asks for.
 */
export function addImageCounts(db: Db): void {
  db.exec(`
CREATE TABLE image_counts (
  model_id TEXT NOT NULL,
  sampler TEXT NOT NULL,
  mode TEXT NOT NULL,
  width INTEGER NOT NULL,
  height INTEGER NOT NULL,
  favorite INTEGER NOT NULL,
  rating INTEGER NOT NULL,
  n INTEGER NOT NULL,
  PRIMARY KEY (${key})
) WITHOUT ROWID;
INSERT INTO image_counts (${key}, n)
  SELECT coalesce(model_id, ''), sampler, mode, width, height, favorite, rating, count(*)
  FROM images WHERE deleted_at IS NULL GROUP BY 1, 2, 3, 4, 5, 6, 7;
CREATE TRIGGER image_counts_ai AFTER INSERT ON images WHEN new.deleted_at IS NULL BEGIN
  ${add('new')}
END;
CREATE TRIGGER image_counts_ad AFTER DELETE ON images WHEN old.deleted_at IS NULL BEGIN
  ${remove('old')}
END;
CREATE TRIGGER image_counts_au_old AFTER UPDATE OF ${key}, deleted_at ON images
  WHEN old.deleted_at IS NULL BEGIN
  ${remove('old')}
END;
CREATE TRIGGER image_counts_au_new AFTER UPDATE OF ${key}, deleted_at ON images
  WHEN new.deleted_at IS NULL BEGIN
  ${add('new')}
END;
`);
}

/**
 * The number of live images matching `conditions` (SQL over `i.`, naming only countedColumns),
 * read from image_counts.
 */
export function countFromTotals(
  db: Db,
  conditions: string[],
  params: Array<string | number>,
): number {
  const where = conditions.length ? conditions.join(' AND ') : '1';
  return (
    db
      .prepare(`SELECT coalesce(sum(n), 0) AS n FROM image_counts i WHERE ${where}`)
      .get(...params) as { n: number }
  ).n;
}
