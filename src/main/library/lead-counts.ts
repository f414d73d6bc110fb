/**
 * Totals of text, tag and LoRA searches without walking their matches. Counting a bound of
 * 2,100 matches cost a lookup into `images` for each (a tag search's first page at 1,000,000
 * images: 0.3 ms for the page, 158 ms for its count; a LoRA with text 872 ms, npm run
 * bench:library). Instead:
 * - `tag_counts` and `lora_counts` (migration 15) hold how many live images each tag and each
 *   LoRA has, kept by triggers: a search by one tag or one LoRA alone is counted exactly by
 *   reading one row.
 * - Any other such search is estimated from its first page: the page walks its lead's index in
 *   date order (date-links.ts, image-text.ts), so the share of the walked entries that matched
 *   is a sample, and the lead's size times that share is the estimate (see estimateFromPage).
 */
import type { Db } from './db';
import { type DateLink, type LinkKey, type Rest } from './date-links';
import { countFromTotals } from './image-counts';

const dayMs = 86_400_000;

/** The LoRAs of a generation, one row per name in any case (a twin `Detail`/`detail` counts once). */
const lorasOf = (generation: string) => `
  SELECT name FROM generation_networks
  WHERE generation_id = ${generation} AND kind = 'lora' GROUP BY name COLLATE NOCASE`;

/** No other row of the same generation names this LoRA (in any case). */
const noTwin = (row: 'new' | 'old') => `NOT EXISTS (
  SELECT 1 FROM generation_networks twin
  WHERE twin.generation_id = ${row}.generation_id AND twin.kind = 'lora'
    AND twin.name = ${row}.name COLLATE NOCASE AND twin.rowid <> ${row}.rowid)`;

/** Live images of a generation. */
const liveImagesOf = (generation: string) =>
  `(SELECT count(*) FROM images WHERE generation_id = ${generation} AND deleted_at IS NULL)`;

/** The image of an image_tags row is there and live. */
const liveImage = (row: 'new' | 'old') =>
  `EXISTS (SELECT 1 FROM images WHERE id = ${row}.image_id AND deleted_at IS NULL)`;

const tables = `
CREATE TABLE tag_counts (
  tag_id INTEGER PRIMARY KEY,
  n INTEGER NOT NULL
);
CREATE TABLE lora_counts (
  name TEXT PRIMARY KEY COLLATE NOCASE,
  images INTEGER NOT NULL,
  generations INTEGER NOT NULL
) WITHOUT ROWID;
`;

/** The counts of the rows there are. */
const fill = `
INSERT INTO tag_counts (tag_id, n)
  SELECT it.tag_id, count(*) FROM image_tags it JOIN images i ON i.id = it.image_id
  WHERE i.deleted_at IS NULL GROUP BY it.tag_id;
INSERT INTO lora_counts (name, images, generations)
  SELECT name, sum(live), count(*) FROM (
    SELECT min(gn.name) AS name, ${liveImagesOf('gn.generation_id')} AS live
    FROM generation_networks gn WHERE gn.kind = 'lora'
    GROUP BY gn.generation_id, gn.name COLLATE NOCASE)
  GROUP BY name COLLATE NOCASE;
`;

const tagPlus = (image: string) => `
  INSERT INTO tag_counts (tag_id, n) SELECT tag_id, 1 FROM image_tags WHERE image_id = ${image}
  ON CONFLICT (tag_id) DO UPDATE SET n = n + excluded.n;`;
const loraPlus = (generation: string) => `
  INSERT INTO lora_counts (name, images, generations) SELECT name, 1, 0 FROM (${lorasOf(generation)}) WHERE true
  ON CONFLICT (name) DO UPDATE SET images = images + excluded.images;`;

/**
 * The triggers that keep the counts. A hard delete of an image (or a generation) removes its
 * links through ON DELETE CASCADE, and SQLite runs the cascade before the parent's AFTER DELETE
 * triggers, with the parent row already gone. So each (image, tag) and (image, LoRA) pair is
 * taken off once, by whichever side goes first while the other is still there: the image's
 * BEFORE DELETE trigger for the links it still has, a link's AFTER DELETE trigger while its
 * image is still there and live.
 */
const triggers = `
CREATE TRIGGER tag_counts_link_ai AFTER INSERT ON image_tags WHEN ${liveImage('new')} BEGIN
  INSERT INTO tag_counts (tag_id, n) VALUES (new.tag_id, 1)
  ON CONFLICT (tag_id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tag_counts_link_ad AFTER DELETE ON image_tags WHEN ${liveImage('old')} BEGIN
  UPDATE tag_counts SET n = n - 1 WHERE tag_id = old.tag_id;
END;
CREATE TRIGGER tag_counts_tag_ad AFTER DELETE ON tags BEGIN
  DELETE FROM tag_counts WHERE tag_id = old.id;
END;

CREATE TRIGGER lora_counts_link_ai AFTER INSERT ON generation_networks
  WHEN new.kind = 'lora' AND ${noTwin('new')} BEGIN
  INSERT INTO lora_counts (name, images, generations)
    VALUES (new.name, ${liveImagesOf('new.generation_id')}, 1)
  ON CONFLICT (name) DO UPDATE SET images = images + excluded.images, generations = generations + 1;
END;
CREATE TRIGGER lora_counts_link_ad AFTER DELETE ON generation_networks
  WHEN old.kind = 'lora' AND ${noTwin('old')} BEGIN
  UPDATE lora_counts
    SET images = images - ${liveImagesOf('old.generation_id')}, generations = generations - 1
  WHERE name = old.name;
END;

CREATE TRIGGER lead_counts_image_ai AFTER INSERT ON images WHEN new.deleted_at IS NULL BEGIN
  ${tagPlus('new.id')}
  ${loraPlus('new.generation_id')}
END;
CREATE TRIGGER lead_counts_image_bd BEFORE DELETE ON images WHEN old.deleted_at IS NULL BEGIN
  UPDATE tag_counts SET n = n - 1
  WHERE tag_id IN (SELECT tag_id FROM image_tags WHERE image_id = old.id);
  UPDATE lora_counts SET images = images - 1 WHERE name IN (${lorasOf('old.generation_id')});
END;
CREATE TRIGGER lead_counts_image_trash AFTER UPDATE OF deleted_at ON images
  WHEN old.deleted_at IS NULL AND new.deleted_at IS NOT NULL BEGIN
  UPDATE tag_counts SET n = n - 1
  WHERE tag_id IN (SELECT tag_id FROM image_tags WHERE image_id = new.id);
  UPDATE lora_counts SET images = images - 1 WHERE name IN (${lorasOf('new.generation_id')});
END;
CREATE TRIGGER lead_counts_image_restore AFTER UPDATE OF deleted_at ON images
  WHEN old.deleted_at IS NOT NULL AND new.deleted_at IS NULL BEGIN
  ${tagPlus('new.id')}
  ${loraPlus('new.generation_id')}
END;
`;

/**
 * Migration 15: the tables, filled from the rows there are, and their triggers. `generations`
 * in lora_counts counts generations (with live images or not): the scale of the sample of a
 * LoRA search's first page.
 */
export function addLeadCounts(db: Db): void {
  db.exec(tables + fill + triggers);
}

/**
 * For a bulk fill (npm run bench:library, whose fill drops the indexes the triggers look
 * through): the triggers go; the returned function counts the rows again and puts them back.
 */
export function suspendLeadCounts(db: Db): () => void {
  for (const [, name] of triggers.matchAll(/CREATE TRIGGER (\w+)/g))
    db.exec(`DROP TRIGGER ${name}`);
  return () => db.exec(`DELETE FROM tag_counts; DELETE FROM lora_counts; ${fill} ${triggers}`);
}

/** Live images with a tag (by id; a tag no image has: 0). */
export function tagTotal(db: Db, tagId: number): number {
  const row = db.prepare('SELECT n FROM tag_counts WHERE tag_id = ?').get(tagId) as
    { n: number } | undefined;
  return row?.n ?? 0;
}

/** Live images whose generation used a LoRA (any case), and how many generations did. */
export function loraTotals(db: Db, name: string): { images: number; generations: number } {
  const row = db
    .prepare('SELECT images, generations FROM lora_counts WHERE name = ? COLLATE NOCASE')
    .get(name) as { images: number; generations: number } | undefined;
  return row ?? { images: 0, generations: 0 };
}

/** What leads a date-ordered search: a tag or LoRA, or an FTS5 query over `images_fts`. */
export type Lead = DateLink | { text: string };

/**
 * At most how many live images a search led by `lead` matches, without a walk: a tag's or a
 * LoRA's kept count, or for text `textAtMost` (search-text.ts; Infinity when it is unknown).
 */
export function leadSize(db: Db, lead: Lead, textAtMost: number | null): number {
  if ('tagId' in lead) return tagTotal(db, lead.tagId);
  if ('lora' in lead) return loraTotals(db, lead.lora).images;
  return textAtMost ?? Infinity;
}

/** The exact total of a search by one tag or one LoRA alone; null for any other search. */
export function exactLeadTotal(db: Db, lead: Lead, rest: Rest): number | null {
  // rest.where[0] is `i.deleted_at IS NULL`, which the kept counts already apply.
  if (rest.where.length > 1) return null;
  if ('tagId' in lead) return tagTotal(db, lead.tagId);
  if ('lora' in lead) return loraTotals(db, lead.lora).images;
  return null;
}

/**
 * About how many images a date-ordered search matches, from its first page: `matched` matches
 * (the offset skipped and the page's keys, the one past the page included) were found by
 * walking the lead's index from the newest (or oldest) entry to `last`, the last key found.
 * The walked entries are counted from the index alone (no lookups into `images`), and
 *
 *   estimate = matched x (the lead's size / entries walked)
 *
 * the ratio estimator of a sample (Cochran, Sampling Techniques, 3rd ed., ch. 6): the lead's
 * size is a tag's live images, a LoRA's generations, or for text every live image (the walk
 * of `images_fts` covers every image of its time span, so the span's live images are the walked
 * entries). The sample is the newest (oldest) stretch of the library, so filters whose share
 * changes over time are off by that change; with matches spread evenly the estimate is within
 * about 2/sqrt(matched) of the truth (binomial), 20% for a page of 100. Never below `matched`.
 */
export function estimateFromPage(
  db: Db,
  lead: Lead,
  newest: boolean,
  last: LinkKey,
  matched: number,
): number {
  let size: number;
  let walked: number;
  const cmp = newest ? '>=' : '<=';
  if ('tagId' in lead) {
    size = tagTotal(db, lead.tagId);
    walked = (
      db
        .prepare(
          `SELECT count(*) AS n FROM image_tags INDEXED BY image_tags_newest
           WHERE tag_id = ? AND (created_at, image_id) ${cmp} (?, ?)`,
        )
        .get(lead.tagId, last.created_at, last.id) as { n: number }
    ).n;
  } else if ('lora' in lead) {
    size = loraTotals(db, lead.lora).generations;
    // Whole milliseconds, as pageThroughLink takes generations.
    walked = (
      db
        .prepare(
          `SELECT count(*) AS n FROM generation_networks INDEXED BY generation_networks_newest
           WHERE kind = 'lora' AND name = ? COLLATE NOCASE AND created_at ${cmp} ?`,
        )
        .get(lead.lora, last.created_at) as { n: number }
    ).n;
  } else {
    size = countFromTotals(db, [], []);
    walked = liveImagesFrom(db, newest, last.created_at);
  }
  if (walked <= 0) return matched;
  return Math.max(matched, Math.round((matched * size) / walked));
}

/**
 * Live images from `t` (included) to the newest, or from the oldest to `t`: whole days from
 * `image_days`, the day of `t` itself through images_newest (at most one day of entries).
 */
export function liveImagesFrom(db: Db, newest: boolean, t: number): number {
  const day = Math.floor(t / dayMs);
  const days = (
    db
      .prepare(`SELECT coalesce(sum(n), 0) AS n FROM image_days WHERE day ${newest ? '>' : '<'} ?`)
      .get(day) as { n: number }
  ).n;
  const inDay = (
    db
      .prepare(
        `SELECT count(*) AS n FROM images INDEXED BY images_newest
         WHERE deleted_at IS NULL AND created_at ${newest ? '>= ? AND created_at < ?' : '>= ? AND created_at <= ?'}`,
      )
      .get(...(newest ? [t, (day + 1) * dayMs] : [day * dayMs, t])) as { n: number }
  ).n;
  return days + inDay;
}
