import { z } from 'zod';
import {
  GenerationFields,
  GenerationMode,
  GenerationSettings,
  ImportedControlUnit,
  SamplerName,
} from './generation';

/** Ids are opaque strings made by the host (UUIDs or integers as text). */
export const Id = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[A-Za-z0-9_-]+$/, 'must be an id');

// ---------------------------------------------------------------------------------------
// Models

/**
 * Settings a model's card recommends (our built-in models' about.json: `recommended`,
 * `example_prompts`); the studio adopts them when the model is chosen.
 */
export const ModelDefaults = z.object({
  sampler: SamplerName.nullable(),
  steps: z.number().int().min(1).max(500).nullable(),
  guidance: z.number().min(0).max(50).nullable(),
  /** A prompt that shows what the model knows; the prompt field's placeholder. */
  examplePrompt: z.string().max(1000).nullable(),
});
export type ModelDefaults = z.infer<typeof ModelDefaults>;

export const ModelEntry = z.object({
  id: Id,
  name: z.string(),
  path: z.string(),
  /** Engine family id (sd1, sd2-v, sdxl, inpaint, x4-upscaler, ...), null until inspected. */
  family: z.string().nullable(),
  /** Why the engine decided the family (one line each). */
  familyReasons: z.array(z.string()),
  nativeWidth: z.number().int().nullable(),
  nativeHeight: z.number().int().nullable(),
  bytes: z.number().nonnegative(),
  /** Shipped with the app (resources/models); cannot be removed. */
  builtIn: z.boolean(),
  /** A sentence about the model (the built-in one says how it was made). */
  description: z.string().nullable(),
  /** What the model's card recommends, if it says. */
  defaults: ModelDefaults.nullable(),
  status: z.enum(['ok', 'missing', 'error']),
  error: z.string().nullable(),
  addedAt: z.number(),
  /** Disk used by this model's generated images, in bytes. */
  imageBytes: z.number().nonnegative(),
});
export type ModelEntry = z.infer<typeof ModelEntry>;

// ---------------------------------------------------------------------------------------
// Images and uploads

/** An image given by the studio: drag-in, paste, a painted mask. Base64 of PNG/JPEG/WebP. */
export const ImageUpload = z
  .object({
    data: z.string().min(1).max(90_000_000, 'the image is too large (over 64 MB)'),
    purpose: z.enum(['init', 'mask', 'import']),
    name: z.string().max(255).optional(),
  })
  .strict();
export type ImageUpload = z.infer<typeof ImageUpload>;

/** A LoRA or embedding a generation used, by the name its prompt gives it. */
export const UsedNetwork = z.object({
  kind: z.enum(['lora', 'embedding']),
  name: z.string(),
  /** A1111's short hash (12 hex digits) when recorded. */
  hash: z.string().nullable(),
  /**
   * LoRAs: the tensors in the file and those that matched nothing in the model, as the engine
   * reported them (absent for embeddings and for generations recorded before they were kept).
   */
  tensors: z.number().int().nonnegative().optional(),
  unmatchedTensors: z.number().int().nonnegative().optional(),
});
export type UsedNetwork = z.infer<typeof UsedNetwork>;

/**
 * The sentence for a LoRA some of whose tensors matched nothing in the model it ran on, or null
 * when all matched (or the counts were not recorded).
 */
export function unmatchedNetworkNote(n: UsedNetwork): string | null {
  if (n.kind !== 'lora' || !n.unmatchedTensors || n.tensors === undefined) return null;
  return `${n.unmatchedTensors} of ${n.tensors} tensors of LoRA ${n.name} matched nothing in this model — it may be for another model.`;
}

export const UploadedImage = z.object({
  imageId: Id,
  /** Relative URL the studio can put in <img src> (/media/uploads/<id>), on both transports. */
  url: z.string(),
  width: z.number().int(),
  height: z.number().int(),
  /** For 'import': the generation settings read from the PNG (ours, A1111, ComfyUI, InvokeAI). */
  metadata: z
    .object({
      source: z.enum(['latent-studio', 'a1111', 'comfyui', 'invokeai', 'none']),
      settings: GenerationFields.partial(),
      /**
       * What could not be restored, one sentence each (a replacement VAE the image names that
       * is not in the VAE folder); absent when everything was.
       */
      notes: z.array(z.string()).optional(),
      /** The `Lora hashes` and `TI hashes` it names (A1111 infotext), to say which are missing. */
      networks: z.array(UsedNetwork).default([]),
      /**
       * A1111's `ControlNet N` units, without their control images (ours are in settings);
       * absent when it names none.
       */
      controlnets: z.array(ImportedControlUnit).optional(),
    })
    .nullable(),
});
export type UploadedImage = z.infer<typeof UploadedImage>;

/**
 * The content filter's verdict on one image (issue 18): diffusers' safety checker decision with
 * every score (round(cosine - threshold + adjustment, 3); above 0 flags a concept).
 */
export const ContentFilterVerdict = z.object({
  flagged: z.boolean(),
  /** The concepts whose score is above 0. */
  badConcepts: z.array(z.number().int()),
  /** One per special-care concept (3 in Stable Diffusion's checker). */
  specialScores: z.array(z.number()),
  /** One per concept (17 in Stable Diffusion's checker). */
  conceptScores: z.array(z.number()),
});
export type ContentFilterVerdict = z.infer<typeof ContentFilterVerdict>;

/** What the content filter said of an image; 'unchecked': the filter was off when it was made. */
export const ContentFilterState = z.enum(['flagged', 'clean', 'unchecked']);
export type ContentFilterState = z.infer<typeof ContentFilterState>;

/**
 * Any image a generation can name by id (`initImage`, `mask.image`): a library image or an
 * upload. What the studio needs to show it again (reusing a generation, after a reload).
 */
export const ImageRef = z.object({
  imageId: Id,
  kind: z.enum(['image', 'upload']),
  url: z.string(),
  width: z.number().int(),
  height: z.number().int(),
  /** The generation a library image belongs to; null for uploads. */
  generationId: Id.nullable(),
  /** A 'flagged' image is shown blurred until revealed; uploads are 'unchecked'. */
  contentFilter: ContentFilterState.default('unchecked'),
});
export type ImageRef = z.infer<typeof ImageRef>;

// ---------------------------------------------------------------------------------------
// Jobs (the durable queue)

export const JobState = z.enum(['queued', 'running', 'paused', 'done', 'failed', 'cancelled']);
export type JobState = z.infer<typeof JobState>;

export const Job = z.object({
  id: Id,
  state: JobState,
  /** Position among queued jobs (0 runs next); null when not queued. */
  position: z.number().int().nullable(),
  settings: GenerationSettings,
  createdAt: z.number(),
  startedAt: z.number().nullable(),
  finishedAt: z.number().nullable(),
  /** Steps done / total of the whole job (all batches), while running. */
  step: z.number().int(),
  total: z.number().int(),
  error: z.object({ code: z.string(), message: z.string() }).nullable(),
  /** The generation this job produced, once done. */
  generationId: Id.nullable(),
});
export type Job = z.infer<typeof Job>;

export const QueueState = z.object({
  paused: z.boolean(),
  /** Why the queue paused itself (a full disk), for the studio to show; null otherwise. */
  pausedReason: z.string().nullable().default(null),
  jobs: z.array(Job),
});
export type QueueState = z.infer<typeof QueueState>;

export const JobProgress = z.object({
  jobId: Id,
  stage: z.enum(['loading', 'text', 'encode', 'denoise', 'decode', 'saving']),
  step: z.number().int(),
  total: z.number().int(),
  elapsedMs: z.number(),
  etaMs: z.number().nullable(),
  /** A small PNG data URL of the live preview, every few steps. */
  preview: z.string().nullable(),
  /** The step the preview shows: it trails `step` by the steps run while it was encoded. */
  previewStep: z.number().int().nullable(),
});
export type JobProgress = z.infer<typeof JobProgress>;

// ---------------------------------------------------------------------------------------
// Gallery

export const GalleryItem = z.object({
  imageId: Id,
  generationId: Id,
  /** Relative URLs the studio can put in <img src>; the host serves them on both transports. */
  url: z.string(),
  thumbUrl: z.string(),
  width: z.number().int(),
  height: z.number().int(),
  prompt: z.string(),
  negativePrompt: z.string(),
  seed: z.number(),
  /**
   * Where the image sat in its batch under seedMode 'batch' (0 otherwise): with `seed` and the
   * generation's batch size, what makes this exact image again.
   */
  batchIndex: z.number().int().min(0),
  sampler: SamplerName,
  steps: z.number().int(),
  guidance: z.number(),
  mode: GenerationMode,
  modelName: z.string(),
  createdAt: z.number(),
  favorite: z.boolean(),
  rating: z.number().int().min(0).max(5),
  tags: z.array(z.string()),
  /** The file is gone from disk (found by the reconciler). */
  missing: z.boolean(),
  /** A 'flagged' image is shown blurred until the person reveals it. */
  contentFilter: ContentFilterState.default('unchecked'),
});
export type GalleryItem = z.infer<typeof GalleryItem>;

export const GallerySort = z.enum(['newest', 'oldest', 'rating']);

export const GalleryQuery = z
  .object({
    /** Full-text search over prompt and negative prompt (FTS5 syntax is escaped). */
    text: z.string().max(1000).optional(),
    modelId: Id.optional(),
    sampler: SamplerName.optional(),
    mode: GenerationMode.optional(),
    from: z.number().optional(),
    to: z.number().optional(),
    width: z.number().int().optional(),
    height: z.number().int().optional(),
    favorite: z.boolean().optional(),
    minRating: z.number().int().min(0).max(5).optional(),
    tag: z.string().max(100).optional(),
    /** Images whose prompt used this LoRA (`<lora:name:…>`, the name as tagged; any case). */
    lora: z.string().trim().min(1).max(1000).optional(),
    /** Only images the content filter flagged. */
    flagged: z.literal(true).optional(),
    /** Images made from the same prompt and settings with nearby seeds, grouped. */
    seedVariantsOf: Id.optional(),
    sort: GallerySort.default('newest'),
    cursor: z.string().max(200).nullable().optional(),
    /**
     * Skip this many matches instead of following a cursor: for jumping to any place of a large
     * gallery (the scroll bar). Cursors stay stable while images arrive; offsets do not.
     */
    offset: z.number().int().min(0).max(100_000_000).optional(),
    limit: z.number().int().min(1).max(500).default(100),
  })
  .strict();
export type GalleryQuery = z.infer<typeof GalleryQuery>;
export type GallerySort = z.infer<typeof GallerySort>;
/** GalleryQuery's defaults (sort order, page size), read from the schema. */
export const defaultGalleryQuery: GalleryQuery = GalleryQuery.parse({});

export const GalleryPage = z.object({
  items: z.array(GalleryItem),
  nextCursor: z.string().nullable(),
  /**
   * Matches, for the scroll bar and the count shown. Exact when `totalExact`; otherwise a lower
   * bound: a text, tag or LoRA search with more matches than its first page holds (and not
   * one tag or one LoRA alone, which are counted exactly) gives the matches found so far and
   * an estimate (`totalEstimate`), since counting each match costs a lookup. Filters on an
   * image's own columns are always counted exactly.
   */
  total: z.number().int(),
  /** False when there may be more matches than `total` (show it as "2,200+"). */
  totalExact: z.boolean(),
  /**
   * Not exact: about how many match, estimated from the search's index and its first page
   * (show it as "about 12,000"); absent when there is no estimate. It may be above or below
   * the truth, so the scroll bar follows `total` and the pages loaded, never the estimate.
   */
  totalEstimate: z.number().int().min(0).optional(),
});
export type GalleryPage = z.infer<typeof GalleryPage>;

export const GenerationDetail = z.object({
  generationId: Id,
  settings: GenerationSettings,
  images: z.array(GalleryItem),
  modelName: z.string(),
  family: z.string().nullable(),
  provider: z.string().nullable(),
  fallbackReason: z.string().nullable(),
  timings: z.record(z.string(), z.number()),
  createdAt: z.number(),
  parentId: Id.nullable(),
  childIds: z.array(Id),
  /** The A1111 `parameters` text, for "copy parameters". */
  parametersText: z.string(),
  /** The LoRAs and embeddings it used, with A1111's short hash when it was recorded. */
  networks: z.array(UsedNetwork).default([]),
  /** The invisible watermark its images were saved with (e.g. "StableDiffusionV1"); null: none. */
  watermark: z.string().nullable(),
  /** The content filter's verdict and scores per image id (images it checked only). */
  contentFilter: z.record(z.string(), ContentFilterVerdict).default({}),
});
export type GenerationDetail = z.infer<typeof GenerationDetail>;

export const DeleteResult = z.object({
  deleted: z.number().int(),
  /** Pass to undoDelete within the session to restore them. */
  undoToken: z.string().nullable(),
  /** Where they went: the OS trash (desktop) or the app's trash folder (headless). */
  trashedTo: z.enum(['os-trash', 'app-trash']),
});
export type DeleteResult = z.infer<typeof DeleteResult>;

export const LibraryStatus = z.object({
  /** The database failed its integrity check: the library is read-only until restored. */
  readOnly: z.boolean(),
  problem: z.string().nullable(),
  lastBackupAt: z.number().nullable(),
  generations: z.number().int(),
  images: z.number().int(),
  bytes: z.number(),
});
export type LibraryStatus = z.infer<typeof LibraryStatus>;
