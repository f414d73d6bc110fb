/**
 * Textual-inversion embeddings for one loaded model: their files, read once while unchanged, and
 * the text-encoder sessions whose token tables hold their vectors (embeddings-onnx.ts), one
 * embedding set at a time. A prompt that names no embedding never comes here: it runs on the
 * model's own text-encoder sessions.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import {
  componentSession,
  signatureFromSession,
  type ComponentName,
  type ComponentSession,
  type LoadedModel,
} from '../models';
import type { ClipTokenizer, PromptEmbeddingTokens } from '../tokenizer';
import { readEmbeddingFile, type EmbeddingFile, type EmbeddingVectors } from './embeddings-file';
import { createGrownSession, growTokenTable } from './embeddings-onnx';

export { TI_TOKEN_IDS } from './embeddings-onnx';

/** An embedding a generation used: what the host writes as A1111's `TI hashes: "token: hash"`. */
export interface UsedEmbedding {
  token: string;
  path: string;
  /** SHA-256 of the file, hex; A1111 writes its first 12 characters (shorthash). */
  sha256: string;
  /** Tokens it cost in the prompt. */
  vectors: number;
}

/** An embedding named in a prompt, with its file read. */
export interface NamedEmbedding {
  token: string;
  file: EmbeddingFile;
}

/** Embedding files read once and reused while their size and modification time stay. */
export class EmbeddingFiles {
  readonly #cache = new Map<string, { stamp: string; file: Promise<EmbeddingFile> }>();

  async read(file: string): Promise<EmbeddingFile> {
    const resolved = path.resolve(file);
    let stamp: string;
    try {
      const info = await stat(resolved);
      stamp = `${info.size}:${info.mtimeMs}`;
    } catch (e) {
      throw new EngineError(
        'bad-input',
        `Embedding ${path.basename(file)} cannot be read: ${(e as Error).message}.`,
        { file, cause: e },
      );
    }
    const hit = this.#cache.get(resolved);
    if (hit?.stamp === stamp) return hit.file;
    const entry = { stamp, file: readEmbeddingFile(resolved) };
    this.#cache.set(resolved, entry);
    entry.file.catch(() => {
      if (this.#cache.get(resolved) === entry) this.#cache.delete(resolved);
    });
    return entry.file;
  }
}

/** A text encoder whose table holds a set of embeddings, and how the prompt reaches them. */
export interface GrownEncoder {
  session: ComponentSession;
  /** The first placeholder id (the original table's row count); ids from here are vectors. */
  placeholderBase: number;
  tokens: PromptEmbeddingTokens[];
  /** Weight files ONNX Runtime reads from memory (a LoRA variant's) while the session lives. */
  keepAlive: readonly Uint8Array[];
}

const ENCODERS: readonly ComponentName[] = ['text_encoder', 'text_encoder_2'];

/**
 * The grown text-encoder sessions of one model for the embedding set last asked for. Asking for
 * another set releases the previous sessions first (a full text encoder is hundreds of MB).
 */
export class EmbeddingSessions {
  #current: { key: string; encoders: Promise<GrownEncoder[]> } | null = null;

  constructor(
    private readonly model: LoadedModel,
    private readonly threads?: number,
  ) {}

  /** Sessions for `set` (in placeholder order), one per tokenizer in `tokenizers`. */
  async encoders(
    set: readonly NamedEmbedding[],
    tokenizers: readonly ClipTokenizer[],
  ): Promise<GrownEncoder[]> {
    const key = set.map((e) => `${e.token}\u0000${e.file.sha256}`).join('\u0001');
    if (this.#current?.key === key) return this.#current.encoders;
    await this.release();
    const current = { key, encoders: this.#build(set, tokenizers) };
    this.#current = current;
    current.encoders.catch(() => {
      if (this.#current === current) this.#current = null;
    });
    return current.encoders;
  }

  async release(): Promise<void> {
    const current = this.#current;
    this.#current = null;
    if (!current) return;
    let encoders: GrownEncoder[];
    try {
      encoders = await current.encoders;
    } catch {
      return; // never created
    }
    await Promise.all(encoders.map((e) => e.session.session.release()));
  }

  async #build(
    set: readonly NamedEmbedding[],
    tokenizers: readonly ClipTokenizer[],
  ): Promise<GrownEncoder[]> {
    const sdxl = tokenizers.length === 2;
    const blocks = tokenizers.map((_, i) =>
      set.map((e) => ({ name: e.token, vectors: blockFor(e, sdxl, i) })),
    );
    const out: GrownEncoder[] = [];
    try {
      for (let i = 0; i < tokenizers.length; i++) {
        const name = ENCODERS[i]!;
        const component = this.model.info.components[name];
        if (!component)
          throw new EngineError(
            'model-missing-file',
            `${name}/model.onnx is missing from the model folder.`,
            { file: `${name}/model.onnx` },
          );
        // A LoRA with text-encoder weights patched this encoder: grow the patched one, or the
        // embedding would silently drop the LoRA's text-encoder part.
        const variant = this.model.variants?.[name];
        const source = variant ? await variant.source() : undefined;
        const grown = await growTokenTable(component.modelPath, component.file, blocks[i]!, source);
        const dir = path.dirname(component.modelPath);
        const session = await createGrownSession(
          grown,
          dir,
          component.file,
          this.model.provider,
          this.threads,
        );
        const tokens: PromptEmbeddingTokens[] = [];
        let next = grown.vocabRows;
        for (const e of set) {
          const ids = Array.from({ length: e.file.vectors }, (_, k) => next + k);
          next += e.file.vectors;
          tokens.push({ nameIds: tokenizers[i]!.encode(e.token), ids });
        }
        out.push({
          session: componentSession(
            name,
            component.file,
            session,
            signatureFromSession(session),
            this.model.provider,
            null,
          ),
          placeholderBase: grown.vocabRows,
          tokens,
          keepAlive: grown.externalData.map((f) => f.data),
        });
      }
    } catch (e) {
      await Promise.all(out.map((g) => g.session.session.release()));
      throw e;
    }
    return out;
  }
}

/** The vectors of `e` for text encoder `index`, or a sentence when the kinds do not match. */
function blockFor(e: NamedEmbedding, sdxl: boolean, index: number): EmbeddingVectors {
  const { file } = e;
  if (sdxl) {
    const block = index === 0 ? file.clipL : file.clipG;
    if (!block)
      throw new EngineError(
        'bad-input',
        `Embedding ${e.token} has one set of vectors (an SD 1.x/2.x embedding); SDXL models need clip_l and clip_g vectors.`,
        { file: file.path },
      );
    return block;
  }
  if (!file.single)
    throw new EngineError(
      'bad-input',
      `Embedding ${e.token} is an SDXL embedding (clip_l + clip_g) and cannot be used with this model's single text encoder.`,
      { file: file.path },
    );
  return file.single;
}
