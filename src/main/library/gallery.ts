/**
 * Gallery queries: filters, full-text search over prompts (FTS5), keyset paging with an opaque
 * cursor, and the rows -> GalleryItem mapping.
 */
import {
  type GalleryItem,
  type GalleryPage,
  type GalleryQuery,
  type GenerationMode,
  type SamplerName,
  StudioError,
} from '../../shared';
import type { Db } from './db';
import {
  type DateLink,
  type LinkKey,
  type PageAsk,
  type Rest,
  countThroughLink,
  pageThroughLink,
  tagIdOf,
} from './date-links';
import { countFromTotals } from './image-counts';
import { seekDay } from './image-days';
import { type Lead, estimateFromPage, exactLeadTotal, leadSize } from './lead-counts';
import { countText, pageText } from './image-text';
import {
  bandWalkPays,
  bandsOrAll,
  estimateInRatingOrder,
  pageInRatingOrder,
  pageOfAllText,
  ratingBands,
} from './rating-order';
import { textSearch } from './search-text';

type SortKey = GalleryQuery['sort'];

interface Cursor {
  s: SortKey;
  k: Array<number | string>;
}

function encodeCursor(c: Cursor): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

function decodeCursor(text: string, sort: SortKey): Cursor {
  const bad = () =>
    new StudioError(
      'invalid-argument',
      'The gallery cursor is not valid for this query; start again from the first page.',
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(text, 'base64url').toString('utf8'));
  } catch {
    throw bad();
  }
  const c = parsed as Partial<Cursor>;
  const want = sort === 'rating' ? ['number', 'number', 'string'] : ['number', 'string'];
  if (
    !c ||
    c.s !== sort ||
    !Array.isArray(c.k) ||
    c.k.length !== want.length ||
    c.k.some((v, i) => typeof v !== want[i])
  )
    throw bad();
  return c as Cursor;
}

const order: Record<SortKey, { by: string; cmp: string; cols: string[] }> = {
  newest: { by: 'i.created_at DESC, i.id DESC', cmp: '<', cols: ['created_at', 'id'] },
  oldest: { by: 'i.created_at ASC, i.id ASC', cmp: '>', cols: ['created_at', 'id'] },
  rating: {
    by: 'i.rating DESC, i.created_at DESC, i.id DESC',
    cmp: '<',
    cols: ['rating', 'created_at', 'id'],
  },
};

const ftsFilter = 'i.prompt_id IN (SELECT rowid FROM prompts_fts WHERE prompts_fts MATCH ?)';

export const itemSelect = `
  SELECT i.id, i.generation_id, i.width, i.height, i.seed, i.batch_index, i.sampler, i.mode, i.created_at,
         i.favorite, i.rating, i.missing, i.content_filter, p.text AS prompt, p.negative AS negative,
         g.steps, g.guidance, g.model_name
  FROM images i
  JOIN generations g ON g.id = i.generation_id
  JOIN prompts p ON p.id = i.prompt_id`;

export interface ItemRow {
  id: string;
  generation_id: string;
  width: number;
  height: number;
  seed: number;
  batch_index: number;
  sampler: string;
  mode: string;
  created_at: number;
  favorite: number;
  rating: number;
  missing: number;
  content_filter: 'flagged' | 'clean' | null;
  prompt: string;
  negative: string;
  steps: number;
  guidance: number;
  model_name: string;
}

export function toItems(db: Db, rows: ItemRow[]): GalleryItem[] {
  const tags = tagsOf(
    db,
    rows.map((r) => r.id),
  );
  return rows.map((r) => ({
    imageId: r.id,
    generationId: r.generation_id,
    url: `/media/images/${r.id}`,
    thumbUrl: `/media/thumbs/${r.id}`,
    width: r.width,
    height: r.height,
    prompt: r.prompt,
    negativePrompt: r.negative,
    seed: r.seed,
    batchIndex: r.batch_index,
    sampler: r.sampler as SamplerName,
    steps: r.steps,
    guidance: r.guidance,
    mode: r.mode as GenerationMode,
    modelName: r.model_name,
    createdAt: r.created_at,
    favorite: r.favorite === 1,
    rating: r.rating,
    tags: tags.get(r.id) ?? [],
    missing: r.missing === 1,
    contentFilter: r.content_filter ?? 'unchecked',
  }));
}

function tagsOf(db: Db, ids: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (ids.length === 0) return out;
  const rows = db
    .prepare(
      `SELECT it.image_id AS id, t.name FROM image_tags it JOIN tags t ON t.id = it.tag_id
       WHERE it.image_id IN (SELECT value FROM json_each(?)) ORDER BY t.name`,
    )
    .all(JSON.stringify(ids)) as Array<{ id: string; name: string }>;
  for (const r of rows) {
    let list = out.get(r.id);
    if (!list) out.set(r.id, (list = []));
    list.push(r.name);
  }
  return out;
}

/**
 * Where a text, tag or LoRA search is still counted (a jump past its last match, or a search in
 * rating order), it counts at most this many matches past the end of the page asked for: each
 * match costs a lookup (a text search with 26,000 matches took 13 ms to count on a quiet
 * machine, 60 ms on a busy one). First pages in date order are not counted but estimated
 * (lead-counts.ts).
 */
export const countAhead = 2000;

/** A counted filter set: its SQL and parameters (to count newly added images), its total. */
export interface CountEntry {
  filterSql: string;
  params: Array<string | number>;
  total: number;
  /** False: `total` is a lower bound (counting stopped there). */
  exact: boolean;
  /** Not exact: about how many match (lead-counts.ts), when it could be estimated. */
  estimate?: number;
}

/** Totals per filter set, kept until the library changes (see countAdded). */
export type CountCache = Map<string, CountEntry>;

const maxCachedCounts = 50;
/**
 * Pages of searches with more matches than this walk the sort order's index, testing each row,
 * which stops after one page; fewer are fetched through a filter's index and sorted.
 */
const smallSet = 1500;

/**
 * New images (saved, re-imported or restored by undo) added to every cached total they match,
 * so a library that keeps growing while a search is open (the queue at work) does not count
 * that search again. Any other change (an edit, a delete) must clear the cache instead.
 */
export function countAdded(db: Db, cache: CountCache, imageIds: string[]): void {
  if (imageIds.length === 0 || cache.size === 0) return;
  const ids = JSON.stringify(imageIds);
  for (const entry of cache.values()) {
    const n = (
      db
        .prepare(
          `SELECT count(*) AS n FROM images i
           WHERE i.id IN (SELECT value FROM json_each(?)) AND ${entry.filterSql}`,
        )
        .get(ids, ...entry.params) as { n: number }
    ).n;
    entry.total += n;
    if (entry.estimate !== undefined) entry.estimate += n;
  }
}

/** A search's filters as SQL over `images i`, with what decides how to count and page it. */
interface Filter {
  where: string[];
  params: Array<string | number>;
  /** The conditions joined; with `params`, the key of the count cache. */
  sql: string;
  key: string;
  usesText: boolean;
  /** Text, tag and LoRA searches count a lower bound (counting every match takes too long). */
  bounded: boolean;
  /** Only conditions on countedColumns: the total is read from image_counts. */
  fromTotals: boolean;
  /**
   * The tag, LoRA or text whose date-ordered index leads a search sorted by date (in that
   * order of preference), and the conditions besides it.
   */
  lead: Lead | null;
  rest: Rest;
  /** The conditions on image_counts' columns (model, sampler, mode, size, favourite, rating). */
  columns: Rest;
  /** At most how many images the text matches (search-text.ts); null: no text, or unknown. */
  textAtMost: number | null;
  /** The tag and LoRA besides the lead, tested in `rest` through an index each. */
  probes: DateLink[];
  /** A text lead's probes: its walk keeps within their times (image-text.ts); else none. */
  within: DateLink[];
}

/**
 * One page of the gallery. `countCache` keeps totals per filter set until the library changes
 * (the caller adds new images with countAdded and clears it on other writes), so paging on does
 * not count again. Steps: the filter's SQL; its total (cached, counted along with the first
 * page, or counted alone); the page's keys; their rows; the cursor of the next page.
 */
export function searchGallery(db: Db, query: GalleryQuery, countCache: CountCache): GalleryPage {
  const filter = galleryFilter(db, query);
  // Matches to count at least: past this page (by offset) and then some, for the scroll bar.
  const pageEnd = (query.cursor ? 0 : (query.offset ?? 0)) + query.limit;
  let keys: PageKey[] | null = null;
  let counted = cachedCount(countCache, filter, pageEnd + query.limit);
  const lead = filter.lead;
  if (counted === undefined && lead) {
    // One tag or one LoRA alone: its kept count (lead-counts.ts).
    const exact = exactLeadTotal(db, lead, filter.rest);
    if (exact !== null) counted = countEntry(filter, exact, true);
  }
  if (lead && query.sort === 'rating' && (query.cursor || !query.offset)) {
    const rated = ratedPage(db, query, filter, lead, counted, pageEnd);
    if (rated) ({ keys, counted } = rated);
  }
  if (lead && query.sort !== 'rating') {
    // Text, tag or LoRA in date order: its own index leads (image-text.ts, date-links.ts).
    const after = query.cursor
      ? (decodeCursor(query.cursor, query.sort).k as [number, string])
      : null;
    const ask = {
      rest: filter.rest,
      newest: query.sort === 'newest',
      after,
      limit: query.limit + 1,
      offset: query.cursor ? 0 : (query.offset ?? 0),
    };
    keys =
      'text' in lead ? pageText(db, lead.text, ask, filter.within) : pageThroughLink(db, lead, ask);
    if (!counted?.exact) counted = countFromPage(db, filter, lead, ask, keys, pageEnd, counted);
  }
  if (counted === undefined && filter.bounded && !query.cursor)
    ({ counted, keys } = countWithFirstPage(db, query, filter, pageEnd));
  counted ??= countMatches(db, query, filter, pageEnd);
  keys ??= pageKeys(db, query, filter.where, filter.params, counted.total);
  if (lead && query.sort === 'rating' && !query.cursor && !query.offset)
    counted = withRatedEstimate(db, filter, counted, keys, query.limit);
  rememberCount(countCache, filter, counted);
  const more = keys.length > query.limit;
  if (more) keys.length = query.limit;
  const last = keys[keys.length - 1];
  return {
    items: toItems(db, rowsOf(db, keys)),
    nextCursor: more && last ? nextCursor(query.sort, last) : null,
    total: counted.total,
    totalExact: counted.exact,
    ...(counted.exact || counted.estimate === undefined ? {} : { totalEstimate: counted.estimate }),
  };
}

/** The query's filters as SQL conditions (a seed-variant search needs its image's key). */
function galleryFilter(db: Db, query: GalleryQuery): Filter {
  const where: string[] = ['i.deleted_at IS NULL'];
  const params: Array<string | number> = [];
  const rest: Rest = { where: ['i.deleted_at IS NULL'], params: [] };
  const columns: Rest = { where: [], params: [] };
  const add = (sql: string, ...values: Array<string | number>) => {
    where.push(sql);
    params.push(...values);
    rest.where.push(sql);
    rest.params.push(...values);
  };
  /** A condition on one of image_counts' columns. */
  const addColumn = (sql: string, ...values: Array<string | number>) => {
    add(sql, ...values);
    columns.where.push(sql);
    columns.params.push(...values);
  };
  /**
   * A text, tag or LoRA condition: `gather` (its matches read once, for the planner to sort or
   * test) in `where`; in `rest`, unless it leads, `probe` (tested row by row through an index:
   * a lead hands out about a page of rows, and gathering every match of the others would cost
   * more than that page).
   */
  const addLinked = (gather: string, probe: string, value: string, leads: boolean) => {
    where.push(gather);
    params.push(value);
    if (leads) return;
    rest.where.push(probe);
    rest.params.push(value);
  };
  const text = query.text === undefined ? null : textSearch(db, query.text);
  const match = text?.match ?? null;
  const tag = query.tag?.trim();
  const lora = query.lora?.trim();
  // No tag of that name: -1, which no tag has (the search finds nothing).
  // A text leads a tag or LoRA, in every order: its walk keeps within their times (image-text.ts,
  // withinLinks), so only its entries of their milliseconds reach `images`. Before, the tag or
  // LoRA led in date order, each of its images looked up and tested against the prompts that
  // match ("cat" and a tag at 1,000,000 images: 20 to 40 ms, 3 ms within the tag's times), and
  // joining each of the text's rows to its image without the times cost 1.2 s.
  const tagLink = tag !== undefined ? { tagId: tagIdOf(db, tag) ?? -1 } : null;
  const loraLink = lora !== undefined ? { lora } : null;
  const textLink = match !== null ? { text: match } : null;
  const lead: Lead | null = textLink ?? tagLink ?? loraLink;
  const probes = [tagLink, loraLink].flatMap((l): DateLink[] =>
    l !== null && l !== lead ? [l] : [],
  );
  if (query.modelId !== undefined) addColumn('i.model_id = ?', query.modelId);
  if (query.sampler !== undefined) addColumn('i.sampler = ?', query.sampler);
  if (query.mode !== undefined) addColumn('i.mode = ?', query.mode);
  if (query.from !== undefined) add('i.created_at >= ?', query.from);
  if (query.to !== undefined) add('i.created_at <= ?', query.to);
  if (query.width !== undefined) addColumn('i.width = ?', query.width);
  if (query.height !== undefined) addColumn('i.height = ?', query.height);
  // A literal, not a parameter: images_favorite is a partial index on `favorite = 1`, which the
  // planner can use only for a condition it reads in the SQL.
  if (query.favorite !== undefined) addColumn(`i.favorite = ${query.favorite ? 1 : 0}`);
  if (query.minRating !== undefined && query.minRating > 0)
    addColumn('i.rating >= ?', query.minRating);
  if (tag !== undefined)
    addLinked(
      `i.id IN (SELECT it.image_id FROM image_tags it JOIN tags t ON t.id = it.tag_id
                WHERE t.name = ? COLLATE NOCASE)`,
      `EXISTS (SELECT 1 FROM image_tags it JOIN tags t ON t.id = it.tag_id
               WHERE it.image_id = i.id AND t.name = ? COLLATE NOCASE)`,
      tag,
      lead !== null && 'tagId' in lead,
    );
  if (lora !== undefined)
    addLinked(
      `i.generation_id IN (SELECT generation_id FROM generation_networks
                           WHERE kind = 'lora' AND name = ? COLLATE NOCASE)`,
      `EXISTS (SELECT 1 FROM generation_networks WHERE generation_id = i.generation_id
               AND kind = 'lora' AND name = ? COLLATE NOCASE)`,
      lora,
      lead !== null && 'lora' in lead,
    );
  if (query.flagged) add("i.content_filter = 'flagged'");
  if (query.seedVariantsOf !== undefined) {
    const key = db
      .prepare(
        `SELECT variant_key AS k FROM images WHERE id = ?
         UNION ALL SELECT variant_key FROM generations WHERE id = ? LIMIT 1`,
      )
      .get(query.seedVariantsOf, query.seedVariantsOf) as { k: string } | undefined;
    if (!key)
      throw new StudioError('not-found', 'That image is not in the library (it may be deleted).');
    add('i.variant_key = ?', key.k);
  }
  if (match !== null) addLinked(ftsFilter, ftsFilter, match, lead !== null && 'text' in lead);
  const sql = where.join(' AND ');
  return {
    where,
    params,
    sql,
    key: JSON.stringify([sql, params]),
    usesText: match !== null,
    bounded: match !== null || query.tag !== undefined || query.lora !== undefined,
    lead,
    rest,
    columns,
    textAtMost: text?.atMost ?? null,
    probes,
    within: textLink ? probes : [],
    fromTotals:
      match === null &&
      query.tag === undefined &&
      query.lora === undefined &&
      !query.flagged &&
      query.seedVariantsOf === undefined &&
      query.from === undefined &&
      query.to === undefined,
  };
}

/**
 * The cached total, unless it is a lower bound short of `needed` without an estimate (then it
 * is counted further). An estimate stands for the search until the library changes.
 */
function cachedCount(cache: CountCache, filter: Filter, needed: number): CountEntry | undefined {
  const counted = cache.get(filter.key);
  return counted && !counted.exact && counted.estimate === undefined && counted.total < needed
    ? undefined
    : counted;
}

function rememberCount(cache: CountCache, filter: Filter, counted: CountEntry): void {
  if (cache.get(filter.key) === counted) return;
  if (cache.size >= maxCachedCounts) cache.clear();
  cache.set(filter.key, counted);
}

/**
 * A bounded search's first page: in one pass, the matches up to the cap, their count, and this
 * page of them sorted. When there are more than the cap, the count is a lower bound and the page
 * is left to pageKeys; nothing at this offset (the matches end before it) counts nothing here.
 */
function countWithFirstPage(
  db: Db,
  query: GalleryQuery,
  filter: Filter,
  pageEnd: number,
): { counted: CountEntry | undefined; keys: PageKey[] | null } {
  const cap = pageEnd + countAhead;
  const sort = order[query.sort];
  const found = db
    .prepare(
      `SELECT id, rating, created_at, count(*) OVER () AS n
       FROM (SELECT i.id, i.rating, i.created_at FROM images i WHERE ${filter.sql} LIMIT ?) AS i
       ORDER BY ${sort.by} LIMIT ? OFFSET ?`,
    )
    .all(...filter.params, cap + 1, query.limit + 1, query.offset ?? 0) as Array<
    PageKey & { n: number }
  >;
  const n = found.length ? found[0].n : query.offset ? null : 0;
  const entry = (total: number, exact: boolean): CountEntry => ({
    filterSql: filter.sql,
    params: filter.params,
    total,
    exact,
  });
  if (n !== null && n <= cap)
    return {
      counted: entry(n, true),
      keys: found.map(({ id, rating, created_at }) => ({ id, rating, created_at })),
    };
  return { counted: n !== null ? entry(cap, false) : undefined, keys: null };
}

function countEntry(filter: Filter, total: number, exact: boolean, estimate?: number): CountEntry {
  return {
    filterSql: filter.sql,
    params: filter.params,
    total,
    exact,
    ...(estimate === undefined ? {} : { estimate }),
  };
}

/**
 * The total of a date-ordered text, tag or LoRA search from the page its lead's index gave:
 * exact when the walk reached the last match; else at least the matches found, and about as
 * many as estimateFromPage says (or as `known`, the search's total so far, said). A page after
 * a cursor (whose matches before it are unknown) keeps what is known, or gives its own keys as
 * the lower bound; a jump past the last match counts up to a cap, so the scroll bar learns the
 * end.
 */
function countFromPage(
  db: Db,
  filter: Filter,
  lead: Lead,
  ask: PageAsk,
  keys: LinkKey[],
  pageEnd: number,
  known: CountEntry | undefined,
): CountEntry {
  const last = keys[keys.length - 1];
  const found = ask.offset + keys.length;
  if (ask.after) return known ?? countEntry(filter, keys.length, false);
  if (keys.length < ask.limit && (last || ask.offset === 0)) return countEntry(filter, found, true);
  if (!last) {
    const cap = pageEnd + countAhead;
    const n =
      'text' in lead
        ? countText(db, lead.text, filter.rest, cap, filter.within)
        : countThroughLink(db, lead, filter.rest, cap);
    return countEntry(filter, Math.min(n, cap), n <= cap, known?.estimate);
  }
  if (known && known.total >= found) return known;
  return countEntry(
    filter,
    found,
    false,
    known?.estimate ?? estimateFromPage(db, lead, ask.newest, last, found),
  );
}

/**
 * A text, tag or LoRA search's page in rating order (rating-order.ts), from the top or after a
 * cursor: the bands walked when that costs less than gathering the lead's matches, else the
 * gathering query (pageKeys, which walks images_rating). A text with a tag or LoRA keeps within
 * their times (image-text.ts) and walks the bands or, when its matches are few, reads them all
 * at once and sorts them (bandsOrAll), which counts them exactly. Else its total is not counted
 * past the page (that count cost 11 ms of a prefix's 35.6 at 1,000,000 images): `known`
 * (cached, or one tag or LoRA alone), else exact when the page holds the last match, else the
 * matches found with an estimate; a page after a cursor without a known total gives its keys
 * as the lower bound. Null (left to the gathering queries, counted) when the search has
 * conditions besides its lead that are neither image_counts' columns nor a tag or LoRA (a date
 * range, a seed's variants: the plan cannot tell how much of a walk they leave), when a tag's
 * walk with a LoRA to probe would cost more than those queries, and for a first page whose
 * lead has so few matches that counting them all with the page costs little and makes the
 * total exact.
 */
function ratedPage(
  db: Db,
  query: GalleryQuery,
  filter: Filter,
  lead: Lead,
  known: CountEntry | undefined,
  pageEnd: number,
): { keys: PageKey[]; counted: CountEntry } | null {
  // rest.where[0] is `i.deleted_at IS NULL`, which image_counts applies too.
  const tested = filter.columns.where.length + filter.probes.length + 1;
  if (filter.rest.where.length !== tested) return null;
  const size = leadSize(db, lead, filter.textAtMost);
  if (!known && !query.cursor && size <= pageEnd + countAhead) return null;
  const probes = filter.probes.map((p) => leadSize(db, p, null));
  const after = query.cursor
    ? (decodeCursor(query.cursor, 'rating').k as [number, number, string])
    : null;
  const bands = ratingBands(db, filter.columns);
  const limit = query.limit + 1;
  const start = after ? after[0] : 5;
  const ask = { rest: filter.rest, after, limit, within: filter.within };
  if (
    'text' in lead &&
    filter.within.length &&
    bandsOrAll(bands, start, size, limit, probes) === 'all'
  ) {
    // Every match read at once and sorted: exact, on every page.
    const all = pageOfAllText(db, lead.text, ask);
    return { keys: all.keys, counted: known ?? countEntry(filter, all.total, true) };
  }
  const walk = filter.within.length > 0 || bandWalkPays(bands, lead, start, size, limit, probes);
  if (!walk && probes.length) return null;
  const keys = walk
    ? pageInRatingOrder(db, lead, bands, ask)
    : pageKeys(db, query, filter.where, filter.params, size);
  const last = keys[keys.length - 1];
  if (known) return { keys, counted: known };
  if (after) return { keys, counted: countEntry(filter, keys.length, false) };
  if (keys.length < limit) return { keys, counted: countEntry(filter, keys.length, true) };
  const estimate = estimateInRatingOrder(db, bands, last, keys.length);
  return { keys, counted: countEntry(filter, keys.length, false, estimate) };
}

/**
 * A first page in rating order whose total the gathering queries left a lower bound: with an
 * estimate from its keys (the matches from the top of the order to its last key), never below
 * the matches counted.
 */
function withRatedEstimate(
  db: Db,
  filter: Filter,
  counted: CountEntry,
  keys: PageKey[],
  limit: number,
): CountEntry {
  const last = keys[keys.length - 1];
  if (counted.exact || counted.estimate !== undefined || keys.length <= limit || !last)
    return counted;
  const bands = ratingBands(db, filter.columns);
  const estimate = estimateInRatingOrder(db, bands, last, keys.length);
  return countEntry(filter, counted.total, false, Math.max(counted.total, estimate));
}

/** Counts the matches: all of them, or up to a cap past this page for a bounded search. */
function countMatches(db: Db, query: GalleryQuery, filter: Filter, pageEnd: number): CountEntry {
  const { sql, params } = filter;
  const cap = pageEnd + countAhead;
  if (filter.fromTotals) {
    // where[0] is `i.deleted_at IS NULL`: image_counts holds live images only.
    const total = countFromTotals(db, filter.where.slice(1), params);
    return { filterSql: sql, params, total, exact: true };
  }
  const n = filter.bounded
    ? (
        db
          .prepare(`SELECT count(*) AS n FROM (SELECT 1 FROM images i WHERE ${sql} LIMIT ?)`)
          .get(...params, cap + 1) as { n: number }
      ).n
    : (
        db.prepare(`SELECT count(*) AS n FROM images i WHERE ${sql}`).get(...params) as {
          n: number;
        }
      ).n;
  return filter.bounded && n > cap
    ? { filterSql: sql, params, total: cap, exact: false }
    : { filterSql: sql, params, total: n, exact: true };
}

/** The joined rows of a page's keys, in the keys' order. */
function rowsOf(db: Db, keys: PageKey[]): ItemRow[] {
  const byId = new Map(
    (
      db
        .prepare(`${itemSelect} WHERE i.id IN (SELECT value FROM json_each(?))`)
        .all(JSON.stringify(keys.map((k) => k.id))) as ItemRow[]
    ).map((r) => [r.id, r]),
  );
  return keys.map((k) => byId.get(k.id)).filter((r): r is ItemRow => r !== undefined);
}

function nextCursor(sort: SortKey, last: PageKey): string {
  return encodeCursor({
    s: sort,
    k: sort === 'rating' ? [last.rating, last.created_at, last.id] : [last.created_at, last.id],
  });
}

interface PageKey {
  id: string;
  rating: number;
  created_at: number;
}

/**
 * The index in date order of one of the query's filter columns, if one has such an index (model,
 * favourites, and since migration 14 sampler and mode), the first of them in that order.
 */
function dateIndexOf(query: GalleryQuery): string | null {
  if (query.modelId !== undefined) return 'images_model';
  if (query.favorite === true) return 'images_favorite';
  if (query.sampler !== undefined) return 'images_sampler';
  if (query.mode !== undefined) return 'images_mode';
  return null;
}

/** Offsets into the whole gallery from which a page seeks its day rather than walks there. */
const seekFrom = 2000;

/** The keys of one page (and one more, to tell whether another page follows). */
function pageKeys(
  db: Db,
  query: GalleryQuery,
  where: string[],
  params: Array<string | number>,
  total: number,
): PageKey[] {
  const sort = order[query.sort];
  // Many matches (any filter): walk an index in the sort order and test each row, which stops
  // after one page; few: let the planner fetch them through a filter's index and sort those.
  // In date order a filter column with its own date-ordered index walks that one: only its
  // rows, so an offset deep inside the filter skips index entries, not the whole gallery's
  // rows each looked up (a sampler at offset 50,000 of 1,000,000 images: 613 ms before).
  const pageHint =
    total <= smallSet
      ? ''
      : `INDEXED BY ${query.sort === 'rating' ? 'images_rating' : (dateIndexOf(query) ?? 'images_newest')}`;
  const pageWhere = [...where];
  const pageParams = [...params];
  let offset = query.cursor ? 0 : (query.offset ?? 0);
  // A jump into the whole gallery: to its day first (image-days.ts), then the rest of the way.
  if (offset >= seekFrom && where.length === 1) {
    const day = seekDay(db, query.sort, offset);
    if (!day) return [];
    pageWhere.push(day.where);
    pageParams.push(...day.params);
    offset = day.offset;
  }
  if (query.cursor) {
    const cursor = decodeCursor(query.cursor, query.sort);
    pageWhere.push(
      `(${sort.cols.map((c) => `i.${c}`).join(', ')}) ${sort.cmp} (${sort.cols.map(() => '?').join(', ')})`,
    );
    pageParams.push(...cursor.k);
  }
  // Two steps: the page's keys from the images table alone, then the joined rows of those.
  return db
    .prepare(
      `SELECT i.id, i.rating, i.created_at FROM images i ${pageHint} WHERE ${pageWhere.join(' AND ')}
       ORDER BY ${sort.by} LIMIT ? OFFSET ?`,
    )
    .all(...pageParams, query.limit + 1, offset) as PageKey[];
}
