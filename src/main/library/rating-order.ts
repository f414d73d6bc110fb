/**
 * Text, tag and LoRA searches in rating order without gathering every match. Rating order is
 * (rating, created_at, id) descending and a rating is one of six values, so its pages are the
 * date-ordered pages of each rating's band, 5 stars down to none: each band is the lead's own
 * date-ordered walk (image-text.ts, date-links.ts) with `i.rating = r` among its conditions,
 * which stops after about a page. Before, such a page gathered every match first (the prompts
 * of a prefix: 24.6 ms at 1,000,000 images, npm run bench:library) and then walked
 * `images_rating`, testing each row against them.
 *
 * A band walk tests the lead's matches newest first until a page of them has the band's rating,
 * so a band holding few of the images costs a long walk (a few 5-star images among a million,
 * and a common word: every one of its matches). How many images each band holds is known
 * (image_counts), and the lead's size about (tag_counts, lora_counts, the words' documents in
 * images_fts_terms), so the walk is planned before it starts and left to the gathering query
 * (gallery.ts, pageKeys) when it would walk more than that costs.
 *
 * Totals: the walk from the top of the order to the last key found covers every image of the
 * bands above the last key's and the newest part of its band, so the share of matches among the
 * covered images, times all images, estimates the total (estimateInRatingOrder).
 */
import type { Db } from './db';
import {
  type DateLink,
  type LinkKey,
  type PageAsk,
  type Rest,
  pageThroughLink,
} from './date-links';
import { allText, pageText } from './image-text';
import { type Lead, liveImagesFrom } from './lead-counts';

/** Ratings, highest first (images.rating is CHECKed to 0..5). */
const topRating = 5;

/** Live images per rating (index = stars): all of them, and those the column filters keep. */
export interface RatingBands {
  all: number[];
  kept: number[];
}

/**
 * The bands' sizes from image_counts, in one pass over it. `columns`: the search's conditions
 * on image_counts' columns (model, sampler, mode, size, favourite, rating), over `i.`.
 */
export function ratingBands(db: Db, columns: Rest): RatingBands {
  const kept = columns.where.length ? columns.where.join(' AND ') : '1';
  const rows = db
    .prepare(
      `SELECT rating, sum(n) AS n, sum(CASE WHEN ${kept} THEN n ELSE 0 END) AS k
       FROM image_counts i GROUP BY rating`,
    )
    .all(...columns.params) as Array<{ rating: number; n: number; k: number }>;
  const bands: RatingBands = {
    all: Array(topRating + 1).fill(0),
    kept: Array(topRating + 1).fill(0),
  };
  for (const r of rows) {
    bands.all[r.rating] = r.n;
    bands.kept[r.rating] = r.k;
  }
  return bands;
}

/**
 * Index entries a page of band walks may test before the gathering queries are expected to
 * cost less. Measured at 300,000 images (npm run bench:library, 2 cores under load): a text's
 * walked entry cost about 0.4 us (found through images_rating, which covers the filters: 2,000
 * entries of "castle" with a model, 2.1 ms), while the gathering page with its count took 13 to
 * 60 ms ("light": 80,000 matches, 13 ms; "castle" with a model: 15,000, 46 ms): never less than
 * about 20,000 walked entries, and about one for every 5 matches of the lead. A tag's or a
 * LoRA's entry costs a lookup of its image's row, about 9 us (3,000 entries of a tag, 27 ms),
 * against 4 ms for its gathering page: it counts as tagWalkCost text entries.
 */
const minWalk = 20_000;
const walkPerGathered = 0.2;
const tagWalkCost = 10;

/**
 * The bands a walk from `start` down goes through to find `need` of `matches` matches (spread
 * over ratings and filters as all images are, `total` of them): for each band the column
 * filters keep images of, its expected matches and the part of the lead's entries its walk
 * tests (all of them when the band holds fewer matches than are still needed).
 */
function* bandsWalked(
  bands: RatingBands,
  start: number,
  total: number,
  matches: number,
  need: number,
): Generator<{ kept: number; inBand: number; part: number }> {
  let left = need;
  for (let r = start; r >= 0 && left > 0; r--) {
    const kept = bands.kept[r];
    if (kept === 0) continue;
    const inBand = (matches * kept) / total;
    yield { kept, inBand, part: inBand > 0 ? Math.min(1, left / inBand) : 1 };
    left -= inBand;
  }
}

/**
 * Whether walking the bands from `start` down is expected to cost less than gathering the
 * lead's matches: each band's walk tests about `need x all / (kept x share)` of the lead's
 * entries (at most all `leadSize` of them), and yields about `leadSize x kept x share / all`
 * matches, assuming the lead's matches are spread over ratings and filters as all images are.
 * `probes`: the sizes of a tag and a LoRA also asked for (tested through an index for each
 * image of the band the walk finds, a row lookup each), `share` their product over all images.
 * Gathering such a search looks up every image of its smallest link.
 */
export function bandWalkPays(
  bands: RatingBands,
  lead: Lead,
  start: number,
  leadSize: number,
  need: number,
  probes: number[] = [],
): boolean {
  const total = bands.all.reduce((a, b) => a + b, 0);
  if (total === 0) return true;
  const size = Math.min(leadSize, total);
  const share = probes.reduce((s, n) => s * Math.min(1, n / total), 1);
  let cost = 0;
  for (const { kept, part } of bandsWalked(bands, start, total, size * share, need)) {
    const walk = part * size;
    const probed = probes.length ? ((walk * kept) / total) * tagWalkCost : 0;
    cost += ('text' in lead ? walk : walk * tagWalkCost) + probed;
  }
  const gathering = probes.length
    ? Math.min(size, ...probes) * tagWalkCost
    : size * walkPerGathered;
  return cost <= Math.max(minWalk, gathering);
}

/**
 * Costs of a text search within a tag's or LoRA's times (image-text.ts, withinLinks), in units of
 * one text entry tested against the times' set (about 0.15 us: "cat", 50,000 entries, within a
 * 10,000-image tag's times in 7.5 ms at 1,000,000 images, npm run bench:library, 2 cores under
 * load): a link's time read into the set about 1 (a LoRA's 50,000 times, 7 ms); a key of a
 * shared millisecond whose image the band's index does not hold about 7 (a seek); one whose
 * image row is read and its tag or LoRA tested about 70 (2,513 such keys of "dragon" and a
 * LoRA: 26 ms).
 */
const timeCost = 1;
const missCost = 7;
const hitCost = 70;

/**
 * A text search with a tag or LoRA in rating order, within their times: whether to walk the
 * bands from `start` down (each band's walk reads the times again and walks the text until a
 * page of the band's matches) or to read every match at once and sort them (one pass; costs a
 * row lookup for every match). `textSize`: the text's entries (at most); `probes`: the tags' and
 * LoRAs' sizes; their matches assumed spread over ratings and filters as all images are. A word
 * with a tag (500 matches) is read at once (10 ms at 1,000,000 images, against 3 band walks of
 * 9 ms each); a word with a LoRA (2,500 matches, 250 of them 5-star) walks the top band for 40%
 * of the word (11 ms, against 40 ms at once).
 */
export function bandsOrAll(
  bands: RatingBands,
  start: number,
  textSize: number,
  need: number,
  probes: number[],
): 'bands' | 'all' {
  const total = bands.all.reduce((a, b) => a + b, 0);
  if (total === 0) return 'all';
  const size = Math.min(textSize, total);
  const times = probes.reduce((a, n) => a + n, 0) * timeCost;
  const matches = probes.reduce((m, n) => m * Math.min(1, n / total), size);
  const all = times + size + matches * hitCost;
  let walk = 0;
  for (const { inBand, part } of bandsWalked(bands, start, total, matches, need))
    walk += times + part * (size + inBand * hitCost + (matches - inBand) * missCost);
  return walk < all ? 'bands' : 'all';
}

/** Rating order: (rating, created_at, id) descending, as images_rating is walked backwards. */
function ratedOrder(a: LinkKey, b: LinkKey): number {
  return (
    b.rating - a.rating || b.created_at - a.created_at || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)
  );
}

/**
 * Every match of a text within a tag's or LoRA's times (allText), sorted into rating order:
 * the page after the cursor (or the first) and how many match in all (exact).
 */
export function pageOfAllText(
  db: Db,
  text: string,
  ask: RatedAsk,
): { keys: LinkKey[]; total: number } {
  const all = allText(db, text, ask.rest, ask.within).sort(ratedOrder);
  const after = ask.after;
  const cursor = after ? { rating: after[0], created_at: after[1], id: after[2] } : null;
  const from = cursor ? all.findIndex((k) => ratedOrder(k, cursor) > 0) : 0;
  const keys = from < 0 ? [] : all.slice(from, from + ask.limit);
  return { keys, total: all.length };
}

/** A page asked for in rating order: after a cursor's (rating, created_at, id), or the first. */
export interface RatedAsk {
  rest: Rest;
  after: [number, number, string] | null;
  /** Keys wanted (one more than the page, to tell whether another follows). */
  limit: number;
  /** A text lead's tags and LoRAs, whose times its walk is kept within (image-text.ts). */
  within: DateLink[];
}

/**
 * Up to `limit` keys in rating order: the bands from the cursor's (or the top) down, each the
 * lead's date-ordered walk with the band's rating as one more condition. Bands without an image
 * the column filters keep are skipped unwalked.
 */
export function pageInRatingOrder(
  db: Db,
  lead: Lead,
  bands: RatingBands,
  ask: RatedAsk,
): LinkKey[] {
  const keys: LinkKey[] = [];
  const start = ask.after ? ask.after[0] : topRating;
  for (let r = start; r >= 0 && keys.length < ask.limit; r--) {
    if (bands.kept[r] === 0) continue;
    const band: PageAsk = {
      // A text's walk finds each image through images_rating (rating, created_at), which
      // covers the column filters too: no lookup of the image's row for the entries that fail.
      rest: { where: [...ask.rest.where, 'i.rating = ?'], params: [...ask.rest.params, r] },
      newest: true,
      after: ask.after && r === start ? [ask.after[1], ask.after[2]] : null,
      limit: ask.limit - keys.length,
      offset: 0,
    };
    keys.push(
      ...('text' in lead
        ? pageText(db, lead.text, band, ask.within)
        : pageThroughLink(db, lead, band)),
    );
  }
  return keys;
}

/**
 * About how many images a rating-ordered search matches, from its first page: `matched` matches
 * (the page and the one past it) were found in order from the top to `last`. The walk covered
 * the images the column filters keep (`bands.kept`) of every band above `last.rating`, and of
 * its band those from `last.created_at` to the newest, about `kept x (live images from then) /
 * (all live images)` (the band's images taken as spread over time as all images are:
 * image_days counts the latter without a walk). Then
 *
 *   estimate = matched x (images kept / covered images)
 *
 * the ratio estimator of a sample (Cochran, Sampling Techniques, 3rd ed., ch. 6), as
 * estimateFromPage for date order; never below `matched`.
 */
export function estimateInRatingOrder(
  db: Db,
  bands: RatingBands,
  last: LinkKey,
  matched: number,
): number {
  const total = bands.all.reduce((a, b) => a + b, 0);
  const kept = bands.kept.reduce((a, b) => a + b, 0);
  if (total === 0) return matched;
  let covered = 0;
  for (let r = topRating; r > last.rating; r--) covered += bands.kept[r];
  covered += (bands.kept[last.rating] * liveImagesFrom(db, true, last.created_at)) / total;
  if (covered <= 0) return matched;
  return Math.max(matched, Math.round((matched * kept) / covered));
}
