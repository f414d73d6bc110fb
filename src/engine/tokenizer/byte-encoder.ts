// GPT-2 / CLIP byte-level alphabet: every byte value gets a printable character so that BPE
// symbols never contain whitespace or control characters. Bytes 33-126, 161-172 and 174-255
// map to the character with the same code; the remaining 68 bytes map, in increasing order,
// to U+0100, U+0101, ... (source: OpenAI CLIP simple_tokenizer.py `bytes_to_unicode`, facts
// restated in reference/ENGINE-NOTES.md section 5).

function buildAlphabet(): { order: number[]; chars: string[] } {
  const order: number[] = [];
  for (let b = 33; b <= 126; b++) order.push(b);
  for (let b = 161; b <= 172; b++) order.push(b);
  for (let b = 174; b <= 255; b++) order.push(b);
  const chars = new Array<string>(256);
  for (const b of order) chars[b] = String.fromCharCode(b);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    if (chars[b] === undefined) {
      chars[b] = String.fromCharCode(256 + extra);
      order.push(b);
      extra++;
    }
  }
  return { order, chars };
}

const alphabet = buildAlphabet();

/** `BYTE_TO_CHAR[b]` is the printable character standing for byte `b`. */
export const BYTE_TO_CHAR: readonly string[] = alphabet.chars;

/**
 * The 256 byte symbols in CLIP vocabulary order (printable ranges first, then the remapped
 * bytes); CLIP's vocab.json gives them ids 0-255 in this order, and the `</w>` forms 256-511.
 */
export const BYTE_SYMBOLS_IN_VOCAB_ORDER: readonly string[] = alphabet.order.map(
  (b) => alphabet.chars[b],
);

const encoder = new TextEncoder();

/** UTF-8 encodes `word` and maps every byte to its printable symbol. */
export function byteEncode(word: string): string {
  const bytes = encoder.encode(word);
  let out = '';
  for (const b of bytes) out += BYTE_TO_CHAR[b];
  return out;
}

/** Suffix CLIP appends to the last symbol of every word. */
export const END_OF_WORD = '</w>';
