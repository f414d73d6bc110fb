// ControlNets converted in a worker thread of the real engine worker bundle, as checkpoints, VAEs
// and the safety checker are: convertControlNetInWorker gives the same graph, record and progress
// as convertControlNet in the caller's thread and brings its errors back; the studio's
// ControlNetService, given the host's workerPath, converts a full-size (sparse) SD 1.5 ControlNet
// there, so the host's event loop keeps answering, and cancel stops it at once leaving nothing.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ConvertProgress } from '../../src/engine/convert/convert';
import {
  controlNetModelFile,
  convertControlNet,
} from '../../src/engine/convert/convert-controlnet';
import { convertControlNetInWorker } from '../../src/engine/convert/in-worker';
import type { ControlNetArchitecture } from '../../src/engine/convert/types';
import { ControlNetService } from '../../src/main/models/controlnets';
import type { VaePrepareProgress } from '../../src/main/models/vaes';
import { Settings } from '../../src/shared';
import { writeLoraFile, writeSparseControlNet } from '../fixtures/checkpoint';
import { REFERENCE } from '../fixtures/controlnet-fixture';
import { bundleEntry } from './bundle';
import { worstLagWhile } from './event-loop-lag';
import { tempDir } from './library-helpers';

let dir: string;
let workerPath: string;

beforeAll(async () => {
  dir = tempDir('ls-controlnet-worker-');
  workerPath = await bundleEntry('src/engine/worker.ts', 'controlnet-worker/engine-worker');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('convertControlNetInWorker', () => {
  it('writes the same graph and record as in this thread, with progress from the worker', async () => {
    const file = path.join(REFERENCE, 'controlnet-sd1.safetensors');
    const architecture = JSON.parse(
      fs.readFileSync(path.join(REFERENCE, 'controlnet-sd1.json'), 'utf8'),
    ) as ControlNetArchitecture;
    const options = { precision: 'fp32' as const, sha256: 'ab'.repeat(32), architecture };
    const here = await convertControlNet(file, path.join(dir, 'here', 'cn'), options);
    const progress: ConvertProgress[] = [];
    const out = path.join(dir, 'worker', 'cn');
    const there = await convertControlNetInWorker(workerPath, file, out, {
      ...options,
      onProgress: (p) => progress.push(p),
    });
    expect(there).toEqual({ ...here, dir: out });
    expect(fs.readFileSync(controlNetModelFile(out))).toEqual(
      fs.readFileSync(controlNetModelFile(here.dir)),
    );
    const last = progress[progress.length - 1]!;
    expect(progress.length).toBeGreaterThan(10);
    expect(last).toMatchObject({ phase: 'unet', tensorsDone: last.tensorsTotal });
    expect(fs.readdirSync(path.dirname(out))).toEqual(['cn']);
  });

  it("brings the converter's sentence back and leaves no folder", async () => {
    const lora = path.join(dir, 'detail.safetensors');
    await writeLoraFile(lora);
    const out = path.join(dir, 'lora-out', 'cn');
    await expect(convertControlNetInWorker(workerPath, lora, out, {})).rejects.toMatchObject({
      code: 'model-unsupported',
      message: expect.stringMatching(/^detail\.safetensors is a LoRA.*not a ControlNet/),
    });
    expect(fs.existsSync(path.dirname(out)) ? fs.readdirSync(path.dirname(out)) : []).toEqual([]);
  });
});

describe('the studio converts a ControlNet in the engine worker', () => {
  it('keeps the host answering through a full-size conversion; cancel stops it at once and leaves nothing', async () => {
    const dataDir = path.join(dir, 'data');
    const folder = path.join(dir, 'controlnets');
    fs.mkdirSync(folder, { recursive: true });
    await writeSparseControlNet(path.join(folder, 'control_v11p_sd15_canny.safetensors'));
    const settings = Settings.parse({ controlnetDir: folder });
    const service = new ControlNetService(
      { dataDir, settings: { get: () => settings }, workerPath },
      () => {
        throw new Error('no control image is resolved here');
      },
    );
    const progress: VaePrepareProgress[] = [];
    const controller = new AbortController();
    const pending = service.prepare('control_v11p_sd15_canny.safetensors', {
      signal: controller.signal,
      onProgress: (p) => progress.push(p),
    });
    pending.catch(() => undefined);
    // Until most of the weights are written: the graph built and two thirds of 723 MB widened.
    const inUnet = (async () => {
      while (!progress.some((p) => p.phase === 'unet' && p.tensorsDone > 220)) {
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const lag = await worstLagWhile(Promise.race([inUnet, pending]));
    expect(progress.pop()).toMatchObject({ phase: 'unet', tensorsTotal: 340 });
    // As generous as the checkpoint import's bound: the machine is shared and noisy.
    expect(lag).toBeLessThan(500);

    const cancelledAt = performance.now();
    controller.abort();
    await expect(pending).rejects.toMatchObject({
      code: 'cancelled',
      message: 'The conversion was cancelled.',
    });
    expect(performance.now() - cancelledAt).toBeLessThan(2000);
    // No cache slot and no partial folder: the next try converts from the start.
    const converted = path.join(dataDir, 'converted');
    expect(fs.existsSync(converted) ? fs.readdirSync(converted) : []).toEqual([]);
  });
});
