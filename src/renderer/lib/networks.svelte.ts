import type { NetworkFile, NetworkKind, NetworkList, UsedNetwork } from '../../shared';
import { describeError } from './errors';
import { insertAt, loraTagAt, missingNetworks, retagWeight } from './prompt-networks';
import type { Studio } from './studio.svelte';

type Field = 'prompt' | 'negative';

/**
 * The LoRA and embedding folders as the studio shows them: the listing (asked for once, again
 * on Refresh and when Settings change the folders), preview images as the picker needs them,
 * and the prompt field the picker writes into (the last one focused, at its caret).
 */
export class Networks {
  list = $state.raw<NetworkList | null>(null);
  loading = $state(false);
  problem = $state<string | null>(null);
  /** Preview data URLs by `kind/name`; null when the file has none. */
  previews = $state.raw<Record<string, string | null>>({});
  /** The prompt field the picker inserts into, and the caret there. */
  field = $state<Field>('prompt');
  caret = $state(0);
  selectionEnd = $state(0);
  #elements: Partial<Record<Field, HTMLTextAreaElement>> = {};
  /** Previews asked for; bookkeeping only, never rendered, so a plain Set. */
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  #asked = new Set<string>();

  constructor(private readonly studio: Studio) {}

  async load(refresh = false): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    this.loading = true;
    try {
      this.list = await api.listNetworks({ refresh });
      this.problem = null;
      if (refresh) {
        this.#asked.clear();
        this.previews = {};
      }
    } catch (err) {
      this.problem = describeError(err);
    } finally {
      this.loading = false;
    }
  }

  /** Asks for a file's preview once; `previews` gets it when it comes. */
  wantPreview(file: NetworkFile): void {
    const key = `${file.kind}/${file.relativeName}`;
    if (!file.hasPreview || this.#asked.has(key) || !this.studio.api) return;
    this.#asked.add(key);
    this.studio.api.getNetworkPreview({ kind: file.kind, name: file.relativeName }).then(
      (p) => (this.previews = { ...this.previews, [key]: p.dataUrl }),
      () => (this.previews = { ...this.previews, [key]: null }),
    );
  }

  previewOf(file: NetworkFile): string | null {
    return this.previews[`${file.kind}/${file.relativeName}`] ?? null;
  }

  /** A prompt textarea reports itself, so insertions can put the caret back. */
  register(field: Field, element: HTMLTextAreaElement | undefined): void {
    if (element) this.#elements[field] = element;
    else delete this.#elements[field];
  }

  /** The caret moved (or the field got focus): remember where the picker writes. */
  track(field: Field, element: HTMLTextAreaElement): void {
    this.field = field;
    this.caret = element.selectionStart;
    this.selectionEnd = element.selectionEnd;
  }

  #text(field: Field): string {
    return field === 'prompt' ? this.studio.form.prompt : this.studio.form.negativePrompt;
  }

  #set(field: Field, text: string, caret: number): void {
    if (field === 'prompt') this.studio.form.prompt = text;
    else this.studio.form.negativePrompt = text;
    this.caret = caret;
    this.selectionEnd = caret;
    const el = this.#elements[field];
    if (el) {
      // After Svelte has written the new value into the textarea.
      queueMicrotask(() => {
        el.focus();
        el.setSelectionRange(caret, caret);
      });
    }
  }

  /**
   * Inserts `<lora:name:1>` or the embedding's name at the caret of the last prompt field
   * focused (replacing a selection); the caret lands right after it (inside reach of the
   * weight slider for a LoRA).
   */
  insert(file: NetworkFile): void {
    const field = this.field;
    const text = this.#text(field);
    const start = Math.min(this.caret, text.length);
    const end = Math.min(Math.max(this.selectionEnd, start), text.length);
    // A subfolder path only when the bare name is taken by another file.
    const clash =
      file.kind === 'lora' &&
      (this.list?.loras ?? []).some((l) => l.name === file.name && l.file !== file.file);
    const name = clash ? file.relativeName : file.name;
    const piece = file.kind === 'lora' ? `<lora:${name}:1>` : name;
    const done = insertAt(text, start, end, piece);
    this.#set(field, done.text, done.caret);
  }

  /** The LoRA tag at the caret of the field in use, for the weight slider. */
  get selectedTag() {
    return loraTagAt(this.#text(this.field), this.caret);
  }

  /** Sets the selected tag's weight (text encoder and UNet alike), keeping the caret in it. */
  setWeight(weight: number): void {
    const tag = this.selectedTag;
    if (!tag) return;
    const field = this.field;
    const done = retagWeight(this.#text(field), tag, Math.round(weight * 100) / 100);
    if (field === 'prompt') this.studio.form.prompt = done.text;
    else this.studio.form.negativePrompt = done.text;
    this.caret = tag.start + done.tag.length;
    this.selectionEnd = this.caret;
  }

  /**
   * After reusing a generation or importing a PNG: one notice naming the LoRAs and embeddings
   * it used that are not in the folders (the tags stay in the prompt).
   */
  async reportMissing(
    prompts: { prompt: string; negativePrompt: string },
    used: readonly UsedNetwork[],
  ): Promise<void> {
    // Scanned again: files may have come or gone since the list was made.
    await this.load(true);
    const list = this.list;
    if (!list) return;
    const embeddingNames = used.filter((u) => u.kind === 'embedding').map((u) => u.name);
    const missing = missingNetworks(prompts, list, embeddingNames);
    // LoRAs the record names but the prompt does not tag (A1111 text without the tag).
    for (const u of used)
      if (
        u.kind === 'lora' &&
        !missing.loras.includes(u.name) &&
        !list.loras.some(
          (l) => l.name === u.name || l.relativeName === u.name || l.alias === u.name,
        )
      )
        missing.loras.push(u.name);
    const parts = [
      ...(missing.loras.length ? [`LoRA ${missing.loras.map((n) => `"${n}"`).join(', ')}`] : []),
      ...(missing.embeddings.length
        ? [`embedding ${missing.embeddings.map((n) => `"${n}"`).join(', ')}`]
        : []),
    ];
    if (parts.length === 0) return;
    this.studio.notices.push(
      'info',
      `Not in your folders: ${parts.join(' and ')}. Add the files (Settings shows the folders) to make it the same way.`,
      undefined,
      12_000,
    );
  }

  /** Files of one kind matching a search (name or subfolder path, any case). */
  filter(kind: NetworkKind, search: string): NetworkFile[] {
    const files = kind === 'lora' ? (this.list?.loras ?? []) : (this.list?.embeddings ?? []);
    const q = search.trim().toLowerCase();
    return q ? files.filter((f) => f.relativeName.toLowerCase().includes(q)) : files;
  }
}
