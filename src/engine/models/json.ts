/**
 * JSON as the files of a model folder hold it. Python's json module writes the non-finite
 * numbers NaN, Infinity and -Infinity as bare words by default (json.dumps(allow_nan=True)), and
 * diffusers' ConfigMixin saves every config that way: each scheduler_config.json written by
 * DPMSolverMultistepScheduler holds `"lambda_min_clipped": -Infinity`. JSON.parse refuses those
 * words; this reads them as the numbers they stand for.
 */

const NON_FINITE = ['-Infinity', 'Infinity', 'NaN'] as const;
// A string no JSON file can produce unescaped: it marks a non-finite number for the reviver.
const MARK = '\u0000non-finite:';

/** Where a bare non-finite word starts at `i` in a value position, the word; else null. */
function nonFiniteAt(text: string, i: number, previous: string): string | null {
  if (previous !== ':' && previous !== '[' && previous !== ',') return null;
  for (const word of NON_FINITE) if (text.startsWith(word, i)) return word;
  return null;
}

/** Quotes every bare NaN / Infinity / -Infinity outside strings as a marked string. */
function markNonFinite(text: string): string {
  let out = '';
  let inString = false;
  let previous = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (inString) {
      out += c;
      if (c === '\\') out += text[++i] ?? '';
      else if (c === '"') inString = false;
      continue;
    }
    const word = nonFiniteAt(text, i, previous);
    if (word) {
      out += JSON.stringify(MARK + word);
      i += word.length - 1;
      previous = 'n';
      continue;
    }
    if (c === '"') inString = true;
    if (!/\s/.test(c)) previous = c;
    out += c;
  }
  return out;
}

/**
 * JSON.parse, also reading Python's NaN, Infinity and -Infinity. Throws JSON.parse's own
 * SyntaxError for anything else that is not JSON.
 */
export function parseJsonText(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    if (!NON_FINITE.some((w) => text.includes(w))) throw e;
    try {
      return JSON.parse(markNonFinite(text), (_key, v: unknown) =>
        typeof v === 'string' && v.startsWith(MARK) ? Number(v.slice(MARK.length)) : v,
      );
    } catch {
      throw e;
    }
  }
}
