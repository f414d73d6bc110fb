/**
 * A user's search text as an FTS5 query, and its prefix terms spelled out as whole words.
 *
 * Every term of a search is a prefix ("cat" finds "cats", "light" finds "lighthouse"). FTS5
 * answers a prefix term without a prefix index by reading the doclists of every word that starts
 * with it and merging them into one list in memory before it hands out the first match
 * (fts5SetupPrefixIter in SQLite's fts5_index.c), so `ORDER BY rowid DESC LIMIT 101` cannot stop
 * after a page: 30 to 85 ms for "light" at 1,000,000 images, and a text search runs its query
 * more than once (count, page edge, page). A whole word's doclist is walked lazily from either
 * end instead. So each plain term is replaced by the words of the index that start with it,
 * read from `images_fts_terms` (an fts5vocab table over images_fts, migration 14):
 * `"light"*` becomes `("light" OR "lighthouse" OR "lighting")`, which matches the same rows
 * (sqlite.org/fts5.html, 3.5 "FTS5 Prefix Queries" and 3.6 boolean operators; 7 "The fts5vocab
 * Virtual Table Module").
 */
import type { Db } from './db';

/** Most terms of a search used (the rest are ignored). */
const maxTerms = 16;

/**
 * Words a prefix may stand for before it is left a prefix: an OR of more words opens one doclist
 * per word, and a short prefix of a big vocabulary ("a") is cheaper merged once.
 */
export const maxWordsPerPrefix = 64;

/** A search's terms: whitespace-separated, FTS5 syntax and punctuation dropped, at most 16. */
function searchTerms(text: string): string[] {
  return text
    .normalize('NFKC')
    .split(/\s+/u)
    .map((t) => t.replace(/[^\p{L}\p{N}\p{M}_'-]+/gu, ' ').trim())
    .flatMap((t) => t.split(' '))
    .filter((t) => /[\p{L}\p{N}]/u.test(t))
    .slice(0, maxTerms);
}

const quoted = (word: string) => `"${word.replaceAll('"', '""')}"`;

/**
 * A user's search text as a safe FTS5 query: each whitespace-separated term becomes a quoted
 * string with a prefix `*` (so "cat" finds "cats"), all terms must match. FTS5 operators
 * (AND, OR, NOT, NEAR, column filters, `*`, `^`, parentheses) are never interpreted. Null when
 * no term holds a letter or digit.
 */
export function ftsQuery(text: string): string | null {
  const terms = searchTerms(text);
  return terms.length === 0 ? null : terms.map((t) => `${quoted(t)}*`).join(' ');
}

/**
 * The query of ftsQuery with its prefixes spelled out as the words of `images_fts` that start
 * with them, matching the same images. Only terms of ASCII letters and digits are spelled out:
 * the tokenizer (unicode61, remove_diacritics 2) makes exactly their lower case of them, so
 * the vocabulary's range of that lower case is the prefix's words; any other term (accents,
 * other scripts, `'` or `-` that split it into a phrase) stays a prefix. A prefix no word
 * starts with stays a prefix too (it matches nothing, and costs nothing), and so does one with
 * more than maxWordsPerPrefix words. Null when ftsQuery is.
 */
export function textMatch(db: Db, text: string): string | null {
  return textSearch(db, text)?.match ?? null;
}

/** A search text as textMatch spells it, and at most how many images it can match. */
export interface TextSearch {
  match: string;
  /**
   * At most this many rows of `images_fts` match (live images and those in the trash): the
   * fewest, over the terms, of the documents of a term's words added up; null when a term
   * stays a prefix (not known without reading its lists).
   */
  atMost: number | null;
}

/** textMatch's query with an upper bound of its matches, from the same words. */
export function textSearch(db: Db, text: string): TextSearch | null {
  const terms = searchTerms(text);
  if (terms.length === 0) return null;
  let atMost: number | null = Infinity;
  const parts = terms.map((term) => {
    const prefix = term.toLowerCase();
    const found = /^[a-z0-9]+$/.test(prefix) ? wordsOf(db, prefix) : [];
    if (found.length === 0 || found.length > maxWordsPerPrefix) {
      atMost = null;
      return `${quoted(term)}*`;
    }
    const rows = found.reduce((n, w) => n + w.doc, 0);
    if (atMost !== null) atMost = Math.min(atMost, rows);
    return found.length === 1
      ? quoted(found[0].term)
      : `(${found.map((w) => quoted(w.term)).join(' OR ')})`;
  });
  // Explicit AND: FTS5 joins a parenthesised group to its neighbour only with AND.
  return { match: parts.join(' AND '), atMost };
}

/** A word of images_fts and the rows (documents) it is in. */
interface Word {
  term: string;
  doc: number;
}

/** Prefixes' words per connection, valid while nothing was written (see wordsOf). */
const known = new WeakMap<Db, { stamp: string; words: Map<string, Word[]> }>();
const maxKnownPrefixes = 256;

/**
 * The words of images_fts that start with `prefix` (lower-case ASCII), at most one more than
 * maxWordsPerPrefix, with the rows each is in. fts5vocab counts each word's documents as it
 * lists it, so a word in nearly every prompt costs its whole list ("a": 14 ms at 100,000
 * images); the words are kept until the database changes, so the next pages of a search and
 * the searches typed after it do not read them again. A change is a commit by another connection (`PRAGMA data_version`) or any
 * write by this one (`total_changes()`): new words come only with new images.
 */
function wordsOf(db: Db, prefix: string): Word[] {
  const { v } = db.prepare('SELECT total_changes() AS v').get() as { v: number };
  const stamp = `${db.pragma('data_version', { simple: true }) as number}:${v}`;
  let cache = known.get(db);
  if (!cache || cache.stamp !== stamp || cache.words.size >= maxKnownPrefixes) {
    cache = { stamp, words: new Map() };
    known.set(db, cache);
  }
  let words = cache.words.get(prefix);
  if (!words) {
    // The first string after every word that starts with the prefix (in byte order).
    const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
    words = db
      .prepare(
        `SELECT term, doc FROM images_fts_terms WHERE term >= ? AND term < ? LIMIT ${maxWordsPerPrefix + 1}`,
      )
      .all(prefix, end) as Word[];
    cache.words.set(prefix, words);
  }
  return words;
}

/** Migration 14: the words of images_fts, one row each (fts5vocab keeps no data of its own). */
export function addTextTerms(db: Db): void {
  db.exec('CREATE VIRTUAL TABLE images_fts_terms USING fts5vocab(images_fts, row);');
}
