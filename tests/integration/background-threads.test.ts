// The engine's threads follow the studio into the background (issue 17 item 4): through the
// headless host's real queue and engine worker (a thread of this process, so its threads and
// ONNX Runtime's are in /proc/self/task), their nice value is read back as the OS holds it.
import fs from 'node:fs';
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StudioHost } from '../../src/main/api';
import { BACKGROUND_NICENESS, canRaisePriority } from '../../src/engine/models/priority';
import { GenerationSettings } from '../../src/shared/generation';
import { fixtureModel } from '../fixtures/models';
import { openCpuHost, runJob } from './host-helpers';
import { tempDir } from './library-helpers';

/** This process's threads by id, with their nice values (field 19 of /proc/…/stat). */
function niceByThread(): Map<number, number> {
  const out = new Map<number, number>();
  for (const id of fs.readdirSync('/proc/self/task')) {
    try {
      const stat = fs.readFileSync(`/proc/self/task/${id}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      out.set(Number(id), Number(fields[16]));
    } catch {
      // The thread ended meanwhile.
    }
  }
  return out;
}
const lowered = () =>
  new Set([...niceByThread()].filter(([, n]) => n === BACKGROUND_NICENESS).map(([id]) => id));

async function until(what: string, ok: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe.runIf(process.platform === 'linux')('the engine in the background', () => {
  let host: StudioHost;
  let modelId: string;
  const logs: string[] = [];

  beforeAll(async () => {
    host = await openCpuHost(tempDir('ls-background-'), 'background-worker', (l) => logs.push(l));
    // Two intra-op threads: ONNX Runtime starts a pool thread per session besides the worker's.
    host.service.updateSettings({ threads: 2 });
    modelId = (await host.service.addModel({ path: await fixtureModel('worker-tiny', {}) })).id;
  }, 120_000);
  afterAll(async () => {
    await host?.close();
  });

  const generate = () =>
    runJob(
      host,
      GenerationSettings.parse({
        model: modelId,
        prompt: 'a small red circle',
        seed: 3,
        steps: 2,
        width: 64,
        height: 64,
      }),
    );

  it('a model loaded in the background runs on low-priority threads; the host thread does not', async () => {
    expect(lowered().size).toBe(0);
    host.setBackground(true);
    const job = await generate();
    expect(job.state).toBe('done');
    const low = lowered();
    expect(low.has(process.pid)).toBe(false);
    expect(os.getPriority()).toBe(0);
    if (!canRaisePriority()) {
      // Where it could not be raised back (unprivileged Linux), the priority is left alone.
      expect(low.size).toBe(0);
      return;
    }
    // The worker's thread and the pool threads of the text encoder, UNet and VAE sessions.
    expect(low.size).toBeGreaterThanOrEqual(4);
  });

  it.runIf(canRaisePriority())(
    'in front again, every engine thread gets its priority back',
    async () => {
      const low = lowered();
      host.setBackground(false);
      await until('no engine thread is at low priority', () => lowered().size === 0);
      for (const id of low) expect(niceByThread().get(id) ?? 0).toBe(0);
      // The sessions stayed loaded: back in the background, the same threads go low again.
      host.setBackground(true);
      await until('the engine threads are low again', () => lowered().size >= low.size);
      expect([...low].every((id) => lowered().has(id))).toBe(true);
    },
  );

  it.runIf(canRaisePriority())(
    '"keep full speed" in the background gives the threads normal priority',
    async () => {
      host.setBackground(true);
      await until('the engine threads are low', () => lowered().size > 0);
      host.service.updateSettings({ backgroundMode: 'full' });
      await until('normal priority', () => lowered().size === 0);
      expect((await generate()).state).toBe('done');
      expect(lowered().size).toBe(0);
      host.service.updateSettings({ backgroundMode: 'gentle' });
      await until('low again', () => lowered().size > 0);
      expect(logs.filter((l) => /priority/.test(l))).toEqual([]);
    },
  );
});
