/**
 * The studio's checkpoint import (contract methods importCheckpoint / cancelCheckpointImport):
 * converts the file into the data folder's cache (checkpoint-cache.ts), then adds the converted
 * folder to the library like any model folder. Progress goes out as `checkpointImport` events,
 * at most a few per second; a failure or cancel leaves nothing in the cache or the library.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { describeEngineError } from '../../engine/describe-error';
import { isEngineError } from '../../engine/errors';
import type {
  CheckpointImportProgress,
  CheckpointImportRequest,
  ModelEntry,
  StudioService,
} from '../../shared';
import { StudioError } from '../../shared';
import type { HostContext } from '../services';
import { ensureConverted, isCheckpointFile, vocabularyIn } from './checkpoint-cache';

const EVENT_INTERVAL_MS = 250;

export class CheckpointImports {
  readonly #running = new Map<string, AbortController>();

  constructor(
    private readonly context: HostContext,
    private readonly addModel: (folder: string) => Promise<ModelEntry>,
  ) {}

  /** This service's slice of the contract (a contract change fails the type check here). */
  readonly methods = {
    importCheckpoint: (input) => this.import(input),
    cancelCheckpointImport: (input) => {
      this.#running.get(path.resolve(input.path))?.abort();
      return null;
    },
  } satisfies Pick<StudioService, 'importCheckpoint' | 'cancelCheckpointImport'>;

  async import(input: CheckpointImportRequest): Promise<ModelEntry> {
    const file = path.resolve(input.path);
    const st = await stat(file).catch(() => null);
    if (!st?.isFile()) {
      throw new StudioError('not-found', `${input.path} is not a file on this computer.`);
    }
    if (!isCheckpointFile(file)) {
      throw new StudioError(
        'invalid-argument',
        `${path.basename(file)} is not a checkpoint file (.safetensors, .ckpt, .pt); to add a model folder, use Add folder.`,
      );
    }
    if (this.#running.has(file)) {
      throw new StudioError(
        'invalid-argument',
        `${path.basename(file)} is already being imported.`,
      );
    }
    if (!this.context.resourcesDir) {
      throw new StudioError(
        'unavailable',
        'Checkpoint import needs the app resources (CLIP vocabulary).',
      );
    }
    const controller = new AbortController();
    this.#running.set(file, controller);
    let lastEvent = 0;
    const emit = (
      p: Partial<CheckpointImportProgress> & { phase: string },
      force = false,
    ): void => {
      const now = Date.now();
      if (!force && now - lastEvent < EVENT_INTERVAL_MS) return;
      lastEvent = now;
      this.context.events.emit('checkpointImport', {
        path: input.path,
        tensorsDone: 0,
        tensorsTotal: 0,
        bytesDone: 0,
        bytesTotal: 0,
        mbPerSecond: 0,
        etaSeconds: null,
        error: null,
        ...p,
      });
    };
    try {
      const result = await ensureConverted(file, {
        dataDir: this.context.dataDir,
        vocabularyFile: vocabularyIn(this.context.resourcesDir),
        signal: controller.signal,
        // Off this thread: the host keeps answering while tensors are widened and written.
        workerPath: this.context.workerPath,
        ...(input.vae ? { vae: path.resolve(input.vae) } : {}),
        ...(input.precision ? { precision: input.precision } : {}),
        ...(input.prediction ? { prediction: input.prediction } : {}),
        ...(input.controlnet ? { controlResiduals: true } : {}),
        onProgress: (p) => emit(p),
      });
      const entry = await this.addModel(result.dir);
      emit({ phase: 'done' }, true);
      this.context.log(`imported ${path.basename(file)} as ${result.dir}`);
      return entry;
    } catch (e) {
      const cancelled = controller.signal.aborted || isEngineError(e, 'cancelled');
      const message = cancelled
        ? `The import of ${path.basename(file)} was cancelled.`
        : e instanceof StudioError
          ? e.message
          : describeEngineError(e).message;
      emit({ phase: cancelled ? 'cancelled' : 'failed', error: message }, true);
      if (e instanceof StudioError) throw e;
      // A file that is not a convertible checkpoint, or a choice to make, is the person's to
      // fix (the sentence says how); a damaged file is the model's problem.
      const code = cancelled
        ? 'cancelled'
        : isEngineError(e, 'model-unsupported') || isEngineError(e, 'bad-input')
          ? 'invalid-argument'
          : 'model';
      throw new StudioError(code, message);
    } finally {
      this.#running.delete(file);
    }
  }
}
