import { z } from 'zod';

export const executionProviders = ['auto', 'cpu', 'cuda', 'dml', 'coreml', 'webgpu'] as const;
export const ExecutionProviderPreference = z.enum(executionProviders);
export type ExecutionProviderPreference = z.infer<typeof ExecutionProviderPreference>;

/** An absolute path, POSIX (`/…`) or Windows (`C:\\…`, `\\\\server\\share`), of a `what`. */
const absolutePath = (what: string) =>
  z
    .string()
    .min(1)
    .max(4096)
    .refine((p) => /^(\/|[A-Za-z]:[\\/]|\\\\)/.test(p), {
      message: `Give the ${what} as an absolute path (starting with / or a drive letter).`,
    });
const AbsoluteFolder = absolutePath('folder');

/** User settings, persisted by the host. Every field has a default so old files keep loading. */
export const Settings = z.object({
  theme: z.enum(['system', 'light', 'dark']).default('system'),
  executionProvider: ExecutionProviderPreference.default('auto'),
  /** Intra-op threads for ONNX Runtime; 0 lets the engine pick (physical cores). */
  threads: z.number().int().min(0).max(256).default(0),
  /**
   * While no window of the desktop studio is focused: 'gentle' lowers the engine's priority and
   * stops its threads spinning, so the program in front keeps its speed (the generation takes
   * what that program leaves idle); while the machine runs on its battery, 'gentle' stops the
   * spinning (idle threads burn energy) and leaves the priority alone. 'full' keeps full speed.
   * The headless server has no window and no battery of the person's, and always runs at full
   * speed.
   */
  backgroundMode: z.enum(['gentle', 'full']).default('gentle'),
  /**
   * A folder (absolute path) every saved image is also exported to, as <image id>.png; null:
   * images stay in the library (the app's data folder) only.
   */
  outputDir: z.string().min(1).max(4096).nullable().default(null),
  /** Write generation parameters into PNGs (A1111 `parameters` text plus our JSON). */
  embedMetadata: z.boolean().default(true),
  /**
   * The folder (absolute path) whose VAE-only files (.safetensors, .ckpt, .pt) the studio offers
   * as replacement VAEs; null: the data folder's `vae/`.
   */
  vaeDir: z.string().min(1).max(4096).nullable().default(null),
  /**
   * The LoRA folder (absolute path), scanned recursively for `<lora:name:weight>` tags; null:
   * `models/Lora` in the data folder, where A1111 keeps them.
   */
  loraDir: AbsoluteFolder.nullable().default(null),
  /** The textual-inversion embeddings folder (absolute path); null: `embeddings` in the data folder. */
  embeddingsDir: AbsoluteFolder.nullable().default(null),
  /** The ControlNet folder (absolute path) the studio offers models from; null: `models/controlnet`. */
  controlnetDir: AbsoluteFolder.nullable().default(null),
  /**
   * Mark every saved generation with the invisible watermark of Stable Diffusion's reference
   * scripts (the invisible-watermark library's dwtDct; images of 256x256 pixels and more).
   */
  watermark: z.boolean().default(true),
  /**
   * The content filter (issue 18): Stable Diffusion's safety checker runs on every generated
   * image after decoding; its decision and scores go into the history and the PNG. Off by default.
   */
  contentFilter: z.boolean().default(false),
  /**
   * The safety checker file (absolute path; diffusers' model.safetensors of
   * CompVis/stable-diffusion-safety-checker), converted once into the data folder's cache; null:
   * `models/safety_checker/model.safetensors` in the data folder.
   */
  contentFilterModel: absolutePath('safety checker file').nullable().default(null),
  /**
   * Fast previews (TAESD): when `<data folder>/models/taesd/` holds the decoder for the model's
   * family, each live preview is the step's predicted image decoded by TAESD; off, or without
   * the decoder, the latent-RGB approximation.
   */
  taesdPreviews: z.boolean().default(true),
});
export type Settings = z.infer<typeof Settings>;

/** Where the content filter's checker is and whether it is there (for Settings to show). */
export const ContentFilterStatus = z.object({
  /** The checker file Settings selects: `contentFilterModel`, or the default in the data folder. */
  file: z.string(),
  /** True when `file` is the default place (where "Download the checker" puts it). */
  isDefault: z.boolean(),
  /** The file exists. */
  present: z.boolean(),
});
export type ContentFilterStatus = z.infer<typeof ContentFilterStatus>;

/** A partial update; unknown keys are refused rather than silently dropped. */
export const SettingsPatch = z
  .object({
    theme: Settings.shape.theme.unwrap(),
    executionProvider: ExecutionProviderPreference,
    threads: Settings.shape.threads.unwrap(),
    backgroundMode: Settings.shape.backgroundMode.unwrap(),
    outputDir: Settings.shape.outputDir.unwrap(),
    embedMetadata: Settings.shape.embedMetadata.unwrap(),
    vaeDir: Settings.shape.vaeDir.unwrap(),
    loraDir: Settings.shape.loraDir.unwrap(),
    embeddingsDir: Settings.shape.embeddingsDir.unwrap(),
    controlnetDir: Settings.shape.controlnetDir.unwrap(),
    watermark: Settings.shape.watermark.unwrap(),
    contentFilter: Settings.shape.contentFilter.unwrap(),
    contentFilterModel: Settings.shape.contentFilterModel.unwrap(),
    taesdPreviews: Settings.shape.taesdPreviews.unwrap(),
  })
  .partial()
  .strict();
export type SettingsPatch = z.infer<typeof SettingsPatch>;

export const defaultSettings: Settings = Settings.parse({});
