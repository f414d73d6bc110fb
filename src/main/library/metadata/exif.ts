/**
 * The few EXIF fields other tools hide generation settings in, read from a TIFF structure
 * (Exif 2.32, CIPA DC-008, sections 4.5-4.6): the Exif IFD's UserComment (tag 0x9286), where
 * AUTOMATIC1111 writes its infotext in JPEG and WebP, and IFD0's ASCII ImageDescription (0x010E),
 * Make (0x010F) and Model (0x0110), where ComfyUI's WebP saver writes `workflow:` and `prompt:`
 * JSON. Untrusted input: every offset is bounds-checked, nothing throws, and a damaged structure
 * gives whatever was read before the damage.
 */

export interface ExifText {
  /** UserComment, decoded by its 8-byte character code prefix. */
  userComment?: string;
  /** IFD0 ASCII fields by tag number (0x010E, 0x010F, 0x0110), as UTF-8. */
  ifd0Text: Map<number, string>;
}

const TAG_EXIF_IFD = 0x8769;
const TAG_USER_COMMENT = 0x9286;
const IFD0_TEXT_TAGS = new Set([0x010e, 0x010f, 0x0110]);
const TYPE_ASCII = 2;
const TYPE_LONG = 4;
const TYPE_UNDEFINED = 7;
/** More entries than any real IFD holds; a bound on a hostile count. */
const MAX_ENTRIES = 1000;

const utf8 = new TextDecoder('utf-8');

/** `Exif\0\0`, the header before the TIFF structure in JPEG APP1 (and some WebP EXIF chunks). */
export const EXIF_HEADER = Uint8Array.of(0x45, 0x78, 0x69, 0x66, 0, 0);

export function startsWith(bytes: Uint8Array, prefix: Uint8Array, at = 0): boolean {
  if (bytes.length < at + prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (bytes[at + i] !== prefix[i]) return false;
  return true;
}

/**
 * UserComment's value: an 8-byte character code (Exif 2.32 table 9: `ASCII\0\0\0`, `UNICODE\0`,
 * `JIS\0\0\0\0\0` or eight zero bytes for "undefined"), then the text. piexif, which A1111 uses,
 * writes UNICODE as UTF-16 big-endian; other writers use little-endian, so a byte-order mark
 * decides, else which half of the code units is mostly zero. ASCII and undefined bodies are
 * read as UTF-8 (a superset, and what writers that ignore the prefix put there); a value without
 * a known prefix is read whole as UTF-8, as A1111 falls back to. Trailing NULs are dropped.
 */
export function decodeUserComment(value: Uint8Array): string {
  const prefix = String.fromCharCode(...value.subarray(0, 8));
  const body = value.subarray(8);
  let text: string;
  if (prefix === 'UNICODE\0') text = decodeUtf16(body);
  else if (prefix === 'JIS\0\0\0\0\0') text = new TextDecoder('shift_jis').decode(body);
  else if (prefix === 'ASCII\0\0\0' || prefix === '\0'.repeat(8)) text = utf8.decode(body);
  else text = utf8.decode(value);
  return text.replace(/\0+$/, '');
}

function decodeUtf16(body: Uint8Array): string {
  const even = body.length - (body.length % 2);
  const units = body.subarray(0, even);
  if (units[0] === 0xff && units[1] === 0xfe) return new TextDecoder('utf-16le').decode(units);
  if (units[0] === 0xfe && units[1] === 0xff)
    return new TextDecoder('utf-16be').decode(units.subarray(2));
  // Text that is mostly Latin has its zero bytes first in big-endian order, second in little.
  let zeroFirst = 0;
  let zeroSecond = 0;
  for (let i = 0; i + 1 < units.length; i += 2) {
    if (units[i] === 0) zeroFirst++;
    if (units[i + 1] === 0) zeroSecond++;
  }
  return new TextDecoder(zeroSecond > zeroFirst ? 'utf-16le' : 'utf-16be').decode(units);
}

interface Entry {
  tag: number;
  type: number;
  count: number;
  /** Offset of the value's bytes within the TIFF structure. */
  at: number;
}

/** Size in bytes of one value of each TIFF field type (TIFF 6.0 section 2). */
const TYPE_SIZES: Readonly<Record<number, number>> = {
  1: 1,
  2: 1,
  3: 2,
  4: 4,
  5: 8,
  6: 1,
  7: 1,
  8: 2,
  9: 4,
  10: 8,
  11: 4,
  12: 8,
};

/** The TIFF structure's text fields; empty for anything that is not a readable TIFF. */
export function readExifText(tiff: Uint8Array): ExifText {
  const out: ExifText = { ifd0Text: new Map() };
  if (tiff.length < 8) return out;
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const order = view.getUint16(0);
  if (order !== 0x4949 && order !== 0x4d4d) return out;
  const little = order === 0x4949;
  if (view.getUint16(2, little) !== 42) return out;
  const u16 = (at: number): number => view.getUint16(at, little);
  const u32 = (at: number): number => view.getUint32(at, little);

  const entries = (ifd: number): Entry[] => {
    if (ifd < 8 || ifd + 2 > tiff.length) return [];
    const count = Math.min(u16(ifd), MAX_ENTRIES);
    const list: Entry[] = [];
    for (let i = 0; i < count; i++) {
      const e = ifd + 2 + i * 12;
      if (e + 12 > tiff.length) break;
      const type = u16(e + 2);
      const n = u32(e + 4);
      const size = (TYPE_SIZES[type] ?? 0) * n;
      const at = size <= 4 ? e + 8 : u32(e + 8);
      if (size === 0 || at + size > tiff.length) continue;
      list.push({ tag: u16(e), type, count: n, at });
    }
    return list;
  };
  const bytesOf = (e: Entry): Uint8Array => tiff.subarray(e.at, e.at + e.count);

  let exifIfd: number | undefined;
  for (const e of entries(u32(4))) {
    if (e.tag === TAG_EXIF_IFD && e.type === TYPE_LONG) exifIfd = u32(e.at);
    else if (IFD0_TEXT_TAGS.has(e.tag) && e.type === TYPE_ASCII)
      out.ifd0Text.set(e.tag, utf8.decode(bytesOf(e)).replace(/\0+$/, ''));
  }
  if (exifIfd !== undefined) {
    for (const e of entries(exifIfd)) {
      if (e.tag === TAG_USER_COMMENT && (e.type === TYPE_UNDEFINED || e.type === TYPE_ASCII)) {
        out.userComment = decodeUserComment(bytesOf(e));
        break;
      }
    }
  }
  return out;
}
