// Prompt emphasis syntax of AUTOMATIC1111's stable-diffusion-webui (modules/prompt_parser.py,
// `parse_prompt_attention`); rules summarised in reference/ENGINE-NOTES.md section 5:
//   (text)      weight x1.1          [text]      weight /1.1
//   (text:1.3)  weight x1.3          nesting multiplies
//   \( \) \[ \] literal brackets     an unclosed bracket applies to the end of the prompt
//   BREAK       (upper case, a whole word) closes the current 75-token chunk
// Adjacent segments with equal weight are merged.

/** One run of prompt text sharing a weight, or a chunk break. */
export interface PromptSegment {
  text: string;
  /** Emphasis multiplier; -1 for a break marker (as A1111 marks it). */
  weight: number;
  /** True for a `BREAK` marker: the tokenizer starts a new chunk here. */
  break?: boolean;
}

const ROUND_MULTIPLIER = 1.1;
const SQUARE_MULTIPLIER = 1 / 1.1;

// Alternatives, in priority order: escaped brackets and backslashes, a lone backslash, opening
// brackets, a `:weight)` closer, closing brackets, plain text, a stray colon.
const ATTENTION_TOKEN =
  /\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()[\]:]+|:/g;
const BREAK_WORD = /\s*\bBREAK\b\s*/;

/** Parses A1111 emphasis syntax into weighted text runs and break markers. */
export function parsePromptAttention(text: string): PromptSegment[] {
  const res: PromptSegment[] = [];
  const roundOpen: number[] = [];
  const squareOpen: number[] = [];

  const multiplyFrom = (start: number, multiplier: number): void => {
    for (let p = start; p < res.length; p++) {
      // Deviation from A1111: a BREAK inside brackets stays a break instead of turning into
      // the literal word with a negative weight.
      if (!res[p].break) res[p].weight *= multiplier;
    }
  };

  for (const m of text.matchAll(ATTENTION_TOKEN)) {
    const token = m[0];
    const weightText = m[1];
    const weight = weightText === undefined ? NaN : Number(weightText);
    if (token.startsWith('\\')) {
      res.push({ text: token.slice(1), weight: 1 });
    } else if (token === '(') {
      roundOpen.push(res.length);
    } else if (token === '[') {
      squareOpen.push(res.length);
    } else if (weightText !== undefined && Number.isFinite(weight) && roundOpen.length > 0) {
      multiplyFrom(roundOpen.pop()!, weight);
    } else if (token === ')' && roundOpen.length > 0) {
      multiplyFrom(roundOpen.pop()!, ROUND_MULTIPLIER);
    } else if (token === ']' && squareOpen.length > 0) {
      multiplyFrom(squareOpen.pop()!, SQUARE_MULTIPLIER);
    } else {
      const parts = token.split(BREAK_WORD);
      parts.forEach((part, i) => {
        if (i > 0) res.push({ text: 'BREAK', weight: -1, break: true });
        res.push({ text: part, weight: 1 });
      });
    }
  }

  for (const pos of roundOpen) multiplyFrom(pos, ROUND_MULTIPLIER);
  for (const pos of squareOpen) multiplyFrom(pos, SQUARE_MULTIPLIER);

  if (res.length === 0) return [{ text: '', weight: 1 }];

  const merged: PromptSegment[] = [res[0]];
  for (let i = 1; i < res.length; i++) {
    const last = merged[merged.length - 1];
    const cur = res[i];
    if (!last.break && !cur.break && last.weight === cur.weight) last.text += cur.text;
    else merged.push(cur);
  }
  return merged;
}
