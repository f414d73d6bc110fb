/**
 * The studio's slice of the contract for downloads and downloaded models: the queue
 * (listDownloads, startDownload, pause, resume, cancel, planDownload), Hub search, the Hub token,
 * updates of downloaded models, and removing a model to the trash with undo. Progress goes out
 * as `downloadProgress` events, at most a few per second per download; a LoRA, embedding, VAE or
 * ControlNet file placed in its folder as a `modelFileAdded` event.
 */
import type { CatalogueFile, DownloadEntry, StudioService } from '../../shared';
import type { Library } from '../library/service';
import type { CheckpointImports } from '../models/imports';
import type { HostContext } from '../services';
import {
  type FolderFileKind,
  type LibraryDownloadsOptions,
  hubClientFor,
  libraryDownloads,
} from './host';
import type { DownloadManager } from './manager';
import { ModelTrash } from './model-trash';
import { planDownload } from './plan';
import { searchHitOf } from './search';
import type { DownloadRow } from './store';
import { HubTokenStore } from './token';
import { ModelUpdates } from './updates';

export interface DownloadServiceOptions extends LibraryDownloadsOptions {
  /**
   * Drops what the host caches of a folder's listing (the LoRA and embedding scan) when a
   * download put a file of `kind` there; called before `modelFileAdded` goes out.
   */
  forgetListing?: (kind: FolderFileKind) => void;
}

export class DownloadService {
  readonly manager: DownloadManager;
  readonly tokens: HubTokenStore;
  readonly updates: ModelUpdates;
  readonly trash: ModelTrash;

  constructor(
    context: HostContext,
    library: Library,
    imports: CheckpointImports,
    options: DownloadServiceOptions = {},
  ) {
    this.tokens = new HubTokenStore(
      context.dataDir,
      context.desktop?.secrets ?? null,
      options.env ?? process.env,
      (line) => context.log(line),
    );
    const hubOptions = { ...options, settingsToken: () => this.tokens.token() };
    this.manager = libraryDownloads(context, library, imports, {
      progressIntervalMs: 250,
      ...hubOptions,
      replaceModel: (modelId, folder) => this.updates.replace(modelId, folder),
      onProgress: (p) => context.events.emit('downloadProgress', p),
      onKeptFile: (file, why) => context.log(`downloaded ${file}; ${why}`),
      // The pickers list the file at once, not after the next rescan (Refresh or a restart).
      onFolderFile: (kind, file) => {
        options.forgetListing?.(kind);
        context.events.emit('modelFileAdded', { kind, file });
      },
    });
    const hub = () => hubClientFor(hubOptions);
    this.updates = new ModelUpdates(context, library, this.manager, hub);
    this.trash = new ModelTrash(context, library);
    const guard = library.database.guard.bind(library.database);

    this.methods = {
      listDownloads: () => this.manager.list().map(toEntry),
      startDownload: async (input) =>
        toEntry(await this.manager.add(input.reference, { revision: input.revision ?? null })),
      pauseDownload: (input) => {
        this.manager.pause(input.id);
        return toEntry(this.manager.store.get(input.id)!);
      },
      resumeDownload: (input) => {
        this.manager.resume(input.id);
        return toEntry(this.manager.store.get(input.id)!);
      },
      cancelDownload: async (input) => {
        await this.manager.cancel(input.id);
        return toEntry(this.manager.store.get(input.id)!);
      },
      planDownload: async (input) => {
        const plan = await planDownload(hub(), input.reference, { revision: input.revision });
        return {
          kind: plan.kind,
          source: plan.source,
          sha: plan.sha,
          name: plan.name,
          license: plan.license,
          files: plan.files.map((f) => ({ path: f.path, size: f.size })),
          bytesTotal: plan.bytesTotal,
        };
      },
      searchHub: async (input) => {
        // A person is waiting on each keystroke's answer: one retry, not a minute of them.
        const client = hubClientFor({ ...hubOptions, http: { retries: 1, ...hubOptions.http } });
        const found = await client.search({
          query: input.query,
          tags: input.onnxOnly ? ['onnx'] : [],
          limit: input.limit,
        });
        return found.map((r) => searchHitOf(r, client));
      },
      getHubToken: async () => this.tokens.status(),
      setHubToken: async (input) => this.tokens.set(input.token),
      clearHubToken: async () => this.tokens.clear(),
      checkModelUpdates: (input) => guard(() => this.updates.check(input.force)),
      updateModel: async (input) => toEntry(await guard(() => this.updates.update(input.modelId))),
      trashModel: (input) => guard(() => this.trash.trash(input.id)),
      undoTrashModel: (input) => guard(() => this.trash.undo(input.token)),
    } satisfies Pick<StudioService, DownloadMethodName>;
  }

  /** This service's slice of the contract (a contract change fails the type check here). */
  readonly methods: Pick<StudioService, DownloadMethodName>;

  /**
   * Queues a catalogue file from the Hub the host is configured for (HF_ENDPOINT), pinned like
   * any Hub file; the download puts it at its target (DownloadHost.placeFile).
   */
  async startFile(entry: CatalogueFile): Promise<DownloadEntry> {
    const endpoint = this.manager.host.hub().config.endpoint;
    const file = entry.file.split('/').map(encodeURIComponent).join('/');
    return toEntry(
      await this.manager.add(`${endpoint}/${entry.repo}/resolve/${entry.revision}/${file}`),
    );
  }

  /** Starts the queue (after the library is ready): downloads a stop interrupted continue. */
  start(): void {
    this.manager.start();
  }

  async close(): Promise<void> {
    await this.manager.close();
    await this.trash.finish();
  }
}

type DownloadMethodName =
  | 'listDownloads'
  | 'startDownload'
  | 'pauseDownload'
  | 'resumeDownload'
  | 'cancelDownload'
  | 'planDownload'
  | 'searchHub'
  | 'getHubToken'
  | 'setHubToken'
  | 'clearHubToken'
  | 'checkModelUpdates'
  | 'updateModel'
  | 'trashModel'
  | 'undoTrashModel';

function toEntry(row: DownloadRow): DownloadEntry {
  return {
    id: row.id,
    kind: row.kind,
    source: row.source,
    sha: row.sha,
    name: row.name,
    license: row.license,
    state: row.state,
    bytesTotal: row.bytes_total,
    createdAt: row.created_at,
    finishedAt: row.finished_at,
    error: row.error_message,
    modelId: row.model_id,
  };
}
