/**
 * Converting a TAESD decoder file (madebyollin/taesd's taesd_decoder.pth / taesdxl_decoder.pth,
 * or a .safetensors of the same tensors, or diffusers' AutoencoderTiny) into a folder holding
 * model.onnx and its weights: the fast preview decoder (emit/taesd.ts). Like convertVae, it
 * writes into a temporary folder beside `outDir` and renames it into place at the end, so a
 * failed conversion leaves nothing behind.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import { emitTaesdDecoder } from './emit/index';
import { taesdLatentChannels } from './emit/taesd';
import { newOutputDir } from './into-place';
import { openCheckpoint } from './readers/index';

export interface ConvertTaesdOptions {
  /** Stored weights; default fp32 (the whole decoder is 5 MB, and fp32 needs no casts). */
  precision?: 'fp16' | 'fp32';
  signal?: AbortSignal;
}

/**
 * Converts the TAESD decoder `file` into `outDir` (which must not exist yet). Throws EngineError
 * 'model-unsupported' (one sentence naming the file) for a file that is not a TAESD decoder or
 * uses keys it does not know, 'bad-input' when `outDir` exists.
 */
export async function convertTaesd(
  file: string,
  outDir: string,
  options: ConvertTaesdOptions = {},
): Promise<{ dir: string; latentChannels: number }> {
  const target = await newOutputDir(outDir);
  const { source } = await openCheckpoint(file);
  let temp: string | undefined;
  try {
    const latentChannels = taesdLatentChannels(source);
    await mkdir(path.dirname(target), { recursive: true });
    temp = path.join(
      path.dirname(target),
      `.${path.basename(target)}.partial-${randomBytes(4).toString('hex')}`,
    );
    const result = await emitTaesdDecoder(source, {
      dir: temp,
      precision: options.precision ?? 'fp32',
      ...(options.signal ? { signal: options.signal } : {}),
    });
    const unknown = source.list().filter((t) => !result.consumed.has(t.name));
    if (unknown.length > 0) {
      throw new EngineError(
        'model-unsupported',
        `${path.basename(file)} has tensors a TAESD decoder does not have (${unknown
          .slice(0, 3)
          .map((t) => t.name)
          .join(', ')}${unknown.length > 3 ? ', ...' : ''}); is it an encoder or another model?`,
        { file },
      );
    }
    await rename(temp, target);
    temp = undefined;
    return { dir: target, latentChannels };
  } finally {
    if (temp) await rm(temp, { recursive: true, force: true });
    await source.close();
  }
}
