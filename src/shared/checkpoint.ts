import { z } from 'zod';

/**
 * Importing a single-file checkpoint (.safetensors, .ckpt) into the models table: the host
 * converts it once into its data folder (keyed by the file's sha256) and registers the result.
 */
/**
 * File name endings taken as single-file checkpoints rather than model folders (`.bin` is what
 * some torch.save files are called; the host's reader goes by the first bytes, not the name).
 */
export const checkpointFileExtensions = ['.safetensors', '.ckpt', '.pt', '.pth', '.bin'] as const;

/** Whether a file name ends like a checkpoint (the studio's drop and pick handling). */
export function isCheckpointFileName(name: string): boolean {
  const dot = name.lastIndexOf('.');
  return (
    dot > 0 &&
    (checkpointFileExtensions as readonly string[]).includes(name.slice(dot).toLowerCase())
  );
}

export const CheckpointImportRequest = z
  .object({
    /** The checkpoint file, on the host's disk. */
    path: z.string().min(1).max(4096),
    /** A VAE-only file used instead of the checkpoint's own. */
    vae: z.string().min(1).max(4096).optional(),
    precision: z.enum(['fp16', 'fp32']).optional(),
    /** For SD 2.x files that do not say which they are. */
    prediction: z.enum(['epsilon', 'v_prediction']).optional(),
    /**
     * A UNet that takes ControlNet residuals (issue 19): the model ControlNet units can guide.
     * Converted and cached apart from the plain one; without units it gives the same images.
     */
    controlnet: z.boolean().optional(),
  })
  .strict();
export type CheckpointImportRequest = z.infer<typeof CheckpointImportRequest>;

/** Progress of an import, pushed as the `checkpointImport` event (a few times a second). */
export const CheckpointImportProgress = z.object({
  /** The file being imported, as the request named it. */
  path: z.string(),
  /** hashing, then the component being written (text_encoder, unet, ...), then done/failed. */
  phase: z.string(),
  tensorsDone: z.number().int().nonnegative(),
  tensorsTotal: z.number().int().nonnegative(),
  bytesDone: z.number().nonnegative(),
  bytesTotal: z.number().nonnegative(),
  mbPerSecond: z.number().nonnegative(),
  etaSeconds: z.number().nonnegative().nullable(),
  /** Set when phase is 'failed': the sentence to show. */
  error: z.string().nullable(),
});
export type CheckpointImportProgress = z.infer<typeof CheckpointImportProgress>;
