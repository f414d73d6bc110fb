import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineClient, EngineError, type GenerateProgress } from '../../src/engine';
import { GenerationSettings } from '../../src/shared/generation';
import { fixtureModel } from '../fixtures/models';
import { bundleEntry } from './bundle';

let workerPath: string;
let modelDir: string;
let client: EngineClient;

beforeAll(async () => {
  workerPath = await bundleEntry('src/engine/worker.ts', 'engine-worker');
  // A real (random-weight) UNet with attention, so each step costs enough to matter.
  modelDir = await fixtureModel('worker-tiny', {});
  // On this 2-core machine one ONNX Runtime thread leaves the host thread a core, so the lag
  // measured is the host's own, not the OS scheduler sharing two busy cores.
  client = new EngineClient(workerPath, { provider: 'cpu', threads: 1, previewEvery: 2 });
});
afterAll(async () => {
  await client?.close();
});

const settings = (over: Partial<GenerationSettings> = {}) =>
  GenerationSettings.parse({
    model: modelDir,
    prompt: 'a small red circle',
    seed: 7,
    steps: 8,
    sampler: 'euler',
    width: 256,
    height: 256,
    ...over,
  });

describe('engine worker', () => {
  it('generates off the main thread: the event loop stays responsive (lag < 50 ms)', async () => {
    await client.generate({ settings: settings({ steps: 2 }), modelDir }); // warm: load sessions
    const lag = monitorEventLoopDelay({ resolution: 5 });
    lag.enable();
    const progress: GenerateProgress[] = [];
    const result = await client.generate(
      { settings: settings({ steps: 12 }), modelDir },
      { onProgress: (p) => progress.push(p) },
    );
    lag.disable();
    expect(result.images).toHaveLength(1);
    expect(result.images[0].image).toMatchObject({ width: 256, height: 256, channels: 3 });
    expect(result.timings.denoiseMs).toBeGreaterThan(100); // the work was real
    expect(lag.max / 1e6).toBeLessThan(50);
    const steps = progress.filter((p) => p.stage === 'denoise');
    expect(steps.map((p) => p.step)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(steps.filter((p) => p.preview).length).toBeGreaterThanOrEqual(6);
    expect(steps.at(-1)!.preview).toMatchObject({ width: 32, height: 32, channels: 3 });
    expect(result.provider).toBe('cpu');
  });

  it('is deterministic across runs and matches the in-process engine bit for bit', async () => {
    const a = await client.generate({ settings: settings(), modelDir });
    const b = await client.generate({ settings: settings(), modelDir });
    expect(Buffer.from(a.images[0].image.data).equals(Buffer.from(b.images[0].image.data))).toBe(
      true,
    );
    const { DiffusionEngine } = await import('../../src/engine');
    const local = new DiffusionEngine({ provider: 'cpu' });
    const c = await local.generate({ settings: settings(), modelDir });
    await local.release();
    expect(Buffer.from(c.images[0].image.data).equals(Buffer.from(a.images[0].image.data))).toBe(
      true,
    );
  });

  it('cancels a running generation through its AbortSignal', async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    const run = client.generate(
      { settings: settings({ steps: 40 }), modelDir },
      {
        signal: controller.signal,
        onProgress: (p) => {
          if (p.stage !== 'denoise') return;
          seen.push(p.step);
          if (p.step === 3) controller.abort();
        },
      },
    );
    const err = await run.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('cancelled');
    expect(Math.max(...seen)).toBeLessThan(10);
    // The worker is still usable afterwards.
    const again = await client.generate({ settings: settings({ steps: 2 }), modelDir });
    expect(again.images).toHaveLength(1);
  });

  it('reports engine errors with their code and sentence, without a stack', async () => {
    const err = await client
      .generate({ settings: settings(), modelDir: '/nonexistent/model' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('model-missing-file');
    expect((err as EngineError).message).not.toMatch(/\n\s+at /);
  });

  it('fails pending requests clearly when the worker goes away, and restarts on the next', async () => {
    const doomed = new EngineClient(workerPath, { provider: 'cpu' });
    const outcome = doomed
      .generate({ settings: settings({ steps: 30 }), modelDir })
      .catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 200));
    await doomed.close();
    const err = await outcome;
    expect((err as EngineError).code).toBe('cancelled');
    const fresh = await doomed.generate({ settings: settings({ steps: 2 }), modelDir });
    expect(fresh.images).toHaveLength(1);
    await doomed.close();
  });
});
