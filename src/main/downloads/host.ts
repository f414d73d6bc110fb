/**
 * The download queue over a library: finished model folders are added to it, single checkpoint
 * files go through the checkpoint import (models/imports.ts), the Hub's endpoint and token come
 * from HF_ENDPOINT and HF_TOKEN (then Settings' token). Shared by the studio host and
 * `npm run models`.
 */
import path from 'node:path';
import { StudioError, catalogueFiles } from '../../shared';
import type { Library } from '../library/service';
import type { CheckpointImports } from '../models/imports';
import { isCheckpointFile } from '../models/checkpoint-cache';
import type { HostContext } from '../services';
import { HubClient, hubConfigFrom } from './hub';
import type { HttpOptions } from './http';
import {
  type DownloadHost,
  type DownloadManagerOptions,
  type DownloadProgress,
  DownloadManager,
} from './manager';

export interface LibraryDownloadsOptions extends DownloadManagerOptions {
  env?: NodeJS.ProcessEnv;
  /** The token from Settings (decrypted by the shell), used when HF_TOKEN is unset. */
  settingsToken?: () => string | null;
  http?: Partial<HttpOptions>;
  onProgress?: (p: DownloadProgress) => void;
  /** Hears what happened to a downloaded file that is not a model (a LoRA, a VAE...). */
  onKeptFile?: (file: string, why: string) => void;
}

/** A DownloadManager that installs into `library`; call `start()` once the library is ready. */
export function libraryDownloads(
  context: HostContext,
  library: Library,
  imports: CheckpointImports,
  options: LibraryDownloadsOptions = {},
): DownloadManager {
  const host: DownloadHost = {
    dataDir: context.dataDir,
    hub: () =>
      new HubClient(
        hubConfigFrom(options.env ?? process.env, options.settingsToken?.() ?? null),
        options.http,
      ),
    addModel: async (folder) => (await library.addModel(folder)).id,
    importFile: async (file) => {
      if (!isCheckpointFile(file)) {
        options.onKeptFile?.(file, 'it is not a checkpoint file, so it was kept as it is');
        return null;
      }
      try {
        return (await imports.import({ path: file })).id;
      } catch (err) {
        // A LoRA or a VAE is a file worth keeping; the import's sentence says what it is.
        if (err instanceof StudioError && err.code === 'invalid-argument') {
          options.onKeptFile?.(file, err.message);
          return null;
        }
        throw err;
      }
    },
    // A catalogue file (the content filter's checker) goes where the studio looks for it.
    placeFile: (row) => {
      const entry = catalogueFiles.find((f) => row.source === `${f.repo}/${f.file}`);
      return entry ? path.join(context.dataDir, ...entry.target.split('/')) : null;
    },
    onProgress: options.onProgress,
    log: (line) => context.log(line),
  };
  return new DownloadManager(library.database, host, options);
}
