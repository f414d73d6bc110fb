/**
 * Converting a TAESD decoder file (madebyollin/taesd's taesd_decoder.pth / taesdxl_decoder.pth,
 * or a .safetensors of the same tensors, or diffusers' AutoencoderTiny) into a folder holding
 * model.onnx and its weights: the fast preview decoder (emit/taesd.ts). Like convertVae, it
 * writes into a temporary folder beside `outDir` and renames it into place at the end, so a
 * failed conversion leaves nothing behind.
 */
import path from 'node:path';
import { EngineError } from '../errors';
import { emitTaesdDecoder } from './emit/index';
import { taesdLatentChannels } from './emit/taesd';
import { intoPlace, newOutputDir } from './into-place';
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
  try {
    const latentChannels = taesdLatentChannels(source);
    return await intoPlace(target, options.signal, async (temp) => {
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
      return { dir: target, latentChannels };
    });
  } finally {
    await source.close();
  }
}
