/**
 * Extra-network tags in prompts, as A1111 writes them: `<lora:name:weight>`. The tags are taken
 * out of the text before it is tokenized (A1111's extra_networks.parse_prompt uses the pattern
 * `<(\w+):([^>]+)>` and replaces each match by nothing), so they cost no tokens.
 *
 * A LoRA tag's arguments, as A1111's Lora extension reads them: `name`, then the text-encoder
 * multiplier (default 1), then the UNet multiplier (default: the text-encoder one); named forms
 * `te=`, `unet=` are accepted in any position after the name. `lyco` is the old LyCORIS
 * extension's spelling of the same tag. Other kinds (`hypernet`, …) are returned so callers can
 * say that they are not supported, never silently dropped.
 */

/** One `<kind:…>` tag found in a prompt. */
export interface NetworkTag {
  /** `lora` (also for `lyco`), or the tag's own kind lower-cased. */
  kind: string;
  /** The first argument: the file's name without extension (may contain `/` for subfolders). */
  name: string;
  /** Multiplier applied to the text encoder(s). */
  teWeight: number;
  /** Multiplier applied to the UNet. */
  unetWeight: number;
  /** The tag as written, and where it was (UTF-16 offsets into the original prompt). */
  raw: string;
  start: number;
  end: number;
  /** Set when an argument could not be read; the tag is still removed from the prompt. */
  error?: string;
}

export interface ParsedNetworkTags {
  /** The prompt with every tag removed (the text the tokenizer sees). */
  prompt: string;
  tags: NetworkTag[];
}

const tagPattern = /<(\w+):([^>]+)>/g;

function readNumber(text: string): number | null {
  const t = text.trim();
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) return null;
  return Number(t);
}

function parseArgs(kind: string, args: string[]): Omit<NetworkTag, 'raw' | 'start' | 'end'> {
  const name = (args[0] ?? '').trim();
  let te: number | null = 1;
  let unet: number | null = null;
  let error: string | undefined;
  const positional: string[] = [];
  for (const arg of args.slice(1)) {
    const eq = arg.indexOf('=');
    if (eq < 0) {
      positional.push(arg);
      continue;
    }
    const key = arg.slice(0, eq).trim().toLowerCase();
    const value = readNumber(arg.slice(eq + 1));
    if (value === null) error ??= `"${arg.trim()}" is not a number`;
    else if (key === 'te') te = value;
    else if (key === 'unet') unet = value;
    // Other named arguments (dyn=, …) change nothing here.
  }
  if (positional[0] !== undefined) {
    const v = readNumber(positional[0]);
    if (v === null) error ??= `"${positional[0].trim()}" is not a number`;
    else te = v;
  }
  if (positional[1] !== undefined) {
    const v = readNumber(positional[1]);
    if (v === null) error ??= `"${positional[1].trim()}" is not a number`;
    else unet = v;
  }
  if (!name) error ??= 'the tag names no file';
  const teWeight = te ?? 1;
  return {
    kind,
    name,
    teWeight,
    unetWeight: unet ?? teWeight,
    ...(error ? { error } : {}),
  };
}

/** Finds the extra-network tags of a prompt and returns the prompt without them. */
export function parseNetworkTags(prompt: string): ParsedNetworkTags {
  const tags: NetworkTag[] = [];
  let rest = '';
  let last = 0;
  for (const m of prompt.matchAll(tagPattern)) {
    const start = m.index;
    const end = start + m[0].length;
    const kindRaw = m[1].toLowerCase();
    const kind = kindRaw === 'lyco' ? 'lora' : kindRaw;
    tags.push({ ...parseArgs(kind, m[2].split(':')), raw: m[0], start, end });
    rest += prompt.slice(last, start);
    last = end;
  }
  rest += prompt.slice(last);
  return { prompt: rest, tags };
}

/** Writes a LoRA tag as A1111 does: one weight when both are equal, else `name:te:unet`. */
export function formatLoraTag(name: string, teWeight: number, unetWeight = teWeight): string {
  const w = (x: number) => String(Math.round(x * 1000) / 1000);
  return teWeight === unetWeight
    ? `<lora:${name}:${w(teWeight)}>`
    : `<lora:${name}:${w(teWeight)}:${w(unetWeight)}>`;
}
