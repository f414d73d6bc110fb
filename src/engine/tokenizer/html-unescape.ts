// HTML character references, resolved the way Python's `html.unescape` does (CPython
// Lib/html/__init__.py), which is what OpenAI CLIP's simple_tokenizer.py runs twice on every
// prompt. Named references use the WHATWG HTML5 table through the `entities` package, whose
// legacy mode matches Python's rule for names without a semicolon (the longest legacy name that
// prefixes the text: "&copyright" -> "©right"). Numeric references follow Python's own table,
// which differs from the HTML5 parser: the code points below are dropped instead of kept.

import { decodeHTML, decodeHTMLStrict } from 'entities';

// Python `_invalid_charrefs`: numbers that HTML5 maps to another character (mostly the
// Windows-1252 meaning of the C1 range).
const CHARREF_REPLACEMENTS: ReadonlyMap<number, string> = new Map([
  [0x00, '\ufffd'],
  [0x0d, '\r'],
  [0x80, '\u20ac'],
  [0x81, '\x81'],
  [0x82, '\u201a'],
  [0x83, '\u0192'],
  [0x84, '\u201e'],
  [0x85, '\u2026'],
  [0x86, '\u2020'],
  [0x87, '\u2021'],
  [0x88, '\u02c6'],
  [0x89, '\u2030'],
  [0x8a, '\u0160'],
  [0x8b, '\u2039'],
  [0x8c, '\u0152'],
  [0x8d, '\x8d'],
  [0x8e, '\u017d'],
  [0x8f, '\x8f'],
  [0x90, '\x90'],
  [0x91, '\u2018'],
  [0x92, '\u2019'],
  [0x93, '\u201c'],
  [0x94, '\u201d'],
  [0x95, '\u2022'],
  [0x96, '\u2013'],
  [0x97, '\u2014'],
  [0x98, '\u02dc'],
  [0x99, '\u2122'],
  [0x9a, '\u0161'],
  [0x9b, '\u203a'],
  [0x9c, '\u0153'],
  [0x9d, '\x9d'],
  [0x9e, '\u017e'],
  [0x9f, '\u0178'],
]);

/** Python `_invalid_codepoints`: references to these become the empty string. */
function isDroppedCodePoint(cp: number): boolean {
  return (
    (cp >= 0x1 && cp <= 0x8) ||
    cp === 0xb ||
    (cp >= 0xe && cp <= 0x1f) ||
    (cp >= 0x7f && cp <= 0x9f) ||
    (cp >= 0xfdd0 && cp <= 0xfdef) ||
    (cp & 0xfffe) === 0xfffe // U+FFFE, U+FFFF and the same two at the end of every plane
  );
}

/** The character a numeric reference (digits without `&#` or `;`) stands for, by Python's rules. */
export function numericReference(digits: string, hex: boolean): string {
  // BigInt: Python reads any number of digits; huge numbers are out of range, not NaN.
  const value = BigInt(hex ? `0x${digits}` : digits);
  const cp = value > 0x10ffffn ? -1 : Number(value);
  const replaced = CHARREF_REPLACEMENTS.get(cp);
  if (replaced !== undefined) return replaced;
  if (cp < 0 || (cp >= 0xd800 && cp <= 0xdfff)) return '\ufffd';
  if (isDroppedCodePoint(cp)) return '';
  return String.fromCodePoint(cp);
}

// Python's `_charref` pattern: decimal or hex numbers of any length, or a name of up to 32
// characters, each with an optional semicolon.
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

/** Python's `html.unescape`: every named and numeric character reference in `text` resolved. */
export function unescapeHtml(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(CHARREF, (whole, body: string) => {
    if (body.startsWith('#')) {
      const hex = body[1] === 'x' || body[1] === 'X';
      const digits = body.slice(hex ? 2 : 1).replace(/;$/, '');
      return numericReference(digits, hex);
    }
    // Legacy mode resolves a full name (with or without `;`) or else the longest legacy name
    // that prefixes it, keeping the rest: Python's html5 lookup then its prefix loop.
    return decodeHTML(whole);
  });
}

/**
 * The character a named reference written with its semicolon (`&name;`) stands for in the HTML5
 * table, or undefined when the whole name is not in it.
 */
export function namedReference(reference: string): string | undefined {
  const decoded = decodeHTMLStrict(reference);
  return decoded === reference ? undefined : decoded;
}
