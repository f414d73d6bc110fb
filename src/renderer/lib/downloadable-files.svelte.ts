import type { StudioApi } from '../../shared';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

/**
 * Files a Settings section fetches through the host's model manager (the content filter's
 * checker, the TAESD decoders): the status the host last reported (null when it could not say,
 * so the section shows nothing rather than a stale answer) and the sentence of the last download
 * that could not start. The section calls `refresh` when what it shows may have changed.
 */
export class DownloadableFiles<S> {
  status = $state.raw<S | null>(null);
  problem = $state<string | null>(null);

  constructor(
    private readonly studio: Studio,
    private readonly read: (api: StudioApi) => Promise<S>,
    private readonly start: (api: StudioApi) => Promise<unknown>,
  ) {}

  async refresh(): Promise<void> {
    const api = this.studio.api;
    try {
      this.status = api ? await this.read(api) : null;
    } catch {
      this.status = null;
    }
  }

  /** Queues the downloads, then lists them, so the section sees them under way at once. */
  async download(): Promise<void> {
    this.problem = null;
    const api = this.studio.api;
    if (!api) return;
    try {
      await this.start(api);
      await this.studio.downloads.load();
    } catch (err) {
      this.problem = describeError(err);
    }
  }
}
