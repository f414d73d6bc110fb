// A headless StudioHost for integration tests that run jobs through the real queue and worker,
// or download from a loopback Hub.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { StudioHost } from '../../src/main/api';
import type { GenerationSettings, QueueState } from '../../src/shared';
import { type FakeHub, type FakeRepo, startFakeHub } from '../fixtures/hub-server';
import { bundleEntry } from './bundle';

/**
 * A headless host on `dataDir`, its engine worker bundled as `workerName`, on the CPU, 1 thread;
 * `log` gets the host's log lines (none kept by default).
 */
export async function openCpuHost(
  dataDir: string,
  workerName: string,
  log: (line: string) => void = () => undefined,
): Promise<StudioHost> {
  const workerPath = await bundleEntry('src/engine/worker.ts', workerName);
  const host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: '0.0.0-test',
    workerPath,
    log,
  });
  await host.library.ready;
  host.service.updateSettings({ threads: 1, executionProvider: 'cpu' });
  return host;
}

/** Enqueues `settings` and waits (up to `timeoutMs`) for the job to be done, failed or cancelled. */
export async function runJob(
  host: StudioHost,
  settings: GenerationSettings,
  timeoutMs = 120_000,
): Promise<QueueState['jobs'][number]> {
  const before = new Set(host.jobs.state().jobs.map((j) => j.id));
  const q: QueueState = await host.service.enqueue({ settings });
  const id = q.jobs.find((j) => !before.has(j.id))!.id;
  const end = Date.now() + timeoutMs;
  for (;;) {
    const job = host.jobs.state().jobs.find((j) => j.id === id)!;
    if (['done', 'failed', 'cancelled'].includes(job.state)) return job;
    if (Date.now() > end) throw new Error('the job did not finish');
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A headless host whose Hub (HF_ENDPOINT) is a loopback fake serving `repos`, without a token. */
export interface HubHost {
  hub: FakeHub;
  host: StudioHost;
  dataDir: string;
  /** Closes both and puts HF_ENDPOINT and HF_TOKEN back as they were. */
  close(): Promise<void>;
}

export async function openHubHost(repos: FakeRepo[], prefix: string): Promise<HubHost> {
  const saved = { endpoint: process.env.HF_ENDPOINT, token: process.env.HF_TOKEN };
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const hub = await startFakeHub(repos);
  process.env.HF_ENDPOINT = hub.url;
  delete process.env.HF_TOKEN;
  const host = new StudioHost({ shell: 'headless', dataDir, version: '0.0.0-test', log: () => {} });
  await host.library.ready;
  return {
    hub,
    host,
    dataDir,
    async close() {
      await host.close();
      await hub.close();
      fs.rmSync(dataDir, { recursive: true, force: true });
      if (saved.endpoint === undefined) delete process.env.HF_ENDPOINT;
      else process.env.HF_ENDPOINT = saved.endpoint;
      if (saved.token !== undefined) process.env.HF_TOKEN = saved.token;
    },
  };
}
