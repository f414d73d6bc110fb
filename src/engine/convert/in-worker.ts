/**
 * Converting a checkpoint (or a VAE-only file, a ControlNet, the safety checker) off the caller's
 * thread. Widening one large fp16 tensor, or building a
 * UNet graph, is seconds of synchronous work; in the studio's host that would stall IPC, SQLite
 * and the UI. So the host runs convertCheckpoint in a worker thread of the engine worker's bundle
 * (started with `workerData` asking for a conversion instead of the engine's message loop), as
 * models/inspect.ts does for folder inspection. Progress comes back as messages.
 *
 * Cancel first asks the thread to stop (it then removes its temporary folder and closes the
 * checkpoint itself); a thread still busy after a short grace (inside one tensor) is terminated
 * and its temporary folder removed here. No ONNX session exists in that thread, so terminating
 * it is safe.
 */
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Worker, type MessagePort } from 'node:worker_threads';
import { describeEngineError, type EngineErrorInfo } from '../describe-error';
import { EngineError, type EngineErrorCode } from '../errors';
import {
  type ConvertOptions,
  type ConvertProgress,
  type ConvertResult,
  convertCheckpoint,
} from './convert';
import { type ConvertVaeOptions, type VaeConversionRecord, convertVae } from './convert-vae';
import {
  type ControlNetConversionRecord,
  type ConvertControlNetOptions,
  convertControlNet,
} from './convert-controlnet';
import {
  type ConvertSafetyOptions,
  type SafetyConversionRecord,
  convertSafetyChecker,
} from './convert-safety';

/** What a conversion in a worker takes: ConvertOptions less what cannot cross a thread. */
export type WorkerConvertOptions = Omit<ConvertOptions, 'freeBytes'>;

/** How long a cancelled thread gets to stop by itself before it is terminated. */
export const CANCEL_GRACE_MS = 500;

const role = 'convert-checkpoint';

type ConvertRequest = {
  role: typeof role;
  file: string;
  outDir: string;
} & (
  | { kind?: 'checkpoint'; options: Omit<WorkerConvertOptions, 'signal' | 'onProgress'> }
  | { kind: 'vae'; options: Omit<ConvertVaeOptions, 'signal' | 'onProgress'> }
  | { kind: 'safety'; options: Omit<ConvertSafetyOptions, 'signal'> }
  | { kind: 'controlnet'; options: Omit<ConvertControlNetOptions, 'signal' | 'onProgress'> }
);

/** What convertVae gives. */
export type VaeConversionResult = VaeConversionRecord & { dir: string };
/** What convertSafetyChecker gives. */
export type SafetyConversionResult = SafetyConversionRecord & { dir: string };
/** What convertControlNet gives. */
export type ControlNetConversionResult = ControlNetConversionRecord & { dir: string };

type AnyConversionResult =
  ConvertResult | VaeConversionResult | SafetyConversionResult | ControlNetConversionResult;

type ToConverter = { type: 'cancel' };

type FromConverter =
  | { type: 'progress'; progress: ConvertProgress }
  | { type: 'converted'; result: AnyConversionResult }
  | { type: 'convert-failed'; error: EngineErrorInfo };

function isConvertRequest(data: unknown): data is ConvertRequest {
  const r = data as ConvertRequest | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    r.role === role &&
    typeof r.file === 'string' &&
    typeof r.outDir === 'string' &&
    typeof r.options === 'object'
  );
}

/**
 * In the engine worker's entry: when this thread was started by convertCheckpointInWorker,
 * convert and post the outcome (the parent then ends the thread). Returns whether it was.
 */
export function answerConversion(port: MessagePort | null, data: unknown): boolean {
  if (!port || !isConvertRequest(data)) return false;
  const controller = new AbortController();
  port.on('message', (m: ToConverter) => {
    if (m.type === 'cancel') controller.abort();
  });
  const send = (m: FromConverter): void => port.postMessage(m);
  const callbacks = {
    signal: controller.signal,
    onProgress: (progress: ConvertProgress) => send({ type: 'progress', progress }),
  };
  const converting: Promise<AnyConversionResult> =
    data.kind === 'vae'
      ? convertVae(data.file, data.outDir, { ...data.options, ...callbacks })
      : data.kind === 'safety'
        ? convertSafetyChecker(data.file, data.outDir, {
            ...data.options,
            signal: controller.signal,
          })
        : data.kind === 'controlnet'
          ? convertControlNet(data.file, data.outDir, { ...data.options, ...callbacks })
          : convertCheckpoint(data.file, data.outDir, { ...data.options, ...callbacks });
  converting.then(
    (result) => send({ type: 'converted', result }),
    (err: unknown) => send({ type: 'convert-failed', error: describeEngineError(err) }),
  );
  return true;
}

/** Removes the temporary folders convertCheckpoint makes beside `outDir` (see convert.ts). */
async function removePartials(outDir: string): Promise<void> {
  const parent = path.dirname(outDir);
  const prefix = `.${path.basename(outDir)}.partial-`;
  const entries = await readdir(parent).catch(() => [] as string[]);
  await Promise.all(
    entries
      .filter((e) => e.startsWith(prefix))
      .map((e) => rm(path.join(parent, e), { recursive: true, force: true })),
  );
}

/**
 * convertCheckpoint(file, outDir, options) in a new worker thread of `workerPath` (the engine
 * worker bundle), with the same result and EngineErrors. Aborting `options.signal` rejects with
 * EngineError 'cancelled' once the thread has stopped and nothing of the output is left.
 */
export function convertCheckpointInWorker(
  workerPath: string,
  file: string,
  outDir: string,
  options: WorkerConvertOptions,
): Promise<ConvertResult> {
  const { signal, onProgress, ...rest } = options;
  return inWorker<ConvertResult>(
    workerPath,
    { role, file, outDir, options: rest },
    { signal, onProgress },
  );
}

/**
 * convertVae(file, outDir, options) in a new worker thread of `workerPath`, as
 * convertCheckpointInWorker does for checkpoints (same cancel and clean-up).
 */
export function convertVaeInWorker(
  workerPath: string,
  file: string,
  outDir: string,
  options: ConvertVaeOptions,
): Promise<VaeConversionResult> {
  const { signal, onProgress, ...rest } = options;
  return inWorker<VaeConversionResult>(
    workerPath,
    { role, kind: 'vae', file, outDir, options: rest },
    { signal, onProgress },
  );
}

/**
 * convertSafetyChecker(file, outDir, options) in a new worker thread of `workerPath`, as
 * convertCheckpointInWorker does for checkpoints (same cancel and clean-up): the content filter's
 * checker is a 1.2 GB file whose conversion would otherwise stall the host for seconds.
 */
export function convertSafetyCheckerInWorker(
  workerPath: string,
  file: string,
  outDir: string,
  options: ConvertSafetyOptions,
): Promise<SafetyConversionResult> {
  const { signal, ...rest } = options;
  return inWorker<SafetyConversionResult>(
    workerPath,
    { role, kind: 'safety', file, outDir, options: rest },
    { signal },
  );
}

/**
 * convertControlNet(file, outDir, options) in a new worker thread of `workerPath`, as
 * convertCheckpointInWorker does for checkpoints (same progress, cancel and clean-up): a full-size
 * ControlNet is 1.4 GB whose conversion would otherwise stall the host for its whole length.
 */
export function convertControlNetInWorker(
  workerPath: string,
  file: string,
  outDir: string,
  options: ConvertControlNetOptions,
): Promise<ControlNetConversionResult> {
  const { signal, onProgress, ...rest } = options;
  return inWorker<ControlNetConversionResult>(
    workerPath,
    { role, kind: 'controlnet', file, outDir, options: rest },
    { signal, onProgress },
  );
}

/** How a crash message names each converter. */
const CONVERTER_NAMES: Record<NonNullable<ConvertRequest['kind']>, string> = {
  checkpoint: 'checkpoint',
  vae: 'VAE',
  safety: 'content-filter checker',
  controlnet: 'ControlNet',
};

function inWorker<R>(
  workerPath: string,
  request: ConvertRequest,
  {
    signal,
    onProgress,
  }: { signal?: AbortSignal | undefined; onProgress?: ((p: ConvertProgress) => void) | undefined },
): Promise<R> {
  const outDir = request.outDir;
  if (signal?.aborted) {
    return Promise.reject(new EngineError('cancelled', 'The conversion was cancelled.'));
  }
  const what = CONVERTER_NAMES[request.kind ?? 'checkpoint'];
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerPath, { workerData: request });
    let settled = false;
    let grace: NodeJS.Timeout | undefined;
    const finish = (outcome: () => void, cleanUp = false): void => {
      if (settled) return;
      settled = true;
      clearTimeout(grace);
      signal?.removeEventListener('abort', onAbort);
      void worker
        .terminate()
        .then(() => (cleanUp ? removePartials(outDir) : undefined))
        .catch(() => undefined)
        .then(outcome);
    };
    const cancelledError = () => new EngineError('cancelled', 'The conversion was cancelled.');
    function onAbort(): void {
      worker.postMessage({ type: 'cancel' } satisfies ToConverter);
      // Busy inside one tensor: stop it here rather than wait for the next check.
      grace = setTimeout(() => finish(() => reject(cancelledError()), true), CANCEL_GRACE_MS);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.on('message', (m: FromConverter | { type: string }) => {
      const message = m as FromConverter;
      if (message.type === 'progress') {
        if (!settled) onProgress?.(message.progress);
      } else if (message.type === 'converted') {
        finish(() => resolve(message.result as R));
      } else if (message.type === 'convert-failed') {
        const { code, message: text, file: where } = message.error;
        finish(
          () =>
            reject(
              signal?.aborted
                ? cancelledError()
                : new EngineError(code as EngineErrorCode, text, where ? { file: where } : {}),
            ),
          true,
        );
      }
    });
    worker.on('error', (err) =>
      finish(
        () =>
          reject(
            new EngineError(
              'internal',
              `The ${what} converter stopped unexpectedly: ${err.message.split('\n')[0]}`,
            ),
          ),
        true,
      ),
    );
    worker.on('exit', (code) =>
      finish(
        () =>
          reject(
            signal?.aborted
              ? cancelledError()
              : new EngineError(
                  'internal',
                  `The ${what} converter stopped unexpectedly (exit code ${code}).`,
                ),
          ),
        true,
      ),
    );
  });
}
