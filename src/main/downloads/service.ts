/**
 * The studio's slice of the contract for downloads (listDownloads, startDownload, pause,
 * resume, cancel) over the library's download queue; progress goes out as `downloadProgress`
 * events, at most a few per second per download.
 */
import type { CatalogueFile, DownloadEntry, StudioService } from '../../shared';
import type { Library } from '../library/service';
import type { CheckpointImports } from '../models/imports';
import type { HostContext } from '../services';
import { type LibraryDownloadsOptions, libraryDownloads } from './host';
import type { DownloadManager } from './manager';
import type { DownloadRow } from './store';

export class DownloadService {
  readonly manager: DownloadManager;

  constructor(
    context: HostContext,
    library: Library,
    imports: CheckpointImports,
    options: LibraryDownloadsOptions = {},
  ) {
    this.manager = libraryDownloads(context, library, imports, {
      progressIntervalMs: 250,
      ...options,
      onProgress: (p) => context.events.emit('downloadProgress', p),
      onKeptFile: (file, why) => context.log(`downloaded ${file}; ${why}`),
    });
  }

  /** This service's slice of the contract (a contract change fails the type check here). */
  readonly methods = {
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
  } satisfies Pick<
    StudioService,
    'listDownloads' | 'startDownload' | 'pauseDownload' | 'resumeDownload' | 'cancelDownload'
  >;

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

  close(): Promise<void> {
    return this.manager.close();
  }
}

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
