/**
 * Converting a VAE-only file (the ft-MSE VAE, SDXL's fp16-fix VAE: ldm naming, with or without
 * `first_stage_model.`) on its own into `vae_encoder/` and `vae_decoder/`, the two components
 * a generation can use instead of its model's (issue 11 item 4). Like convertCheckpoint, it
 * writes into a temporary folder beside `outDir` and renames it into place at the end, so a
 * failed or cancelled conversion leaves nothing. The latent scale is the model's, not the VAE's
 * (it is outside both graphs), so the configs written here carry none.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import { type ConvertProgress, vaePrefixOf } from './convert';
import { detectVae } from './detect';
import { emitVaeDecoder, emitVaeEncoder } from './emit/index';
import { openCheckpoint } from './readers/index';
import type { VaeArchitecture } from './types';

/** `outDir` resolved; throws 'bad-input' when it exists (a conversion never overwrites). */
export async function newOutputFolder(outDir: string): Promise<string> {
  const target = path.resolve(outDir);
  if (await stat(target).catch(() => null)) {
    throw new EngineError('bad-input', `${target} already exists; choose a new output folder.`, {
      file: target,
    });
  }
  return target;
}

/** A hidden temporary folder beside `target`, renamed into place when the conversion is done. */
export async function stagingFolderFor(target: string): Promise<string> {
  await mkdir(path.dirname(target), { recursive: true });
  return path.join(
    path.dirname(target),
    `.${path.basename(target)}.partial-${randomBytes(4).toString('hex')}`,
  );
}

/** Written beside vae_encoder/ and vae_decoder/; read back to reuse a conversion. */
export const VAE_RECORD = 'vae.json';

/** What was converted, as recorded in the output's `vae.json`. */
export interface VaeConversionRecord {
  /** The VAE file's name (not its path). */
  source: string;
  sourceBytes: number;
  /** The file's sha256 (hex), when the caller has it: A1111's `VAE hash:` is its first 10 hex. */
  sha256: string | null;
  precision: 'fp16' | 'fp32';
  /** Its ddconfig as read from the shapes (the latent scale belongs to the model). */
  vae: Omit<VaeArchitecture, 'scalingFactor'>;
}

export interface ConvertVaeOptions {
  precision?: 'fp16' | 'fp32';
  sha256?: string;
  signal?: AbortSignal;
  /** After each weight written: phase vae_encoder or vae_decoder, tensors, MB/s, ETA. */
  onProgress?: (p: ConvertProgress) => void;
}

/**
 * Converts the VAE-only `file` into `outDir` (which must not exist yet): vae_encoder/ and
 * vae_decoder/ with the inputs and outputs of diffusers' ONNX export, and vae.json. Throws
 * EngineError 'model-unsupported' for a file that is not an ldm-named VAE, 'bad-input' when
 * `outDir` exists, 'cancelled' on abort.
 */
export async function convertVae(
  file: string,
  outDir: string,
  options: ConvertVaeOptions = {},
): Promise<VaeConversionRecord & { dir: string }> {
  const precision = options.precision ?? 'fp16';
  const target = await newOutputFolder(outDir);
  const { source } = await openCheckpoint(file);
  let temp: string | undefined;
  try {
    const prefix = vaePrefixOf(source);
    const shapes = new Map(source.list().map((t) => [t.name, t.shape]));
    const { scalingFactor: _unused, ...vae } = detectVae(shapes, prefix, 0);
    temp = await stagingFolderFor(target);
    const emitted = { precision, ...(options.signal ? { signal: options.signal } : {}) };
    const graphs = { ...vae, scalingFactor: 0 };
    // Totals come from dry runs (graphs built, nothing written), so progress counts both parts.
    const encoderPlan = await emitVaeEncoder(source, graphs, prefix, {
      dir: path.join(temp, 'vae_encoder'),
      ...emitted,
      dryRun: true,
    });
    const decoderPlan = await emitVaeDecoder(source, graphs, prefix, {
      dir: path.join(temp, 'vae_decoder'),
      ...emitted,
      dryRun: true,
    });
    const tensorsTotal = encoderPlan.tensors + decoderPlan.tensors;
    const bytesTotal = encoderPlan.bytes + decoderPlan.bytes;
    const started = performance.now();
    let tensorsDone = 0;
    let bytesDone = 0;
    const onTensor =
      (phase: 'vae_encoder' | 'vae_decoder') =>
      (p: { bytes: number }): void => {
        tensorsDone++;
        bytesDone += p.bytes;
        if (!options.onProgress) return;
        const rate = bytesDone / Math.max(1e-3, (performance.now() - started) / 1000);
        options.onProgress({
          phase,
          tensorsDone,
          tensorsTotal,
          bytesDone,
          bytesTotal,
          mbPerSecond: rate / 1e6,
          etaSeconds: rate > 0 ? Math.max(0, (bytesTotal - bytesDone) / rate) : null,
        });
      };
    await emitVaeEncoder(source, graphs, prefix, {
      dir: path.join(temp, 'vae_encoder'),
      ...emitted,
      onTensor: onTensor('vae_encoder'),
    });
    await emitVaeDecoder(source, graphs, prefix, {
      dir: path.join(temp, 'vae_decoder'),
      ...emitted,
      onTensor: onTensor('vae_decoder'),
    });
    const config = `${JSON.stringify({ _class_name: 'AutoencoderKL', latent_channels: vae.zChannels }, null, 2)}\n`;
    await writeFile(path.join(temp, 'vae_encoder', 'config.json'), config);
    await writeFile(path.join(temp, 'vae_decoder', 'config.json'), config);
    const record: VaeConversionRecord = {
      source: path.basename(file),
      sourceBytes: (await stat(file)).size,
      sha256: options.sha256 ?? null,
      precision,
      vae,
    };
    await writeFile(path.join(temp, VAE_RECORD), `${JSON.stringify(record, null, 2)}\n`);
    if (options.signal?.aborted)
      throw new EngineError('cancelled', 'The conversion was cancelled.');
    await rename(temp, target);
    temp = undefined;
    return { ...record, dir: target };
  } finally {
    if (temp) await rm(temp, { recursive: true, force: true });
    await source.close();
  }
}
