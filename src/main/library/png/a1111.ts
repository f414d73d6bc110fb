/**
 * The A1111 `parameters` text, as stable-diffusion-webui writes it (create_infotext) and reads
 * it back (parse_generation_parameters in modules/infotext_utils.py):
 *
 *   <prompt, one or more lines>
 *   Negative prompt: <negative, one or more lines>      (only when there is one)
 *   Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 512x512, Model hash: ..., ...
 *
 * A value holding `,`, `:` or a newline is written as a JSON string. A reader takes the last line
 * as the parameters only when it holds at least 3 `key: value` pairs, where a key is a word
 * character followed by word characters, spaces, `-` or `/`.
 */
import {
  type GenerationSettings,
  a1111SamplerNames,
  a1111ScheduleNames,
} from '../../../shared/generation';

/** Extra facts written into the parameters line (and kept in our own JSON chunk). */
export interface A1111Extra {
  /** `Model: ...` */
  modelName?: string;
  /** `Model hash: ...`: the first 10 hex digits of the model file's sha256. */
  modelHash?: string;
  /** `VAE hash: ...`: a replacement VAE's first 10 hex digits of its file's sha256. */
  'VAE hash'?: string;
  /** `VAE: ...`: a replacement VAE's file name, with its extension. */
  VAE?: string;
  /** `Version: ...`, written last. */
  version?: string;
  /** Any other A1111 key, written as is (e.g. `'Clip skip': 2`, `'Hires upscale': 2`). */
  [key: string]: string | number | undefined;
}

export interface A1111Parameters {
  prompt: string;
  negativePrompt: string;
  /** The parameters line, key -> value (quoted values unquoted). */
  params: Record<string, string>;
}

/** Modes that A1111 writes `Denoising strength` for (its img2img tab). */
const STRENGTH_MODES = new Set<GenerationSettings['mode']>(['img2img', 'inpaint']);

const KEY_RE = /^[\p{L}\p{N}_][\p{L}\p{N}_ \-/]+$/u;

/** A1111's quote(): a value with `,`, `:` or a newline becomes a JSON string. */
export function quoteA1111Value(value: string): string {
  return /[,:\n]/.test(value) ? JSON.stringify(value) : value;
}

function formatNumber(n: number): string {
  return Number.isFinite(n) ? String(n) : '';
}

/** The A1111 `parameters` text describing one generation. */
export function formatA1111Parameters(
  settings: GenerationSettings,
  extra: A1111Extra = {},
): string {
  const params: Array<[string, string]> = [
    ['Steps', formatNumber(settings.steps)],
    ['Sampler', a1111SamplerNames[settings.sampler] ?? String(settings.sampler)],
    // webui 1.9+ writes the schedule apart, and nothing for its "Automatic" (our 'default').
    ...(settings.schedule && settings.schedule !== 'default'
      ? [['Schedule type', a1111ScheduleNames[settings.schedule]] as [string, string]]
      : []),
    ['CFG scale', formatNumber(settings.guidance)],
    ['Seed', formatNumber(settings.seed)],
    ['Size', `${settings.width}x${settings.height}`],
  ];
  if (extra.modelHash) params.push(['Model hash', extra.modelHash]);
  if (extra.modelName) params.push(['Model', extra.modelName]);
  // Where create_infotext puts them: after the model, before the denoising strength.
  if (typeof extra['VAE hash'] === 'string') params.push(['VAE hash', extra['VAE hash']]);
  if (typeof extra.VAE === 'string') params.push(['VAE', extra.VAE]);
  if (STRENGTH_MODES.has(settings.mode))
    params.push(['Denoising strength', formatNumber(settings.strength)]);
  const taken = new Set(params.map(([k]) => k).concat(['Version', 'Negative prompt']));
  for (const [key, value] of Object.entries(extra)) {
    if (key === 'modelName' || key === 'modelHash' || key === 'version') continue;
    if (value === undefined || taken.has(key) || !KEY_RE.test(key)) continue;
    if (typeof value !== 'string' && typeof value !== 'number') continue;
    params.push([key, typeof value === 'number' ? formatNumber(value) : value]);
    taken.add(key);
  }
  if (extra.version) params.push(['Version', extra.version]);

  const line = params.map(([k, v]) => `${k}: ${quoteA1111Value(v)}`).join(', ');
  const negative = settings.negativePrompt ? `\nNegative prompt: ${settings.negativePrompt}` : '';
  return `${settings.prompt}${negative}\n${line}`;
}

function isWordChar(c: string): boolean {
  return /[\p{L}\p{N}_]/u.test(c);
}

function isKeyChar(c: string): boolean {
  return c === ' ' || c === '-' || c === '/' || isWordChar(c);
}

function isSpace(c: string): boolean {
  return /\s/u.test(c);
}

function unquote(v: string): string {
  if (v.length < 2 || v[0] !== '"' || v[v.length - 1] !== '"') return v;
  try {
    const parsed: unknown = JSON.parse(v);
    return typeof parsed === 'string' ? parsed : v;
  } catch {
    return v;
  }
}

/**
 * The `key: value` pairs of one line, with the semantics of A1111's
 * `\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)` scanned with findall, but in linear
 * time (the regex backtracks quadratically on long lines without colons).
 */
export function scanA1111Pairs(line: string): Array<[string, string]> {
  const pairs: Array<[string, string]> = [];
  const n = line.length;
  let p = 0;
  while (p < n) {
    while (p < n && isSpace(line[p])) p++;
    if (p >= n) break;
    if (!isWordChar(line[p])) {
      p++;
      continue;
    }
    let q = p + 1;
    while (q < n && isKeyChar(line[q])) q++;
    if (q >= n || line[q] !== ':' || q - p < 2) {
      // Every start inside this run ends at the same non-colon, so none can match.
      p = q;
      continue;
    }
    const key = line.slice(p, q);
    let v = q + 1;
    while (v < n && isSpace(line[v])) v++;
    let value: string | null = null;
    let next = v;
    if (line[v] === '"') {
      let i = v + 1;
      let closed = -1;
      while (i < n) {
        if (line[i] === '\\' && i + 1 < n && line[i + 1] !== '\n' && line[i + 1] !== '\r') i += 2;
        else if (line[i] === '\\') break;
        else if (line[i] === '"') {
          closed = i;
          break;
        } else i++;
      }
      if (closed > v + 1 && (closed + 1 === n || line[closed + 1] === ',')) {
        value = line.slice(v, closed + 1);
        next = closed + 1;
      }
    }
    if (value === null) {
      const comma = line.indexOf(',', v);
      next = comma < 0 ? n : comma;
      value = line.slice(v, next);
    }
    if (next < n && line[next] === ',') next++;
    pairs.push([key, unquote(value.trimEnd())]);
    p = next;
  }
  return pairs;
}

/** The prompt, negative prompt and parameters of an A1111 `parameters` text. */
export function parseA1111Parameters(text: string): A1111Parameters {
  const lines = String(text).trim().split('\n');
  const last = lines.pop() ?? '';
  let pairs = scanA1111Pairs(last);
  if (pairs.length < 3) {
    lines.push(last);
    pairs = [];
  }
  let prompt = '';
  let negativePrompt = '';
  let inNegative = false;
  for (const raw of lines) {
    let line = raw.trim();
    if (line.startsWith('Negative prompt:')) {
      inNegative = true;
      line = line.slice('Negative prompt:'.length).trim();
    }
    if (inNegative) negativePrompt += (negativePrompt === '' ? '' : '\n') + line;
    else prompt += (prompt === '' ? '' : '\n') + line;
  }
  const params: Record<string, string> = Object.create(null) as Record<string, string>;
  for (const [k, v] of pairs) params[k] = v;
  return { prompt, negativePrompt, params: { ...params } };
}
