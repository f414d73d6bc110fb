import type { VaeList } from '../../shared';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

/** The replacement VAEs the host offers: the VAE-only files of its VAE folder. */
export class Vaes {
  list = $state.raw<VaeList | null>(null);
  /** Why the folder could not be listed. */
  problem = $state<string | null>(null);

  constructor(private readonly studio: Studio) {}

  /** Names to offer: the folder's files, and the form's choice when the folder lacks it. */
  names = $derived.by(() => {
    const names = (this.list?.files ?? []).map((f) => f.name);
    const chosen = this.studio.form.vae;
    return chosen && !names.includes(chosen) ? [...names, chosen] : names;
  });

  /** Whether `name` is a file of the VAE folder (as last listed). */
  has(name: string): boolean {
    return this.list?.files.some((f) => f.name === name) ?? false;
  }

  /** Reads the folder again (at start, when the folder setting changes, when the list opens). */
  async load(): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    try {
      this.list = await api.listVaes();
      this.problem = null;
    } catch (err) {
      this.problem = describeError(err);
    }
  }
}
