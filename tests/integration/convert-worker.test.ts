// convertCheckpointInWorker: the conversion in a worker thread of the real engine worker bundle
// gives the same folder, progress and errors as in the caller's thread; a thread that does not
// stop when asked (stuck inside one tensor) is terminated and its temporary folder removed.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConvertProgress } from '../../src/engine/convert/convert';
import { CANCEL_GRACE_MS, convertCheckpointInWorker } from '../../src/engine/convert/in-worker';
import { writeLoraFile } from '../fixtures/checkpoint';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { bundleEntry, bundleSource } from './bundle';
import { tempDir } from './library-helpers';

let dir: string;
let workerPath: string;

beforeAll(async () => {
  dir = tempDir('ls-convert-worker-');
  workerPath = await bundleEntry('src/engine/worker.ts', 'convert-worker/engine-worker');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('convertCheckpointInWorker', () => {
  it('writes the diffusers folder and reports progress from the worker', async () => {
    const { file, arch } = await smallCheckpoint(dir, 'sd1');
    const out = path.join(dir, 'out', 'small');
    const progress: ConvertProgress[] = [];
    const result = await convertCheckpointInWorker(workerPath, file, out, {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      onProgress: (p) => progress.push(p),
    });
    expect(result).toMatchObject({ dir: out, family: 'sd1', precision: 'fp16', unusedKeys: [] });
    for (const f of ['model_index.json', 'unet/model.onnx', 'vae_decoder/model.onnx_data']) {
      expect(fs.existsSync(path.join(out, f)), f).toBe(true);
    }
    const last = progress[progress.length - 1]!;
    expect(last).toMatchObject({ phase: 'finishing', tensorsDone: last.tensorsTotal });
    expect(result.bytesWritten).toBe(last.bytesDone);
    expect(fs.readdirSync(path.dirname(out))).toEqual(['small']);
  });

  it('brings the engine error and its sentence back from the worker', async () => {
    const lora = path.join(dir, 'detail.safetensors');
    await writeLoraFile(lora);
    await expect(
      convertCheckpointInWorker(workerPath, lora, path.join(dir, 'out', 'lora'), {
        vocabularyFile: VOCABULARY,
      }),
    ).rejects.toMatchObject({
      code: 'model-unsupported',
      message: expect.stringMatching(/^detail\.safetensors is a LoRA /),
    });
    expect(fs.existsSync(path.join(dir, 'out', 'lora'))).toBe(false);
  });

  it('terminates a thread that does not stop when asked, and removes its temporary folder', async () => {
    // A stand-in worker stuck inside one tensor: it made its temporary folder, as
    // convertCheckpoint does, and never looks at its messages again.
    const stuck = await bundleSource(
      `import { mkdirSync } from 'node:fs';
       import path from 'node:path';
       import { parentPort, workerData } from 'node:worker_threads';
       const parent = path.dirname(workerData.outDir);
       mkdirSync(path.join(parent, '.' + path.basename(workerData.outDir) + '.partial-0badc0de'), { recursive: true });
       parentPort.postMessage({ type: 'progress', progress: { phase: 'unet' } });
       for (;;) {}`,
      'convert-worker/stuck',
    );
    const parent = path.join(dir, 'stuck');
    const controller = new AbortController();
    let progressed!: () => void;
    const started = new Promise<void>((r) => (progressed = r));
    const pending = convertCheckpointInWorker(stuck, 'x.safetensors', path.join(parent, 'm'), {
      vocabularyFile: VOCABULARY,
      signal: controller.signal,
      onProgress: () => progressed(),
    });
    pending.catch(() => undefined);
    await started;
    expect(fs.readdirSync(parent)).toEqual(['.m.partial-0badc0de']);
    const t0 = performance.now();
    controller.abort();
    await expect(pending).rejects.toMatchObject({
      code: 'cancelled',
      message: 'The conversion was cancelled.',
    });
    expect(performance.now() - t0).toBeLessThan(CANCEL_GRACE_MS + 1500);
    expect(fs.readdirSync(parent)).toEqual([]);
  });
});
