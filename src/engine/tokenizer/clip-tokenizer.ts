// CLIP byte-level BPE tokenizer with A1111-style long-prompt chunking and emphasis weights.
//
// Tokenization follows OpenAI CLIP's simple_tokenizer.py and Hugging Face's CLIPTokenizer
// (byte-level BPE, Sennrich et al. 2016 / Radford et al. 2019, with `</w>` marking word ends);
// chunking follows AUTOMATIC1111 stable-diffusion-webui modules/sd_hijack_clip.py
// (`tokenize_line`). Facts summarised in reference/ENGINE-NOTES.md section 5.

import path from 'node:path';
import { readRegularText, UnreadableFileError, type FileKind } from '../models/safe-read';
import { END_OF_WORD, byteEncode } from './byte-encoder';
import { parsePromptAttention } from './prompt-attention';
import { cleanText, splitWords } from './text';

/** Merge rules as merges.txt lines (`"a b"`) or tokenizer.json pairs (`["a", "b"]`). */
export type MergeRule = string | readonly [string, string];

/** Everything a tokenizer needs, already parsed. */
export interface ClipTokenizerInit {
  vocab: Readonly<Record<string, number>>;
  /** In rank order (first = applied first). A leading `#version` line is skipped. */
  merges: readonly MergeRule[];
  bosToken?: string;
  eosToken?: string;
  /** Default: the EOS token. SD 2.x uses `!`. */
  padToken?: string;
  /** Default: the EOS token. */
  unkToken?: string;
  /** Sequence length the text encoder takes (BOS + content + EOS). Default 77. */
  modelMaxLength?: number;
  /** Extra token -> id entries that are not in `vocab` (tokenizer.json `added_tokens`). */
  addedTokens?: Readonly<Record<string, number>>;
}

/** One text-encoder input row: BOS, up to 75 prompt tokens, EOS, padding. */
export interface WeightedChunk {
  /** Length `modelMaxLength` (77). */
  ids: number[];
  /** Same length; 1.0 at BOS, EOS and padding. */
  weights: number[];
}

export interface WeightedTokens {
  chunks: WeightedChunk[];
  /**
   * A1111's count: 75 for every chunk closed before the last one (whatever it holds), plus the
   * tokens of the last chunk. `chunks.length * 75` is the matching limit.
   */
  tokenCount: number;
  /** Prompt tokens actually placed in each chunk (no BOS/EOS/padding). */
  chunkTokenCounts: number[];
}

export interface TokenizeWeightedOptions {
  /**
   * When a chunk fills up and its last comma is at most this many tokens back, the tokens after
   * the comma move to the next chunk (A1111 `comma_padding_backtrack`, default 20; 0 disables).
   */
  commaBacktrack?: number;
  /**
   * Textual-inversion embeddings the prompt may name: where the token ids of `nameIds` appear,
   * they are replaced by `ids` (one id per vector), kept in one chunk.
   */
  embeddings?: readonly PromptEmbeddingTokens[];
}

/** How a textual-inversion embedding appears to the tokenizer. */
export interface PromptEmbeddingTokens {
  /** The token ids of its name (`encode(name)`), matched as a sequence. */
  nameIds: readonly number[];
  /** The ids that stand for its vectors (placeholders past the vocabulary); length = vectors. */
  ids: readonly number[];
}

/**
 * Embeddings by their first name token, longest name first, as A1111's EmbeddingDatabase
 * keeps them (modules/textual_inversion/textual_inversion.py, `register_embedding` and
 * `find_embedding_at_position`).
 */
function indexEmbeddings(
  list: readonly PromptEmbeddingTokens[],
): Map<number, PromptEmbeddingTokens[]> {
  const index = new Map<number, PromptEmbeddingTokens[]>();
  for (const e of list) {
    if (e.nameIds.length === 0) continue;
    const bucket = index.get(e.nameIds[0]!) ?? [];
    bucket.push(e);
    bucket.sort((a, b) => b.nameIds.length - a.nameIds.length);
    index.set(e.nameIds[0]!, bucket);
  }
  return index;
}

/** The embedding whose name's tokens start at `tokens[pos]`, if any. */
function embeddingAt(
  index: Map<number, PromptEmbeddingTokens[]>,
  tokens: readonly number[],
  pos: number,
): PromptEmbeddingTokens | undefined {
  return index.get(tokens[pos]!)?.find((e) => e.nameIds.every((id, i) => tokens[pos + i] === id));
}

const DEFAULT_BOS = '<|startoftext|>';
const DEFAULT_EOS = '<|endoftext|>';
const DEFAULT_MAX_LENGTH = 77;
const BPE_CACHE_LIMIT = 20_000;

type SpecialTokenValue = string | { content?: unknown } | null | undefined;

function specialTokenContent(value: unknown): string | undefined {
  const v = value as SpecialTokenValue;
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof v.content === 'string') return v.content;
  return undefined;
}

/**
 * A tokenizer file as text, read as model folders are (safe-read.ts: regular files only, at most
 * the cap of its kind, a FIFO never blocks); missing: undefined.
 */
async function readOptionalText(file: string, kind: FileKind): Promise<string | undefined> {
  try {
    return (await readRegularText(file, kind)) ?? undefined;
  } catch (err) {
    if (err instanceof UnreadableFileError)
      throw new Error(err.sentence(`${path.basename(path.dirname(file))}/${path.basename(file)}`), {
        cause: err,
      });
    throw err;
  }
}

function parseJson(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new Error(`Tokenizer file ${file} is not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Parsed contents of a tokenizer folder; any file may be missing. */
export interface ClipTokenizerFiles {
  /** vocab.json */
  vocab?: unknown;
  /** merges.txt, raw text */
  mergesText?: string;
  /** tokenizer.json (Hugging Face "tokenizers" format) */
  tokenizerJson?: unknown;
  /** special_tokens_map.json */
  specialTokensMap?: unknown;
  /** tokenizer_config.json */
  tokenizerConfig?: unknown;
}

export class ClipTokenizer {
  readonly bosToken: string;
  readonly eosToken: string;
  readonly padToken: string;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkId: number;
  /** Id of `,</w>`, used for comma-aware chunking; undefined if the vocab lacks it. */
  readonly commaId: number | undefined;
  /** Full sequence length (77). */
  readonly maxLength: number;
  /** Prompt tokens per chunk (75). */
  readonly chunkLength: number;
  readonly vocabSize: number;

  private readonly encoder: Map<string, number>;
  private readonly decoder: Map<number, string>;
  private readonly ranks: Map<string, number>;
  private readonly specialIds: Map<string, number>;
  private readonly cache = new Map<string, number[]>();

  constructor(init: ClipTokenizerInit) {
    this.encoder = new Map(Object.entries(init.vocab));
    for (const [token, id] of Object.entries(init.addedTokens ?? {})) {
      if (!this.encoder.has(token)) this.encoder.set(token, id);
    }
    this.decoder = new Map();
    for (const [token, id] of this.encoder) this.decoder.set(id, token);
    this.vocabSize = this.decoder.size;

    this.ranks = new Map();
    let rank = 0;
    for (const rule of init.merges) {
      let left: string;
      let right: string;
      if (typeof rule === 'string') {
        if (rule.startsWith('#version') || rule.trim() === '') continue;
        const parts = rule.trim().split(/ +/);
        if (parts.length !== 2) throw new Error(`Bad merge rule "${rule}"`);
        [left, right] = parts;
      } else {
        [left, right] = rule;
      }
      const key = `${left} ${right}`;
      if (!this.ranks.has(key)) this.ranks.set(key, rank);
      rank++;
    }

    this.bosToken = init.bosToken ?? DEFAULT_BOS;
    this.eosToken = init.eosToken ?? DEFAULT_EOS;
    this.padToken = init.padToken ?? this.eosToken;
    this.bosId = this.requireId(this.bosToken, 'BOS');
    this.eosId = this.requireId(this.eosToken, 'EOS');
    this.padId = this.requireId(this.padToken, 'pad');
    this.unkId = this.requireId(init.unkToken ?? this.eosToken, 'unknown');
    this.commaId = this.encoder.get(',' + END_OF_WORD);
    this.specialIds = new Map([
      [this.bosToken, this.bosId],
      [this.eosToken, this.eosId],
    ]);

    const maxLength = init.modelMaxLength ?? DEFAULT_MAX_LENGTH;
    // Some configs carry a huge sentinel ("no limit"); CLIP text encoders take 77.
    this.maxLength =
      Number.isInteger(maxLength) && maxLength >= 3 && maxLength <= 4096
        ? maxLength
        : DEFAULT_MAX_LENGTH;
    this.chunkLength = this.maxLength - 2;
  }

  /** Builds a tokenizer from the parsed files of a diffusers/optimum `tokenizer/` folder. */
  static fromFiles(files: ClipTokenizerFiles): ClipTokenizer {
    let vocab: Record<string, number> | undefined;
    let merges: MergeRule[] | undefined;
    let addedTokens: Record<string, number> | undefined;

    if (files.vocab !== undefined && files.mergesText !== undefined) {
      if (!isRecord(files.vocab)) throw new Error('vocab.json must be an object of token -> id');
      vocab = files.vocab as Record<string, number>;
      merges = files.mergesText.split(/\r?\n/);
    } else if (files.tokenizerJson !== undefined) {
      const tj = files.tokenizerJson;
      const model = isRecord(tj) ? tj.model : undefined;
      if (!isRecord(model) || !isRecord(model.vocab) || !Array.isArray(model.merges)) {
        throw new Error('tokenizer.json has no BPE model with vocab and merges');
      }
      if (model.type !== undefined && model.type !== 'BPE') {
        throw new Error(`tokenizer.json model type is ${String(model.type)}, expected BPE`);
      }
      vocab = model.vocab as Record<string, number>;
      merges = (model.merges as unknown[]).map((m) => {
        if (typeof m === 'string') return m;
        if (
          Array.isArray(m) &&
          m.length === 2 &&
          typeof m[0] === 'string' &&
          typeof m[1] === 'string'
        ) {
          return [m[0], m[1]] as const;
        }
        throw new Error('tokenizer.json merges must be "a b" strings or [a, b] pairs');
      });
      if (isRecord(tj) && Array.isArray(tj.added_tokens)) {
        addedTokens = {};
        for (const t of tj.added_tokens as unknown[]) {
          if (isRecord(t) && typeof t.content === 'string' && typeof t.id === 'number')
            addedTokens[t.content] = t.id;
        }
      }
    } else {
      throw new Error('Tokenizer folder needs vocab.json + merges.txt or tokenizer.json');
    }

    const map = isRecord(files.specialTokensMap) ? files.specialTokensMap : {};
    const config = isRecord(files.tokenizerConfig) ? files.tokenizerConfig : {};
    const pick = (key: string): string | undefined =>
      specialTokenContent(map[key]) ?? specialTokenContent(config[key]);
    const maxLength =
      typeof config.model_max_length === 'number' ? config.model_max_length : undefined;
    return new ClipTokenizer({
      vocab,
      merges,
      addedTokens,
      bosToken: pick('bos_token'),
      eosToken: pick('eos_token'),
      padToken: pick('pad_token'),
      unkToken: pick('unk_token'),
      modelMaxLength: maxLength,
    });
  }

  /** Reads a `tokenizer/` folder: vocab.json + merges.txt or tokenizer.json, plus the JSON side files. */
  static async fromFolder(dir: string): Promise<ClipTokenizer> {
    const read = (name: string, kind: FileKind) => readOptionalText(path.join(dir, name), kind);
    const [vocabText, mergesText, tokenizerJsonText, mapText, configText] = await Promise.all([
      read('vocab.json', 'tokenizer'),
      read('merges.txt', 'tokenizer'),
      read('tokenizer.json', 'tokenizer'),
      read('special_tokens_map.json', 'json'),
      read('tokenizer_config.json', 'json'),
    ]);
    const useVocabMerges = vocabText !== undefined && mergesText !== undefined;
    if (!useVocabMerges && tokenizerJsonText === undefined) {
      throw new Error(`No tokenizer in ${dir}: expected vocab.json + merges.txt or tokenizer.json`);
    }
    const json = (text: string | undefined, name: string) =>
      text === undefined ? undefined : parseJson(text, path.join(dir, name));
    return ClipTokenizer.fromFiles({
      vocab: useVocabMerges ? json(vocabText, 'vocab.json') : undefined,
      mergesText: useVocabMerges ? mergesText : undefined,
      tokenizerJson: useVocabMerges ? undefined : json(tokenizerJsonText, 'tokenizer.json'),
      specialTokensMap: json(mapText, 'special_tokens_map.json'),
      tokenizerConfig: json(configText, 'tokenizer_config.json'),
    });
  }

  /** Token ids of `text` without BOS/EOS/padding, after CLIP's cleaning. */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const word of splitWords(cleanText(text))) {
      const special = this.specialIds.get(word);
      if (special !== undefined) ids.push(special);
      else for (const id of this.bpe(word)) ids.push(id);
    }
    return ids;
  }

  /** One plain encoder row: BOS, the first 75 tokens of `text`, EOS, padding (length 77). */
  encodeForModel(text: string): number[] {
    const content = this.encode(text).slice(0, this.chunkLength);
    return this.frame(content);
  }

  /** Token strings for ids (debugging and UI); unknown ids become `<unk:id>`. */
  idsToTokens(ids: readonly number[]): string[] {
    return ids.map((id) => this.decoder.get(id) ?? `<unk:${id}>`);
  }

  /**
   * A1111 long-prompt tokenization: parse emphasis, tokenize each weighted run, fill 75-token
   * chunks (moving the tail after a late comma to the next chunk; BREAK closes a chunk), and
   * frame each chunk as BOS + 75 + EOS padded to 77. An empty prompt gives one chunk.
   */
  tokenizeWeighted(prompt: string, options: TokenizeWeightedOptions = {}): WeightedTokens {
    const backtrack = options.commaBacktrack ?? 20;
    const chunkLength = this.chunkLength;
    const chunks: WeightedChunk[] = [];
    const counts: number[] = [];
    let tokenCount = 0;
    let tokens: number[] = [];
    let weights: number[] = [];
    let lastComma = -1;

    const closeChunk = (isLast: boolean): void => {
      tokenCount += isLast ? tokens.length : chunkLength;
      counts.push(tokens.length);
      const framed = this.frame(tokens);
      const w = new Array<number>(this.maxLength).fill(1);
      for (let i = 0; i < weights.length; i++) w[i + 1] = weights[i];
      chunks.push({ ids: framed, weights: w });
      tokens = [];
      weights = [];
      lastComma = -1;
    };

    const index = indexEmbeddings(options.embeddings ?? []);
    for (const segment of parsePromptAttention(prompt)) {
      if (segment.break) {
        closeChunk(false);
        continue;
      }
      const segmentTokens = this.encode(segment.text);
      let position = 0;
      while (position < segmentTokens.length) {
        const token = segmentTokens[position]!;
        if (token === this.commaId) {
          lastComma = tokens.length;
        } else if (
          backtrack !== 0 &&
          tokens.length === chunkLength &&
          lastComma !== -1 &&
          tokens.length - lastComma <= backtrack
        ) {
          const cut = lastComma + 1;
          const movedTokens = tokens.slice(cut);
          const movedWeights = weights.slice(cut);
          tokens = tokens.slice(0, cut);
          weights = weights.slice(0, cut);
          closeChunk(false);
          tokens = movedTokens;
          weights = movedWeights;
        }
        if (tokens.length === chunkLength) closeChunk(false);
        const embedding = index.size > 0 ? embeddingAt(index, segmentTokens, position) : undefined;
        if (!embedding) {
          tokens.push(token);
          weights.push(segment.weight);
          position++;
          continue;
        }
        // An embedding is never split: if its vectors do not fit, the chunk is closed (padded)
        // and they start the next one (A1111 modules/sd_hijack_clip.py, `tokenize_line`).
        if (tokens.length + embedding.ids.length > chunkLength) closeChunk(false);
        for (const id of embedding.ids) {
          tokens.push(id);
          weights.push(segment.weight);
        }
        position += embedding.nameIds.length;
      }
    }
    if (tokens.length > 0 || chunks.length === 0) closeChunk(true);
    return { chunks, tokenCount, chunkTokenCounts: counts };
  }

  /** Prompt tokens in `prompt` (emphasis syntax and BREAK removed; no BOS/EOS/padding). */
  countTokens(prompt: string, options: TokenizeWeightedOptions = {}): number {
    return this.tokenizeWeighted(prompt, options).chunkTokenCounts.reduce((a, b) => a + b, 0);
  }

  /** Prompt tokens in each 75-token chunk, for the UI's "n/75" display. */
  chunkTokenCounts(prompt: string, options: TokenizeWeightedOptions = {}): number[] {
    return this.tokenizeWeighted(prompt, options).chunkTokenCounts;
  }

  /**
   * Which of `names` a prompt uses, matched as A1111 matches embedding names: the token ids of
   * the name as a run of a weighted segment's tokens (so `(name:1.2)` counts; case and spacing
   * follow CLIP's cleaning).
   */
  findEmbeddingNames(prompt: string, names: readonly string[]): string[] {
    const byEntry = new Map<PromptEmbeddingTokens, string>();
    for (const name of names) byEntry.set({ nameIds: this.encode(name), ids: [] }, name);
    const index = indexEmbeddings([...byEntry.keys()]);
    const found = new Set<string>();
    if (index.size === 0) return [];
    for (const segment of parsePromptAttention(prompt)) {
      if (segment.break) continue;
      const segmentTokens = this.encode(segment.text);
      for (let p = 0; p < segmentTokens.length;) {
        const hit = embeddingAt(index, segmentTokens, p);
        if (hit) found.add(byEntry.get(hit)!);
        p += hit ? hit.nameIds.length : 1;
      }
    }
    return names.filter((n) => found.has(n));
  }

  /** BOS + content + EOS, padded with the pad id to maxLength. */
  private frame(content: readonly number[]): number[] {
    const out = [this.bosId, ...content, this.eosId];
    while (out.length < this.maxLength) out.push(this.padId);
    return out;
  }

  private requireId(token: string, role: string): number {
    const id = this.encoder.get(token);
    if (id === undefined) throw new Error(`Tokenizer vocab has no ${role} token "${token}"`);
    return id;
  }

  /** Byte-level BPE of one pre-tokenized word: repeatedly merge the adjacent pair of lowest rank. */
  private bpe(word: string): number[] {
    const cached = this.cache.get(word);
    if (cached) return cached;

    let symbols = [...byteEncode(word)];
    if (symbols.length === 0) return [];
    symbols[symbols.length - 1] += END_OF_WORD;
    while (symbols.length > 1) {
      let bestRank = Infinity;
      let bestLeft = '';
      let bestRight = '';
      for (let i = 0; i + 1 < symbols.length; i++) {
        const r = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
        if (r !== undefined && r < bestRank) {
          bestRank = r;
          bestLeft = symbols[i];
          bestRight = symbols[i + 1];
        }
      }
      if (bestRank === Infinity) break;
      const next: string[] = [];
      for (let i = 0; i < symbols.length; i++) {
        if (i + 1 < symbols.length && symbols[i] === bestLeft && symbols[i + 1] === bestRight) {
          next.push(bestLeft + bestRight);
          i++;
        } else {
          next.push(symbols[i]);
        }
      }
      symbols = next;
    }
    const ids = symbols.map((s) => this.encoder.get(s) ?? this.unkId);
    if (this.cache.size >= BPE_CACHE_LIMIT) this.cache.clear();
    this.cache.set(word, ids);
    return ids;
  }
}
