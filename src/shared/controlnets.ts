import { z } from 'zod';
import { ControlPreprocessor } from './generation';
import { Id } from './library';

/** File name endings offered as ControlNet models (ldm-named single files, issue 19). */
export const controlNetFileExtensions = ['.safetensors'] as const;

/** One ControlNet file in the studio's ControlNet folder. */
export const ControlNetFile = z.object({
  /** The file's name with its extension (what a unit's `model` holds). */
  name: z.string(),
  bytes: z.number().int().nonnegative(),
});
export type ControlNetFile = z.infer<typeof ControlNetFile>;

/** The ControlNet folder (Settings.controlnetDir, else models/controlnet in the data folder). */
export const ControlNetList = z.object({
  folder: z.string(),
  files: z.array(ControlNetFile),
});
export type ControlNetList = z.infer<typeof ControlNetList>;

/**
 * The largest side a control preview is computed at: the host runs the preprocessor on its own
 * thread, and a 2048-pixel canny takes about a second there.
 */
export const maxControlPreviewSide = 2048;
const PreviewSide = z.number().int().min(8).max(maxControlPreviewSide);

/**
 * A control image to preprocess as a unit would: resized to the output size, then canny (with
 * its thresholds) or nothing. The image is a library image or an upload, by id.
 */
export const ControlPreviewRequest = z
  .object({
    image: Id,
    preprocessor: ControlPreprocessor,
    lowThreshold: z.number().min(0).max(1000).default(100),
    highThreshold: z.number().min(0).max(1000).default(200),
    width: PreviewSide,
    height: PreviewSide,
  })
  .strict()
  .refine((r) => r.lowThreshold <= r.highThreshold, {
    message: 'the low threshold must not exceed the high one',
    path: ['lowThreshold'],
  });
export type ControlPreviewRequest = z.input<typeof ControlPreviewRequest>;

/** What the ControlNet will see: the preprocessed control image as a PNG data URL. */
export const ControlPreview = z.object({
  dataUrl: z.string(),
  width: z.number().int(),
  height: z.number().int(),
});
export type ControlPreview = z.infer<typeof ControlPreview>;
