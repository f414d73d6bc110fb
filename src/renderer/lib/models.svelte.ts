import { type ModelEntry, familyCapabilities } from '../../shared';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

/** The models registry as the studio sees it. */
export class Models {
  list = $state.raw<ModelEntry[]>([]);
  /** Why the list could not be read (the library is not available, say). */
  problem = $state<string | null>(null);
  loaded = $state(false);
  adding = $state(false);

  /** Models that make images from a prompt (not the x4 upscaler, not broken). */
  generators = $derived(
    this.list.filter((m) => m.status === 'ok' && familyCapabilities(m.family).generate),
  );
  /** Models that enlarge a given image (the x4 upscaler). */
  upscalers = $derived(
    this.list.filter((m) => m.status === 'ok' && familyCapabilities(m.family).upscale),
  );

  constructor(private readonly studio: Studio) {}

  byId(id: string): ModelEntry | undefined {
    return this.list.find((m) => m.id === id);
  }

  set(list: ModelEntry[]): void {
    this.#replace(list);
    this.loaded = true;
    this.problem = null;
  }

  /** A new list; Generate follows when its model went away or it had none (the first added). */
  #replace(list: ModelEntry[]): void {
    this.list = list;
    this.studio.form.ensureModel();
  }

  async load(): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    try {
      this.set(await api.listModels());
    } catch (err) {
      this.problem = describeError(err);
    }
  }

  async add(path: string): Promise<ModelEntry | null> {
    const api = this.studio.api;
    if (!api || !path.trim()) return null;
    this.adding = true;
    try {
      const entry = await api.addModel({ path: path.trim() });
      if (!this.list.some((m) => m.id === entry.id)) this.#replace([...this.list, entry]);
      this.studio.notices.push('info', `Added ${entry.name}.`);
      return entry;
    } catch (err) {
      this.studio.notices.error(err, 'Could not add the model');
      return null;
    } finally {
      this.adding = false;
    }
  }

  /**
   * Removes a model: a folder a download put in the models folder goes to the trash (the OS
   * trash in the desktop app); a folder added from elsewhere stays. Undo brings it back.
   */
  async remove(id: string): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    const name = this.byId(id)?.name ?? 'The model';
    try {
      const { trashedTo, undoToken } = await api.trashModel({ id });
      this.#replace(this.list.filter((m) => m.id !== id));
      const where =
        trashedTo === 'os-trash'
          ? '; its folder is in the trash'
          : trashedTo === 'app-trash'
            ? "; its folder is in the studio's trash folder"
            : '; its folder was left where it is';
      this.studio.notices.push(
        'info',
        `Removed ${name}${where}.`,
        { label: 'Undo', run: () => this.undoRemove(undoToken) },
        15_000,
      );
    } catch (err) {
      this.studio.notices.error(err, 'Could not remove the model');
    }
  }

  async undoRemove(token: string): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    try {
      const entry = await api.undoTrashModel({ token });
      if (!this.list.some((m) => m.id === entry.id)) this.#replace([...this.list, entry]);
      this.studio.notices.push('info', `${entry.name} is back.`);
    } catch (err) {
      this.studio.notices.error(err, 'Could not bring the model back');
    }
  }
}
