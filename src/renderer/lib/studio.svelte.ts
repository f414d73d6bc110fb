import type {
  AppInfo,
  EngineStatus,
  GalleryItem,
  GenerationDetail,
  GenerationMode,
  Job,
  LibraryStatus,
  Settings,
  SettingsPatch,
  StudioApi,
} from '../../shared';
import { unmatchedNetworkNote } from '../../shared';
import { Canvas, imageFromItem, imageFromRef, metadataSourceLabels } from './canvas.svelte';
import { describeError } from './errors';
import { Gallery } from './gallery.svelte';
import { GenerateForm } from './generate.svelte';
import { CheckpointImport } from './checkpoint-import.svelte';
import { Downloads } from './downloads.svelte';
import { Models } from './models.svelte';
import { Vaes } from './vaes.svelte';
import { ControlNets } from './controlnets.svelte';
import { Networks } from './networks.svelte';
import { Notices } from './notices.svelte';
import { Queue } from './queue.svelte';
import { Reveals } from './reveals.svelte';
import { type TransportKind, connectStudio } from './transport';
import { Workspace } from './workspace.svelte';

export { describeError } from './errors';

export type View = 'generate' | 'gallery' | 'models' | 'settings';

/**
 * The studio's top-level state. It owns the connection and one state object per area;
 * components read them and call their methods, holding no state of their own beyond the UI's.
 */
export class Studio {
  api: StudioApi | null = null;
  transport = $state<TransportKind | null>(null);
  connected = $state(false);
  view = $state<View>('generate');
  appInfo = $state.raw<AppInfo | null>(null);
  engine = $state.raw<EngineStatus | null>(null);
  settings = $state.raw<Settings | null>(null);
  library = $state.raw<LibraryStatus | null>(null);
  /** A problem that stops the whole studio (no token, no host). */
  error = $state<string | null>(null);
  systemDark = $state(false);
  /** Counts tries to generate while something blocks it (the blocker line flashes each time). */
  blockerNudges = $state(0);

  readonly notices = new Notices();
  /** Flagged images revealed this session (issue 18). */
  readonly reveals = new Reveals();
  readonly models = new Models(this);
  readonly vaes = new Vaes(this);
  readonly controlnets = new ControlNets(this);
  readonly networks = new Networks(this);
  readonly checkpointImport = new CheckpointImport(this);
  readonly downloads = new Downloads(this);
  readonly form = new GenerateForm(this);
  readonly queue = new Queue(this);
  readonly canvas = new Canvas(this);
  readonly gallery = new Gallery(this);
  readonly workspace = new Workspace(this);

  theme = $derived.by(() => {
    const chosen = this.settings?.theme ?? 'system';
    return chosen === 'system' ? (this.systemDark ? 'dark' : 'light') : chosen;
  });
  desktop = $derived(this.appInfo?.shell === 'desktop');

  async start(): Promise<void> {
    const media = window.matchMedia('(prefers-color-scheme: dark)');
    this.systemDark = media.matches;
    media.addEventListener('change', (e) => (this.systemDark = e.matches));
    try {
      const { api, kind } = connectStudio((connected) => (this.connected = connected));
      this.api = api;
      this.transport = kind;
      api.on('engineStatus', (status) => (this.engine = status));
      api.on('settingsChanged', (settings) => {
        const folderChanged = settings.vaeDir !== this.settings?.vaeDir;
        const controlNetFolderChanged =
          this.settings !== null && settings.controlnetDir !== this.settings.controlnetDir;
        const folders = (s: Settings | null) => `${s?.loraDir}|${s?.embeddingsDir}`;
        // Other folders: list them again (the first listing comes with the rest below).
        const networkFoldersChanged =
          this.settings !== null && folders(settings) !== folders(this.settings);
        this.settings = settings;
        if (folderChanged) void this.vaes.load();
        if (controlNetFolderChanged) void this.controlnets.load();
        if (networkFoldersChanged) void this.networks.load();
      });
      api.on('modelsChanged', (models) => this.models.set(models));
      api.on('checkpointImport', (progress) => this.checkpointImport.onProgress(progress));
      api.on('downloadProgress', (progress) => this.downloads.onProgress(progress));
      api.on('queueChanged', (queue) => this.queue.set(queue));
      api.on('jobProgress', (progress) => this.queue.onProgress(progress));
      api.on('galleryChanged', () => {
        this.gallery.changed();
        this.#refreshLibraryStatus();
      });
      api.on('libraryStatus', (status) => (this.library = status));
      // A download put a file in a folder: its picker lists it now, not after a Refresh.
      api.on('modelFileAdded', ({ kind }) => {
        if (kind === 'vae') void this.vaes.load();
        else if (kind === 'controlnet') void this.controlnets.load();
        else void this.networks.load();
      });
      const [appInfo, engine, settings] = await Promise.all([
        api.getAppInfo(),
        api.getEngineStatus(),
        api.getSettings(),
      ]);
      this.appInfo = appInfo;
      this.engine = engine;
      this.settings = settings;
      this.connected = true;
    } catch (err) {
      this.error = describeError(err);
      return;
    }
    // The library and the queue may not be there (yet); each area shows its own problem.
    await Promise.all([
      this.models.load(),
      this.queue.load(),
      this.gallery.reload(),
      this.vaes.load(),
      this.controlnets.load(),
      this.networks.load(),
      this.downloads.load(),
    ]);
    this.#refreshLibraryStatus();
    this.form.ensureModel();
    // The work in progress of the last session (prompt, settings, canvas, mask), then saved as
    // it changes.
    await this.workspace.restore();
    this.workspace.watch();
  }

  #refreshLibraryStatus(): void {
    this.api
      ?.getLibraryStatus()
      .then((status) => (this.library = status))
      .catch(() => {});
  }

  async updateSettings(patch: SettingsPatch): Promise<void> {
    if (!this.api) return;
    try {
      this.settings = await this.api.updateSettings(patch);
      if (patch.vaeDir !== undefined) await this.vaes.load();
    } catch (err) {
      this.notices.error(err, 'Could not save the setting');
    }
  }

  // ---- generating ---------------------------------------------------------------------------

  /** Queues the form's generation (Ctrl/Cmd+Enter). */
  async generate(): Promise<void> {
    // What blocks Generate is shown beside its button for as long as it lasts (one place); a
    // try draws the eye to it again instead of adding a notice.
    if (this.form.blocker) {
      this.blockerNudges += 1;
      return;
    }
    const api = this.api;
    if (!api) return;
    let maskImage: string | null = null;
    if (this.form.mode === 'inpaint') {
      try {
        const data = await this.canvas.exportMask();
        maskImage = (await api.uploadImage({ data, purpose: 'mask', name: 'mask.png' })).imageId;
      } catch (err) {
        this.notices.error(err, 'Could not send the mask');
        return;
      }
    }
    const settings = this.form.settings({
      initImage: this.canvas.image?.imageId ?? null,
      maskImage,
    });
    if (await this.queue.enqueue(settings)) this.form.lastSeed = settings.seed;
  }

  /** A job finished: its first image becomes the canvas's current image. */
  async jobDone(job: Job): Promise<void> {
    if (!job.generationId || !this.api) return;
    try {
      const detail = await this.api.getGeneration({ id: job.generationId });
      // In the order they were made: by batch (its seed), then place in the batch.
      const images = [...detail.images].sort(
        (a, b) => a.seed - b.seed || a.batchIndex - b.batchIndex,
      );
      this.canvas.results = images;
      if (job.settings.mode === 'inpaint') this.canvas.maskShown = false;
      if (images[0]) this.canvas.setImage(imageFromItem(images[0]));
      // A LoRA part of which matched nothing ran, but maybe not as the person meant: say so.
      for (const n of detail.networks) {
        const note = unmatchedNetworkNote(n);
        if (note) this.notices.push('info', note, undefined, 15_000);
      }
    } catch (err) {
      this.notices.error(err, 'The image was made but could not be shown');
    }
  }

  jobFailed(job: Job): void {
    if (job.error?.code === 'cancelled') return;
    this.notices.push(
      'error',
      `The generation failed: ${job.error?.message ?? 'no reason given.'}`,
      undefined,
      15_000,
    );
  }

  // ---- from the gallery ---------------------------------------------------------------------

  /** Puts a gallery image on the canvas in the given mode. */
  sendTo(item: GalleryItem, mode: GenerationMode, detail?: GenerationDetail | null): void {
    this.canvas.setImage(imageFromItem(item));
    this.form.mode = mode;
    if (detail) {
      if (!this.form.prompt) this.form.prompt = detail.settings.prompt;
      if (this.models.byId(detail.settings.model) && mode !== 'upscale')
        this.form.modelId = detail.settings.model;
    }
    this.form.setSize(item.width, item.height);
    this.view = 'generate';
  }

  async reuse(detail: GenerationDetail, item: GalleryItem, what: 'all' | 'seed'): Promise<void> {
    if (what === 'all') {
      this.form.apply(detail.settings);
      if (detail.settings.mode === 'txt2img') this.form.mode = 'txt2img';
    }
    const position = this.form.reuseSeedOf(item, detail.settings);
    this.view = 'generate';
    const which =
      position > 0 ? ` (this image comes out as image ${position + 1} of the batch)` : '';
    this.notices.push(
      'info',
      what === 'seed'
        ? `Seed ${item.seed} will be used${which}.`
        : `Settings loaded into Generate${which}.`,
      undefined,
      3000,
    );
    if (what === 'all') void this.networks.reportMissing(detail.settings, detail.networks);
    if (what === 'all') void this.controlnets.apply(detail.settings.controlnets ?? []);
    if (what === 'all' && detail.settings.mode !== 'txt2img')
      await this.#restoreImages(detail.settings.initImage, detail.settings.mask?.image ?? null);
  }

  /**
   * Puts a generation's source image (a library image or an upload) back on the canvas, and its
   * painted mask on the mask layer. Ids only: paths (CLI generations) are not shown.
   */
  async #restoreImages(initImage: string | null, maskImage: string | null): Promise<void> {
    const api = this.api;
    const isId = (v: string | null): v is string => !!v && /^[A-Za-z0-9_-]{1,64}$/.test(v);
    if (!api || !isId(initImage)) return;
    try {
      this.canvas.setImage(imageFromRef(await api.getImage({ id: initImage })));
    } catch (err) {
      this.notices.error(err, 'The source image could not be shown');
      return;
    }
    if (!isId(maskImage)) return;
    try {
      const mask = await api.getImage({ id: maskImage });
      await this.canvas.loadMask(mask.url);
    } catch (err) {
      this.notices.error(err, 'The painted mask could not be shown');
    }
  }

  /** "Use these settings" for an imported PNG's metadata: fills Generate from it. */
  useImportedSettings(): void {
    const found = this.canvas.imported;
    if (!found) return;
    const { initImage: _init, mask: _mask, mode, controlnets, ...settings } = found.settings;
    this.form.apply(settings);
    // Ours carry the units with their control images (ids of this library); A1111's without.
    if (controlnets?.length) void this.controlnets.apply(controlnets);
    else this.controlnets.applyImported(found.controlnets);
    // The image was the result: make it again from the prompt unless it was made from an image.
    this.form.mode = !mode || mode === 'txt2img' ? 'txt2img' : this.form.mode;
    if (mode === 'txt2img' || !mode) this.form.hiresFix = !!settings.upscale;
    this.canvas.imported = null;
    this.view = 'generate';
    void this.networks.reportMissing(
      { prompt: settings.prompt ?? '', negativePrompt: settings.negativePrompt ?? '' },
      found.networks,
    );
    this.notices.push(
      'info',
      `Settings from ${metadataSourceLabels[found.source]} loaded into Generate.`,
      undefined,
      3000,
    );
  }
}
