/**
 * Inspecting a model folder (openModelFolder + detectFamily: files read, headers parsed, the
 * family told) off the caller's thread, with a time limit.
 *
 * The host inspects folders at start-up (built-in models) and when a person adds one. Reading
 * an ONNX header is synchronous and, for a model with inline weights, thousands of reads; a
 * folder on a stalled network mount can take any time. So the host runs it in a worker thread
 * of the engine worker's bundle (started with `workerData` asking for an inspection instead of
 * the engine's message loop) and terminates it when the time is up: the host's event loop never
 * waits on a model folder. No session is created in that thread, so terminating it is safe.
 */
import { Worker, type MessagePort } from 'node:worker_threads';
import { describeEngineError, type EngineErrorInfo } from '../describe-error';
import { EngineError, type EngineErrorCode } from '../errors';
import { detectFamily } from './family';
import { openModelFolder } from './folder';
import type { FamilyInfo, ModelInfo } from './types';

/** A model folder as the inspector read it, and its family. */
export interface FolderInspection {
  info: ModelInfo;
  family: FamilyInfo;
}

/** Inspects a model folder in this thread. Throws EngineError naming the first broken file. */
export async function inspectFolder(dir: string): Promise<FolderInspection> {
  const info = await openModelFolder(dir);
  return { info, family: detectFamily(info) };
}

const role = 'inspect-model-folder';

interface InspectRequest {
  role: typeof role;
  dir: string;
}

type InspectReply =
  | { type: 'inspected'; inspection: FolderInspection }
  | { type: 'inspect-failed'; error: EngineErrorInfo };

function isInspectRequest(data: unknown): data is InspectRequest {
  return (
    typeof data === 'object' &&
    data !== null &&
    (data as InspectRequest).role === role &&
    typeof (data as InspectRequest).dir === 'string'
  );
}

/**
 * In the engine worker's entry: when this thread was started by inspectFolderInWorker, inspect
 * and post the answer (the parent then ends the thread). Returns whether it was.
 */
export function answerInspection(port: MessagePort | null, data: unknown): boolean {
  if (!port || !isInspectRequest(data)) return false;
  inspectFolder(data.dir).then(
    (inspection) => port.postMessage({ type: 'inspected', inspection } satisfies InspectReply),
    (err: unknown) =>
      port.postMessage({
        type: 'inspect-failed',
        error: describeEngineError(err),
      } satisfies InspectReply),
  );
  return true;
}

/**
 * Inspects `dir` in a new worker thread of `workerPath` (the engine worker bundle). After
 * `timeLimitMs` the thread is terminated and EngineError 'model-corrupt' says so in a sentence.
 */
export function inspectFolderInWorker(
  workerPath: string,
  dir: string,
  { timeLimitMs }: { timeLimitMs: number },
): Promise<FolderInspection> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(workerPath, {
      workerData: { role, dir } satisfies InspectRequest,
    });
    let settled = false;
    const finish = (outcome: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void worker.terminate();
      outcome();
    };
    const timer = setTimeout(
      () =>
        finish(() =>
          reject(new EngineError('model-corrupt', inspectionTimedOut(dir, timeLimitMs))),
        ),
      timeLimitMs,
    );
    worker.on('message', (reply: InspectReply | { type: string }) => {
      if (reply.type === 'inspected')
        finish(() => resolve((reply as Extract<InspectReply, { type: 'inspected' }>).inspection));
      else if (reply.type === 'inspect-failed') {
        const error = (reply as Extract<InspectReply, { type: 'inspect-failed' }>).error;
        finish(() =>
          reject(
            new EngineError(
              error.code as EngineErrorCode,
              error.message,
              error.file ? { file: error.file } : {},
            ),
          ),
        );
      }
    });
    worker.on('error', (err) =>
      finish(() =>
        reject(
          new EngineError(
            'internal',
            `The model inspector stopped unexpectedly: ${err.message.split('\n')[0]}`,
          ),
        ),
      ),
    );
    worker.on('exit', (code) =>
      finish(() =>
        reject(
          new EngineError(
            'internal',
            `The model inspector stopped unexpectedly (exit code ${code}).`,
          ),
        ),
      ),
    );
  });
}

/** The sentence for an inspection of `dir` that ran past `timeLimitMs`. */
export function inspectionTimedOut(dir: string, timeLimitMs: number): string {
  const name = dir.split(/[\\/]/).filter(Boolean).pop() ?? dir;
  const limit =
    timeLimitMs >= 1000 ? `${Math.round(timeLimitMs / 1000)} s` : `${Math.round(timeLimitMs)} ms`;
  return `${name} took longer than ${limit} to inspect; check that its files are readable and on a local disk.`;
}
