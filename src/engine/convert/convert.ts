/**
 * Converting a single-file checkpoint into an ordinary diffusers ONNX folder that the model
 * loader (engine/models) opens unchanged:
 *
 *   read (readers/) -> recognise (detect.ts) -> emit each graph (emit/) -> write the tokenizer,
 *   scheduler and index files (tokenizer-files.ts, pipeline-files.ts)
 *
 * Everything is written into a temporary folder beside `outDir` and renamed into place at the
 * end, so a failed or cancelled conversion leaves nothing half-written; the free disk space is
 * checked against the estimated output size before anything is written.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EngineError, isEngineError } from '../errors';
import { detectArchitecture, detectVae } from './detect';
import {
  type AttentionKind,
  type ConvertTarget,
  type EmitOptions,
  type EmitResult,
  emitTextEncoder,
  emitUnet,
  emitVaeDecoder,
  emitVaeEncoder,
} from './emit/index';
import { modelIndex, schedulerConfig, unetConfig, vaeConfig } from './pipeline-files';
import { openCheckpoint } from './readers/index';
import { readClipVocabulary, writeTokenizerFolder } from './tokenizer-files';
import type { CheckpointArchitecture, TensorInfo, TensorSource } from './types';

export type ConvertPhase =
  | 'reading'
  | 'text_encoder'
  | 'text_encoder_2'
  | 'unet'
  | 'vae_encoder'
  | 'vae_decoder'
  | 'finishing';

/** Progress of one conversion, reported after each weight is written. */
export interface ConvertProgress {
  phase: ConvertPhase;
  /** Weights written so far, and how many there will be (the total firms up as graphs are built). */
  tensorsDone: number;
  tensorsTotal: number;
  /** Bytes written so far, and the estimated output size. */
  bytesDone: number;
  bytesTotal: number;
  /** Write rate since the start, in MB/s (10^6 bytes), and the estimated seconds left. */
  mbPerSecond: number;
  etaSeconds: number | null;
}

export interface ConvertOptions {
  /** CLIP's BPE merge list (resources/clip-bpe/bpe_simple_vocab_16e6.txt.gz). */
  vocabularyFile: string;
  /** Stored weight type; default fp16. Computation is float32 either way. */
  precision?: 'fp16' | 'fp32';
  /** A VAE-only file (ldm naming) used instead of the checkpoint's own VAE. */
  vae?: string;
  /** The answer when detection cannot tell (SD 2.x without a global_step), or an override. */
  prediction?: 'epsilon' | 'v_prediction';
  /** Skip detection and use this (tests of small configurations, whose heads cannot be inferred). */
  architecture?: CheckpointArchitecture;
  /** Attention as com.microsoft MultiHeadAttention (default) or plain MatMul + Softmax. */
  attention?: AttentionKind;
  /**
   * The UNet's variant: 'cpu' (default) runs on every provider; 'cuda' computes in float16 with
   * ONNX Runtime's fused CUDA operators (emit/cuda.ts) and runs on the CUDA provider only.
   */
  target?: ConvertTarget;
  /**
   * Emit a UNet that also takes ControlNet residuals (down_block_N_additional_residual,
   * mid_block_additional_residual; zeros give the plain UNet's output exactly).
   */
  controlResiduals?: boolean;
  signal?: AbortSignal;
  onProgress?: (p: ConvertProgress) => void;
  /** The checkpoint's sha256 when the caller has it (recorded; A1111's short hash is its first 10 hex). */
  sha256?: string;
  /** Free bytes where `outDir` will be; defaults to statfs. */
  freeBytes?: (dir: string) => Promise<number>;
}

/** What was converted, as recorded in the output's `conversion.json`. */
export interface ConversionRecord {
  /** The checkpoint's file name (not its path: the folder may move). */
  source: string;
  sourceBytes: number;
  /** The checkpoint's sha256 (hex), when known. */
  sha256: string | null;
  /** The replacement VAE's file name, when one was used. */
  vae: string | null;
  precision: 'fp16' | 'fp32';
  family: CheckpointArchitecture['family'];
  inpainting: boolean;
  prediction: 'epsilon' | 'v_prediction';
  sampleSize: number;
  reasons: string[];
  /** Keys of the file that no graph used and that are not known training leftovers. */
  unusedKeys: string[];
  /** 'cuda' when the UNet is the CUDA variant (runs on the CUDA provider only); absent: 'cpu'. */
  target?: ConvertTarget;
}

export interface ConvertResult extends ConversionRecord {
  dir: string;
  bytesWritten: number;
  seconds: number;
}

const FAMILY_NAMES = { sd1: 'SD 1.x', sd2: 'SD 2.x', sdxl: 'SDXL' } as const;

/** The converted folder's model card: its first paragraph is what the models table shows. */
function modelCard(r: ConversionRecord): string {
  const hash = r.sha256 ? ` Model hash ${r.sha256.slice(0, 10)} (sha256 ${r.sha256}).` : '';
  const vae = r.vae ? `, VAE from ${r.vae}` : '';
  return (
    `# ${path.basename(r.source, path.extname(r.source))}\n\n` +
    `Converted from ${r.source} by Latent Studio: ${FAMILY_NAMES[r.family]}${r.inpainting ? ' inpainting' : ''}, ` +
    `${r.prediction}, ${r.sampleSize} px, ${r.precision} weights${vae}.${hash}` +
    (r.target === 'cuda'
      ? ' The UNet is the CUDA variant: it runs on the CUDA provider only.'
      : '') +
    `\n\n` +
    `Recognised by: ${r.reasons.join('; ')}.\n`
  );
}

/** Written beside model_index.json; the model registry reads it back. */
export const CONVERSION_RECORD = 'conversion.json';

/**
 * Keys a checkpoint carries that no inference graph needs: ldm/sgm noise-schedule buffers,
 * EMA copies, Lightning leftovers, the SDXL embedders that are not text encoders.
 */
export const KNOWN_UNUSED: readonly RegExp[] = [
  /^(betas|alphas_cumprod|alphas_cumprod_prev|sqrt_alphas_cumprod|sqrt_one_minus_alphas_cumprod|log_one_minus_alphas_cumprod|sqrt_recip_alphas_cumprod|sqrt_recipm1_alphas_cumprod|posterior_variance|posterior_log_variance_clipped|posterior_mean_coef1|posterior_mean_coef2|logvar|scale_factor|v_pred|lvlb_weights)$/,
  /^model_ema\./,
  /^denoiser\./,
  /^first_stage_model\.loss\./,
  /^cond_stage_model\.(transformer\.)?(text_model\.)?embeddings\.position_ids$/,
];

function cancelled(): EngineError {
  return new EngineError('cancelled', 'The conversion was cancelled.');
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw cancelled();
}

/** Bytes per stored element of the output. */
const outBytes = (precision: 'fp16' | 'fp32'): number => (precision === 'fp16' ? 2 : 4);

function numel(t: TensorInfo): number {
  return t.shape.reduce((a, b) => a * b, 1);
}

/** Estimated output bytes of the tensors under `prefix`. */
function estimate(tensors: readonly TensorInfo[], prefix: string, perElement: number): number {
  let bytes = 0;
  for (const t of tensors) if (t.name.startsWith(prefix)) bytes += numel(t) * perElement;
  return bytes;
}

function countUnder(tensors: readonly TensorInfo[], prefix: string): number {
  return tensors.filter((t) => t.name.startsWith(prefix)).length;
}

/** Where a VAE-only file keeps its ldm keys ('' or 'first_stage_model.'). */
export function vaePrefixOf(source: TensorSource): string {
  if (source.info('first_stage_model.encoder.conv_in.weight')) return 'first_stage_model.';
  if (source.info('encoder.conv_in.weight')) return '';
  const names = source.list().map((t) => t.name);
  if (names.some((n) => n.startsWith('encoder.down_blocks.'))) {
    throw new EngineError(
      'model-unsupported',
      `${path.basename(source.path)} is a VAE in diffusers naming; use the single-file (ldm-named) release of that VAE.`,
      { file: source.path },
    );
  }
  throw new EngineError(
    'model-unsupported',
    `${path.basename(source.path)} is not a VAE (it has no encoder.conv_in.weight).`,
    { file: source.path },
  );
}

async function defaultFreeBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/**
 * Converts `file` into a diffusers ONNX folder at `outDir`, which must not exist yet. Throws
 * EngineError: 'model-unsupported' for files that are not SD 1/2/XL checkpoints (with a sentence
 * saying what they are), 'model-corrupt' for damaged files, 'bad-input' when a choice is needed
 * (prediction type, missing VAE) or there is not enough disk space, 'cancelled' on abort.
 */
export async function convertCheckpoint(
  file: string,
  outDir: string,
  options: ConvertOptions,
): Promise<ConvertResult> {
  const started = performance.now();
  const precision = options.precision ?? 'fp16';
  const { signal } = options;
  throwIfAborted(signal);
  const target = path.resolve(outDir);
  if (await stat(target).catch(() => null)) {
    throw new EngineError('bad-input', `${target} already exists; choose a new output folder.`, {
      file: target,
    });
  }
  const report = (p: Omit<ConvertProgress, 'mbPerSecond' | 'etaSeconds'>): void => {
    if (!options.onProgress) return;
    const seconds = (performance.now() - started) / 1000;
    const rate = seconds > 0 ? p.bytesDone / seconds : 0;
    options.onProgress({
      ...p,
      mbPerSecond: rate / 1e6,
      etaSeconds: rate > 0 ? Math.max(0, (p.bytesTotal - p.bytesDone) / rate) : null,
    });
  };

  const opened = await openCheckpoint(file);
  const sources: TensorSource[] = [opened.source];
  let temp: string | undefined;
  try {
    const { source } = opened;
    const tensors = source.list();
    const arch =
      options.architecture ?? detectArchitecture(tensors, path.basename(file), opened.hints);
    const prediction = options.prediction ?? arch.prediction;
    if (prediction === null) {
      throw new EngineError(
        'bad-input',
        `${path.basename(file)} is an SD 2.x checkpoint that does not say whether it predicts epsilon (the 512 px base model) or v (the 768 px model); choose one.`,
        { file },
      );
    }
    const sampleSize =
      arch.family === 'sd2' && !arch.inpainting && options.prediction
        ? options.prediction === 'epsilon'
          ? 512
          : 768
        : arch.sampleSize;

    // The VAE: the checkpoint's own, or a replacement.
    let vaeSource = source;
    let vaePrefix = arch.vaePrefix;
    let vaeArch = arch.vae;
    if (options.vae) {
      const openedVae = await openCheckpoint(options.vae);
      sources.push(openedVae.source);
      vaeSource = openedVae.source;
      vaePrefix = vaePrefixOf(vaeSource);
      const shapes = new Map(vaeSource.list().map((t) => [t.name, t.shape]));
      vaeArch = detectVae(shapes, vaePrefix, arch.vae.scalingFactor);
      if (vaeArch.zChannels !== arch.unet.outChannels) {
        throw new EngineError(
          'bad-input',
          `${path.basename(options.vae)} makes ${vaeArch.zChannels}-channel latents but the model uses ${arch.unet.outChannels}.`,
          { file: options.vae },
        );
      }
    } else if (!source.info(`${arch.vaePrefix}encoder.conv_in.weight`)) {
      throw new EngineError(
        'bad-input',
        `${path.basename(file)} has no VAE inside; choose a replacement VAE file for it.`,
        { file },
      );
    }

    // Disk space: the estimated output plus a margin, where the folder will be.
    const per = outBytes(precision);
    const parts = [
      ...arch.textEncoders.map((t) => ({ prefix: t.prefix, src: source })),
      { prefix: arch.unetPrefix, src: source },
      { prefix: `${vaePrefix}encoder.`, src: vaeSource },
      { prefix: `${vaePrefix}decoder.`, src: vaeSource },
    ];
    const bytesTotal = parts.reduce((a, p) => a + estimate(p.src.list(), p.prefix, per), 0);
    const parent = path.dirname(target);
    await mkdir(parent, { recursive: true });
    const free = await (options.freeBytes ?? defaultFreeBytes)(parent);
    const needed = Math.ceil(bytesTotal * 1.05) + (64 << 20);
    if (free < needed) {
      throw new EngineError(
        'bad-input',
        `Not enough disk space in ${parent}: the converted model needs about ${(needed / 1e9).toFixed(1)} GB and ${(free / 1e9).toFixed(1)} GB are free.`,
        { file: parent },
      );
    }

    temp = path.join(parent, `.${path.basename(target)}.partial-${randomBytes(4).toString('hex')}`);
    await mkdir(temp);

    // The graphs, one after another (each streams its weights to disk).
    const consumed = new Set<string>();
    let tensorsDone = 0;
    let bytesDone = 0;
    let finishedTotals = 0;
    const remainingEstimate = parts.map((p) => countUnder(p.src.list(), p.prefix));
    const run = async (
      phase: ConvertPhase,
      index: number,
      emit: (o: EmitOptions) => Promise<EmitResult>,
    ): Promise<void> => {
      throwIfAborted(signal);
      const later = remainingEstimate.slice(index + 1).reduce((a, b) => a + b, 0);
      report({
        phase,
        tensorsDone,
        tensorsTotal: finishedTotals + remainingEstimate[index]! + later,
        bytesDone,
        bytesTotal,
      });
      const result = await emit({
        dir: path.join(temp!, phase),
        precision,
        ...(options.attention ? { attention: options.attention } : {}),
        ...(options.target ? { target: options.target } : {}),
        ...(signal ? { signal } : {}),
        onTensor: (p) => {
          tensorsDone++;
          bytesDone += p.bytes;
          report({
            phase,
            tensorsDone,
            tensorsTotal: finishedTotals + p.total + later,
            bytesDone,
            bytesTotal,
          });
        },
      });
      finishedTotals += result.tensors;
      for (const key of result.consumed) consumed.add(key);
    };
    for (const [i, encoder] of arch.textEncoders.entries()) {
      await run(i === 0 ? 'text_encoder' : 'text_encoder_2', i, (o) =>
        emitTextEncoder(source, encoder, arch.family, o),
      );
    }
    const n = arch.textEncoders.length;
    await run('unet', n, (o) =>
      emitUnet(source, arch.unet, arch.unetPrefix, o, {
        controlResiduals: options.controlResiduals ?? false,
      }),
    );
    await run('vae_encoder', n + 1, (o) => emitVaeEncoder(vaeSource, vaeArch, vaePrefix, o));
    await run('vae_decoder', n + 2, (o) => emitVaeDecoder(vaeSource, vaeArch, vaePrefix, o));
    throwIfAborted(signal);
    report({ phase: 'finishing', tensorsDone, tensorsTotal: tensorsDone, bytesDone, bytesTotal });

    // Tokenizers, scheduler, configs, index.
    const vocabulary = await readClipVocabulary(options.vocabularyFile);
    for (const [i, encoder] of arch.textEncoders.entries()) {
      await writeTokenizerFolder(
        path.join(temp, i === 0 ? 'tokenizer' : 'tokenizer_2'),
        vocabulary,
        encoder.naming === 'openclip' ? '!' : 'endoftext',
      );
    }
    const scheduler = schedulerConfig(arch, prediction);
    const writeJson = async (rel: string, value: unknown): Promise<void> => {
      await mkdir(path.dirname(path.join(temp!, rel)), { recursive: true });
      await writeFile(path.join(temp!, rel), JSON.stringify(value, null, 2) + '\n');
    };
    await writeJson('scheduler/scheduler_config.json', scheduler);
    await writeJson('unet/config.json', unetConfig(arch, sampleSize));
    await writeJson('vae_encoder/config.json', vaeConfig(arch, sampleSize));
    await writeJson('vae_decoder/config.json', vaeConfig(arch, sampleSize));
    await writeJson('model_index.json', modelIndex(arch, scheduler._class_name as string));

    const unusedKeys = source
      .list()
      .map((t) => t.name)
      .filter((k) => !consumed.has(k) && !KNOWN_UNUSED.some((re) => re.test(k)))
      .filter((k) => !(options.vae && k.startsWith(arch.vaePrefix)));
    const record: ConversionRecord = {
      source: path.basename(file),
      sourceBytes: (await stat(file)).size,
      sha256: options.sha256 ?? null,
      vae: options.vae ? path.basename(options.vae) : null,
      precision,
      family: arch.family,
      inpainting: arch.inpainting,
      prediction,
      sampleSize,
      reasons: arch.reasons,
      unusedKeys,
      ...(options.target === 'cuda' ? { target: 'cuda' as const } : {}),
    };
    await writeJson(CONVERSION_RECORD, record);
    await writeFile(path.join(temp, 'README.md'), modelCard(record));
    throwIfAborted(signal);
    await rename(temp, target);
    temp = undefined;
    return {
      ...record,
      dir: target,
      bytesWritten: bytesDone,
      seconds: (performance.now() - started) / 1000,
    };
  } catch (e) {
    if (signal?.aborted && !isEngineError(e, 'cancelled')) throw cancelled();
    throw e;
  } finally {
    if (temp) await rm(temp, { recursive: true, force: true });
    for (const s of sources) await s.close();
  }
}
