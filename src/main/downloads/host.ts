/**
 * The download queue over a library: finished model folders are added to it, single checkpoint
 * files go through the checkpoint import (models/imports.ts), the Hub's endpoint and token come
 * from HF_ENDPOINT and HF_TOKEN (then Settings' token). Shared by the studio host and
 * `npm run models`.
 */
import { StudioError } from '../../shared';
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
  /** Switches a model to the verified folder of its update (see updates.ts). */
  replaceModel?: (modelId: string, folder: string) => Promise<string>;
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
    hub: () => hubClientFor(options),
    addModel: async (folder) => (await library.addModel(folder)).id,
    replaceModel: options.replaceModel,
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
    onProgress: options.onProgress,
    log: (line) => context.log(line),
  };
  return new DownloadManager(library.database, host, options);
}

/** A Hub client with the endpoint and token as they are now (Settings may change the token). */
export function hubClientFor(
  options: Pick<LibraryDownloadsOptions, 'env' | 'settingsToken' | 'http'>,
): HubClient {
  return new HubClient(
    hubConfigFrom(options.env ?? process.env, options.settingsToken?.() ?? null),
    options.http,
  );
}
