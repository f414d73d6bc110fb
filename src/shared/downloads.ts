import { z } from 'zod';
import { Id } from './library';

/** What startDownload takes: a Hub repo id, its page, or one file's URL, and a revision. */
export const DownloadRequest = z
  .object({
    reference: z.string().trim().min(1).max(4096),
    /** A branch, tag or commit sha of a repo (default main). */
    revision: z.string().trim().min(1).max(255).optional(),
  })
  .strict();
export type DownloadRequest = z.infer<typeof DownloadRequest>;

export const downloadStates = [
  'queued',
  'running',
  'paused',
  'done',
  'failed',
  'cancelled',
] as const;

/** One download in the queue, as listed. */
export const DownloadEntry = z.object({
  id: Id,
  kind: z.enum(['repo', 'url']),
  /** The repo id, or the file's URL (or repo/path for a Hub file). */
  source: z.string(),
  /** The commit every file is pinned to (null for a plain URL). */
  sha: z.string().nullable(),
  name: z.string(),
  license: z.string().nullable(),
  state: z.enum(downloadStates),
  bytesTotal: z.number().nonnegative().nullable(),
  createdAt: z.number(),
  finishedAt: z.number().nullable(),
  /** Why it failed, as a sentence. */
  error: z.string().nullable(),
  /** The model it became, once done. */
  modelId: z.string().nullable(),
});
export type DownloadEntry = z.infer<typeof DownloadEntry>;

/** Progress of one download, pushed as the `downloadProgress` event (a few times a second). */
export const DownloadProgress = z.object({
  id: Id,
  name: z.string(),
  state: z.enum(downloadStates),
  bytesDone: z.number().nonnegative(),
  bytesTotal: z.number().nonnegative().nullable(),
  filesDone: z.number().int().nonnegative(),
  filesTotal: z.number().int().nonnegative(),
  bytesPerSecond: z.number().nonnegative(),
  etaSeconds: z.number().nonnegative().nullable(),
  error: z.string().nullable(),
});
export type DownloadProgress = z.infer<typeof DownloadProgress>;

/**
 * Where the Hugging Face token comes from; the token itself never reaches the studio.
 * 'environment': HF_TOKEN (not editable here); 'stored': set in Settings, kept encrypted;
 * 'memory': set in Settings, kept until the app closes (no way to encrypt it here); 'file':
 * huggingface_hub's token file (`hf auth login`), read only, and a token set here replaces it.
 */
export const HubTokenStatus = z.object({
  source: z.enum(['none', 'environment', 'stored', 'memory', 'file']),
  editable: z.boolean(),
  /** A sentence about how it is kept, when that is worth saying. */
  note: z.string().nullable(),
});
export type HubTokenStatus = z.infer<typeof HubTokenStatus>;

export const HubTokenInput = z.object({ token: z.string().trim().min(1).max(1000) }).strict();

/** A search of the Hub: by name, only repos tagged onnx unless `onnxOnly` is false. */
export const HubSearchRequest = z
  .object({
    query: z.string().trim().max(200),
    onnxOnly: z.boolean().default(true),
    limit: z.number().int().min(1).max(100).default(30),
  })
  .strict();
export type HubSearchRequest = z.input<typeof HubSearchRequest>;

/** One repo found, most downloaded first. */
export const HubSearchHit = z.object({
  id: z.string(),
  downloads: z.number().nonnegative(),
  likes: z.number().nonnegative(),
  lastModified: z.string().nullable(),
  /**
   * 'onnx': an ONNX diffusers folder (model_index.json and unet/model.onnx), loads as it is;
   * 'checkpoint': single checkpoint files (download one by its URL; it is converted);
   * 'unknown': neither, as far as its file list shows.
   */
  layout: z.enum(['onnx', 'checkpoint', 'unknown']),
  /** The checkpoint files of a 'checkpoint' repo, with the URL that downloads each at main. */
  checkpoints: z.array(z.object({ file: z.string(), url: z.string() })),
});
export type HubSearchHit = z.infer<typeof HubSearchHit>;

/** What a download would fetch, shown before it starts. */
export const DownloadPlanSummary = z.object({
  kind: z.enum(['repo', 'url']),
  source: z.string(),
  sha: z.string().nullable(),
  name: z.string(),
  license: z.string().nullable(),
  files: z.array(z.object({ path: z.string(), size: z.number().nullable() })),
  bytesTotal: z.number().nonnegative().nullable(),
});
export type DownloadPlanSummary = z.infer<typeof DownloadPlanSummary>;

/** A model downloaded from the Hub and whether its repo's main moved since. */
export const ModelUpdate = z.object({
  modelId: z.string(),
  /** The repo it came from. */
  source: z.string(),
  /** The commit it was downloaded at. */
  sha: z.string(),
  /** The commit main is at now, when checked. */
  latestSha: z.string().nullable(),
  checkedAt: z.number().nullable(),
  updateAvailable: z.boolean(),
  /** Why the last check failed, as a sentence. */
  error: z.string().nullable(),
});
export type ModelUpdate = z.infer<typeof ModelUpdate>;

/** A model removed from the studio: where its folder went, and how to bring it back. */
export const ModelTrashResult = z.object({
  /** 'os-trash' or 'app-trash' when its folder was moved; null when the folder was kept. */
  trashedTo: z.enum(['os-trash', 'app-trash']).nullable(),
  /** Brings the model (and its folder) back until the app closes. */
  undoToken: z.string(),
});
export type ModelTrashResult = z.infer<typeof ModelTrashResult>;
