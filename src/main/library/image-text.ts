/**
 * Text searches in date order without gathering every match. `prompts_fts` finds prompts, and
 * a common word's prompts are tens of thousands (every one of them had to be read into a list
 * before the first image could be tested: 7 ms for "cat", 85 ms for the prefix "light" at
 * 1,000,000 images, npm run bench:library). `images_fts` (migration 11) indexes each image's
 * prompt and negative prompt under a key in date order, `created_at * 2^20 + (rowid mod 2^20)`,
 * so FTS5 hands out the matches newest (or oldest) first and stops after about a page:
 * `ORDER BY rowid DESC` with `LIMIT` walks the doclists backwards (sqlite.org/fts5.html, 3.4
 * "Sorting by rowid"). It is contentless (the text stays in `prompts`) with contentless_delete
 * (SQLite 3.43), kept by triggers on `images`; soft-deleted images stay in it (undo brings them
 * back) and are left out by the query.
 */
import type { Db } from './db';
import {
  type DateLink,
  type LinkKey,
  type PageAsk,
  type Rest,
  linkTimes,
  pageOfDateOrdered,
  pageWhere,
} from './date-links';

/** Low bits of the key: the image's rowid, so two images of one millisecond differ. */
const shift = 1_048_576;
const keyOf = (row: 'new' | 'old' | 'i') =>
  `${row}.created_at * ${shift} + (${row}.rowid % ${shift})`;

/** Every image's prompt into images_fts, then merged into one segment. */
const indexAll = `
INSERT INTO images_fts (rowid, text, negative)
  SELECT ${keyOf('i')}, p.text, p.negative FROM images i JOIN prompts p ON p.id = i.prompt_id;
-- One segment instead of hundreds after the bulk insert (5 s at 1,000,000 images): a query
-- opens every segment, "cat" took 36-55 ms before and 2-4 ms after.
INSERT INTO images_fts (images_fts) VALUES ('optimize');`;

const insertTrigger = `
CREATE TRIGGER images_fts_ai AFTER INSERT ON images BEGIN
  INSERT INTO images_fts (rowid, text, negative)
    SELECT ${keyOf('new')}, text, negative FROM prompts WHERE id = new.prompt_id;
END;`;

/** Migration 11: the table filled from the images there are, and its triggers. */
export function addImageText(db: Db): void {
  db.exec(`
CREATE VIRTUAL TABLE images_fts USING fts5(
  text, negative, content='', contentless_delete=1, tokenize='unicode61 remove_diacritics 2'
);
${indexAll}
${insertTrigger}
CREATE TRIGGER images_fts_ad AFTER DELETE ON images BEGIN
  DELETE FROM images_fts WHERE rowid = ${keyOf('old')};
END;
`);
}

/**
 * For a bulk fill (npm run bench:library): the insert triggers of images_fts and prompts_fts go;
 * the returned function indexes every image and prompt again, one statement each, and puts the
 * triggers back. FTS5 writes its pending terms to disk at every statement's savepoint
 * (fts5SavepointMethod calls sqlite3Fts5FlushToDisk, SQLite's fts5_main.c), so an insert per
 * row through a trigger makes a segment per row, which automerge merges again and again: 90%
 * of a 1,000,000-generation fill's time halfway through it (perf: fts5IndexMergeLevel ->
 * fts5DataDelete), and the fill grew faster than its rows (300,000: 140 s; 1,000,000: 23 min).
 */
export function suspendTextIndexes(db: Db): () => void {
  const prompts = (
    db
      .prepare("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'prompts_ai'")
      .get() as {
      sql: string;
    }
  ).sql;
  db.exec('DROP TRIGGER images_fts_ai; DROP TRIGGER prompts_ai;');
  return () =>
    db.exec(`
INSERT INTO images_fts (images_fts) VALUES ('delete-all');
${indexAll}
INSERT INTO prompts_fts (prompts_fts) VALUES ('rebuild');
${insertTrigger}
${prompts};`);
}

/** The image of an `images_fts` row `f`: its millisecond through images_newest, then its rowid. */
const joinImage = `CROSS JOIN images i ON i.created_at = f.rowid / ${shift}
  AND i.rowid % ${shift} = f.rowid % ${shift}`;

/**
 * The text's keys joined to a tag's or LoRA's date-ordered index by creation time: a key is
 * kept only if its millisecond is among each link's creation times (linkTimes, read once into a
 * set with a Bloom filter). Both indexes are date-ordered, so this is a join of the two by
 * created_at in which only the text's entries of a shared millisecond reach `images`; the tag or
 * LoRA itself is still tested on each image (`rest`), as two images may share a millisecond.
 * Before, such a search looked up the image of every entry of one side: a word with a tag in
 * rating order took 71 ms at 1,000,000 images (every image of the 10,000-image tag), the same
 * through the times 10 ms (npm run bench:library).
 */
function withinLinks(within: DateLink[]): { sql: string; params: Array<string | number> } {
  const parts = within.map(linkTimes);
  return {
    sql: parts.map((t) => `AND f.rowid / ${shift} IN (${t.sql})`).join(' '),
    params: parts.flatMap((t) => t.params),
  };
}

/**
 * Matches of an FTS5 query, counting at most `cap + 1`, newest first. `within`: tags and LoRAs
 * the matches also have (withinLinks; `rest` tests them too).
 */
export function countText(
  db: Db,
  match: string,
  rest: Rest,
  cap: number,
  within: DateLink[] = [],
): number {
  const links = withinLinks(within);
  return (
    db
      .prepare(
        `SELECT count(*) AS n FROM (
           SELECT 1 FROM images_fts f ${joinImage}
           WHERE f.images_fts MATCH ? ${links.sql} AND ${rest.where.join(' AND ')}
           ORDER BY f.rowid DESC LIMIT ?)`,
      )
      .get(match, ...links.params, ...rest.params, cap + 1) as { n: number }
  ).n;
}

/**
 * Every match of an FTS5 query within a tag's or LoRA's times (withinLinks), in no order: for a
 * page in rating order whose matches are few next to the text's entries (rating-order.ts).
 */
export function allText(db: Db, match: string, rest: Rest, within: DateLink[]): LinkKey[] {
  const links = withinLinks(within);
  return db
    .prepare(
      `SELECT i.id, i.rating, i.created_at FROM images_fts f ${joinImage}
       WHERE f.images_fts MATCH ? ${links.sql} AND ${rest.where.join(' AND ')}`,
    )
    .all(match, ...links.params, ...rest.params) as LinkKey[];
}

/**
 * One page (and one key more) of a text search in date order, after a cursor's created_at and
 * id or from `offset`. Keys follow created_at but not the image id within a millisecond, so
 * the matches are walked from the cursor's millisecond, each image tested, until the
 * millisecond of the page's last image has been read whole, and sorted (pageOfDateOrdered):
 * one walk of about a page. Before, an edge query and pages of growing windows ran until one
 * came back full. `within`: tags and LoRAs the matches also have (withinLinks).
 */
export function pageText(db: Db, match: string, ask: PageAsk, within: DateLink[] = []): LinkKey[] {
  const { dir, cmp, where, params } = pageWhere(ask);
  const { newest, after } = ask;
  // Keys from the cursor's millisecond on (keys pass 2^53: computed in SQL, not here).
  const fromSql = after
    ? `AND f.rowid ${cmp}= ${newest ? `(? + 1) * ${shift} - 1` : `? * ${shift}`}`
    : '';
  const links = withinLinks(within);
  const keys = db
    .prepare(
      `SELECT i.id, i.rating, i.created_at FROM images_fts f ${joinImage}
       WHERE f.images_fts MATCH ? ${fromSql} ${links.sql} AND ${where.join(' AND ')}
       ORDER BY f.rowid ${dir}`,
    )
    .iterate(match, ...(after ? [after[0]] : []), ...links.params, ...params) as Iterable<LinkKey>;
  return pageOfDateOrdered(keys, ask);
}
