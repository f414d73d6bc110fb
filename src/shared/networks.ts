import { z } from 'zod';
import { parseNetworkTags } from './network-tags';

/**
 * LoRA and textual-inversion files as the studio lists them (scanned from the folders in
 * Settings), and the embedding names a prompt uses. A1111 conventions throughout: a LoRA is
 * named in prompts by its file name without extension (`<lora:name:1>`), an embedding by its
 * file name without extension written as a word of the prompt.
 */

export const NetworkKind = z.enum(['lora', 'embedding']);
export type NetworkKind = z.infer<typeof NetworkKind>;

/** The model family a LoRA or embedding was trained for, when its header tells. */
export const NetworkFamily = z.enum(['sd1', 'sd2', 'sdxl']);
export type NetworkFamily = z.infer<typeof NetworkFamily>;

export const NetworkFile = z.object({
  kind: NetworkKind,
  /** The name prompts use: the file name without its extension. */
  name: z.string(),
  /** The path below the folder without extension, `/`-separated (`style/ink`); also accepted in tags. */
  relativeName: z.string(),
  /** Absolute path of the file. */
  file: z.string(),
  bytes: z.number().nonnegative(),
  /** Modification time, ms since the epoch. */
  mtime: z.number(),
  /**
   * A1111's short hash (12 hex digits) as its `Lora hashes:` / `TI hashes:` write it; null until
   * the file was first used (hashing reads the whole file, so the scan does not).
   */
  hash: z.string().nullable(),
  /** What the header says it was trained for; null when it does not say. */
  family: NetworkFamily.nullable(),
  /** Embeddings: how many token vectors it stands for (its cost in the 75-token chunks). */
  vectors: z.number().int().nullable(),
  /** An image beside the file (`name.preview.png`, `name.png`, …), served by getNetworkPreview. */
  hasPreview: z.boolean(),
  /** Why the header could not be read; the file is still listed. */
  problem: z.string().nullable(),
  /** LoRAs: kohya's `ss_output_name`, which A1111 also accepts as the name in tags. */
  alias: z.string().nullable(),
});
export type NetworkFile = z.infer<typeof NetworkFile>;

export const NetworkList = z.object({
  /** The folders scanned (the settings', or the defaults in the data folder). */
  loraDir: z.string(),
  embeddingsDir: z.string(),
  loras: z.array(NetworkFile),
  embeddings: z.array(NetworkFile),
  /** Sentences about folders that could not be read (missing, not a folder). */
  problems: z.array(z.string()),
});
export type NetworkList = z.infer<typeof NetworkList>;

export const NetworkRef = z
  .object({ kind: NetworkKind, name: z.string().min(1).max(1000) })
  .strict();
export type NetworkRef = z.infer<typeof NetworkRef>;

/** A preview image as a data URL (a small WebP made from the image beside the file). */
export const NetworkPreview = z.object({ dataUrl: z.string().nullable() });
export type NetworkPreview = z.infer<typeof NetworkPreview>;

/**
 * The LoRA a tag names, as A1111 finds it (extensions-builtin/Lora/networks.py: a dict lookup,
 * so case counts): by file name, then by the path below the folder (`style/ink`, ours: it lets
 * two files of one name both be named), then by kohya's alias.
 */
export function findLoraFile<T extends Pick<NetworkFile, 'name' | 'relativeName' | 'alias'>>(
  loras: readonly T[],
  name: string,
): T | undefined {
  const wanted = name.replaceAll('\\', '/');
  return (
    loras.find((l) => l.name === wanted) ??
    loras.find((l) => l.relativeName === wanted) ??
    loras.find((l) => l.alias === wanted)
  );
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** One place a name from `names` occurs in `text` as a whole word (case-insensitive). */
export interface WordMatch {
  name: string;
  start: number;
  end: number;
}

/**
 * Where embedding names occur in a prompt, as whole words. CLIP's tokenizer lower-cases text,
 * and A1111 finds an embedding by its token ids in the tokenized prompt, so the match ignores
 * case; a name inside a longer word (`badhands` in `badhandsv2`) is not a use. Text inside
 * `<lora:…>` tags is skipped (the tags are removed before tokenizing).
 */
export function findEmbeddingWords(text: string, names: readonly string[]): WordMatch[] {
  const wanted = [...new Set(names.filter((n) => n.trim() !== ''))].sort(
    (a, b) => b.length - a.length,
  );
  if (wanted.length === 0) return [];
  const byLower = new Map(wanted.map((n) => [n.toLowerCase(), n]));
  const pattern = new RegExp(
    `(?<![\\p{L}\\p{N}_])(?:${wanted.map(escapeRegExp).join('|')})(?![\\p{L}\\p{N}_])`,
    'giu',
  );
  const tags = parseNetworkTags(text).tags;
  const out: WordMatch[] = [];
  for (const m of text.matchAll(pattern)) {
    const start = m.index;
    const end = start + m[0].length;
    if (tags.some((t) => start < t.end && end > t.start)) continue;
    out.push({ name: byLower.get(m[0].toLowerCase()) ?? m[0], start, end });
  }
  return out;
}

/** One `name: hash` of the infotext's `Lora hashes` or `TI hashes`. */
export interface NetworkHash {
  name: string;
  hash: string;
}

/**
 * The infotext fields for the used files, exactly as A1111 writes them: `Lora hashes` and
 * `TI hashes`, each `name: hash` joined by `, ` (the A1111 writer quotes the value because it
 * holds `:` and `,`). Absent when nothing was used.
 */
export function networkInfotextFields(resolved: {
  loraHashes: readonly NetworkHash[];
  tiHashes: readonly NetworkHash[];
}): Record<string, string> {
  const join = (list: readonly NetworkHash[]) => list.map((h) => `${h.name}: ${h.hash}`).join(', ');
  return {
    ...(resolved.loraHashes.length ? { 'Lora hashes': join(resolved.loraHashes) } : {}),
    ...(resolved.tiHashes.length ? { 'TI hashes': join(resolved.tiHashes) } : {}),
  };
}

/**
 * `name: hash, name2: hash2` (an A1111 `Lora hashes` or `TI hashes` value) back into pairs;
 * pieces that are not `name: hex` are skipped.
 */
export function parseNetworkHashes(value: string | undefined): NetworkHash[] {
  if (!value) return [];
  const out: NetworkHash[] = [];
  for (const piece of value.split(',')) {
    const m = /^\s*(.+?):\s*([0-9a-fA-F]{6,64})\s*$/.exec(piece);
    if (m) out.push({ name: m[1], hash: m[2].toLowerCase() });
  }
  return out;
}
