import { EngineError } from '../errors';
import type { ComponentSession, LoadedModel } from '../models';
import { idsToOrt, ortToFloat32 } from '../tensor';
import { ClipTokenizer, applyEmphasis } from '../tokenizer';
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
}

const cacheLimit = 32;

/**
 * Encodes prompts with the model's text encoder(s), A1111-style: 75-token chunks encoded one by
 * one and concatenated, emphasis weights applied with the mean restored. Results are cached per
 * prompt, so a run with the same prompt (or a later step of the queue) skips the encoder.
 */
export class TextConditioner {
  #encoders: Promise<Encoder[]> | null = null;
  #cache = new Map<string, PromptEmbedding>();

  constructor(private readonly model: LoadedModel) {}

  async encode(
    prompt: string,
    timings: StageTimings,
    signal?: AbortSignal,
  ): Promise<PromptEmbedding> {
    const cached = this.#cache.get(prompt);
    if (cached) {
      // Refresh its place in the LRU order.
      this.#cache.delete(prompt);
      this.#cache.set(prompt, cached);
      return cached;
    }
    const encoders = await this.#loadEncoders();
    const parts: { hidden: Float32Array[]; width: number; pooled: Float32Array | null }[] = [];
    let chunkCount = -1;
    for (const encoder of encoders) {
      const { chunks } = encoder.tokenizer.tokenizeWeighted(prompt);
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
        const spec = encoder.session.input('input_ids') ?? encoder.session.signature.inputs[0];
        const ids = idsToOrt(chunk.ids, [1, chunk.ids.length], spec, encoder.session.file);
        const out = await timedRun(timings, encoder.session, { [spec.name]: ids }, signal);
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
    this.#cache.set(prompt, embedding);
    if (this.#cache.size > cacheLimit) this.#cache.delete(this.#cache.keys().next().value!);
    return embedding;
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

  async #loadEncoders(): Promise<Encoder[]> {
    this.#encoders ??= (async () => {
      const { model } = this;
      const list: Encoder[] = [];
      const first = await model.session('text_encoder');
      const tokenizer = await ClipTokenizer.fromFolder(model.tokenizerDirs.tokenizer);
      if (!model.family.sdxlConditioning) {
        list.push({
          tokenizer,
          session: first,
          output: first.output('last_hidden_state')
            ? 'last_hidden_state'
            : first.signature.outputs[0].name,
          pooledOutput: null,
        });
        return list;
      }
      // SDXL conditions on the penultimate hidden state of both encoders (diffusers'
      // hidden_states[-2]) and pools from the second one.
      list.push({
        tokenizer,
        session: first,
        output: penultimateHiddenState(first),
        pooledOutput: null,
      });
      const second = await model.session('text_encoder_2');
      const tokenizer2 = await ClipTokenizer.fromFolder(
        model.tokenizerDirs.tokenizer_2 ?? model.tokenizerDirs.tokenizer,
      );
      const pooled = second.output('text_embeds')
        ? 'text_embeds'
        : second.signature.outputs[0].name;
      list.push({
        tokenizer: tokenizer2,
        session: second,
        output: penultimateHiddenState(second),
        pooledOutput: pooled,
      });
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
