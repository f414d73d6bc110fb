import {
  EmbeddingFiles,
  EmbeddingSessions,
  TI_TOKEN_IDS,
  type NamedEmbedding,
  type UsedEmbedding,
} from '../adapters/embeddings';
import { EngineError } from '../errors';
import type { ComponentSession, LoadedModel } from '../models';
import { idsToOrt, ortToFloat32 } from '../tensor';
import { ClipTokenizer, applyEmphasis, type PromptEmbeddingTokens } from '../tokenizer';
import { type StageTimings, timedRun } from './stats';

/** Text conditioning for one prompt: [1, 77 * chunks, D] hidden states (+ SDXL's pooled). */
export interface PromptEmbedding {
  hidden: Float32Array;
  /** Number of 77-token chunks. */
  chunks: number;
  width: number;
  /** SDXL: text_encoder_2's pooled `text_embeds` [1, 1280]. */
  pooled: Float32Array | null;
}

interface Encoder {
  tokenizer: ClipTokenizer;
  session: ComponentSession;
  /** Output holding the per-token states we condition on. */
  output: string;
  /** Output holding the pooled embedding (SDXL encoder 2), or null. */
  pooledOutput: string | null;
  /** A session whose token table holds embeddings: ids from placeholderBase are their vectors. */
  embeddings: { placeholderBase: number; tokens: PromptEmbeddingTokens[] } | null;
}

/** A textual-inversion embedding a request's prompts may name (the engine's EmbeddingRequest). */
export interface AvailableEmbedding {
  token: string;
  path: string;
}

const cacheLimit = 32;

/**
 * Encodes prompts with the model's text encoder(s), A1111-style: 75-token chunks encoded one by
 * one and concatenated, emphasis weights applied with the mean restored. Results are cached per
 * prompt (and the vectors of the embeddings it names), so a run with the same prompt (or a later
 * step of the queue) skips the encoder. A prompt naming textual-inversion embeddings runs on a
 * text encoder whose token table holds their vectors (adapters/embeddings.ts); any other prompt
 * runs on the model's own session.
 */
export class TextConditioner {
  #encoders: Promise<Encoder[]> | null = null;
  #tokenizers: Promise<ClipTokenizer[]> | null = null;
  #cache = new Map<string, PromptEmbedding>();
  #available: readonly AvailableEmbedding[] = [];
  #hints: readonly string[] = [];
  readonly #used = new Map<string, UsedEmbedding>();
  readonly #files = new EmbeddingFiles();
  readonly #grown: EmbeddingSessions;

  constructor(
    private readonly model: LoadedModel,
    options: { threads?: number } = {},
  ) {
    this.#grown = new EmbeddingSessions(model, options.threads);
  }

  /**
   * Sets the embeddings the next prompts may name (by token) and forgets which were used.
   * `prompts` are the request's prompts: the embeddings they name share one text-encoder
   * session, so the prompt and the negative prompt do not each rebuild it.
   */
  useEmbeddings(available: readonly AvailableEmbedding[], prompts: readonly string[] = []): void {
    for (const e of available as readonly Partial<AvailableEmbedding>[])
      if (typeof e?.token !== 'string' || typeof e.path !== 'string' || !e.token.trim())
        throw new EngineError(
          'bad-input',
          'Each embedding needs a token (the word used in prompts) and a file path.',
        );
    this.#available = available;
    this.#hints = prompts;
    this.#used.clear();
  }

  /** The embeddings the prompts encoded since `useEmbeddings` named, in first-use order. */
  usedEmbeddings(): UsedEmbedding[] {
    return [...this.#used.values()];
  }

  async encode(
    prompt: string,
    timings: StageTimings,
    signal?: AbortSignal,
  ): Promise<PromptEmbedding> {
    const named = await this.#named(prompt);
    for (const e of named)
      if (!this.#used.has(e.token))
        this.#used.set(e.token, {
          token: e.token,
          path: e.file.path,
          sha256: e.file.sha256,
          vectors: e.file.vectors,
        });
    // The result depends on the prompt and the vectors of the embeddings it names, nothing else.
    const key =
      named.length === 0
        ? `p:${prompt}`
        : `e:${JSON.stringify([prompt, named.map((e) => [e.token, e.file.sha256])])}`;
    const cached = this.#cache.get(key);
    if (cached) {
      // Refresh its place in the LRU order.
      this.#cache.delete(key);
      this.#cache.set(key, cached);
      return cached;
    }
    const encoders =
      named.length === 0 ? await this.#loadEncoders() : await this.#embeddingEncoders(named);
    const parts: { hidden: Float32Array[]; width: number; pooled: Float32Array | null }[] = [];
    let chunkCount = -1;
    for (const encoder of encoders) {
      const { chunks } = encoder.tokenizer.tokenizeWeighted(
        prompt,
        encoder.embeddings ? { embeddings: encoder.embeddings.tokens } : {},
      );
      if (chunkCount >= 0 && chunks.length !== chunkCount) {
        throw new EngineError(
          'bad-input',
          'The two SDXL tokenizers split this prompt differently; shorten it to 75 tokens.',
        );
      }
      chunkCount = chunks.length;
      const hidden: Float32Array[] = [];
      let width = 0;
      let pooled: Float32Array | null = null;
      for (const chunk of chunks) {
        const out = await timedRun(timings, encoder.session, feedsFor(encoder, chunk.ids), signal);
        const states = out[encoder.output];
        if (!states || states.dims.length !== 3) {
          throw new EngineError(
            'model-shape',
            `${encoder.session.file} did not return ${encoder.output} as [1, 77, D].`,
            {
              file: encoder.session.file,
            },
          );
        }
        width = Number(states.dims[2]);
        hidden.push(
          applyEmphasis(
            ortToFloat32(states, encoder.output),
            [chunk.ids.length, width],
            chunk.weights,
          ),
        );
        if (encoder.pooledOutput && !pooled)
          pooled = ortToFloat32(out[encoder.pooledOutput], encoder.pooledOutput);
      }
      parts.push({ hidden, width, pooled });
    }
    const embedding = concatEncoders(parts, chunkCount);
    this.#cache.set(key, embedding);
    if (this.#cache.size > cacheLimit) this.#cache.delete(this.#cache.keys().next().value!);
    return embedding;
  }

  /** Releases the sessions built for embeddings (the model's own are released with it). */
  async release(): Promise<void> {
    await this.#grown.release();
  }

  /**
   * Releases the text encoders' sessions, the model's and those built for embeddings, keeping
   * the prompts already encoded: a later prompt creates them again. For when the UNet needs
   * their memory (pipelines/memory.ts textEncodersInTheWay).
   */
  async releaseEncoders(): Promise<void> {
    const encoders = this.#encoders;
    this.#encoders = null;
    await encoders?.catch(() => undefined);
    await this.#grown.release();
    for (const name of ['text_encoder', 'text_encoder_2'] as const)
      await this.model.releaseSession(name);
  }

  /** An all-zero embedding shaped like `like` (SDXL's force_zeros_for_empty_prompt). */
  static zerosLike(like: PromptEmbedding): PromptEmbedding {
    return {
      hidden: new Float32Array(like.hidden.length),
      chunks: like.chunks,
      width: like.width,
      pooled: like.pooled ? new Float32Array(like.pooled.length) : null,
    };
  }

  /** The available embeddings `prompt` names, with their files read, ordered by token. */
  async #named(prompt: string): Promise<NamedEmbedding[]> {
    if (this.#available.length === 0) return [];
    const [tokenizer] = await this.#loadTokenizers();
    const byToken = new Map<string, string>();
    for (const e of this.#available) if (!byToken.has(e.token)) byToken.set(e.token, e.path);
    const names = tokenizer!.findEmbeddingNames(prompt, [...byToken.keys()]).sort();
    return Promise.all(
      names.map(async (token) => ({ token, file: await this.#files.read(byToken.get(token)!) })),
    );
  }

  /** Encoders whose tables hold `named` and the embeddings the request's other prompts name. */
  async #embeddingEncoders(named: readonly NamedEmbedding[]): Promise<Encoder[]> {
    const set = new Map(named.map((e) => [e.token, e]));
    for (const hint of this.#hints) for (const e of await this.#named(hint)) set.set(e.token, e);
    const ordered = [...set.values()].sort((a, b) => (a.token < b.token ? -1 : 1));
    const tokenizers = await this.#loadTokenizers();
    const grown = await this.#grown.encoders(ordered, tokenizers);
    return grown.map((g, i) => ({
      ...this.#encoderOf(g.session, tokenizers[i]!, i),
      embeddings: { placeholderBase: g.placeholderBase, tokens: g.tokens },
    }));
  }

  #loadTokenizers(): Promise<ClipTokenizer[]> {
    this.#tokenizers ??= (async () => {
      const { model } = this;
      const first = await ClipTokenizer.fromFolder(model.tokenizerDirs.tokenizer);
      if (!model.family.sdxlConditioning) return [first];
      return [
        first,
        await ClipTokenizer.fromFolder(
          model.tokenizerDirs.tokenizer_2 ?? model.tokenizerDirs.tokenizer,
        ),
      ];
    })();
    this.#tokenizers.catch(() => {
      this.#tokenizers = null;
    });
    return this.#tokenizers;
  }

  /**
   * Which outputs to read from text encoder `index`. SDXL conditions on the penultimate hidden
   * state of both encoders (diffusers' hidden_states[-2]) and pools from the second one.
   */
  #encoderOf(session: ComponentSession, tokenizer: ClipTokenizer, index: number): Encoder {
    if (!this.model.family.sdxlConditioning) {
      const output = session.output('last_hidden_state')
        ? 'last_hidden_state'
        : session.signature.outputs[0].name;
      return { tokenizer, session, output, pooledOutput: null, embeddings: null };
    }
    const pooledOutput =
      index === 0
        ? null
        : session.output('text_embeds')
          ? 'text_embeds'
          : session.signature.outputs[0].name;
    return {
      tokenizer,
      session,
      output: penultimateHiddenState(session),
      pooledOutput,
      embeddings: null,
    };
  }

  async #loadEncoders(): Promise<Encoder[]> {
    this.#encoders ??= (async () => {
      const tokenizers = await this.#loadTokenizers();
      const names = ['text_encoder', 'text_encoder_2'] as const;
      const list: Encoder[] = [];
      for (let i = 0; i < tokenizers.length; i++)
        list.push(this.#encoderOf(await this.model.session(names[i]!), tokenizers[i]!, i));
      return list;
    })();
    try {
      return await this.#encoders;
    } catch (err) {
      this.#encoders = null;
      throw err;
    }
  }
}

/**
 * One chunk's feeds. With embeddings, the table lookup reads `ti_token_ids` and `input_ids`
 * (which CLIP pools by) has 0 where the vectors go, as A1111 feeds it.
 */
function feedsFor(encoder: Encoder, ids: readonly number[]) {
  const { session } = encoder;
  const spec = session.input('input_ids') ?? session.signature.inputs[0];
  const dims = [1, ids.length];
  const table = encoder.embeddings;
  if (!table) return { [spec.name]: idsToOrt(ids, dims, spec, session.file) };
  const plain = ids.map((id) => (id >= table.placeholderBase ? 0 : id));
  const lookup = session.input(TI_TOKEN_IDS)!;
  return {
    [spec.name]: idsToOrt(plain, dims, spec, session.file),
    [TI_TOKEN_IDS]: idsToOrt(ids, dims, lookup, session.file),
  };
}

function penultimateHiddenState(session: ComponentSession): string {
  const layers = session.signature.outputs
    .map((o) => /^hidden_states\.(\d+)$/.exec(o.name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
  if (layers.length < 2) {
    throw new EngineError(
      'model-shape',
      `${session.file} has no hidden_states.N outputs, which SDXL conditioning needs.`,
      { file: session.file },
    );
  }
  return `hidden_states.${Math.max(...layers) - 1}`;
}

/** Joins chunks along the sequence and encoders along the feature axis. */
function concatEncoders(
  parts: { hidden: Float32Array[]; width: number; pooled: Float32Array | null }[],
  chunks: number,
): PromptEmbedding {
  const width = parts.reduce((sum, p) => sum + p.width, 0);
  const tokens = 77 * chunks;
  const hidden = new Float32Array(tokens * width);
  let offset = 0;
  for (const part of parts) {
    for (let c = 0; c < chunks; c++) {
      const chunk = part.hidden[c];
      const rows = chunk.length / part.width;
      for (let r = 0; r < rows; r++) {
        const row = c * rows + r;
        hidden.set(chunk.subarray(r * part.width, (r + 1) * part.width), row * width + offset);
      }
    }
    offset += part.width;
  }
  return { hidden, chunks, width, pooled: parts.find((p) => p.pooled)?.pooled ?? null };
}

/** Repeats the shorter embedding's last (empty-prompt-like) chunks so both have equal length. */
export function padChunks(
  e: PromptEmbedding,
  chunks: number,
  filler: PromptEmbedding,
): PromptEmbedding {
  if (e.chunks >= chunks) return e;
  const per = 77 * e.width;
  const hidden = new Float32Array(chunks * per);
  hidden.set(e.hidden);
  for (let c = e.chunks; c < chunks; c++) hidden.set(filler.hidden.subarray(0, per), c * per);
  return { ...e, hidden, chunks };
}
