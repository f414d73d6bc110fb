import path from 'node:path';
import {
  EngineClient,
  type GenerateProgress,
  type GenerateResult,
  type GeneratedImage,
  type LoraReport,
  type PixelImage,
  isEngineError,
} from '../../engine';
import {
  GenerationSettings,
  type Job,
  type JobProgress,
  type ModelEntry,
  type QueueState,
  type Settings,
  StudioError,
} from '../../shared';
import { describeIssues } from '../dispatch';
import { isLibraryError } from '../library/errors';
import { encodePngWithMetadata, type PngGenerationMetadata } from '../library/png-metadata';
import type { HostContext, JobMethods } from '../services';
import type { ResolvedNetworks } from '../adapters/resolve';
import { networkInfotextFields } from '../../shared';
import { convertedModelFields } from '../models/checkpoint-cache';
import { VaeService, type VaePrepareProgress, resolveVaeFile } from '../models/vaes';
import type { SafetyVerdict } from '../../engine/safety/decision';
import { ControlNetService } from '../models/controlnets';
import { prepareControlUnits, validateControlUnits } from './controlnet-units';
import { TaesdService, taesdInfotextFields } from '../models/taesd';
import { appVersion } from '../version';
import { ContentFilter, contentFilterFields } from './content-filter';
import { describeJobFailure, storageError } from './errors';
import { markGenerated } from '../images/watermark';
import { previewDataUrl, readPixels } from './images';
import {
  DEFAULT_RETENTION,
  type JobRetention,
  type JobRow,
  JobStore,
  parseSettings,
} from './store';
import type { GenerationNetwork, JobLibrary, SaveImageInput } from './types';

export interface JobServiceOptions {
  /** Least time between two jobProgress events of a job, in ms (default 100: at most 10/s). */
  progressIntervalMs?: number;
  /** Least time between two queueChanged events carrying step updates, in ms (default 1000). */
  queueIntervalMs?: number;
  /** The engine's preview cadence, in steps (default 4; 0 for none). */
  previewEvery?: number;
  /** How long close() lets the engine finish its step in flight before terminating it. */
  closeGraceMs?: number;
  /** Which finished jobs stay in the table (default DEFAULT_RETENTION: 500, 30 days). */
  retention?: Partial<JobRetention>;
  /** Retention runs at start, after jobs finish, and this often (ms; default 1 h; 0: not timed). */
  pruneIntervalMs?: number;
  /** Finished jobs deleted per transaction (default 200). */
  pruneBatch?: number;
  /**
   * Resolves a prompt's `<lora:…>` tags and embedding names in the folders of Settings
   * (adapters/service.ts); without it, prompts go to the engine as written.
   */
  networks?: JobNetworks | null;
}

/** What the queue needs to turn a prompt's LoRA tags and embedding names into files. */
export interface JobNetworks {
  /** Throws StudioError with one sentence when a tag names a missing file or cannot be used. */
  resolve(prompts: { prompt: string; negativePrompt: string }): Promise<ResolvedNetworks>;
}

/** The job that is running now: what only lives in memory (no DB write per step). */
interface Current {
  id: string;
  controller: AbortController;
  startedAt: number;
  stage: JobProgress['stage'];
  step: number;
  total: number;
  etaMs: number | null;
  /** cancelJob/cancelAll asked for it: the job ends 'cancelled'. */
  cancelRequested: boolean;
  /** The app is closing: the job goes back to the front of the queue. */
  shutdown: boolean;
  /** Past generate(): the images are being saved; a cancel no longer stops it. */
  saving: boolean;
  lastEmit: number;
  lastQueueEmit: number;
  pendingPreview: { url: string; step: number } | null;
  /** A preview went out: the first one is sent at once, past the progress throttle. */
  previewSent: boolean;
  encodingPreview: boolean;
  /** Sends the latest state when progress was held back by the throttle. */
  trailing: NodeJS.Timeout | null;
  /** The first denoise step is always sent (the job is generating, not loading). */
  denoiseSeen: boolean;
}

const modeNames: Record<GenerationSettings['mode'], string> = {
  txt2img: 'Text-to-image',
  img2img: 'Image-to-image',
  inpaint: 'Inpainting',
  outpaint: 'Outpainting',
  upscale: 'Upscaling',
};

/** Failure codes that say the engine or the machine is broken, not one job's model or settings. */
const systemicFailures = new Set(['internal', 'inference', 'provider', 'disk-full']);
const engineFailureLimit = 3;

/**
 * The durable job queue driving the engine worker (issue #5, item 6).
 *
 * - Jobs live in the library's `jobs` table: a queued job survives restarts in its order; a job
 *   a crash left running goes back to the front at the next start (failed, with a sentence,
 *   after three starts), so no job is ever lost silently.
 * - One job runs at a time through one EngineClient (a worker thread, created on first use).
 * - Pause stops new jobs from starting; the running job finishes (the engine cannot suspend a
 *   run, and stopping it would throw its work away). The flag persists in `meta`.
 * - Cancel: a queued job is cancelled at once; a running one through its AbortSignal, and it
 *   turns 'cancelled' when the worker confirms (within a step). Once its images are being
 *   saved, a cancel no longer stops it.
 * - close(): no new job starts; the running job is stopped at its step in flight and put back
 *   at the front of the queue (its attempt not counted); queued jobs stay queued.
 * - The queue state lists the running job, the queued ones in order (position 0 runs next),
 *   then the 50 most recently finished, newest first. The job state 'paused' is not used:
 *   pausing is a flag of the whole queue.
 * - Retention: finished jobs beyond the newest 500, or finished over 30 days ago, are deleted
 *   (at start, after each finished job, hourly; in small transactions). Their images stay.
 * - Progress: jobProgress at most every 100 ms (the first denoise step and 'saving' at once, a
 *   held-back update by a trailing timer); `preview` is a PNG data URL when a new preview is
 *   ready, else null. Job.step/total live in memory; queueChanged carries them at most every
 *   second while a job runs. No database write per step.
 */
export class JobService {
  readonly methods: JobMethods;
  readonly #options: Required<Omit<JobServiceOptions, 'retention' | 'networks'>> & {
    retention: JobRetention;
  };
  readonly #networks: JobNetworks | null;
  #client: EngineClient | null = null;
  /** The desktop studio has no focused window (setBackground). */
  #background = false;
  /** The machine runs on its battery (setOnBattery). */
  #onBattery = false;
  /** Failures in a row of the engine itself (not of one job's model or settings). */
  #engineFailures = 0;
  #current: Current | null = null;
  #active: Promise<void> | null = null;
  #closing = false;
  #engineState: 'idle' | 'loading' | 'generating' = 'idle';
  #pruning: Promise<number> | null = null;
  #pruneAgain = false;
  #pruneTimer: NodeJS.Timeout | null = null;
  /** Why the queue paused itself (a full disk); cleared when the person resumes it. */
  #pauseReason: string | null = null;
  readonly #store: JobStore;
  readonly #vaes: VaeService;
  readonly #taesd: TaesdService;
  readonly #filter: ContentFilter;
  readonly #controlNets: ControlNetService;

  constructor(
    readonly context: HostContext,
    readonly library: JobLibrary,
    options: JobServiceOptions = {},
  ) {
    this.#options = {
      progressIntervalMs: options.progressIntervalMs ?? 100,
      queueIntervalMs: options.queueIntervalMs ?? 1000,
      // Every step: the studio shows the picture forming from the first steps (it is cheap, and
      // a preview still being encoded makes the next ones wait).
      previewEvery: options.previewEvery ?? 1,
      closeGraceMs: options.closeGraceMs ?? 60_000,
      retention: { ...DEFAULT_RETENTION, ...options.retention },
      pruneIntervalMs: options.pruneIntervalMs ?? 3600_000,
      pruneBatch: Math.max(1, options.pruneBatch ?? 200),
    };
    this.#networks = options.networks ?? null;
    // A damaged database answers with the library's read-only sentence, not an internal error.
    const g = <T>(fn: () => T): T => {
      try {
        return fn();
      } catch (err) {
        throw this.library.database.mapError(err, 'the queue was not changed');
      }
    };
    this.methods = {
      enqueue: (input) =>
        this.enqueue(input.settings).catch((err: unknown) => {
          throw this.library.database.mapError(err, 'the job was not queued');
        }),
      getQueue: () => g(() => this.state()),
      pauseQueue: () => g(() => this.setPaused(true)),
      resumeQueue: () => g(() => this.setPaused(false)),
      cancelJob: (input) => g(() => this.cancel(input.id)),
      cancelAll: () => g(() => this.cancelAll()),
      moveJob: (input) => g(() => this.move(input.id, input.position)),
    } satisfies JobMethods;
    this.#store = new JobStore(library.database);
    this.#vaes = new VaeService(context);
    this.#taesd = new TaesdService(context);
    this.#filter = new ContentFilter(context.dataDir, context.workerPath);
    this.#controlNets = new ControlNetService(context, (id) => library.resolveImage(id));
    // The restored database has its own jobs: recover them and run the queue again.
    library.onReopened(() => this.reload());
    this.reload();
    if (this.#options.pruneIntervalMs > 0) {
      this.#pruneTimer = setInterval(() => void this.prune(), this.#options.pruneIntervalMs);
      this.#pruneTimer.unref();
    }
  }

  /**
   * Recovers the queue from the database (jobs a crash left running) and starts the runner on
   * the next turn of the event loop. Called at construction and when the library reopened its
   * database (restoreBackup).
   */
  reload(): void {
    try {
      const recovered = this.#store.recover();
      for (const id of recovered.requeued)
        this.context.log(`Job ${id} was running when the app stopped; it is queued again.`);
      for (const id of recovered.failed)
        this.context.log(`Job ${id} could not be resumed and was marked failed.`);
    } catch (err) {
      // A read-only or unreadable library: the queue shows what it can and runs nothing.
      this.context.log(`The job queue could not be recovered: ${(err as Error).message}`);
      return;
    }
    setImmediate(() => {
      if (this.#closing) return;
      this.#emitQueue();
      this.#kick();
      void this.prune();
    });
  }

  /**
   * Deletes the finished jobs past the retention: in transactions of pruneBatch rows with a turn
   * of the event loop between them, so a large backlog never holds the database or the UI for
   * long. Resolves with how many went (never rejects: a read-only library keeps its rows). Runs
   * at start, after jobs finish and every pruneIntervalMs; a call while it runs asks the running
   * one for another pass.
   */
  prune(): Promise<number> {
    if (this.#pruning) {
      this.#pruneAgain = true;
      return this.#pruning;
    }
    const run = (async () => {
      let deleted = 0;
      do {
        this.#pruneAgain = false;
        for (;;) {
          if (this.#closing) return deleted;
          const r = this.#store.pruneFinished(this.#options.retention, this.#options.pruneBatch);
          deleted += r.deleted;
          if (!r.more) break;
          await new Promise((resolve) => setImmediate(resolve));
        }
      } while (this.#pruneAgain);
      return deleted;
    })()
      .catch((err: unknown) => {
        this.context.log(`Finished jobs could not be pruned: ${(err as Error).message}`);
        return 0;
      })
      .finally(() => {
        this.#pruning = null;
      });
    this.#pruning = run;
    return run;
  }

  // -------------------------------------------------------------------------------------------
  // The contract's methods

  async enqueue(input: unknown): Promise<QueueState> {
    if (this.#closing)
      throw new StudioError('unavailable', 'The app is closing; nothing can be queued.');
    const parsed = GenerationSettings.safeParse(input);
    if (!parsed.success) throw new StudioError('invalid-argument', describeIssues(parsed.error));
    const frozen = await this.#validate(parsed.data);
    try {
      this.#store.insert(frozen);
    } catch (err) {
      storageError(err);
    }
    this.#emitQueue();
    this.#kick();
    return this.state();
  }

  state(): QueueState {
    const store = this.#store;
    const jobs: Job[] = [
      ...store.running().map((r) => this.#toJob(r, null)),
      ...store.queued().map((r, i) => this.#toJob(r, i)),
      ...store.recentFinished().map((r) => this.#toJob(r, null)),
    ];
    const paused = this.#pauseReason !== null || store.isPaused();
    return { paused, pausedReason: paused ? this.#pauseReason : null, jobs };
  }

  setPaused(paused: boolean): QueueState {
    try {
      // Jobs a full disk left marked running (nothing runs them) wait at the front again.
      if (!paused) this.#store.requeueStranded(this.#current?.id ?? null);
      this.#store.setPaused(paused);
    } catch (err) {
      storageError(err);
    }
    if (!paused) this.#pauseReason = null;
    if (!paused && this.#engineFailures >= engineFailureLimit) {
      this.#engineFailures = 0;
      this.context.updateEngineStatus({ state: 'idle', message: null });
    }
    this.#emitQueue();
    if (!paused) this.#kick();
    return this.state();
  }

  cancel(id: string): QueueState {
    const row = this.#store.get(id);
    if (!row) throw new StudioError('not-found', 'That job is not in the queue any more.');
    if (row.state === 'queued') {
      try {
        this.#store.markCancelled([id], ['queued']);
      } catch (err) {
        storageError(err);
      }
      this.#emitQueue();
      void this.prune();
    } else if (this.#current?.id === id) this.#cancelCurrent();
    return this.state();
  }

  cancelAll(): QueueState {
    const queued = this.#store.queued().map((r) => r.id);
    try {
      this.#store.markCancelled(queued, ['queued']);
    } catch (err) {
      storageError(err);
    }
    if (this.#current) this.#cancelCurrent();
    this.#emitQueue();
    void this.prune();
    return this.state();
  }

  move(id: string, position: number): QueueState {
    const row = this.#store.get(id);
    if (!row) throw new StudioError('not-found', 'That job is not in the queue any more.');
    if (row.state !== 'queued')
      throw new StudioError(
        'invalid-argument',
        `Only a queued job can be moved; this one is ${row.state === 'done' ? 'done' : row.state}.`,
      );
    try {
      this.#store.move(id, position);
    } catch (err) {
      storageError(err);
    }
    this.#emitQueue();
    return this.state();
  }

  // -------------------------------------------------------------------------------------------
  // Host hooks

  /**
   * Provider and thread changes take effect at the next model load; the background mode at once.
   */
  settingsChanged(settings: Settings): void {
    this.#client?.configure({ provider: settings.executionProvider, threads: settings.threads });
    this.#client?.setBackground({ mode: settings.backgroundMode });
  }

  /**
   * Whether the studio is in the background (no window of the desktop studio focused): with
   * Settings' `backgroundMode` 'gentle', the engine's threads yield the CPU meanwhile.
   */
  setBackground(background: boolean): void {
    this.#background = background;
    this.#client?.setBackground({ background });
  }

  /**
   * Whether the machine runs on its battery: with Settings' `backgroundMode` 'gentle', sessions
   * created meanwhile do not spin (their threads' priority stays as the windows decide).
   */
  setOnBattery(onBattery: boolean): void {
    this.#onBattery = onBattery;
    this.#client?.setBackground({ onBattery });
  }

  /** Whether a job is running now (for tests and the shell's quit prompt). */
  get busy(): boolean {
    return this.#current !== null;
  }

  /**
   * Stops taking jobs; the running job is stopped at the end of its step in flight and put back
   * at the front of the queue (unless its images are already being saved: then it finishes);
   * queued jobs stay queued. The engine worker ends gracefully.
   */
  async close(): Promise<void> {
    this.#closing = true;
    if (this.#pruneTimer) clearInterval(this.#pruneTimer);
    const current = this.#current;
    if (current && !current.saving) {
      current.shutdown = true;
      current.controller.abort();
    }
    const client = this.#client;
    this.#client = null;
    await client?.close(this.#options.closeGraceMs);
    await this.#active;
    await this.#pruning;
  }

  // -------------------------------------------------------------------------------------------
  // Validation at enqueue

  async #validate(settings: GenerationSettings): Promise<GenerationSettings> {
    const model = await this.#model(settings.model, 'model');
    const frozen: GenerationSettings = { ...settings, model: model.id };
    await this.#filter.validate(this.context.settings.get());
    await validateControlUnits(settings, this.#controlNets, (id, what) => this.#image(id, what));
    const needsImage = settings.mode !== 'txt2img';
    if (needsImage && !settings.initImage)
      throw new StudioError(
        'invalid-argument',
        `${modeNames[settings.mode]} needs a source image: add one first.`,
      );
    if (settings.mode === 'inpaint' && !settings.mask)
      throw new StudioError('invalid-argument', 'Inpainting needs a mask: paint one first.');
    if (settings.initImage) await this.#image(settings.initImage, 'source image');
    // Outpainting builds its own mask from the new area; only inpainting reads the painted one.
    if (settings.mask && settings.mode === 'inpaint')
      await this.#image(settings.mask.image, 'mask');
    if (settings.upscale?.model) {
      const upscaler = await this.#model(settings.upscale.model, 'upscaler model');
      frozen.upscale = { ...settings.upscale, model: upscaler.id };
    }
    if (settings.vae) await resolveVaeFile(settings.vae, this.#vaes.folder());
    return frozen;
  }

  async #model(idOrPath: string, what: string): Promise<ModelEntry & { path: string }> {
    let entry: ModelEntry & { path: string };
    try {
      entry = await this.library.resolveModel(idOrPath);
    } catch (err) {
      // Unknown id: say which; a known model whose folder is gone keeps the library's sentence.
      if (isLibraryError(err, 'unknown-model'))
        throw new StudioError(
          'not-found',
          `The ${what} "${idOrPath}" is not in the library: pick one from the model list, or add its folder first.`,
        );
      throw err;
    }
    if (entry.status === 'missing')
      throw new StudioError(
        'not-found',
        `The ${what} "${entry.name}" is missing: its folder ${entry.path} is gone.`,
      );
    if (entry.status === 'error')
      throw new StudioError(
        'model',
        `The ${what} "${entry.name}" cannot be used: ${entry.error ?? 'it failed its check'}`.replace(
          /([^.])$/,
          '$1.',
        ),
      );
    return entry;
  }

  async #image(imageId: string, what: string): Promise<{ file: string }> {
    try {
      return await this.library.resolveImage(imageId);
    } catch (err) {
      if (isLibraryError(err, 'unknown-image'))
        throw new StudioError(
          'not-found',
          `The ${what} "${imageId}" is not in the library (deleted, or never uploaded): add it again.`,
        );
      throw err;
    }
  }

  // -------------------------------------------------------------------------------------------
  // The runner

  #paused(): boolean {
    if (this.#pauseReason !== null) return true;
    try {
      return this.#store.isPaused();
    } catch {
      return true;
    }
  }

  #kick(): void {
    if (this.#active || this.#closing || !this.context.workerPath || this.#paused()) return;
    this.#active = this.#drain().then(
      () => {
        this.#active = null;
        // Something was queued while the loop was finishing: go again.
        if (!this.#closing && this.#hasNext()) this.#kick();
      },
      (err: unknown) => {
        // A write failed (the disk is full, the library turned read-only or closed): stop until
        // the next kick; a full disk pauses the queue and says why.
        this.#active = null;
        this.context.log(`The job runner stopped: ${(err as Error)?.message ?? String(err)}`);
        if (describeJobFailure(err).code === 'disk-full') this.#pauseForFullDisk();
      },
    );
  }

  #hasNext(): boolean {
    try {
      return this.#store.next() !== undefined;
    } catch {
      return false;
    }
  }

  async #drain(): Promise<void> {
    while (!this.#closing && !this.#paused()) {
      const row = this.#store.next();
      if (!row) break;
      await this.#run(row);
    }
    // After an automatic pause the engine status keeps saying why.
    if (!this.#closing && this.#engineFailures < engineFailureLimit) this.#setEngineState('idle');
  }

  #engine(): EngineClient {
    if (!this.#client) {
      const settings = this.context.settings.get();
      this.#client = new EngineClient(
        this.context.workerPath!,
        {
          provider: settings.executionProvider,
          threads: settings.threads,
          previewEvery: this.#options.previewEvery,
          // ONNX Runtime's optimized graphs, so a model's second load skips optimization.
          optimizedCacheDir: path.join(this.context.dataDir, 'cache', 'onnx'),
        },
        (notice) => this.context.log(notice),
      );
      this.#client.setBackground({
        background: this.#background,
        onBattery: this.#onBattery,
        mode: settings.backgroundMode,
      });
    }
    return this.#client;
  }

  async #run(row: JobRow): Promise<void> {
    if (!this.#store.markRunning(row.id)) return;
    const settings = parseSettings(row.settings);
    const cur: Current = {
      id: row.id,
      controller: new AbortController(),
      startedAt: performance.now(),
      stage: 'loading',
      step: 0,
      total: settings ? estimateTotal(settings) : 0,
      etaMs: null,
      cancelRequested: false,
      shutdown: false,
      saving: false,
      lastEmit: 0,
      lastQueueEmit: performance.now(),
      pendingPreview: null,
      previewSent: false,
      encodingPreview: false,
      trailing: null,
      denoiseSeen: false,
    };
    this.#current = cur;
    this.#emitQueue();
    this.#emitProgress(cur, true);
    this.#setEngineState('loading');
    let modelName: string | null = null;
    try {
      if (!settings)
        throw new StudioError(
          'invalid-argument',
          'The settings stored with this job are not valid for this version of the app.',
        );
      // Before the model loads: a tag naming a missing LoRA fails the job with its sentence.
      const networks = this.#networks ? await this.#networks.resolve(settings) : null;
      const model = await this.#model(settings.model, 'model');
      modelName = model.name;
      const engineSettings: GenerationSettings = { ...settings };
      if (settings.upscale?.model) {
        const upscaler = await this.#model(settings.upscale.model, 'upscaler model');
        engineSettings.upscale = { ...settings.upscale, model: upscaler.path };
      }
      const initImage = settings.initImage
        ? await readPixels((await this.#image(settings.initImage, 'source image')).file, 'init')
        : null;
      const maskImage =
        settings.mask && settings.mode === 'inpaint'
          ? await readPixels((await this.#image(settings.mask.image, 'mask')).file, 'mask')
          : null;
      // A replacement VAE is converted on first use (cached by its sha256): part of loading.
      let vaePhase = '';
      const vae = settings.vae
        ? await this.#vaes.prepare(settings.vae, {
            signal: cur.controller.signal,
            onProgress: (p) => {
              // Each new phase (hashing, encoder, decoder) shows at once, past the throttle.
              this.#onLoadingProgress(cur, p, p.phase !== vaePhase);
              vaePhase = p.phase;
            },
          })
        : null;
      // Each unit's ControlNet is converted on first use (cached by its sha256): part of loading.
      let controlPhase = '';
      const control = await prepareControlUnits(
        settings,
        model,
        this.#controlNets,
        (id, what) => this.#image(id, what),
        {
          signal: cur.controller.signal,
          onProgress: (p) => {
            this.#onLoadingProgress(cur, p, p.phase !== controlPhase);
            controlPhase = p.phase;
          },
        },
      );
      // The content filter's checker, converted on first use; the engine worker runs it.
      const contentFilter = await this.#filter.prepare(
        this.context.settings.get(),
        cur.controller.signal,
      );
      // TAESD (previews, fast decode), when its decoder for the family is in models/taesd/.
      const taesdPreviews = this.context.settings.get().taesdPreviews;
      const taesd =
        taesdPreviews || settings.fastDecode
          ? await this.#taesd.prepare(model.family, { signal: cur.controller.signal })
          : null;
      if (cur.controller.signal.aborted)
        throw new StudioError('cancelled', 'The job was cancelled.');
      const result = await this.#engine().generate(
        {
          settings: engineSettings,
          modelDir: model.path,
          initImage,
          maskImage,
          ...(vae ? { vaeDir: vae.dir } : {}),
          ...(taesd
            ? { taesdDir: taesd.dir, previewDecoder: taesdPreviews ? 'taesd' : 'latent' }
            : {}),
          ...(networks?.loras.length ? { loras: networks.loras } : {}),
          ...(networks?.embeddings.length ? { embeddings: networks.embeddings } : {}),
          ...(contentFilter ? { contentFilter } : {}),
          ...(control.controlnets.length ? { controlnets: control.controlnets } : {}),
        },
        { signal: cur.controller.signal, onProgress: (p) => this.#onProgress(cur, p) },
      );
      if (cur.cancelRequested) throw new StudioError('cancelled', 'The job was cancelled.');
      if (result.taesd?.problem) this.context.log(`Job ${row.id}: ${result.taesd.problem}`);
      // What decoded is recorded, not what was asked: without a TAESD decoder the VAE did.
      const recorded = { ...settings, fastDecode: result.taesd?.fastDecode === true };
      cur.saving = true;
      this.context.updateEngineStatus({
        activeProvider: result.provider,
        fallbackReason: result.fallbackReason,
      });
      cur.stage = 'saving';
      cur.step = cur.total;
      this.#emitProgress(cur, true);
      // The content filter (issue 18), when on: the worker's verdict per image, into its PNG.
      const verdicts = contentFilter ? (result.contentFilter ?? null) : null;
      if (contentFilter && verdicts?.length !== result.images.length)
        throw new StudioError('internal', 'The content filter gave no verdict for some images.');
      const { images, watermark } = await this.#encode(
        recorded,
        result,
        model,
        vae?.fields ?? {},
        networks,
        verdicts,
        control.fields,
      );
      const saved = await this.library.saveGeneration({
        settings: recorded,
        images,
        watermark,
        networks: networks ? networkUses(networks, result.loras ?? []) : [],
        family: result.family,
        provider: result.provider,
        fallbackReason: result.fallbackReason,
        timings: { ...result.timings },
        jobId: row.id,
      });
      this.#store.markDone(row.id, saved.generationId);
      this.#engineFailures = 0;
    } catch (err) {
      this.#finishWithError(cur, err, modelName);
    } finally {
      if (cur.trailing) clearTimeout(cur.trailing);
      this.#current = null;
      this.#emitQueue();
      void this.prune();
    }
  }

  #finishWithError(cur: Current, err: unknown, modelName: string | null): void {
    const cancelled =
      (err instanceof StudioError && err.code === 'cancelled') || isEngineError(err, 'cancelled');
    try {
      if (cancelled && cur.shutdown && !cur.cancelRequested) {
        this.#store.requeueFront(cur.id, { countAttempt: false });
      } else if (cancelled && (cur.cancelRequested || cur.shutdown)) {
        this.#store.markCancelled([cur.id], ['running']);
      } else if (describeJobFailure(err).code === 'disk-full') {
        // Not the job's fault: it waits at the front, its attempt given back, until there is room.
        this.#pauseForFullDisk();
        this.#store.requeueFront(cur.id, { countAttempt: false });
      } else {
        const failure = describeJobFailure(err, modelName);
        if (failure.code === 'internal') this.context.log(`Job ${cur.id} failed: ${String(err)}`);
        this.#store.markFailed(cur.id, failure.code, failure.message);
        if (systemicFailures.has(failure.code)) this.#countEngineFailure(failure.message);
      }
    } catch (writeErr) {
      // The library is gone (closing) or read-only: the job stays 'running' in the database and
      // is recovered at the next start.
      this.context.log(`Job ${cur.id} could not be updated: ${String(writeErr)}`);
    }
  }

  /**
   * A full disk: every job would fail the same way, so the queue pauses (in memory first: the
   * flag's own write may fail too) with a reason the studio shows; resuming clears it.
   */
  #pauseForFullDisk(): void {
    if (this.#pauseReason === null)
      this.context.log('The disk is full: the queue is paused until it is resumed.');
    this.#pauseReason =
      'The disk is full, so the queue paused before saving more images. Free some space, then resume it: the waiting jobs are kept.';
    try {
      this.#store.setPaused(true);
    } catch {
      // the reason in memory holds the queue; the flag is written when there is room
    }
    this.#emitQueue();
  }

  /**
   * When the engine itself keeps failing (its worker cannot start, the provider breaks, the disk
   * is full), every queued job would fail in turn; after a few in a row the queue pauses and
   * says why, so the rest wait for the problem to be fixed instead.
   */
  #countEngineFailure(message: string): void {
    this.#engineFailures += 1;
    if (this.#engineFailures < engineFailureLimit) return;
    this.#store.setPaused(true);
    this.context.updateEngineStatus({
      state: 'error',
      message: `The queue was paused after ${this.#engineFailures} jobs in a row failed: ${message} Resume it once the problem is fixed.`,
    });
  }

  async #encode(
    settings: GenerationSettings,
    result: GenerateResult,
    model: ModelEntry,
    vaeFields: { VAE?: string; 'VAE hash'?: string },
    networks: ResolvedNetworks | null,
    verdicts: SafetyVerdict[] | null = null,
    /** A1111's `ControlNet N` fields of the job's units. */
    controlFields: Record<string, string> = {},
  ): Promise<{ images: SaveImageInput[]; watermark: string | null }> {
    const out: SaveImageInput[] = [];
    const markOn = this.context.settings.get().watermark;
    let watermark: string | null = null;
    for (const [i, generated] of result.images.entries()) {
      // Marked before it is encoded, as the reference scripts do; the PNG's text says so.
      const marked = markGenerated(generated.image, result.family ?? model.family, markOn);
      const image = marked.image;
      if (marked.watermark) watermark = marked.watermark.label;
      const metadata = imageMetadata(
        settings,
        generated,
        model.name,
        { ...convertedModelFields(model.path), ...vaeFields },
        {
          ...(networks ? networkInfotextFields(networks) : {}),
          ...controlFields,
          ...(verdicts ? contentFilterFields(verdicts[i]) : {}),
          ...taesdInfotextFields(settings),
        },
      );
      if (marked.watermark)
        metadata.extra = { ...metadata.extra, Watermark: marked.watermark.label };
      const png = await encodePngWithMetadata(
        toBytes(image),
        image.width,
        image.height,
        image.channels === 4 ? 4 : 3,
      );
      out.push({
        png,
        metadata,
        width: image.width,
        height: image.height,
        seed: generated.seed,
        batchIndex: generated.batchIndex,
        contentFilter: verdicts ? verdicts[i] : null,
      });
    }
    return { images: out, watermark };
  }

  #cancelCurrent(): void {
    const cur = this.#current;
    if (!cur || cur.saving) return;
    cur.cancelRequested = true;
    cur.controller.abort();
  }

  // -------------------------------------------------------------------------------------------
  // Progress and events

  /** A replacement VAE being hashed or converted: the loading stage, counted in weights. */
  #onLoadingProgress(cur: Current, p: VaePrepareProgress, force: boolean): void {
    if (this.#current !== cur || cur.saving) return;
    cur.stage = 'loading';
    if (p.phase === 'hashing') {
      cur.step = Math.floor((100 * p.bytesDone) / Math.max(1, p.bytesTotal));
      cur.total = 100;
      cur.etaMs = null;
    } else {
      cur.step = p.tensorsDone;
      cur.total = Math.max(1, p.tensorsTotal);
      cur.etaMs = p.etaSeconds === null ? null : p.etaSeconds * 1000;
    }
    this.#emitProgress(cur, force);
  }

  #onProgress(cur: Current, p: GenerateProgress): void {
    if (this.#current !== cur || cur.saving) return;
    cur.step = p.batch * p.total + p.step;
    cur.total = Math.max(1, p.batchCount * p.total);
    cur.etaMs = p.etaMs;
    cur.stage = p.stage;
    const firstDenoise = p.stage === 'denoise' && !cur.denoiseSeen;
    if (firstDenoise) {
      cur.denoiseSeen = true;
      this.#setEngineState('generating');
    }
    if (p.preview && !cur.encodingPreview) {
      cur.encodingPreview = true;
      const step = cur.step;
      previewDataUrl(p.preview)
        .then(
          (url) => {
            cur.pendingPreview = { url, step };
          },
          () => {},
        )
        .finally(() => {
          cur.encodingPreview = false;
          // The first preview goes out at once, so the picture shows from the first steps.
          if (this.#current === cur && !cur.saving) this.#emitProgress(cur, !cur.previewSent);
        });
    }
    this.#emitProgress(cur, firstDenoise);
  }

  /**
   * Sends jobProgress at most every progressIntervalMs (forced: at once); a held-back update is
   * sent by a trailing timer, so the last state always arrives.
   */
  #emitProgress(cur: Current, force: boolean): void {
    const now = performance.now();
    const wait = this.#options.progressIntervalMs - (now - cur.lastEmit);
    if (!force && wait > 0) {
      cur.trailing ??= setTimeout(() => {
        cur.trailing = null;
        if (this.#current === cur && !cur.saving) this.#emitProgress(cur, true);
      }, wait);
      return;
    }
    if (cur.trailing) {
      clearTimeout(cur.trailing);
      cur.trailing = null;
    }
    cur.lastEmit = now;
    const preview = cur.pendingPreview;
    cur.pendingPreview = null;
    if (preview) cur.previewSent = true;
    this.context.events.emit('jobProgress', {
      jobId: cur.id,
      stage: cur.stage,
      step: cur.step,
      total: cur.total,
      elapsedMs: Math.round(now - cur.startedAt),
      etaMs: cur.etaMs === null ? null : Math.round(cur.etaMs),
      preview: preview?.url ?? null,
      previewStep: preview?.step ?? null,
    });
    if (now - cur.lastQueueEmit >= this.#options.queueIntervalMs) {
      cur.lastQueueEmit = now;
      this.#emitQueue();
    }
  }

  #emitQueue(): void {
    try {
      this.context.events.emit('queueChanged', this.state());
    } catch (err) {
      this.context.log(`The queue state could not be read: ${(err as Error).message}`);
    }
  }

  #setEngineState(state: 'idle' | 'loading' | 'generating'): void {
    if (this.#engineState === state) return;
    this.#engineState = state;
    this.context.updateEngineStatus({ state, message: null });
  }

  #toJob(row: JobRow, position: number | null): Job {
    const settings = parseSettings(row.settings);
    const estimate = settings ? estimateTotal(settings) : 0;
    const cur = this.#current?.id === row.id ? this.#current : null;
    const step = cur ? cur.step : row.state === 'done' ? estimate : 0;
    const total = cur ? cur.total : estimate;
    return {
      id: row.id,
      state: row.state,
      position,
      settings: settings ?? (JSON.parse(row.settings) as GenerationSettings),
      createdAt: row.created_at,
      startedAt: row.started_at,
      finishedAt: row.finished_at,
      step,
      total,
      error:
        row.error_code !== null
          ? { code: row.error_code, message: row.error_message ?? 'The job failed.' }
          : null,
      generationId: row.generation_id,
    };
  }
}

/** Denoising steps of a whole job, before the engine reports its own count. */
function estimateTotal(settings: GenerationSettings): number {
  const partial = settings.mode === 'img2img' || settings.mode === 'inpaint';
  const steps = partial
    ? Math.max(1, Math.min(settings.steps, Math.floor(settings.steps * settings.strength)))
    : settings.steps;
  return steps * settings.batchCount;
}

/**
 * The PNG metadata of one image: the job's settings narrowed to make exactly this image again
 * (its own seed, one batch; under per-image seeds a batch of one).
 */
export function imageMetadata(
  settings: GenerationSettings,
  generated: GeneratedImage,
  modelName: string,
  /**
   * `Model hash` / `VAE` of a model converted from a checkpoint (convertedModelFields), and
   * `VAE hash` / `VAE` of a replacement VAE (vaeInfotextFields), which wins.
   */
  converted: { modelHash?: string; VAE?: string; 'VAE hash'?: string } = {},
  /** `Lora hashes` / `TI hashes` of the files the prompt used (networkInfotextFields). */
  networkFields: Record<string, string> = {},
): PngGenerationMetadata {
  const perImage = settings.seedMode === 'per-image';
  return {
    settings: {
      ...settings,
      seed: generated.seed,
      batchCount: 1,
      ...(perImage ? { batchSize: 1 } : {}),
    },
    extra: {
      modelName,
      ...converted,
      ...networkFields,
      ...(!perImage && settings.batchSize > 1
        ? { 'Batch size': settings.batchSize, 'Batch pos': generated.batchIndex }
        : {}),
      version: `Latent Studio ${appVersion}`,
    },
  };
}

/** The LoRAs and embeddings a generation used, for the history's rows (gallery filters). */
/** What the history records of the networks; `reports` (the engine's) add each LoRA's counts. */
function networkUses(n: ResolvedNetworks, reports: readonly LoraReport[]): GenerationNetwork[] {
  const hashes = (list: ResolvedNetworks['loraHashes']) =>
    new Map(list.map((h) => [h.name, h.hash]));
  const lora = hashes(n.loraHashes);
  const ti = hashes(n.tiHashes);
  const strip = (name: string) => name.replace(/[:,]/g, '');
  return [
    ...n.loras.map((l, i) => ({
      kind: 'lora' as const,
      name: l.name,
      hash: lora.get(strip(l.name)) ?? null,
      ...(reports[i]
        ? { tensors: reports[i].tensors, unmatchedTensors: reports[i].unmatchedTensors }
        : {}),
    })),
    ...n.embeddings.map((e) => ({
      kind: 'embedding' as const,
      name: e.token,
      hash: ti.get(strip(e.token)) ?? null,
    })),
  ];
}

function toBytes(image: PixelImage): Uint8Array {
  return image.data instanceof Uint8Array
    ? image.data
    : new Uint8Array(image.data.buffer, image.data.byteOffset, image.data.byteLength);
}
