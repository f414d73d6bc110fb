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
