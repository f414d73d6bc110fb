/**
 * From a prompt to the files a generation uses: `<lora:name:te:unet>` tags (shared/network-tags)
 * resolved in the LoRA folder, and embedding names written in the prompt resolved in the
 * embeddings folder, with A1111's short hashes for the infotext.
 *
 * Names as A1111 finds them (extensions-builtin/Lora/networks.py list_available_networks and
 * load_networks): a LoRA by its file name without extension, exactly (a dict lookup: case
 * counts), or by its `ss_output_name` alias; we also take the path below the folder
 * (`style/ink`) so two files of the same name in different subfolders can both be named.
 */
import type { GenerateRequest } from '../../engine';
import {
  type NetworkHash,
  StudioError,
  findEmbeddingWords,
  findLoraFile,
  parseNetworkTags,
} from '../../shared';
import type { ScannedFile } from './scan';
import { shortNetworkHash } from './hashes';

export type LoraRequest = NonNullable<GenerateRequest['loras']>[number];
export type EmbeddingRequest = NonNullable<GenerateRequest['embeddings']>[number];

/** The scanned folders a prompt is resolved against. */
export interface NetworkCatalog {
  loraDir: string;
  embeddingsDir: string;
  loras: readonly ScannedFile[];
  embeddings: readonly ScannedFile[];
}

export interface ResolvedNetworks {
  loras: LoraRequest[];
  embeddings: EmbeddingRequest[];
  /** In order of first mention, one per name. */
  loraHashes: NetworkHash[];
  tiHashes: NetworkHash[];
}

/** The LoRA a tag names (shared findLoraFile: file name, path below the folder, alias). */
export function findLora(loras: readonly ScannedFile[], name: string): ScannedFile | undefined {
  return findLoraFile(loras, name);
}

/** Embeddings whose name (file name without extension) appears as a word of `text`. */
export function usedEmbeddings(text: string, embeddings: readonly ScannedFile[]): ScannedFile[] {
  const byLower = new Map<string, ScannedFile>();
  // Two files of one name: the first by path wins, as one token can stand for one embedding.
  for (const e of embeddings)
    if (!byLower.has(e.name.toLowerCase())) byLower.set(e.name.toLowerCase(), e);
  const seen = new Set<ScannedFile>();
  for (const m of findEmbeddingWords(
    text,
    [...byLower.values()].map((e) => e.name),
  )) {
    const e = byLower.get(m.name.toLowerCase());
    if (e) seen.add(e);
  }
  return [...seen];
}

/** A1111 drops `:` and `,` from names in the hash lists (extra_networks_lora.py remove_symbols). */
function hashListName(name: string): string {
  return name.replace(/[:,]/g, '');
}

function listNames(names: string[]): string {
  const quoted = names.map((n) => `"${n}"`);
  return quoted.length <= 1
    ? (quoted[0] ?? '')
    : `${quoted.slice(0, -1).join(', ')} and ${quoted[quoted.length - 1]}`;
}

/**
 * The LoRAs and embeddings of a prompt and negative prompt. Throws StudioError with one
 * sentence, before anything is loaded, when a tag names a LoRA that is not in the folder, a
 * tag cannot be read, or a tag is of a kind we do not apply (hypernetworks).
 *
 * `hashOf` gives a file's full A1111 hash (NetworkHashes.hash); `extraFiles` maps tag names to
 * files outside the folder (the command line's `--lora FILE:WEIGHT`).
 */
export async function resolveNetworks(
  prompts: { prompt: string; negativePrompt: string },
  catalog: NetworkCatalog,
  hashOf: (kind: 'lora' | 'embedding', file: string) => Promise<string>,
  extraFiles: ReadonlyMap<string, string> = new Map(),
): Promise<ResolvedNetworks> {
  const tags = [
    ...parseNetworkTags(prompts.prompt).tags,
    ...parseNetworkTags(prompts.negativePrompt).tags,
  ];
  const bad = tags.find((t) => t.error);
  if (bad)
    throw new StudioError(
      'invalid-argument',
      `The tag ${bad.raw} cannot be read: ${bad.error}; write it as <lora:name:weight>.`,
    );
  const other = tags.find((t) => t.kind !== 'lora');
  if (other)
    throw new StudioError(
      'invalid-argument',
      other.kind === 'hypernet'
        ? `The tag ${other.raw} asks for a hypernetwork, which Latent Studio does not apply; remove it from the prompt (LoRAs are written <lora:name:weight>).`
        : `The tag ${other.raw} is of a kind ("${other.kind}") Latent Studio does not apply; remove it from the prompt (LoRAs are written <lora:name:weight>).`,
    );
  const loraTags = tags.filter((t) => t.kind === 'lora');
  const missing = [
    ...new Set(
      loraTags
        .filter((t) => !extraFiles.has(t.name) && !findLora(catalog.loras, t.name))
        .map((t) => t.name),
    ),
  ];
  if (missing.length > 0)
    throw new StudioError(
      'not-found',
      `The LoRA ${listNames(missing)} ${missing.length === 1 ? 'is' : 'are'} not in the LoRA folder ${catalog.loraDir}: add the file there (or fix the tag's name) and try again.`,
    );

  const loras: LoraRequest[] = [];
  const loraHashes = new Map<string, string>();
  for (const t of loraTags) {
    const file = extraFiles.get(t.name) ?? findLora(catalog.loras, t.name)!.file;
    loras.push({ path: file, name: t.name, teWeight: t.teWeight, unetWeight: t.unetWeight });
    const listed = hashListName(t.name);
    if (!loraHashes.has(listed))
      loraHashes.set(listed, shortNetworkHash(await hashOf('lora', file)));
  }

  // Embeddings are looked for in the text the tokenizer sees (the tags removed).
  const text = `${parseNetworkTags(prompts.prompt).prompt}\n${parseNetworkTags(prompts.negativePrompt).prompt}`;
  const embeddings: EmbeddingRequest[] = [];
  const tiHashes: NetworkHash[] = [];
  for (const e of usedEmbeddings(text, catalog.embeddings)) {
    embeddings.push({ token: e.name, path: e.file });
    tiHashes.push({
      name: hashListName(e.name),
      hash: shortNetworkHash(await hashOf('embedding', e.file)),
    });
  }
  return {
    loras,
    embeddings,
    loraHashes: [...loraHashes].map(([name, hash]) => ({ name, hash })),
    tiHashes,
  };
}
