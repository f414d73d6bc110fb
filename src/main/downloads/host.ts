/**
 * The download queue over a library: finished model folders are added to it, a single file goes
 * where its header says it belongs (a checkpoint to the checkpoint import, models/imports.ts; a
 * LoRA, VAE, embedding or ControlNet to its folder in Settings, announced by onFolderFile;
 * anything else fails with a sentence), the Hub's endpoint and token come from HF_ENDPOINT and
 * HF_TOKEN (then Settings' token). Shared by the studio host and `npm run models`.
 */
import path from 'node:path';
import { StudioError, catalogueFiles } from '../../shared';
import { networkFolders } from '../adapters/scan';
import type { Library } from '../library/service';
import type { CheckpointImports } from '../models/imports';
import { controlNetFolder } from '../models/controlnets';
import { vaeFolder } from '../models/vaes';
import type { HostContext } from '../services';
import { freeFileName, moveFile } from './disk';
import { DownloadError } from './errors';
import { type DownloadedFileKind, detectFileKind } from './file-kind';
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
  /**
   * Hears that a downloaded file now lies in the Settings folder of its kind (called once it is
   * there, before the download is marked done), so the lists of that folder can be refreshed.
   */
  onFolderFile?: (kind: FolderFileKind, file: string) => void;
}

/** The downloaded files that go to a folder Settings names rather than to the library. */
export type FolderFileKind = Exclude<DownloadedFileKind, 'checkpoint'>;

const kindNames = {
  lora: 'a LoRA',
  embedding: 'an embedding',
  vae: 'a VAE',
  controlnet: 'a ControlNet',
} as const;

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
      // What the file is comes from its header, not its name (a LoRA is a .safetensors too).
      const detected = await detectFileKind(file);
      if (!detected.kind)
        throw new DownloadError('bad-input', `${detected.problem} It was kept as ${file}.`);
      if (detected.kind === 'checkpoint') {
        try {
          return { modelId: (await imports.import({ path: file })).id, path: file };
        } catch (err) {
          // The import's sentence says what is wrong with it; the file stays.
          if (err instanceof StudioError && err.code === 'invalid-argument') {
            options.onKeptFile?.(file, err.message);
            return { modelId: null, path: file };
          }
          throw err;
        }
      }
      const settings = context.settings.get();
      const folders = networkFolders(settings, context.dataDir);
      const dir = {
        lora: () => folders.loraDir,
        embedding: () => folders.embeddingsDir,
        vae: () => vaeFolder(settings, context.dataDir),
        controlnet: () => controlNetFolder(settings, context.dataDir),
      }[detected.kind]();
      const target = freeFileName(dir, path.basename(file));
      await moveFile(file, target);
      options.onKeptFile?.(target, `it is ${kindNames[detected.kind]}, so it went to that folder`);
      options.onFolderFile?.(detected.kind, target);
      return { modelId: null, path: target };
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

/** A Hub client with the endpoint and token as they are now (Settings may change the token). */
export function hubClientFor(
  options: Pick<LibraryDownloadsOptions, 'env' | 'settingsToken' | 'http'>,
): HubClient {
  return new HubClient(
    hubConfigFrom(options.env ?? process.env, options.settingsToken?.() ?? null),
    options.http,
  );
}
