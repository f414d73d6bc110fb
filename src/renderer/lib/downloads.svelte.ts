import type { DownloadEntry, DownloadProgress, ModelUpdate } from '../../shared';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

/**
 * Models -> Download: the host's download queue (a Hub repo or a file URL, or a catalogue
 * entry), with the running download's progress from `downloadProgress` events. The host does
 * the work and keeps the queue across restarts; this only shows it and sends the buttons.
 */
export class Downloads {
  list = $state.raw<DownloadEntry[]>([]);
  /** The latest progress of each download, by id. */
  progress = $state.raw<Record<string, DownloadProgress>>({});
  /** The last failure to start one, as a sentence. */
  problem = $state<string | null>(null);
  starting = $state(false);
  /** Downloaded models and whether their repo's main moved, by model id. */
  updates = $state.raw<Record<string, ModelUpdate>>({});
  checkingUpdates = $state(false);

  constructor(private readonly studio: Studio) {}

  async load(): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    try {
      this.list = await api.listDownloads();
    } catch (err) {
      this.problem = describeError(err);
    }
  }

  /**
   * Asks whether downloaded models have updates: `force` asks the Hub now; otherwise the host
   * answers from what it learnt in the last day.
   */
  async checkUpdates(force = false): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    this.checkingUpdates = true;
    try {
      const list = await api.checkModelUpdates({ force });
      this.updates = Object.fromEntries(list.map((u) => [u.modelId, u]));
    } catch (err) {
      if (force) this.studio.notices.error(err, 'Could not check for updates');
    } finally {
      this.checkingUpdates = false;
    }
  }

  /** Downloads the model's repo at main beside it; the model switches once it is verified. */
  async update(modelId: string): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    try {
      await api.updateModel({ modelId });
      await this.load();
    } catch (err) {
      this.studio.notices.error(err, 'Could not start the update');
    }
  }

  /** An update of this model that is on its way (queued, running or paused). */
  updating(modelId: string): boolean {
    const u = this.updates[modelId];
    return (
      !!u?.latestSha &&
      this.list.some(
        (d) =>
          d.sha === u.latestSha &&
          d.source === u.source &&
          (d.state === 'queued' || d.state === 'running' || d.state === 'paused'),
      )
    );
  }

  /** Where a model came from ("owner/name@sha"), when a download made it. */
  sourceOf(modelId: string): string | null {
    const d = this.list.find((x) => x.modelId === modelId && x.state === 'done');
    return d ? (d.sha ? `${d.source}@${d.sha}` : d.source) : null;
  }

  /** From the host's `downloadProgress` event. */
  onProgress(p: DownloadProgress): void {
    const before = this.progress[p.id]?.state;
    this.progress = { ...this.progress, [p.id]: p };
    // A new state (done, failed, paused...) changes the list's row; a finished update changes
    // what the models table says about updates.
    if (before !== p.state) {
      void this.load();
      if (p.state === 'done') void this.checkUpdates();
    }
  }

  /** Queues `reference` (at `revision`, a commit a plan showed, when given). */
  async start(reference: string, revision: string | null = null): Promise<boolean> {
    const api = this.studio.api;
    const text = reference.trim();
    if (!api || !text) return false;
    this.starting = true;
    this.problem = null;
    try {
      await api.startDownload({ reference: text, ...(revision ? { revision } : {}) });
      await this.load();
      return true;
    } catch (err) {
      this.problem = describeError(err);
      return false;
    } finally {
      this.starting = false;
    }
  }

  async act(action: 'pause' | 'resume' | 'cancel', id: string): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    try {
      if (action === 'pause') await api.pauseDownload({ id });
      else if (action === 'resume') await api.resumeDownload({ id });
      else await api.cancelDownload({ id });
      await this.load();
    } catch (err) {
      this.studio.notices.error(err, `Could not ${action} the download`);
    }
  }
}

/** "120 MB of 4.3 GB, 35 MB/s, 2 min left" for a progress line. */
export function describeDownload(
  entry: DownloadEntry,
  p: DownloadProgress | undefined,
  formatBytes: (n: number) => string,
): string {
  if (entry.state === 'done') return 'Downloaded and verified';
  if (entry.state === 'failed') return entry.error ?? 'Failed';
  if (entry.state === 'cancelled') return 'Cancelled';
  const done = p?.bytesDone ?? 0;
  const total = entry.bytesTotal ?? p?.bytesTotal ?? null;
  const parts = [`${formatBytes(done)}${total !== null ? ` of ${formatBytes(total)}` : ''}`];
  if (p && entry.state === 'running') {
    if (p.bytesPerSecond > 0) parts.push(`${formatBytes(p.bytesPerSecond)}/s`);
    if (p.etaSeconds !== null)
      parts.push(
        p.etaSeconds >= 120
          ? `${Math.round(p.etaSeconds / 60)} min left`
          : `${p.etaSeconds} s left`,
      );
  }
  if (entry.state === 'paused') parts.push('paused');
  if (entry.state === 'queued') parts.push('waiting');
  return parts.join(', ');
}
