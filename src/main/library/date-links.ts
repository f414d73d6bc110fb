/**
 * Tag and LoRA searches in date order without touching every match. `image_tags` and
 * `generation_networks` carry their image's (generation's) `created_at` (migration 11, kept by
 * triggers), indexed after the tag or name, so a page of the newest (or oldest) images with a
 * tag or LoRA is a seek into that index and a walk of about one page, and a bounded count walks
 * at most the cap. Before, such a search gathered every match (the 100,000 generations of a
 * common LoRA) to sort or test them: 46 ms for a tag and 194 ms for a LoRA at 1,000,000 images
 * (npm run bench:library).
 */
import type { Db } from './db';

/**
 * Migration 11: the date columns filled from the rows there are, their triggers, their indexes
 * (which replace the tag's and name's own: the same prefix). `created_at` is NULL only between
 * a row's insert and its trigger; images and generations never change their `created_at`.
 */
export function addDateLinks(db: Db): void {
  db.exec(`
ALTER TABLE image_tags ADD COLUMN created_at INTEGER;
UPDATE image_tags SET created_at = (SELECT created_at FROM images WHERE id = image_id);
CREATE TRIGGER image_tags_created AFTER INSERT ON image_tags WHEN new.created_at IS NULL BEGIN
  UPDATE image_tags SET created_at = (SELECT created_at FROM images WHERE id = new.image_id)
  WHERE image_id = new.image_id AND tag_id = new.tag_id;
END;
DROP INDEX image_tags_tag;
CREATE INDEX image_tags_newest ON image_tags (tag_id, created_at, image_id);

ALTER TABLE generation_networks ADD COLUMN created_at INTEGER;
UPDATE generation_networks
  SET created_at = (SELECT created_at FROM generations WHERE id = generation_id);
CREATE TRIGGER generation_networks_created AFTER INSERT ON generation_networks
  WHEN new.created_at IS NULL BEGIN
  UPDATE generation_networks
    SET created_at = (SELECT created_at FROM generations WHERE id = new.generation_id)
  WHERE rowid = new.rowid;
END;
DROP INDEX generation_networks_by_name;
CREATE INDEX generation_networks_newest
  ON generation_networks (kind, name COLLATE NOCASE, created_at);
`);
}

/** What leads a date-ordered search: one tag (by id) or one LoRA (by name, any case). */
export type DateLink = { tagId: number } | { lora: string };

/** The other conditions of a search, as SQL over `images i`. */
export interface Rest {
  where: string[];
  params: Array<string | number>;
}

/** A page key, as the gallery sorts and cursors. */
export interface LinkKey {
  id: string;
  rating: number;
  created_at: number;
}

/** A page asked for in date order: the conditions besides the lead, and where it starts. */
export interface PageAsk {
  rest: Rest;
  newest: boolean;
  /** The cursor's created_at and image id; null from the first match (or from `offset`). */
  after: [number, string] | null;
  /** Keys wanted (one more than the page, to tell whether another follows). */
  limit: number;
  offset: number;
}

/** The order's direction, its comparison, and the conditions with the cursor's. */
export function pageWhere(ask: PageAsk): {
  dir: 'ASC' | 'DESC';
  cmp: '<' | '>';
  where: string[];
  params: Array<string | number>;
} {
  const cmp = ask.newest ? '<' : '>';
  const where = [...ask.rest.where];
  const params = [...ask.rest.params];
  if (ask.after) {
    where.push(`(i.created_at, i.id) ${cmp} (?, ?)`);
    params.push(...ask.after);
  }
  return { dir: ask.newest ? 'DESC' : 'ASC', cmp, where, params };
}

/**
 * The creation times of a link's images, as a subquery: an image has the link only if its
 * created_at is among them (a LoRA's are its generations', which their images share). Read from
 * the link's own date-ordered index alone (covering), so testing a text's entries against them
 * looks up only the images of those milliseconds (image-text.ts, `within`).
 */
export function linkTimes(link: DateLink): { sql: string; params: Array<string | number> } {
  return 'tagId' in link
    ? {
        sql: 'SELECT created_at FROM image_tags INDEXED BY image_tags_newest WHERE tag_id = ?',
        params: [link.tagId],
      }
    : {
        sql: `SELECT created_at FROM generation_networks INDEXED BY generation_networks_newest
              WHERE kind = 'lora' AND name = ? COLLATE NOCASE`,
        params: [link.lora],
      };
}

/** The id of a tag (names are case-insensitive), or null when no image has it. */
export function tagIdOf(db: Db, name: string): number | null {
  const row = db.prepare('SELECT id FROM tags WHERE name = ? COLLATE NOCASE').get(name) as
    { id: number } | undefined;
  return row?.id ?? null;
}

/**
 * Matches, counting at most `cap + 1` (the caller reads more than `cap` as a lower bound): the
 * link's index walked in date order, each row's image tested. A generation that names the same
 * LoRA twice in two cases (`Detail`, `detail`) counts once.
 */
export function countThroughLink(db: Db, link: DateLink, rest: Rest, cap: number): number {
  const where = rest.where.join(' AND ');
  if ('tagId' in link)
    return (
      db
        .prepare(
          `SELECT count(*) AS n FROM (
             SELECT 1 FROM image_tags it INDEXED BY image_tags_newest
             CROSS JOIN images i ON i.id = it.image_id
             WHERE it.tag_id = ? AND ${where} LIMIT ?)`,
        )
        .get(link.tagId, ...rest.params, cap + 1) as { n: number }
    ).n;
  return (
    db
      .prepare(
        `SELECT count(*) AS n FROM (
           SELECT 1 FROM generation_networks gn INDEXED BY generation_networks_newest
           CROSS JOIN images i INDEXED BY images_generation ON i.generation_id = gn.generation_id
           WHERE gn.kind = 'lora' AND gn.name = ? COLLATE NOCASE AND ${where}
             AND NOT EXISTS (SELECT 1 FROM generation_networks twin
               WHERE twin.generation_id = gn.generation_id AND twin.kind = 'lora'
                 AND twin.name = gn.name COLLATE NOCASE AND twin.rowid < gn.rowid)
           LIMIT ?)`,
      )
      .get(link.lora, ...rest.params, cap + 1) as { n: number }
  ).n;
}

/**
 * The page asked for out of keys that come in date order (newest or oldest first, as `ask`
 * says) but in no set order within a millisecond: read up to the end of the millisecond of the
 * last key the page needs, sorted by (created_at, id), sliced. Reading stops there, so a lead
 * that hands out its matches in date order (a LoRA's generations, images_fts) is walked once,
 * for about a page, whatever the other conditions leave of it. A key read twice (a generation
 * that names a LoRA twice) counts once.
 */
export function pageOfDateOrdered(keys: Iterable<LinkKey>, ask: PageAsk): LinkKey[] {
  const need = ask.offset + ask.limit;
  const seen = new Set<string>();
  const found: LinkKey[] = [];
  let edge: number | null = null;
  for (const key of keys) {
    if (edge !== null && key.created_at !== edge) break;
    if (seen.has(key.id)) continue;
    seen.add(key.id);
    found.push(key);
    if (found.length === need) edge = key.created_at;
  }
  const sign = ask.newest ? -1 : 1;
  found.sort(
    (a, b) =>
      sign * (a.created_at - b.created_at) || sign * (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
  return found.slice(ask.offset, need);
}

/**
 * One page (and one key more) in date order, newest or oldest first, after `after` (a cursor's
 * created_at and id) or from `offset`.
 *
 * A tag's index is in the gallery's own order (created_at, image id): the page is the index
 * walked from the cursor. A LoRA's is by generation, and a generation's images share its
 * created_at but sort by their own ids among other generations of the same millisecond: its
 * index is walked from the cursor's millisecond, each generation's images tested, until the
 * millisecond of the page's last image has been read whole (pageOfDateOrdered). Before, pages
 * of growing windows of generations were asked for until one came back full, each gathering
 * the other conditions' matches again (a LoRA with a word: 3 windows, 23 ms each at 100,000
 * images). A LoRA's images are looked up by their generation (INDEXED BY): without ANALYZE's
 * statistics the planner took a mode or sampler filter's index instead and scanned it for
 * each generation (6.4 s for a LoRA with a mode at 12,000 images).
 */
export function pageThroughLink(db: Db, link: DateLink, ask: PageAsk): LinkKey[] {
  const { dir, cmp, where, params } = pageWhere(ask);
  const { after, limit, offset } = ask;
  if ('tagId' in link) {
    const seek = after ? `AND (it.created_at, it.image_id) ${cmp} (?, ?)` : '';
    return db
      .prepare(
        `SELECT i.id, i.rating, i.created_at FROM image_tags it INDEXED BY image_tags_newest
         CROSS JOIN images i ON i.id = it.image_id
         WHERE it.tag_id = ? ${seek} AND ${where.join(' AND ')}
         ORDER BY it.created_at ${dir}, it.image_id ${dir} LIMIT ? OFFSET ?`,
      )
      .all(link.tagId, ...(after ?? []), ...params, limit, offset) as LinkKey[];
  }
  const from = after ? `AND gn.created_at ${cmp}= ?` : '';
  const keys = db
    .prepare(
      `SELECT i.id, i.rating, i.created_at
       FROM generation_networks gn INDEXED BY generation_networks_newest
       CROSS JOIN images i INDEXED BY images_generation ON i.generation_id = gn.generation_id
       WHERE gn.kind = 'lora' AND gn.name = ? COLLATE NOCASE ${from} AND ${where.join(' AND ')}
       ORDER BY gn.created_at ${dir}`,
    )
    .iterate(link.lora, ...(after ? [after[0]] : []), ...params) as Iterable<LinkKey>;
  return pageOfDateOrdered(keys, ask);
}
