import type { DownloadPlanSummary, HubSearchHit } from '../../shared';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

/** How long typing pauses before the Hub is asked. */
export const searchDelayMs = 350;

/**
 * Models -> Download -> Search the Hub: a search as one types (debounced; an answer that a newer
 * query overtook is dropped), then a picked repo's plan (files, size, licence) before it is
 * queued. The host asks the Hub; this keeps what the panel shows.
 */
export class HubSearch {
  query = $state('');
  onnxOnly = $state(true);
  results = $state.raw<HubSearchHit[]>([]);
  searching = $state(false);
  /** Why the last search failed, as a sentence. */
  problem = $state<string | null>(null);
  /** The picked repo's plan, shown before it is downloaded. */
  plan = $state.raw<DownloadPlanSummary | null>(null);
  planning = $state<string | null>(null);
  #timer: ReturnType<typeof setTimeout> | null = null;
  /** Bumped by every new query and by cancel: answers to older ones are dropped. */
  #generation = 0;

  constructor(private readonly studio: Studio) {}

  /** The query or the filter changed: search after a pause in typing. */
  changed(): void {
    this.cancel();
    if (!this.query.trim()) {
      this.results = [];
      this.problem = null;
      return;
    }
    const generation = this.#generation;
    this.#timer = setTimeout(() => void this.#run(generation), searchDelayMs);
  }

  /** Stops the search on its way (its answer will be dropped). */
  cancel(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#generation++;
    this.searching = false;
  }

  async #run(generation: number): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    this.searching = true;
    try {
      const results = await api.searchHub({ query: this.query.trim(), onnxOnly: this.onnxOnly });
      if (generation !== this.#generation) return;
      this.results = results;
      this.problem = null;
    } catch (err) {
      if (generation !== this.#generation) return;
      this.results = [];
      this.problem = describeError(err);
    } finally {
      if (generation === this.#generation) this.searching = false;
    }
  }

  /** Resolves what downloading `reference` would fetch, to show before it starts. */
  async pick(reference: string): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    this.planning = reference;
    this.plan = null;
    this.problem = null;
    try {
      this.plan = await api.planDownload({ reference });
    } catch (err) {
      this.problem = describeError(err);
    } finally {
      this.planning = null;
    }
  }

  /** Queues the planned download, pinned to the commit the plan showed. */
  async confirm(): Promise<void> {
    const plan = this.plan;
    if (!plan) return;
    if (await this.studio.downloads.start(plan.source, plan.sha)) this.plan = null;
  }
}
