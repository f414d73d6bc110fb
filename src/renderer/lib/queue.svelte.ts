import type { GenerationInput, Job, JobProgress, QueueState } from '../../shared';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

export const stageLabels: Record<JobProgress['stage'], string> = {
  loading: 'Loading the model',
  text: 'Reading the prompt',
  encode: 'Encoding the image',
  denoise: 'Denoising',
  decode: 'Decoding',
  saving: 'Saving',
};

const clearedKey = 'latent-studio:queue-cleared-before';

function readClearedBefore(): number {
  try {
    return Number(localStorage.getItem(clearedKey)) || 0;
  } catch {
    return 0;
  }
}

/** The durable queue: what runs, what waits, what finished; live progress of the running job. */
export class Queue {
  state = $state.raw<QueueState>({ paused: false, pausedReason: null, jobs: [] });
  progress = $state.raw<JobProgress | null>(null);
  /** The newest preview picture (events carry one only when a new one was made). */
  preview = $state.raw<{ jobId: string; url: string; step: number } | null>(null);
  problem = $state<string | null>(null);
  submitting = $state(false);

  running = $derived(this.state.jobs.find((j) => j.state === 'running') ?? null);
  queued = $derived(
    this.state.jobs
      .filter((j) => j.state === 'queued' || j.state === 'paused')
      .sort((a, b) => (a.position ?? 0) - (b.position ?? 0)),
  );
  /** Finished jobs up to this time are cleared from the list (the gallery keeps the images). */
  clearedBefore = $state(readClearedBefore());
  finished = $derived(
    this.state.jobs
      .filter((j) => j.state === 'done' || j.state === 'failed' || j.state === 'cancelled')
      .filter((j) => (j.finishedAt ?? 0) > this.clearedBefore)
      .sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0))
      .slice(0, 30),
  );
  /** Progress of the running job only (events of finished jobs may still trickle in). */
  current = $derived(
    this.progress && this.running && this.progress.jobId === this.running.id ? this.progress : null,
  );
  /** The running job's latest preview, kept between the events that bring a new one. */
  livePreview = $derived(
    this.preview && this.running && this.preview.jobId === this.running.id ? this.preview : null,
  );
  busy = $derived(this.running !== null || this.queued.length > 0);
  /** Nothing running, waiting or finished to show. */
  empty = $derived(!this.busy && this.finished.length === 0);

  constructor(private readonly studio: Studio) {}

  /** Takes a new queue state and tells the studio about jobs that finished since the last. */
  set(next: QueueState): void {
    const before = Object.fromEntries(this.state.jobs.map((j) => [j.id, j.state]));
    this.state = next;
    this.problem = null;
    for (const job of next.jobs) {
      const was = before[job.id];
      if (!was || was === job.state) continue;
      if (job.state === 'done') this.studio.jobDone(job);
      else if (job.state === 'failed') this.studio.jobFailed(job);
    }
  }

  onProgress(progress: JobProgress): void {
    this.progress = progress;
    if (progress.preview)
      this.preview = {
        jobId: progress.jobId,
        url: progress.preview,
        step: progress.previewStep ?? progress.step,
      };
  }

  async load(): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    try {
      this.set(await api.getQueue());
    } catch (err) {
      this.problem = describeError(err);
    }
  }

  async enqueue(settings: GenerationInput): Promise<boolean> {
    const api = this.studio.api;
    if (!api) return false;
    this.submitting = true;
    try {
      this.set(await api.enqueue({ settings }));
      return true;
    } catch (err) {
      this.studio.notices.error(err, 'Could not start the generation');
      return false;
    } finally {
      this.submitting = false;
    }
  }

  async #run(action: () => Promise<QueueState>, failure: string): Promise<void> {
    try {
      this.set(await action());
    } catch (err) {
      this.studio.notices.error(err, failure);
    }
  }

  cancel(job: Job): Promise<void> {
    return this.#run(() => this.studio.api!.cancelJob({ id: job.id }), 'Could not cancel');
  }

  cancelAll(): Promise<void> {
    return this.#run(() => this.studio.api!.cancelAll(), 'Could not cancel the queue');
  }

  togglePause(): Promise<void> {
    const api = this.studio.api!;
    return this.state.paused
      ? this.#run(() => api.resumeQueue(), 'Could not resume the queue')
      : this.#run(() => api.pauseQueue(), 'Could not pause the queue');
  }

  /** Clears the finished jobs from the list, for this studio, also after a reload. */
  clearFinished(): void {
    this.clearedBefore = Math.max(
      ...this.finished.map((j) => j.finishedAt ?? 0),
      this.clearedBefore,
    );
    try {
      localStorage.setItem(clearedKey, String(this.clearedBefore));
    } catch {
      // Storage refused (private mode, quota): cleared for this session only.
    }
  }

  move(job: Job, position: number): Promise<void> {
    if (position < 0 || position >= this.queued.length) return Promise.resolve();
    return this.#run(
      () => this.studio.api!.moveJob({ id: job.id, position }),
      'Could not reorder the queue',
    );
  }
}
