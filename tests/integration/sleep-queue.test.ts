// The system stays awake while the queue works (issue 17 item 4): the desktop shell's
// SleepBlocker (src/main/electron/power.ts) fed by the real queue's queueChanged events, as
// main.ts wires it, through a headless host with the real engine worker. Electron's
// powerSaveBlocker cannot run here; a stand-in records what would be held.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StudioHost } from '../../src/main/api';
import { SleepBlocker, queueHasWork } from '../../src/main/electron/power';
import { GenerationSettings, type QueueState } from '../../src/shared';
import { fixtureModel } from '../fixtures/models';
import { openCpuHost } from './host-helpers';
import { tempDir } from './library-helpers';

async function until(what: string, ok: () => boolean, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('keeping the system awake while the queue works', () => {
  let host: StudioHost;
  let modelId: string;
  const held = new Set<number>();
  /** Whether a blocker was held, after each queueChanged event. */
  const seen: boolean[] = [];
  let sleep: SleepBlocker;
  let next = 1;

  beforeAll(async () => {
    host = await openCpuHost(tempDir('ls-sleep-'), 'sleep-worker');
    modelId = (await host.service.addModel({ path: await fixtureModel('worker-tiny', {}) })).id;
    sleep = new SleepBlocker({
      start: () => {
        held.add(next);
        return next++;
      },
      stop: (id) => held.delete(id),
    });
    host.events.subscribe((event, payload) => {
      if (event !== 'queueChanged') return;
      sleep.update(queueHasWork(payload as QueueState));
      seen.push(held.size > 0);
    });
  }, 120_000);
  afterAll(async () => {
    await host?.close();
    sleep?.dispose();
  });

  const settings = (seed: number) =>
    GenerationSettings.parse({
      model: modelId,
      prompt: 'a small red circle',
      seed,
      steps: 2,
      width: 64,
      height: 64,
    });
  const finished = () =>
    host.jobs.state().jobs.every((j) => ['done', 'failed', 'cancelled'].includes(j.state));

  it('held from the first queued job until the last one is done, then released', async () => {
    // Paused with jobs waiting: nothing will run, so nothing holds the machine awake.
    host.service.pauseQueue(undefined);
    await host.service.enqueue({ settings: settings(1) });
    await host.service.enqueue({ settings: settings(2) });
    expect(held.size).toBe(0);
    host.service.resumeQueue(undefined);
    expect(held.size).toBe(1);
    let heldWhileRunning = false;
    await until('both jobs finish', () => {
      if (host.jobs.busy) heldWhileRunning ||= held.size === 1;
      return finished();
    });
    expect(heldWhileRunning).toBe(true);
    expect(host.jobs.state().jobs.map((j) => j.state)).toEqual(['done', 'done']);
    await until('the blocker is released', () => held.size === 0, 5_000);
    // One blocker for the whole run: held once, never dropped between the two jobs.
    expect(next).toBe(2);
    expect(seen.at(-1)).toBe(false);
  });

  it('a cancelled queue and a failed job release it too', async () => {
    host.service.pauseQueue(undefined);
    await host.service.enqueue({ settings: settings(3) });
    host.service.resumeQueue(undefined);
    expect(held.size).toBe(1);
    await host.service.cancelAll(undefined);
    await until('the queue is idle', finished);
    await until('the blocker is released', () => held.size === 0, 5_000);

    // A job whose model turns out broken when it loads fails; the idle queue lets the system sleep.
    const broken = path.join(tempDir('ls-sleep-broken-'), 'model');
    fs.cpSync(await fixtureModel('worker-tiny', {}), broken, { recursive: true });
    const brokenId = (await host.service.addModel({ path: broken })).id;
    host.service.pauseQueue(undefined);
    await host.service.enqueue({ settings: { ...settings(4), model: brokenId } });
    fs.writeFileSync(path.join(broken, 'unet', 'model.onnx'), 'not an onnx model');
    host.service.resumeQueue(undefined);
    expect(held.size).toBe(1);
    await until('the queue is idle', finished);
    expect(host.jobs.state().jobs[0]?.state).toBe('failed');
    await until('the blocker is released', () => held.size === 0, 5_000);
    expect(held.size).toBe(0);
  });
});
