// Text preparation for the CLIP BPE tokenizer.
//
// Source of the rules: OpenAI CLIP `simple_tokenizer.py` (basic_clean, whitespace_clean and the
// pre-tokenizer pattern) and the Hugging Face `CLIPTokenizer` port of it; summarised in
// reference/ENGINE-NOTES.md section 5. basic_clean is ftfy's `fix_text` (ftfy.ts), then
// Python's `html.unescape` twice (html-unescape.ts), then `strip`.

import { fixText } from './ftfy';
import { unescapeHtml } from './html-unescape';

export { unescapeHtml };

// CLIP matches whitespace with the `regex` module, whose `\s` is Unicode White_Space (not
// JavaScript's `\s`, which adds U+FEFF). Python's `strip` also takes U+001C..U+001F, but ftfy
// has removed those and html.unescape cannot bring them back.
const SPACE_RUNS = /\p{White_Space}+/gu;
const EDGE_SPACE = /^\p{White_Space}+|\p{White_Space}+$/gu;

/**
 * CLIP's cleaning, character for character: ftfy's fix_text, HTML unescaped twice, runs of
 * (Python) whitespace collapsed to one space, stripped, lowercased.
 */
export function cleanText(text: string): string {
  let t = unescapeHtml(unescapeHtml(fixText(text)));
  t = t.replace(SPACE_RUNS, ' ').replace(EDGE_SPACE, '');
  return t.toLowerCase();
}

// CLIP's pre-tokenizer: special tokens, English contractions, runs of letters, single digits,
// runs of anything else that is not whitespace (White_Space, as above).
const WORD_PATTERN =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\p{White_Space}\p{L}\p{N}]+/giu;

/** Splits cleaned text into the words BPE runs on. */
export function splitWords(cleaned: string): string[] {
  return cleaned.match(WORD_PATTERN) ?? [];
}
