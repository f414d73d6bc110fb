import { Worker } from 'node:worker_threads';
import type { EngineErrorInfo } from './describe-error';
import type { EngineOptions, GenerateRequest, GenerateResult } from './engine';
import type { BackgroundState } from './models/priority';
import { EngineError, type EngineErrorCode } from './errors';
import type { GenerateProgress } from './pipelines/generate';
import type { FromWorker, ToWorker } from './protocol';

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  onProgress?: (p: GenerateProgress) => void;
}

/**
 * The host's handle on the engine worker. Requests queue inside the worker; each can be
 * cancelled through its AbortSignal. If the worker dies (a native crash, OOM-kill), every
 * pending request fails with a clear error and the next request starts a fresh worker.
 */
export class EngineClient {
  #worker: Worker | null = null;
  #nextId = 1;
  #pending = new Map<number, Pending>();
  #options: EngineOptions;
  #background: BackgroundState = { background: false, onBattery: false, mode: 'gentle' };
  #notice: string | null = null;

  constructor(
    private readonly workerPath: string,
    options: EngineOptions = {},
    /** Told once when the engine's threads could not follow a background change. */
    private readonly onNotice: (message: string) => void = () => undefined,
  ) {
    this.#options = options;
  }

  /**
   * Whether the studio is in the background, whether the machine is on battery, and what the
   * person chose for them: the engine's threads follow at once (their priority) and sessions
   * created later (their spinning); a worker started later gets it first thing.
   */
  setBackground(state: Partial<BackgroundState>): void {
    const next = { ...this.#background, ...state };
    const prev = this.#background;
    if (
      next.background === prev.background &&
      next.onBattery === prev.onBattery &&
      next.mode === prev.mode
    )
      return;
    this.#background = next;
    this.#worker?.postMessage({ type: 'background', state: next } satisfies ToWorker);
  }

  configure(options: EngineOptions): void {
    this.#options = { ...this.#options, ...options };
    this.#worker?.postMessage({ type: 'configure', options: this.#options } satisfies ToWorker);
  }

  generate(
    request: GenerateRequest,
    opts: { signal?: AbortSignal; onProgress?: (p: GenerateProgress) => void } = {},
  ): Promise<GenerateResult> {
    if (opts.signal?.aborted)
      return Promise.reject(new EngineError('cancelled', 'Generation was cancelled.'));
    const worker = this.#ensureWorker();
    const id = this.#nextId++;
    return new Promise<GenerateResult>((resolve, reject) => {
      const onAbort = () => worker.postMessage({ type: 'cancel', id } satisfies ToWorker);
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      this.#pending.set(id, {
        resolve: (v) => {
          opts.signal?.removeEventListener('abort', onAbort);
          resolve(v as GenerateResult);
        },
        reject: (e) => {
          opts.signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
        onProgress: opts.onProgress,
      });
      worker.ref();
      worker.postMessage({ type: 'generate', id, request } satisfies ToWorker);
    });
  }

  /** Releases the loaded model's sessions (memory) without stopping the worker. */
  release(): Promise<void> {
    if (!this.#worker) return Promise.resolve();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve: () => resolve(), reject });
      this.#worker!.ref();
      this.#worker!.postMessage({ type: 'release', id } satisfies ToWorker);
    });
  }

  /**
   * Stops the worker gracefully: pending requests are cancelled (they reject with 'cancelled'),
   * the step in flight finishes, sessions are released, then the thread ends. Terminating a
   * thread inside session.run would abort the whole process, so terminate() is only the last
   * resort after `graceMs`.
   */
  async close(graceMs = 60_000): Promise<void> {
    const worker = this.#worker;
    if (!worker) return;
    this.#worker = null;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    for (const id of this.#pending.keys())
      worker.postMessage({ type: 'cancel', id } satisfies ToWorker);
    worker.postMessage({ type: 'shutdown' } satisfies ToWorker);
    worker.ref();
    const timer = setTimeout(() => void worker.terminate(), graceMs);
    await exited;
    clearTimeout(timer);
    this.#failAll(new EngineError('cancelled', 'The engine was shut down.'));
  }

  #ensureWorker(): Worker {
    if (this.#worker) return this.#worker;
    const worker = new Worker(this.workerPath);
    // The worker keeps the process alive only while requests are pending (ref/unref below).
    worker.unref();
    worker.postMessage({ type: 'configure', options: this.#options } satisfies ToWorker);
    worker.postMessage({ type: 'background', state: this.#background } satisfies ToWorker);
    worker.on('message', (message: FromWorker) => this.#receive(message));
    worker.on('error', (err) => {
      if (this.#worker === worker) this.#worker = null;
      this.#failAll(new EngineError('internal', `The engine stopped unexpectedly: ${err.message}`));
    });
    worker.on('exit', (code) => {
      if (this.#worker !== worker) return;
      this.#worker = null;
      this.#failAll(
        new EngineError(
          'internal',
          `The engine stopped unexpectedly (exit code ${code}); it restarts with the next request.`,
        ),
      );
    });
    this.#worker = worker;
    return worker;
  }

  #receive(message: FromWorker): void {
    if (message.type === 'ready') return;
    if (message.type === 'notice') {
      if (message.message !== this.#notice) this.onNotice(message.message);
      this.#notice = message.message;
      return;
    }
    const pending = this.#pending.get(message.id);
    if (!pending) return;
    switch (message.type) {
      case 'progress':
        pending.onProgress?.(message.progress);
        return;
      case 'result':
        this.#settle(message.id);
        pending.resolve(message.result);
        return;
      case 'released':
        this.#settle(message.id);
        pending.resolve(undefined);
        return;
      case 'error':
        this.#settle(message.id);
        pending.reject(toEngineError(message.error));
        return;
    }
  }

  #settle(id: number): void {
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#worker?.unref();
  }

  #failAll(err: Error): void {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of all) p.reject(err);
  }
}

function toEngineError(info: EngineErrorInfo): EngineError {
  return new EngineError(
    info.code as EngineErrorCode,
    info.message,
    info.file ? { file: info.file } : {},
  );
}
