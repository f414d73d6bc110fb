// ftfy's `fix_text` with its default configuration, the first step of OpenAI CLIP's text
// cleaning (simple_tokenizer.py `basic_clean`). Written from ftfy 6.3's documentation
// (ftfy.readthedocs.io: "Fixing problems and getting explanations", "Configuring ftfy",
// "Detecting mojibake") and checked against its behaviour: tests/fixtures/reference/
// clip-text-ids.json records ftfy 6.3.1's output for text of every kind handled here.
//
// Per line, until nothing changes: unescape HTML entities (skipped once a `<` shows the text is
// HTML), undo mojibake (re-encode in a single-byte encoding and decode as UTF-8 while a
// heuristic still sees mojibake), then C1 controls as Windows-1252, Latin ligatures, full/half
// width forms, curly quotes, line breaks, surrogates, terminal escapes, invisible control
// characters, and NFC.

import {
  MOJIBAKE_CLASSES as M,
  SINGLE_BYTE_ENCODINGS,
  UTF8_CLUE_CLASSES as U,
} from './ftfy-tables';
import { namedReference, unescapeHtml } from './html-unescape';

/** ftfy's `max_decode_length`: longer lines are fixed in pieces of this many code units. */
const MAX_SEGMENT = 1_000_000;

// --- Mojibake detection (ftfy "Detecting mojibake": badness.py) -------------------------------
//
// Text is "bad" when it holds a sequence that is far likelier to be UTF-8 read in a single-byte
// encoding than real text: a C1 control, or one of the character-category sequences below.

/** Python `re`'s `\s` (str.isspace), which differs from JavaScript's at U+001C..U+001F, U+0085, U+FEFF. */
const PY_SPACE =
  '[\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]';

const c = (...names: Array<keyof typeof M>): string => names.map((n) => M[n]).join('');
const accented = c('lowerAccented', 'upperAccented');
const symbols = c('box', 'startPunctuation', 'endPunctuation', 'currency', 'numeric', 'law');
const arabicTail = `${c('common', 'currency', 'bad', 'numeric', 'startPunctuation')}\u0178\u0160\u00ae\u00b0\u00b5\u00bb`;
const MOJIBAKE_SEQUENCES: readonly string[] = [
  `[${M.c1}]`,
  `[${c('bad')}${accented}${symbols}][${M.bad}]`,
  `[a-zA-Z][${c('lowerCommon', 'upperCommon')}][${M.bad}]`,
  `[${M.bad}][${accented}${symbols}]`,
  `[${c('lowerAccented', 'lowerCommon', 'box', 'endPunctuation', 'currency', 'numeric')}][${M.upperAccented}]`,
  `[${c('box', 'endPunctuation', 'currency', 'numeric')}][${M.lowerAccented}]`,
  `[${c('lowerAccented', 'box', 'endPunctuation')}][${M.currency}]`,
  `${PY_SPACE}[${M.upperAccented}][${M.currency}]`,
  `[${c('upperAccented', 'box')}][${c('numeric', 'law')}]`,
  `[${accented}${c('box', 'currency', 'endPunctuation')}][${M.startPunctuation}][${M.numeric}]`,
  `[${accented}${c('currency', 'numeric', 'box', 'law')}][${M.endPunctuation}][${M.startPunctuation}]`,
  `[${c('currency', 'numeric', 'box')}][${M.startPunctuation}]`,
  `[a-z][${M.upperAccented}][${c('startPunctuation', 'currency')}]`,
  `[${M.box}][${M.kaomoji}]`,
  `[${accented}${c('currency', 'numeric', 'startPunctuation', 'endPunctuation', 'law')}][${M.box}]`,
  `[${M.box}][${M.endPunctuation}]`,
  `[${accented}][${c('startPunctuation', 'endPunctuation')}][\\p{L}\\p{N}_]`,
  // the ligature œ not followed by an unaccented Latin letter
  '[\u0152\u0153][^A-Za-z]',
  // a degree sign after a capital letter
  `[${M.upperAccented}]\u00b0`,
  // common two-character Windows-1252 mojibake
  `[\u00c2\u00c3\u00ce\u00d0][\u20ac\u0153\u0160\u0161\u00a2\u00a3\u0178\u017e\u00a0\u00ad\u00ae\u00a9\u00b0\u00b7\u00bb${c('startPunctuation', 'endPunctuation')}\u2013\u2014\u00b4]`,
  '\u00d7[\u00b2\u00b3]',
  // Windows-1252 mojibake of Arabic: four characters, because the "common" ones are common
  `[\u00d8\u00d9][${arabicTail}][\u00d8\u00d9][${arabicTail}]`,
  // Windows-1252 mojibake starting three-byte South Asian letters
  '\u00e0[\u00b2\u00b5\u00b9\u00bc\u00bd\u00be]',
  // MacRoman mojibake
  '\u221a[\u00b1\u2202\u2020\u2260\u00ae\u2122\u00b4\u2264\u2265\u00a5\u00b5\u00f8]',
  '\u2248[\u00b0\u00a2]',
  '\u201a\u00c4[\u00ec\u00ee\u00ef\u00f2\u00f4\u00fa\u00f9\u00fb\u2020\u00b0\u00a2\u03c0]',
  '\u201a[\u00e2\u00f3][\u00e0\u00e4\u00b0\u00ea]',
  // Windows-1251 mojibake of the U+2000 block, of Latin-1 and of Cyrillic
  '\u0432\u0402',
  `[\u0412\u0413\u0420\u0421][${c('c1', 'bad', 'startPunctuation', 'endPunctuation', 'currency')}\u00b0\u00b5][\u0412\u0413\u0420\u0421]`,
  '\u0413\u045e\u0412\u0402\u0412.[A-Za-z ]',
  // Windows-1252 encodings of à, á and the no-break space itself
  '\u00c3[\u00a0\u00a1]',
  `[a-z]${PY_SPACE}?[\u00c3\u00c2] `,
  '^[\u00c3\u00c2] ',
  // Â standing for nothing before a common character
  `[a-z.,?!${M.endPunctuation}]\u00c2[ ${c('startPunctuation', 'endPunctuation')}]`,
  // Windows-1253 mojibake of the U+2000 block, of Latin-1 and of Greek
  '\u03b2\u20ac[\u2122\u00a0\u0386\u00ad\u00ae\u00b0]',
  `[\u0392\u0393\u039e\u039f][${c('c1', 'bad', 'startPunctuation', 'endPunctuation', 'currency')}\u00b0][\u0392\u0393\u039e\u039f]`,
  // Windows-1257 mojibake of the U+2000 block
  '\u0101\u20ac',
];

const MOJIBAKE = new RegExp(MOJIBAKE_SEQUENCES.join('|'), 'u');

/** ftfy's `is_bad`: does the text hold a sequence that looks like mojibake? */
export function looksLikeMojibake(text: string): boolean {
  return MOJIBAKE.test(text);
}

// --- Single-byte encodings and UTF-8 ---------------------------------------------------------
//
// Bytes are handled as "binary strings" (one char per byte, 0..255) so that the byte patterns
// below are ordinary regexes.

interface SingleByteEncoding {
  name: string;
  /** char -> byte for every character the encoding can write. */
  encoder: Map<string, number>;
}

const ENCODINGS: readonly SingleByteEncoding[] = SINGLE_BYTE_ENCODINGS.map(([name, high]) => {
  const encoder = new Map<string, number>();
  for (let b = 0; b < 0x80; b++) if (b !== 0x1a) encoder.set(String.fromCharCode(b), b);
  for (let i = 0; i < 0x80; i++) encoder.set(high[i]!, 0x80 + i);
  encoder.set(high[0x80]!, 0x1a);
  return { name, encoder };
});
const WINDOWS_1252_HIGH = SINGLE_BYTE_ENCODINGS.find(([n]) => n === 'sloppy-windows-1252')![1];

/** The text written in `encoding` as a binary string, or undefined when it cannot be. */
function encodeSingleByte(text: string, encoding: SingleByteEncoding): string | undefined {
  let out = '';
  for (const ch of text) {
    const byte = encoding.encoder.get(ch);
    if (byte === undefined) return undefined;
    out += String.fromCharCode(byte);
  }
  return out;
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

function binaryToBytes(binary: string): Uint8Array {
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Strict UTF-8 (Python's `utf-8` codec); undefined on any malformed byte. */
function decodeUtf8(binary: string): string | undefined {
  try {
    return STRICT_UTF8.decode(binaryToBytes(binary));
  } catch {
    return undefined;
  }
}

// ftfy's "utf-8-variants" codec: UTF-8 plus CESU-8 (astral characters written as two encoded
// surrogates, six bytes) and Java's two-byte null (C0 80).
const UTF8_VARIANT_SEQUENCE = /\xc0\x80|\xed[\xa0-\xaf][\x80-\xbf]\xed[\xb0-\xbf][\x80-\xbf]/g;

function decodeUtf8Variants(binary: string): string | undefined {
  let out = '';
  let last = 0;
  for (const m of binary.matchAll(UTF8_VARIANT_SEQUENCE)) {
    const before = decodeUtf8(binary.slice(last, m.index));
    if (before === undefined) return undefined;
    const s = m[0];
    const cp =
      s.length === 2
        ? 0
        : 0x10000 +
          ((s.charCodeAt(1) & 0x0f) << 16) +
          ((s.charCodeAt(2) & 0x3f) << 10) +
          ((s.charCodeAt(4) & 0x0f) << 6) +
          (s.charCodeAt(5) & 0x3f);
    out += before + String.fromCodePoint(cp);
    last = m.index + s.length;
  }
  const rest = decodeUtf8(binary.slice(last));
  return rest === undefined ? undefined : out + rest;
}

// ftfy `restore_byte_a0`: a no-break space (byte A0) that became a plain space inside a UTF-8
// sequence. "Ã " is "à " unless a Portuguese word follows; other spaces are restored only where
// they sit in a UTF-8 lead/continuation position (chardata.py ALTERED_UTF8_RE).
const A_GRAVE_WORD = /\xc3 (?! |quele|quela|quilo|s )/g;
const ALTERED_UTF8 =
  /[\xc2\xc3\xc5\xce\xd0\xd9] |[\xe2\xe3] [\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf] |\xf0 [\x80-\xbf][\x80-\xbf]|\xf0[\x80-\xbf] [\x80-\xbf]|\xf0[\x80-\xbf][\x80-\xbf] /g;

const HAS_ALTERED_UTF8 = new RegExp(ALTERED_UTF8.source);

function restoreByteA0(binary: string): string {
  return binary
    .replace(A_GRAVE_WORD, '\xc3\xa0 ')
    .replace(ALTERED_UTF8, (m) => m.replaceAll(' ', '\xa0'));
}

// ftfy `replace_lossy_sequences`: UTF-8 sequences one of whose bytes was lost to `?` or to the
// 0x1A that stands for U+FFFD in the sloppy code pages become one U+FFFD (chardata.py
// LOSSY_UTF8_RE).
const LOSSY_UTF8 = new RegExp(
  [
    '[\\xc2-\\xdf][\\x1a]',
    '[\\xc2-\\xc3][?]',
    '\\xed[\\xa0-\\xaf][\\x1a?]\\xed[\\xb0-\\xbf][\\x1a?\\x80-\\xbf]',
    '\\xed[\\xa0-\\xaf][\\x1a?\\x80-\\xbf]\\xed[\\xb0-\\xbf][\\x1a?]',
    '[\\xe0-\\xef][\\x1a?][\\x1a\\x80-\\xbf]',
    '[\\xe0-\\xef][\\x1a\\x80-\\xbf][\\x1a?]',
    '[\\xf0-\\xf4][\\x1a?][\\x1a\\x80-\\xbf][\\x1a\\x80-\\xbf]',
    '[\\xf0-\\xf4][\\x1a\\x80-\\xbf][\\x1a?][\\x1a\\x80-\\xbf]',
    '[\\xf0-\\xf4][\\x1a\\x80-\\xbf][\\x1a\\x80-\\xbf][\\x1a?]',
    '\\x1a',
  ].join('|'),
  'g',
);
const REPLACEMENT_UTF8 = '\xef\xbf\xbd';

// ftfy `decode_inconsistent_utf8`: runs that look like UTF-8 read as single bytes, fixed on
// their own when the whole text has no one consistent fix (chardata.py UTF8_DETECTOR_RE). The
// look-behind keeps it from fixing a few characters in the middle of a larger garble.
const UTF8_RUN = new RegExp(
  `(?<![${U.utf8ContinuationStrict}])(?:[${U.utf8FirstOf2}][${U.utf8Continuation}]|[${U.utf8FirstOf3}][${U.utf8Continuation}]{2}|[${U.utf8FirstOf4}][${U.utf8Continuation}]{3})+`,
  'gu',
);

const HAS_UTF8_RUN = new RegExp(UTF8_RUN.source, 'u');
const C1_CONTROL = /[\x80-\x9f]/g;

/** ftfy `fix_c1_controls`: C1 controls are Windows-1252 characters read as Latin-1. */
function fixC1Controls(text: string): string {
  return text.replace(C1_CONTROL, (ch) => WINDOWS_1252_HIGH[ch.charCodeAt(0) - 0x80]!);
}

/** One step of ftfy's `fix_encoding`; returns the text unchanged when it has nothing to fix. */
function fixEncodingStep(text: string): string {
  if (text.length === 0 || /^\p{ASCII}*$/u.test(text) || !looksLikeMojibake(text)) return text;
  const possible = new Set<string>();
  for (const encoding of ENCODINGS) {
    let binary = encodeSingleByte(text, encoding);
    if (binary === undefined) continue;
    possible.add(encoding.name);
    if (encoding.name !== 'macroman' && HAS_ALTERED_UTF8.test(binary))
      binary = restoreByteA0(binary);
    if (encoding.name.startsWith('sloppy')) binary = binary.replace(LOSSY_UTF8, REPLACEMENT_UTF8);
    const decoded =
      binary.includes('\xed') || binary.includes('\xc0')
        ? decodeUtf8Variants(binary)
        : decodeUtf8(binary);
    if (decoded !== undefined) return decoded;
  }
  if (HAS_UTF8_RUN.test(text)) {
    const fixed = text.replace(UTF8_RUN, (run) =>
      run.length < text.length && looksLikeMojibake(run) ? fixEncoding(run) : run,
    );
    if (fixed !== text) return fixed;
  }
  // Latin-1 text that is not Windows-1252 text holds C1 controls: read them as Windows-1252.
  if (possible.has('latin-1')) {
    if (possible.has('sloppy-windows-1252')) return text;
    const binary = encodeSingleByte(text, ENCODINGS[0]!)!;
    let fixed = '';
    for (let i = 0; i < binary.length; i++) {
      const b = binary.charCodeAt(i);
      // Strict Windows-1252 leaves five bytes undefined; Python then raises and ftfy moves on.
      if (b === 0x81 || b === 0x8d || b === 0x8f || b === 0x90 || b === 0x9d) {
        fixed = text;
        break;
      }
      fixed += b >= 0x80 && b < 0xa0 ? WINDOWS_1252_HIGH[b - 0x80] : binary[i];
    }
    if (fixed !== text) return fixed;
  }
  if (/[\x80-\x9f]/.test(text)) {
    return fixC1Controls(text);
  }
  return text;
}

/** ftfy's `fix_encoding`: undoes mojibake, layer after layer, while the heuristic still sees some. */
export function fixEncoding(text: string): string {
  for (;;) {
    const next = fixEncodingStep(text);
    if (next === text) return text;
    text = next;
  }
}

// --- Character-level fixes (ftfy fixes.py, chardata.py) --------------------------------------

/**
 * ftfy's `unescape_html`: only entities with a semicolon (`&#?[0-9A-Za-z]{1,24};`); named ones
 * from the HTML5 table plus all-capital spellings of lower-case names (`&EACUTE;` -> É) that
 * HTML does not define; numeric ones unless they would produce a semicolon.
 */
function ftfyUnescapeHtml(text: string): string {
  return text.replace(/&#?[0-9A-Za-z]{1,24};/g, (ref) => {
    if (ref.startsWith('&#')) {
      const resolved = unescapeHtml(ref);
      return resolved.includes(';') ? ref : resolved;
    }
    const named = namedReference(ref);
    if (named !== undefined) return named;
    const name = ref.slice(1, -1);
    const lower = name.toLowerCase();
    if (name === name.toUpperCase() && name !== lower && unescapeHtml(ref) === ref) {
      const lowerValue = namedReference(`&${lower};`);
      if (lowerValue !== undefined) return lowerValue.toUpperCase();
    }
    return ref;
  });
}

// ftfy `fix_latin_ligatures` (chardata.py LIGATURES): Latin typographic ligatures and the
// Dutch, Afrikaans and Serbo-Croatian digraph characters.
const LIGATURES: Readonly<Record<string, string>> = {
  '\u0132': 'IJ',
  '\u0133': 'ij',
  '\u0149': '\u02bcn',
  '\u01f1': 'DZ',
  '\u01f2': 'Dz',
  '\u01f3': 'dz',
  '\u01c4': 'D\u017d',
  '\u01c5': 'D\u017e',
  '\u01c6': 'd\u017e',
  '\u01c7': 'LJ',
  '\u01c8': 'Lj',
  '\u01c9': 'lj',
  '\u01ca': 'NJ',
  '\u01cb': 'Nj',
  '\u01cc': 'nj',
  '\ufb00': 'ff',
  '\ufb01': 'fi',
  '\ufb02': 'fl',
  '\ufb03': 'ffi',
  '\ufb04': 'ffl',
  '\ufb05': '\u017ft',
  '\ufb06': 'st',
};
const LIGATURE = new RegExp(`[${Object.keys(LIGATURES).join('')}]`, 'g');

// ftfy `fix_character_width`: the ideographic space and the Halfwidth and Fullwidth Forms block
// (U+FF01..U+FFEF) become their NFKC forms.
const WIDTH = /[\u3000\uff01-\uffef]/g;
function fixCharacterWidth(text: string): string {
  return text.replace(WIDTH, (ch) => (ch === '\u3000' ? ' ' : ch.normalize('NFKC')));
}

// ftfy `remove_terminal_escapes` (ANSI CSI sequences) and `remove_control_chars` (C0 controls
// other than tab, line feed, form feed and carriage return; DEL; the deprecated format
// characters U+206A..U+206F; the byte-order mark; interlinear annotation controls).
// Matching control characters is the point of these two.
// eslint-disable-next-line no-control-regex
const TERMINAL_ESCAPE = /\x1b\[[\p{Nd};]*[a-zA-Z]/gu;
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;

// ftfy `fix_surrogates`: a JavaScript string already pairs valid surrogates; lone ones cannot
// be meant as anything and become U+FFFD.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/** One pass of ftfy's `fix_and_explain` over one segment. */
function fixSegmentOnce(text: string, unescape: boolean): string {
  if (unescape) text = ftfyUnescapeHtml(text);
  text = fixEncoding(text);
  text = fixC1Controls(text);
  text = text.replace(LIGATURE, (ch) => LIGATURES[ch]!);
  text = fixCharacterWidth(text);
  text = text.replace(/[\u02bc\u2018-\u201b]/g, "'").replace(/[\u201c-\u201f]/g, '"');
  text = text.replace(/\r\n|[\r\u2028\u2029\u0085]/g, '\n');
  text = text.replace(LONE_SURROGATE, '\ufffd');
  text = text.replace(TERMINAL_ESCAPE, '');
  text = text.replace(CONTROL_CHARS, '');
  return text.normalize('NFC');
}

/**
 * ftfy 6.3 `fix_text` with its default configuration: fixes each line (and each piece of a line
 * longer than a million code units) until it stops changing. HTML entities are unescaped until
 * a line holds a `<`; from then on, as in ftfy, no later line of the text is unescaped either.
 */
export function fixText(text: string): string {
  let unescape = true;
  let out = '';
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf('\n', pos) + 1;
    if (end === 0) end = text.length;
    if (end - pos > MAX_SEGMENT) end = pos + MAX_SEGMENT;
    let segment = text.slice(pos, end);
    if (unescape && segment.includes('<')) unescape = false;
    for (;;) {
      const fixed = fixSegmentOnce(segment, unescape);
      if (fixed === segment) break;
      segment = fixed;
    }
    out += segment;
    pos = end;
  }
  return out;
}
