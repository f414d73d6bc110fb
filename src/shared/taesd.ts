import { z } from 'zod';
import { isModelFamily, isSdxlFamily } from './families';

/**
 * TAESD, the tiny autoencoder (madebyollin/taesd, MIT): 'taesd' decodes SD 1.x/2.x latents,
 * 'taesdxl' SDXL's. Their decoders make the live previews and, when asked, a fast final decode.
 */
export const taesdVariants = ['taesd', 'taesdxl'] as const;
export type TaesdVariant = (typeof taesdVariants)[number];

/** The decoder file's name without extension, as madebyollin/taesd publishes it. */
export const taesdFileStems: Readonly<Record<TaesdVariant, string>> = {
  taesd: 'taesd_decoder',
  taesdxl: 'taesdxl_decoder',
};

/** Endings a TAESD decoder file may have (the .pth as published, or a .safetensors of it). */
export const taesdFileExtensions = ['.safetensors', '.pth', '.pt'] as const;

/**
 * The TAESD decoder that fits `family`'s latent space, or null when none does: SDXL-based
 * families take taesdxl, the SD 1.x/2.x-based ones taesd (SD 2's VAE is SD 1's), the x4
 * upscaler (its own 0.08333-scaled latents) and families this version does not know take none.
 */
export function taesdVariantFor(family: string): TaesdVariant | null {
  if (!isModelFamily(family) || family === 'x4-upscaler') return null;
  return isSdxlFamily(family) ? 'taesdxl' : 'taesd';
}

/**
 * What the live preview of each step shows: 'taesd' decodes the step's predicted image with
 * TAESD when a decoder for the model's family is present (else as 'latent'); 'latent' is the
 * latent-RGB approximation (a linear map of the latents, 1/8 of the size).
 */
export const PreviewDecoder = z.enum(['taesd', 'latent']);
export type PreviewDecoder = z.infer<typeof PreviewDecoder>;

/** Whether each TAESD decoder is in the data folder's models/taesd (getPreviewDecoders). */
export const PreviewDecoderStatus = z.array(
  z.object({
    variant: z.enum(taesdVariants),
    /** Where the studio looks for it first (the .safetensors name). */
    file: z.string(),
    present: z.boolean(),
  }),
);
export type PreviewDecoderStatus = z.infer<typeof PreviewDecoderStatus>;
