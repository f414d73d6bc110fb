// The engine's worker thread: owns the ONNX sessions and runs one request at a time, so the
// host's event loop (IPC, SQLite, the UI) never waits on inference.
import { parentPort, workerData } from 'node:worker_threads';
import { DiffusionEngine } from './engine';
import { describeEngineError } from './describe-error';
import { answerConversion } from './convert/in-worker';
import { answerInspection } from './models/inspect';
import { setBackgroundState } from './models/providers';
import type { FromWorker, ToWorker } from './protocol';

const port = parentPort;
if (!port) throw new Error('engine-worker must run as a worker thread');
// A thread started to inspect a model folder (models/inspect.ts) or to convert a checkpoint
// (convert/in-worker.ts) answers that and is ended by its parent; it never gets an engine
// request (a converter's `cancel` carries no request id, so the engine ignores it).
if (!answerInspection(port, workerData)) answerConversion(port, workerData);

const engine = new DiffusionEngine();
const running = new Map<number, AbortController>();
let queue: Promise<void> = Promise.resolve();

const send = (message: FromWorker, transfer: ArrayBuffer[] = []) =>
  port.postMessage(message, transfer);

port.on('message', (message: ToWorker) => {
  switch (message.type) {
    case 'configure':
      engine.configure(message.options);
      break;
    case 'background': {
      // Handled on this thread: it creates the sessions and runs them, so its priority and the
      // intra-op threads it started are the engine's (models/priority.ts). session.run holds
      // this thread, so a change during a generation applies from the next step.
      const applied = setBackgroundState(message.state);
      if (applied.refused) send({ type: 'notice', message: applied.refused });
      break;
    }
    case 'cancel':
      running.get(message.id)?.abort();
      break;
    case 'shutdown':
      // Never terminate a thread inside session.run: ONNX Runtime aborts the whole process.
      for (const controller of running.values()) controller.abort();
      queue = queue.then(async () => {
        await engine.release();
        process.exit(0);
      });
      break;
    case 'release':
      queue = queue.then(async () => {
        await engine.release();
        send({ type: 'released', id: message.id });
      });
      break;
    case 'generate': {
      const controller = new AbortController();
      running.set(message.id, controller);
      queue = queue.then(async () => {
        try {
          const result = await engine.generate(message.request, {
            signal: controller.signal,
            onProgress: (progress) => {
              const transfer = progress.preview
                ? [progress.preview.data.buffer as ArrayBuffer]
                : [];
              send({ type: 'progress', id: message.id, progress }, transfer);
            },
          });
          send(
            { type: 'result', id: message.id, result },
            result.images.map((i) => i.image.data.buffer as ArrayBuffer),
          );
        } catch (err) {
          send({ type: 'error', id: message.id, error: describeEngineError(err) });
        } finally {
          running.delete(message.id);
        }
      });
      break;
    }
  }
});

send({ type: 'ready' });
