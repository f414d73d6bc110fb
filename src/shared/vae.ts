import { z } from 'zod';

/** File name endings offered as replacement VAEs (VAE-only safetensors or torch files). */
export const vaeFileExtensions = ['.safetensors', '.ckpt', '.pt', '.pth'] as const;

/** One VAE-only file in the studio's VAE folder. */
export const VaeFile = z.object({
  /** The file's name with its extension (what GenerationSettings.vae and A1111's `VAE:` hold). */
  name: z.string(),
  bytes: z.number().int().nonnegative(),
});
export type VaeFile = z.infer<typeof VaeFile>;

/** The VAE folder (Settings.vaeDir, else the data folder's vae/) and its VAE files by name. */
export const VaeList = z.object({
  folder: z.string(),
  files: z.array(VaeFile),
});
export type VaeList = z.infer<typeof VaeList>;
