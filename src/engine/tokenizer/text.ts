// Text preparation for the CLIP BPE tokenizer.
//
// Source of the rules: OpenAI CLIP `simple_tokenizer.py` (basic_clean, whitespace_clean and the
// pre-tokenizer pattern) and the Hugging Face `CLIPTokenizer` port of it; summarised in
// reference/ENGINE-NOTES.md section 5. ftfy's `fix_text` is approximated by NFC normalisation.

const NAMED_ENTITIES: Readonly<Record<string, string>> = {
  amp: '&',
  lt: '<',
  gt: '>',
  quot: '"',
  apos: "'",
  nbsp: '\u00a0',
  copy: '\u00a9',
  reg: '\u00ae',
  hellip: '\u2026',
  mdash: '\u2014',
  ndash: '\u2013',
  lsquo: '\u2018',
  rsquo: '\u2019',
  ldquo: '\u201c',
  rdquo: '\u201d',
};

const ENTITY_PATTERN = /&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]+);/g;

/** Replaces the common HTML entities (named ones from a short list, and all numeric ones). */
export function unescapeHtml(text: string): string {
  return text.replace(ENTITY_PATTERN, (whole, body: string) => {
    if (body.startsWith('#')) {
      const code =
        body[1] === 'x' || body[1] === 'X'
          ? parseInt(body.slice(2), 16)
          : parseInt(body.slice(1), 10);
      if (!Number.isFinite(code) || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff))
        return whole;
      return String.fromCodePoint(code === 0 ? 0xfffd : code);
    }
    return NAMED_ENTITIES[body.toLowerCase()] ?? whole;
  });
}

/**
 * CLIP's cleaning: fix text (NFC here), unescape HTML twice, collapse whitespace runs to one
 * space, strip, lowercase.
 */
export function cleanText(text: string): string {
  let t = text.normalize('NFC');
  t = unescapeHtml(unescapeHtml(t));
  t = t.replace(/\s+/gu, ' ').trim();
  return t.toLowerCase();
}

// CLIP's pre-tokenizer: special tokens, English contractions, runs of letters, single digits,
// runs of anything else that is not whitespace.
const WORD_PATTERN =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+/giu;

/** Splits cleaned text into the words BPE runs on. */
export function splitWords(cleaned: string): string[] {
  return cleaned.match(WORD_PATTERN) ?? [];
}
