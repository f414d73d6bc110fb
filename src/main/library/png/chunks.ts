/**
 * PNG chunk level: walk and validate a PNG's chunk stream, read its text chunks (tEXt, zTXt,
 * iTXt) and insert new ones right after IHDR.
 *
 * Layouts follow the PNG specification (W3C PNG, 3rd edition, sections 5.3 and 11.3.3):
 *   chunk = length (u32 BE, <= 2^31-1) | type (4 ASCII letters) | data | CRC-32 over type+data
 *   tEXt  = keyword | 0 | text (Latin-1)
 *   zTXt  = keyword | 0 | compression method (0) | zlib stream of Latin-1 text
 *   iTXt  = keyword | 0 | compression flag | compression method | language tag | 0 |
 *           translated keyword (UTF-8) | 0 | text (UTF-8, zlib stream when the flag is 1)
 * Keywords are 1-79 printable Latin-1 characters (32-126, 161-255) with no leading, trailing
 * or consecutive spaces.
 */
import zlib from 'node:zlib';

export const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

/** A PNG that cannot be read: wrong signature, truncated, bad CRC, malformed chunk. */
export class PngFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PngFormatError';
  }
}

export type TextChunkKind = 'tEXt' | 'iTXt' | 'zTXt';

export interface PngTextChunk {
  keyword: string;
  text: string;
  kind: TextChunkKind;
}

export interface PngTextEntry {
  keyword: string;
  text: string;
}

export interface ReadTextOptions {
  /** Largest decompressed size of one zTXt/compressed iTXt text, in bytes. Default 8 MiB. */
  maxInflatedBytes?: number;
  /** Largest total decoded text over all text chunks, in bytes. Default 32 MiB. */
  maxTotalTextBytes?: number;
  /**
   * 'throw' (default): a malformed or oversized text chunk is an error. 'skip': such a chunk is
   * left out and the others are still returned. Structural damage (signature, CRC, truncation)
   * is always an error.
   */
  onBadText?: 'throw' | 'skip';
}

const DEFAULT_MAX_INFLATED = 8 * 1024 * 1024;
const DEFAULT_MAX_TOTAL_TEXT = 32 * 1024 * 1024;
const MAX_CHUNK_LENGTH = 0x7fffffff;

interface RawChunk {
  type: string;
  /** Offset of the chunk's length field in the file. */
  start: number;
  /** Offset just past the chunk's CRC. */
  end: number;
  dataStart: number;
  dataEnd: number;
}

function u32(png: Uint8Array, at: number): number {
  return ((png[at] << 24) | (png[at + 1] << 16) | (png[at + 2] << 8) | png[at + 3]) >>> 0;
}

function isLetter(b: number): boolean {
  return (b >= 65 && b <= 90) || (b >= 97 && b <= 122);
}

function crcOf(png: Uint8Array, from: number, to: number): number {
  return zlib.crc32(png.subarray(from, to)) >>> 0;
}

/** Every chunk from IHDR to IEND, each checked for length, type and CRC. */
function walkChunks(png: Uint8Array): RawChunk[] {
  if (!(png instanceof Uint8Array)) throw new PngFormatError('The PNG data is not a byte array.');
  if (png.length < PNG_SIGNATURE.length || PNG_SIGNATURE.some((b, i) => png[i] !== b))
    throw new PngFormatError('The data is not a PNG file: its 8-byte signature is wrong.');
  const chunks: RawChunk[] = [];
  let at = PNG_SIGNATURE.length;
  for (;;) {
    if (at + 12 > png.length)
      throw new PngFormatError(
        `The PNG file is truncated: it ends at byte ${png.length} before its IEND chunk.`,
      );
    const length = u32(png, at);
    const typeBytes = png.subarray(at + 4, at + 8);
    if (!typeBytes.every(isLetter))
      throw new PngFormatError(`The PNG file has a malformed chunk type at byte ${at + 4}.`);
    const type = String.fromCharCode(...typeBytes);
    if (length > MAX_CHUNK_LENGTH)
      throw new PngFormatError(
        `The PNG chunk ${type} at byte ${at} declares an invalid length of ${length}.`,
      );
    const dataStart = at + 8;
    const dataEnd = dataStart + length;
    if (dataEnd + 4 > png.length)
      throw new PngFormatError(
        `The PNG file is truncated: chunk ${type} at byte ${at} needs ${length + 12} bytes but only ${png.length - at} remain.`,
      );
    const stored = u32(png, dataEnd);
    if (crcOf(png, at + 4, dataEnd) !== stored)
      throw new PngFormatError(
        `The PNG chunk ${type} at byte ${at} is corrupt: its CRC does not match.`,
      );
    if (chunks.length === 0 && (type !== 'IHDR' || length !== 13))
      throw new PngFormatError('The PNG file is malformed: its first chunk is not a 13-byte IHDR.');
    chunks.push({ type, start: at, end: dataEnd + 4, dataStart, dataEnd });
    at = dataEnd + 4;
    if (type === 'IEND') return chunks;
  }
}

function latin1(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: false });

function inflateCapped(data: Uint8Array, cap: number, what: string): Uint8Array {
  try {
    return zlib.inflateSync(data, { maxOutputLength: cap });
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ERR_BUFFER_TOO_LARGE' || e instanceof RangeError)
      throw new PngFormatError(
        `The PNG ${what} decompresses to more than ${cap} bytes, which is over the limit.`,
      );
    throw new PngFormatError(`The PNG ${what} holds a corrupt zlib stream.`);
  }
}

function indexOfZero(bytes: Uint8Array, from: number): number {
  return bytes.indexOf(0, from);
}

function decodeTextChunk(
  type: TextChunkKind,
  data: Uint8Array,
  at: number,
  cap: number,
): { keyword: string; text: string } {
  const sep = indexOfZero(data, 0);
  if (sep < 1 || sep > 79)
    throw new PngFormatError(`The PNG ${type} chunk at byte ${at} has no valid keyword.`);
  const keyword = latin1(data.subarray(0, sep));
  const what = `${type} chunk "${keyword}" at byte ${at}`;
  if (type === 'tEXt') return { keyword, text: latin1(data.subarray(sep + 1)) };
  if (type === 'zTXt') {
    if (sep + 2 > data.length || data[sep + 1] !== 0)
      throw new PngFormatError(`The PNG ${what} uses an unknown compression method.`);
    return { keyword, text: latin1(inflateCapped(data.subarray(sep + 2), cap, what)) };
  }
  // iTXt
  if (sep + 3 > data.length) throw new PngFormatError(`The PNG ${what} is too short.`);
  const compressed = data[sep + 1];
  const method = data[sep + 2];
  if (compressed > 1 || (compressed === 1 && method !== 0))
    throw new PngFormatError(`The PNG ${what} uses an unknown compression method.`);
  const langEnd = indexOfZero(data, sep + 3);
  const transEnd = langEnd < 0 ? -1 : indexOfZero(data, langEnd + 1);
  if (transEnd < 0)
    throw new PngFormatError(`The PNG ${what} is malformed: a separator is missing.`);
  const body = data.subarray(transEnd + 1);
  const bytes = compressed === 1 ? inflateCapped(body, cap, what) : body;
  return { keyword, text: utf8Decoder.decode(bytes) };
}

/**
 * The text chunks of a PNG, in file order. The whole chunk stream is validated (signature,
 * lengths, CRCs, IHDR first, IEND present); any damage throws a PngFormatError.
 */
export function readPngTextChunks(png: Uint8Array, options: ReadTextOptions = {}): PngTextChunk[] {
  const cap = options.maxInflatedBytes ?? DEFAULT_MAX_INFLATED;
  const totalCap = options.maxTotalTextBytes ?? DEFAULT_MAX_TOTAL_TEXT;
  const skip = options.onBadText === 'skip';
  const out: PngTextChunk[] = [];
  let total = 0;
  for (const c of walkChunks(png)) {
    if (c.type !== 'tEXt' && c.type !== 'zTXt' && c.type !== 'iTXt') continue;
    try {
      const { keyword, text } = decodeTextChunk(
        c.type,
        png.subarray(c.dataStart, c.dataEnd),
        c.start,
        cap,
      );
      total += text.length;
      if (total > totalCap)
        throw new PngFormatError(
          `The PNG text chunks hold more than ${totalCap} characters, which is over the limit.`,
        );
      out.push({ keyword, text, kind: c.type });
    } catch (e) {
      if (!skip) throw e;
    }
  }
  return out;
}

/** Why a keyword is not a valid PNG text keyword, or null when it is. */
export function pngKeywordProblem(keyword: string): string | null {
  if (typeof keyword !== 'string' || keyword.length < 1 || keyword.length > 79)
    return 'it must be 1 to 79 characters long';
  for (let i = 0; i < keyword.length; i++) {
    const c = keyword.charCodeAt(i);
    if (!((c >= 32 && c <= 126) || (c >= 161 && c <= 255)))
      return 'it may hold only printable Latin-1 characters and spaces';
  }
  if (keyword.startsWith(' ') || keyword.endsWith(' '))
    return 'it may not start or end with a space';
  if (keyword.includes('  ')) return 'it may not hold consecutive spaces';
  return null;
}

/** True when every character of the string is in Latin-1 (U+0000..U+00FF). */
export function isLatin1(text: string): boolean {
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) > 0xff) return false;
  return true;
}

function makeChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(data.length + 12);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crcOf(out, 4, 8 + data.length));
  return out;
}

function textChunkFor(entry: PngTextEntry): Uint8Array {
  const keyword = Buffer.from(entry.keyword, 'latin1');
  if (isLatin1(entry.text)) {
    const text = Buffer.from(entry.text, 'latin1');
    const data = new Uint8Array(keyword.length + 1 + text.length);
    data.set(keyword, 0);
    data.set(text, keyword.length + 1);
    return makeChunk('tEXt', data);
  }
  // iTXt, uncompressed, no language tag, no translated keyword.
  const text = Buffer.from(entry.text, 'utf8');
  const data = new Uint8Array(keyword.length + 5 + text.length);
  data.set(keyword, 0);
  // keyword\0, flag 0, method 0, language "" \0, translated "" \0
  data.set(text, keyword.length + 5);
  return makeChunk('iTXt', data);
}

/**
 * A copy of the PNG with the entries inserted as text chunks right after IHDR, in the order
 * given. Existing text chunks with one of those keywords are removed. A text that is Latin-1
 * goes into tEXt, any other into an uncompressed UTF-8 iTXt.
 */
export function addPngTextChunks(png: Uint8Array, entries: PngTextEntry[]): Uint8Array {
  const keywords = new Set<string>();
  for (const e of entries) {
    const problem = pngKeywordProblem(e.keyword);
    if (problem)
      throw new Error(`The PNG text keyword ${JSON.stringify(e.keyword)} is invalid: ${problem}.`);
    if (keywords.has(e.keyword))
      throw new Error(`The PNG text keyword "${e.keyword}" is given more than once.`);
    if (typeof e.text !== 'string')
      throw new Error(`The PNG text for keyword "${e.keyword}" is not a string.`);
    if (e.text.includes('\0'))
      throw new Error(`The PNG text for keyword "${e.keyword}" holds a NUL character.`);
    keywords.add(e.keyword);
  }
  const chunks = walkChunks(png);
  const parts: Uint8Array[] = [png.subarray(0, chunks[0].end)];
  for (const e of entries) parts.push(textChunkFor(e));
  for (const c of chunks.slice(1)) {
    if (c.type === 'tEXt' || c.type === 'zTXt' || c.type === 'iTXt') {
      const data = png.subarray(c.dataStart, c.dataEnd);
      const sep = data.indexOf(0);
      if (sep > 0 && keywords.has(latin1(data.subarray(0, sep)))) continue;
    }
    parts.push(png.subarray(c.start, c.end));
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
