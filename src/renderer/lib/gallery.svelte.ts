import type {
  GalleryItem,
  GalleryQuery,
  GallerySort,
  GenerationDetail,
  GenerationMode,
  GenerationSettings,
  SamplerName,
  WatermarkReport,
} from '../../shared';
import { defaultGalleryQuery } from '../../shared';
import { describeError } from './errors';
import { galleryCountLabel } from './gallery-count';
import type { Studio } from './studio.svelte';

export interface GalleryFilters {
  text: string;
  favorite: boolean;
  minRating: number;
  modelId: string;
  sampler: SamplerName | '';
  mode: GenerationMode | '';
  tag: string;
  /** A LoRA name as tagged in prompts (`<lora:name:…>`); '' for any. */
  lora: string;
  /** Only images the content filter flagged. */
  flagged: boolean;
  sort: GallerySort;
}

const pageSize = 200;

export interface Opened {
  item: GalleryItem;
  detail: GenerationDetail | null;
}

/** One row of the compare view's settings diff. */
export interface SettingDiff {
  key: string;
  a: string;
  b: string;
  same: boolean;
}

const show = (v: unknown): string => (v === null || v === undefined ? '—' : String(v));

const isGroup = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

const unique = <T>(values: T[]): T[] => values.filter((v, i) => values.indexOf(v) === i);

/**
 * The settings of two generations side by side, one row per setting; groups (mask, outpaint,
 * upscale) become one row per field ("upscale.factor"), never a line of JSON.
 */
export function diffSettings(a: GenerationSettings, b: GenerationSettings): SettingDiff[] {
  const rows: SettingDiff[] = [];
  const walk = (left: Record<string, unknown>, right: Record<string, unknown>, prefix: string) => {
    for (const key of unique([...Object.keys(left), ...Object.keys(right)])) {
      const l = left[key];
      const r = right[key];
      if (isGroup(l) || isGroup(r)) {
        walk(isGroup(l) ? l : {}, isGroup(r) ? r : {}, `${prefix}${key}.`);
        continue;
      }
      const shownL = show(l);
      const shownR = show(r);
      rows.push({ key: `${prefix}${key}`, a: shownL, b: shownR, same: shownL === shownR });
    }
  };
  walk(a, b, '');
  return rows;
}

/**
 * The gallery: a query, the items loaded so far (pages follow the host's cursor, loaded as the
 * grid scrolls), the selection, the opened image and the compared pair.
 */
export class Gallery {
  filters = $state<GalleryFilters>({
    text: '',
    favorite: false,
    minRating: 0,
    modelId: '',
    sampler: '',
    mode: '',
    tag: '',
    lora: '',
    flagged: false,
    sort: defaultGalleryQuery.sort,
  });
  /**
   * The loaded items at their index (a sparse array: pages anywhere in a million-image
   * gallery). Changed in place and announced through `#itemsVersion`: copying, filtering or
   * mapping a sparse array deep in a large gallery costs time in proportion to its length
   * (about 0.3-0.5 s at index 900,000 on the 2-core machine), a stall on every page loaded.
   */
  #items: GalleryItem[] = [];
  #itemsVersion = $state(0);
  get items(): GalleryItem[] {
    void this.#itemsVersion;
    return this.#items;
  }
  set items(items: GalleryItem[]) {
    this.#items = items;
    this.#itemsVersion++;
  }
  /** Matches; a lower bound while `totalExact` is false (huge text and tag searches). */
  total = $state(0);
  totalExact = $state(true);
  /** The host's estimate of the matches while `totalExact` is false (null: none). */
  totalEstimate = $state<number | null>(null);
  /** The count as the studio shows it: "1,234 images", "about 12,000 images", "2,200+ images". */
  totalLabel = $derived(galleryCountLabel(this.total, this.totalExact, this.totalEstimate));
  loading = $state(false);
  problem = $state<string | null>(null);
  /** Selected image ids (Ctrl/Cmd-click adds). */
  selected = $state.raw<string[]>([]);
  opened = $state.raw<Opened | null>(null);
  compared = $state.raw<[Opened, Opened] | null>(null);
  /** "Compare with…" was chosen on this image: the next image picked is compared with it. */
  comparingWith = $state.raw<GalleryItem | null>(null);
  /** What "Check watermark" found, by image id, shown in the image's details. */
  watermarkChecks = $state.raw<Record<string, WatermarkReport>>({});

  activeFilters = $derived(
    (this.filters.favorite ? 1 : 0) +
      (this.filters.minRating > 0 ? 1 : 0) +
      (this.filters.modelId ? 1 : 0) +
      (this.filters.sampler ? 1 : 0) +
      (this.filters.mode ? 1 : 0) +
      (this.filters.tag ? 1 : 0) +
      (this.filters.lora ? 1 : 0) +
      (this.filters.flagged ? 1 : 0),
  );
  selectedItems = $derived.by(() => {
    void this.#itemsVersion;
    return this.#loaded().filter((i) => this.selected.includes(i.imageId));
  });

  /** The items of the loaded pages (not the holes between them). */
  #loaded(): GalleryItem[] {
    const out: GalleryItem[] = [];
    for (const p of this.#pages)
      for (let i = p * pageSize; i < (p + 1) * pageSize && i < this.#items.length; i++) {
        const item = this.#items[i];
        if (item) out.push(item);
      }
    return out;
  }

  /**
   * Pages (of `pageSize` items, by offset) loaded or on their way, for the current query.
   * Bookkeeping only, never rendered, so plain Sets rather than reactive ones.
   */
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  #pages = new Set<number>();
  /** The host's cursor to each page that follows a loaded one (keyset paging, see #loadPage). */
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  #cursors = new Map<number, string>();
  // eslint-disable-next-line svelte/prefer-svelte-reactivity
  #inflight = new Set<number>();
  #queryId = 0;
  #reloadTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly studio: Studio) {}

  query(): GalleryQuery {
    const f = this.filters;
    const q: GalleryQuery = { sort: f.sort, limit: pageSize };
    if (f.text.trim()) q.text = f.text.trim();
    if (f.favorite) q.favorite = true;
    if (f.flagged) q.flagged = true;
    if (f.minRating > 0) q.minRating = f.minRating;
    if (f.modelId) q.modelId = f.modelId;
    if (f.sampler) q.sampler = f.sampler;
    if (f.mode) q.mode = f.mode;
    if (f.tag.trim()) q.tag = f.tag.trim();
    if (f.lora.trim()) q.lora = f.lora.trim();
    return q;
  }

  /** Starts the query over (new filters, or the library changed). */
  async reload(): Promise<void> {
    clearTimeout(this.#reloadTimer);
    this.#queryId++;
    // Fetch the pages the grid shows now (the first page before it has asked for any).
    const [first, last] = this.#inView;
    const pages: number[] = [];
    for (let p = Math.floor(first / pageSize); p <= Math.floor(last / pageSize); p++) pages.push(p);
    this.#pages.clear();
    this.#cursors.clear();
    this.#inflight.clear();
    this.#fresh = true;
    await Promise.all(pages.map((p) => this.#loadPage(p, this.#queryId)));
  }

  /** Reloads a moment later; typing in the search box calls this on every key. */
  reloadSoon(delayMs = 200): void {
    clearTimeout(this.#reloadTimer);
    this.#reloadTimer = setTimeout(() => void this.reload(), delayMs);
  }

  /**
   * Makes sure the items from `first` to `last` are loaded (the grid asks for what it shows).
   * Pages load by offset, so jumping to item 90,000 fetches that page alone.
   */
  ensure(first: number, last = first): void {
    this.#inView = [first, last];
    const end = this.total ? Math.min(last, this.total - 1) : last;
    for (let p = Math.floor(first / pageSize); p <= Math.floor(end / pageSize); p++) {
      if (!this.#pages.has(p) && !this.#inflight.has(p)) void this.#loadPage(p, this.#queryId);
    }
  }

  /** True when this query's first load replaces what was shown before. */
  #fresh = false;
  /** The index range the grid last asked for. */
  #inView: [number, number] = [0, 0];

  async #loadPage(p: number, queryId: number): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    this.#inflight.add(p);
    this.loading = true;
    try {
      // The page after a loaded one follows its cursor (the host seeks an index to it); a jump
      // (the scroll bar) asks by offset, which the host has to count its way to.
      const cursor = this.#cursors.get(p);
      const page = await api.searchGallery(
        cursor ? { ...this.query(), cursor } : { ...this.query(), offset: p * pageSize },
      );
      if (queryId !== this.#queryId) return;
      const fresh = this.#fresh;
      this.#fresh = false;
      if (fresh) this.#items = [];
      const items = this.#items;
      page.items.forEach((item, i) => (items[p * pageSize + i] = item));
      if (page.nextCursor && page.items.length === pageSize)
        this.#cursors.set(p + 1, page.nextCursor);
      if (page.totalExact) {
        // A shorter result than before (images removed): drop what is past the end.
        if (items.length > page.total) items.length = page.total;
        this.total = page.total;
      } else if (cursor && !page.nextCursor) {
        // The last page of a search counted only in part: now its end is known.
        this.total = p * pageSize + page.items.length;
      } else {
        // A lower bound that grows as later pages are loaded (the grid grows with it): the
        // host's count, or past this page by one cell, which asks for the next page by cursor.
        const seen = p * pageSize + page.items.length + (page.nextCursor ? 1 : 0);
        this.total = Math.max(fresh || this.totalExact ? 0 : this.total, page.total, seen);
      }
      this.totalExact = page.totalExact || (Boolean(cursor) && !page.nextCursor);
      // An estimate holds for its query until an exact count or a newer estimate replaces it
      // (pages after a cursor bring none).
      if (this.totalExact) this.totalEstimate = null;
      else if (page.totalEstimate !== undefined) this.totalEstimate = page.totalEstimate;
      else if (fresh) this.totalEstimate = null;
      this.#pages.add(p);
      this.#itemsVersion++;
      this.problem = null;
      // A lookup for this check only, never rendered.
      // eslint-disable-next-line svelte/prefer-svelte-reactivity
      const loaded = new Set(this.#loaded().map((i) => i.imageId));
      if (this.selected.some((id) => !loaded.has(id)))
        this.selected = this.selected.filter((id) => loaded.has(id));
    } catch (err) {
      if (queryId === this.#queryId) this.problem = describeError(err);
    } finally {
      if (queryId === this.#queryId) {
        this.#inflight.delete(p);
        this.loading = this.#inflight.size > 0;
      }
    }
  }

  /** The host says images were added, changed or removed. */
  changed(): void {
    this.reloadSoon(150);
  }

  // ---- selection and detail -----------------------------------------------------------------

  select(item: GalleryItem, additive: boolean): void {
    const base = this.comparingWith;
    if (base && !additive) {
      this.comparingWith = null;
      if (base.imageId !== item.imageId) {
        void this.compare(base, item);
        return;
      }
    }
    if (additive) {
      this.selected = this.selected.includes(item.imageId)
        ? this.selected.filter((id) => id !== item.imageId)
        : [...this.selected, item.imageId];
    } else {
      this.selected = [item.imageId];
      void this.open(item);
    }
  }

  async #detail(item: GalleryItem): Promise<GenerationDetail | null> {
    try {
      return await this.studio.api!.getGeneration({ id: item.generationId });
    } catch (err) {
      this.studio.notices.error(err, 'Could not read the image’s settings');
      return null;
    }
  }

  async open(item: GalleryItem): Promise<void> {
    this.opened = { item, detail: null };
    const detail = await this.#detail(item);
    if (this.opened?.item.imageId === item.imageId) this.opened = { item, detail };
  }

  /** Opens a generation of the lineage (parent or child) by its id. */
  async openGeneration(generationId: string): Promise<void> {
    try {
      const detail = await this.studio.api!.getGeneration({ id: generationId });
      const item = detail.images[0];
      if (item) this.opened = { item, detail };
    } catch (err) {
      this.studio.notices.error(err, 'Could not open that generation');
    }
  }

  close(): void {
    this.opened = null;
  }

  async compare(a: GalleryItem, b: GalleryItem): Promise<void> {
    const [da, db] = await Promise.all([this.#detail(a), this.#detail(b)]);
    this.compared = [
      { item: a, detail: da },
      { item: b, detail: db },
    ];
  }

  /** Replaces an item everywhere it is shown after a change. */
  #patch(imageIds: string[], change: Partial<GalleryItem>): void {
    const hit = (i: GalleryItem) => imageIds.includes(i.imageId);
    const items = this.#items;
    for (const p of this.#pages)
      for (let i = p * pageSize; i < (p + 1) * pageSize && i < items.length; i++)
        if (items[i] && hit(items[i])) items[i] = { ...items[i], ...change };
    this.#itemsVersion++;
    if (this.opened && hit(this.opened.item))
      this.opened = { ...this.opened, item: { ...this.opened.item, ...change } };
  }

  async setFavorite(items: GalleryItem[], favorite: boolean): Promise<void> {
    const imageIds = items.map((i) => i.imageId);
    try {
      await this.studio.api!.setFavorite({ imageIds, favorite });
      this.#patch(imageIds, { favorite });
    } catch (err) {
      this.studio.notices.error(err, 'Could not change the favourite');
    }
  }

  async setRating(items: GalleryItem[], rating: number): Promise<void> {
    const imageIds = items.map((i) => i.imageId);
    try {
      await this.studio.api!.setRating({ imageIds, rating });
      this.#patch(imageIds, { rating });
    } catch (err) {
      this.studio.notices.error(err, 'Could not change the rating');
    }
  }

  async setTags(item: GalleryItem, tags: string[]): Promise<void> {
    const clean = unique(tags.map((t) => t.trim()).filter(Boolean));
    try {
      await this.studio.api!.setTags({ imageId: item.imageId, tags: clean });
      this.#patch([item.imageId], { tags: clean });
    } catch (err) {
      this.studio.notices.error(err, 'Could not save the tags');
    }
  }

  async remove(items: GalleryItem[]): Promise<void> {
    if (!items.length) return;
    const imageIds = items.map((i) => i.imageId);
    try {
      const result = await this.studio.api!.deleteImages({ imageIds });
      const gone = { has: (id: string) => imageIds.includes(id) };
      // Pages are placed by offset: fetch them again rather than shifting items locally.
      void this.reload();
      this.total = Math.max(0, this.total - result.deleted);
      this.selected = [];
      if (this.opened && gone.has(this.opened.item.imageId)) this.opened = null;
      if (this.compared?.some((o) => gone.has(o.item.imageId))) this.compared = null;
      const what = result.deleted === 1 ? 'Deleted 1 image' : `Deleted ${result.deleted} images`;
      const where = result.trashedTo === 'os-trash' ? ' (moved to the trash)' : '';
      const token = result.undoToken;
      this.studio.notices.push(
        'info',
        `${what}${where}.`,
        token ? { label: 'Undo', run: () => this.undoDelete(token) } : undefined,
        15_000,
      );
    } catch (err) {
      this.studio.notices.error(err, 'Could not delete');
    }
  }

  async undoDelete(token: string): Promise<void> {
    try {
      const { restored } = await this.studio.api!.undoDelete({ token });
      this.studio.notices.push(
        'info',
        `Restored ${restored === 1 ? '1 image' : `${restored} images`}.`,
      );
      await this.reload();
    } catch (err) {
      this.studio.notices.error(err, 'Could not undo the delete');
    }
  }

  async reveal(item: GalleryItem): Promise<void> {
    try {
      await this.studio.api!.revealImage({ imageId: item.imageId });
    } catch (err) {
      this.studio.notices.error(err, 'Could not open the folder');
    }
  }

  /** Reads the image's invisible watermark on the host (the file as it is on disk now). */
  async checkWatermark(item: GalleryItem): Promise<void> {
    try {
      const report = await this.studio.api!.checkWatermark({ imageId: item.imageId });
      this.watermarkChecks = { ...this.watermarkChecks, [item.imageId]: report };
    } catch (err) {
      this.studio.notices.error(err, 'Could not check the watermark');
    }
  }

  async copyParameters(detail: GenerationDetail): Promise<void> {
    try {
      await navigator.clipboard.writeText(detail.parametersText);
      this.studio.notices.push('info', 'Parameters copied.', undefined, 3000);
    } catch {
      this.studio.notices.push('error', 'The clipboard is not available here.');
    }
  }
}
