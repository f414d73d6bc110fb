// The desktop shell's quit (src/main/electron/quit.ts) against the real host: quitting while
// the engine worker is inside a generation waits for the host to close (the worker stops at a
// step boundary, never terminated inside session.run), then quits, and the interrupted job is
// queued again at the next start.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { gracefulQuit } from '../../src/main/electron/quit';
import type { GenerationInput } from '../../src/shared';
import { bundleEntry } from './bundle';

const repoRoot = path.resolve(import.meta.dirname, '..', '..');
let workerPath: string;
let dataDir: string;

beforeAll(async () => {
  workerPath = await bundleEntry('src/engine/worker.ts', 'quit-engine-worker');
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-quit-'));
});
afterAll(() => fs.rmSync(dataDir, { recursive: true, force: true }));

const open = (engine: boolean) =>
  new StudioHost({
    shell: 'desktop',
    dataDir,
    version: '0.0.0-test',
    resourcesDir: path.join(repoRoot, 'resources'),
    workerPath: engine ? workerPath : null,
    log: () => {},
  });

describe('quitting during a generation', () => {
  it('waits for the host to close, quits once, and the job is queued again next time', async () => {
    const host = open(true);
    await host.library.ready;
    host.service.updateSettings({ threads: 1, executionProvider: 'cpu' });
    const model = (await host.service.listModels(undefined)).find((m) => m.builtIn)!;
    let steps = 0;
    host.events.subscribe((name) => {
      if (name === 'jobProgress') steps++;
    });
    const queued = await host.service.enqueue({
      settings: {
        model: model.id,
        prompt: 'a red circle',
        seed: 3,
        sampler: 'euler',
        steps: 400,
        width: 64,
        height: 64,
      } as GenerationInput,
    } as never);
    const jobId = queued.jobs[0].id;
    await vi.waitFor(() => expect(steps).toBeGreaterThan(2), { timeout: 60_000, interval: 20 });

    let closed = false;
    const quit = vi.fn(() => expect(closed).toBe(true));
    const onBeforeQuit = gracefulQuit({
      close: async () => {
        await host.close();
        closed = true;
      },
      quit,
      timeoutMs: 60_000,
    });
    const event = { preventDefault: vi.fn() };
    onBeforeQuit(event);
    expect(event.preventDefault).toHaveBeenCalledOnce();
    expect(quit).not.toHaveBeenCalled();
    await vi.waitFor(() => expect(quit).toHaveBeenCalledOnce(), { timeout: 60_000 });

    const again = open(false);
    await again.library.ready;
    try {
      expect(again.jobs.state().jobs.find((j) => j.id === jobId)?.state).toBe('queued');
    } finally {
      await again.close();
    }
  });
});
