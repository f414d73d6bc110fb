import { z } from 'zod';

/**
 * What "Check watermark" found in an image: the invisible watermark of Stable Diffusion's
 * reference scripts (the invisible-watermark library's dwtDct), read for each message those
 * scripts write.
 */
export const WatermarkReport = z.object({
  /** A known message was read (not chance). */
  found: z.boolean(),
  /** Its label ("StableDiffusionV1", "0xB3EC907BB19E"); null when none was found. */
  message: z.string().nullable(),
  /** Who writes that message; null when none was found. */
  writer: z.string().nullable(),
  /** Of the best-matching message: bits read as written, and its length. */
  matchingBits: z.number().int(),
  totalBits: z.number().int(),
  /** One sentence for a person. */
  summary: z.string(),
});
export type WatermarkReport = z.infer<typeof WatermarkReport>;
