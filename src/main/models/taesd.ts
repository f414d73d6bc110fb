/**
 * TAESD decoders for the live previews and the fast decode (issue 17 item 5): the files live in
 * `<data folder>/models/taesd/` under madebyollin/taesd's names (taesd_decoder.safetensors or
 * .pth for SD 1.x/2.x, taesdxl_decoder.* for SDXL); the one a model's family takes
 * (taesdVariantFor) is converted once into the data folder's cache (ensureTaesdConverted) and
 * handed to the engine as `taesdDir`.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import {
  type GenerationSettings,
  type PreviewDecoderStatus,
  type TaesdVariant,
  taesdFileExtensions,
  taesdFileStems,
  taesdVariantFor,
  taesdVariants,
} from '../../shared';
import { describeEngineError } from '../../engine/describe-error';
import { isEngineError } from '../../engine/errors';
import type { HostContext } from '../services';
import { ensureTaesdConverted } from './checkpoint-cache';

/**
 * The infotext field of a fast (TAESD) decode: A1111's name for its decode method setting
 * (`VAE Decoder`, sd_vae_decode_method: Full or TAESD); nothing for the full VAE.
 */
export function taesdInfotextFields(settings: Pick<GenerationSettings, 'fastDecode'>): {
  'VAE Decoder'?: string;
} {
  return settings.fastDecode ? { 'VAE Decoder': 'TAESD' } : {};
}

/** Where the studio looks for TAESD decoder files. */
export const taesdFolder = (dataDir: string): string => path.join(dataDir, 'models', 'taesd');

/** The decoder file of `variant` in `folder` (.safetensors before .pth, .pt), or null. */
export async function findTaesdFile(folder: string, variant: TaesdVariant): Promise<string | null> {
  for (const ext of taesdFileExtensions) {
    const file = path.join(folder, taesdFileStems[variant] + ext);
    if ((await stat(file).catch(() => null))?.isFile()) return file;
  }
  return null;
}

/** Which TAESD decoders the data folder has (Settings shows it, and offers the missing ones). */
export async function previewDecoderStatus(dataDir: string): Promise<PreviewDecoderStatus> {
  const folder = taesdFolder(dataDir);
  return Promise.all(
    taesdVariants.map(async (variant) => ({
      variant,
      file: path.join(folder, `${taesdFileStems[variant]}.safetensors`),
      present: (await findTaesdFile(folder, variant)) !== null,
    })),
  );
}

/** The TAESD decoders of the data folder, for the jobs that preview or fast-decode with them. */
export class TaesdService {
  constructor(private readonly context: Pick<HostContext, 'dataDir' | 'log'>) {}

  folder(): string {
    return taesdFolder(this.context.dataDir);
  }

  /** Which variants have a decoder file in the folder. */
  async present(): Promise<Record<TaesdVariant, boolean>> {
    const out = { taesd: false, taesdxl: false };
    for (const v of taesdVariants) out[v] = (await findTaesdFile(this.folder(), v)) !== null;
    return out;
  }

  /**
   * The converted decoder for a model of `family`, or null when the family has none, the
   * folder lacks its file, or the file cannot be converted (logged in one sentence: a broken
   * preview decoder must not cost the generation; the engine then uses latent previews and the
   * VAE). A cancellation is thrown.
   */
  async prepare(
    family: string | null,
    options: { signal?: AbortSignal } = {},
  ): Promise<{ dir: string; variant: TaesdVariant } | null> {
    const variant = family ? taesdVariantFor(family) : null;
    if (!variant) return null;
    const file = await findTaesdFile(this.folder(), variant);
    if (!file) return null;
    try {
      const { dir } = await ensureTaesdConverted(file, {
        dataDir: this.context.dataDir,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      return { dir, variant };
    } catch (e) {
      if (isEngineError(e, 'cancelled') || options.signal?.aborted) throw e;
      this.context.log(`The TAESD decoder ${file} was not used: ${describeEngineError(e).message}`);
      return null;
    }
  }
}
