// A headless StudioHost for integration tests that run jobs through the real queue and worker.
import { StudioHost } from '../../src/main/api';
import type { GenerationSettings, QueueState } from '../../src/shared';
import { bundleEntry } from './bundle';

/** A headless host on `dataDir`, its engine worker bundled as `workerName`, on the CPU, 1 thread. */
export async function openCpuHost(dataDir: string, workerName: string): Promise<StudioHost> {
  const workerPath = await bundleEntry('src/engine/worker.ts', workerName);
  const host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: '0.0.0-test',
    workerPath,
    log: () => undefined,
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
