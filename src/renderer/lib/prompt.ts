/**
 * Emphasis in prompts, as A1111 reads it (modules/prompt_parser.py, parse_prompt_attention):
 * `(x)` multiplies attention by 1.1, `[x]` divides it by 1.1, `(x:1.3)` sets it, `\(` is a
 * literal bracket and `BREAK` starts a new 75-token chunk. The engine parses prompts itself;
 * this copy only colours the text, so it keeps every character where it was.
 */
export interface PromptSegment {
  text: string;
  weight: number;
  /** Brackets, weights and BREAK: shown dimmed. */
  syntax: boolean;
}

const attention = /\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()[\]:]+|:/g;
const roundUp = 1.1;
const squareDown = 1 / 1.1;

export function parseEmphasis(prompt: string): PromptSegment[] {
  const segments: PromptSegment[] = [];
  const round: number[] = [];
  const square: number[] = [];
  const scale = (from: number, factor: number) => {
    for (let i = from; i < segments.length; i++) segments[i].weight *= factor;
  };
  for (const match of prompt.matchAll(attention)) {
    const text = match[0];
    const weight = match[1];
    if (text === '(') {
      round.push(segments.length);
      segments.push({ text, weight: 1, syntax: true });
    } else if (text === '[') {
      square.push(segments.length);
      segments.push({ text, weight: 1, syntax: true });
    } else if (weight !== undefined && round.length) {
      const from = round.pop()!;
      scale(from + 1, Number.parseFloat(weight) || 1);
      segments.push({ text, weight: 1, syntax: true });
    } else if (text === ')' && round.length) {
      scale(round.pop()! + 1, roundUp);
      segments.push({ text, weight: 1, syntax: true });
    } else if (text === ']' && square.length) {
      scale(square.pop()! + 1, squareDown);
      segments.push({ text, weight: 1, syntax: true });
    } else {
      // Plain text, escapes and stray brackets; BREAK stands apart.
      for (const part of text.split(/(\bBREAK\b)/)) {
        if (part) segments.push({ text: part, weight: 1, syntax: part === 'BREAK' });
      }
    }
  }
  // Unclosed brackets still apply, as in A1111.
  for (const from of round) scale(from + 1, roundUp);
  for (const from of square) scale(from + 1, squareDown);
  return segments;
}

/** A class name per weight band, for the highlight colour. */
export function weightClass(segment: PromptSegment): string {
  if (segment.syntax) return 'syntax';
  if (segment.weight > 1.2) return 'up2';
  if (segment.weight > 1.001) return 'up';
  if (segment.weight < 0.999) return 'down';
  return '';
}
