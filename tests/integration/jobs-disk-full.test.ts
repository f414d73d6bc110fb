// A full disk with jobs queued, through the real host (real engine worker, real SQLite, real
// files): the queue pauses with a reason the studio shows, no job is lost or failed, the host
// still answers, and resuming once there is room runs them all. Injected ENOSPC everywhere; a
// real tiny tmpfs where mounting is allowed.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { GalleryQuery, GenerationSettings, type QueueState } from '../../src/shared';
import { fixtureModel } from '../fixtures/models';
import { bundleEntry } from './bundle';
import { tempDir } from './library-helpers';

let workerPath: string;
let modelDir: string;
const dirs: string[] = [];

beforeAll(async () => {
  workerPath = await bundleEntry('src/engine/worker.ts', 'disk-full-engine-worker');
  modelDir = await fixtureModel('worker-tiny', {});
});
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function until<T>(what: string, fn: () => T | undefined | false, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Queues three jobs while paused, resumes and makes the disk full (`fill`), and checks the queue
 * pauses itself with a reason; then `unfill` and resume run every job once.
 */
async function fullDiskWithJobsQueued(
  dataDir: string,
  fill: (host: StudioHost) => void,
  unfill: (host: StudioHost) => void,
): Promise<void> {
  const host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: '0.0.0-test',
    workerPath,
    log: () => {},
  });
  try {
    await host.library.ready;
    host.service.updateSettings({ threads: 1, executionProvider: 'cpu' });
    const model = await host.service.addModel({ path: modelDir });
    host.service.pauseQueue(undefined);
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const q = await host.service.enqueue({
        settings: GenerationSettings.parse({
          model: model.id,
          prompt: `job ${i}`,
          seed: i + 1,
          steps: 2,
          width: 64,
          height: 64,
          sampler: 'euler',
        }),
      });
      ids.push(q.jobs.find((j) => !ids.includes(j.id) && j.state === 'queued')!.id);
    }

    // Resumed, the first job starts at once (marked running in the same call); the disk fills
    // while it generates, so its save and every write after it meet the full disk.
    host.service.resumeQueue(undefined);
    fill(host);
    const paused = await until('the queue to pause itself', () => {
      const q = host.service.getQueue(undefined) as QueueState;
      return q.pausedReason !== null && !host.jobs.busy && q;
    });
    expect(paused.paused).toBe(true);
    expect(paused.pausedReason).toMatch(/The disk is full.*resume it/);
    // The studio hears it: the last queueChanged carries the reason.
    const ours = paused.jobs.filter((j) => ids.includes(j.id));
    expect(ours).toHaveLength(3);
    // None lost, none failed, none done: all wait (a job whose end could not be written is
    // still marked running, and goes back to the front when the queue resumes).
    for (const j of ours) expect(['queued', 'running'], j.id).toContain(j.state);
    // The host still answers a cheap call promptly.
    const t0 = performance.now();
    await host.service.getLibraryStatus(undefined);
    expect(performance.now() - t0).toBeLessThan(1000);

    unfill(host);
    const resumed = host.service.resumeQueue(undefined) as QueueState;
    expect(resumed.pausedReason).toBeNull();
    expect(resumed.paused).toBe(false);
    const finished = await until('the three jobs to finish', () => {
      const q = host.service.getQueue(undefined) as QueueState;
      const mine = q.jobs.filter((j) => ids.includes(j.id));
      return mine.every((j) => ['done', 'failed', 'cancelled'].includes(j.state)) && mine;
    });
    expect(finished.map((j) => j.state)).toEqual(['done', 'done', 'done']);
    // Each ran once: three generations, one image each.
    const page = host.library.gallery.searchGallery(GalleryQuery.parse({}));
    expect(page.total).toBe(3);
    expect(new Set(finished.map((j) => j.generationId)).size).toBe(3);
  } finally {
    await host.close();
  }
}

describe('a full disk with jobs queued', () => {
  it('injected ENOSPC on the image files: paused with the reason, resumed, all done', async () => {
    const d = tempDir('ls-jobs-full-');
    dirs.push(d);
    let full = false;
    await fullDiskWithJobsQueued(
      d,
      (host) => {
        full = true;
        host.library.store.beforeWrite = () => {
          if (full)
            throw Object.assign(new Error('ENOSPC: no space left on device, write'), {
              code: 'ENOSPC',
            });
        };
      },
      () => {
        full = false;
      },
    );
  });

  // A real full disk: a small tmpfs, where mounting is allowed (root with CAP_SYS_ADMIN).
  const mountPoint = path.join(tempDir('ls-jobs-tmpfs-'), 'mnt');
  fs.mkdirSync(mountPoint);
  dirs.push(path.dirname(mountPoint));
  const mounted =
    process.platform === 'linux' &&
    spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint], { stdio: 'ignore' })
      .status === 0;
  afterAll(() => {
    if (mounted) spawnSync('umount', ['-l', mountPoint], { stdio: 'ignore' });
  });

  it.runIf(mounted)('a real full tmpfs: paused with the reason, resumed, all done', async () => {
    const filler = path.join(mountPoint, 'filler');
    await fullDiskWithJobsQueued(
      path.join(mountPoint, 'data'),
      () => {
        const fd = fs.openSync(filler, 'w');
        try {
          for (const size of [64 * 1024, 512])
            try {
              for (;;) fs.writeSync(fd, Buffer.alloc(size, 1));
            } catch (e) {
              expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
            }
        } finally {
          fs.closeSync(fd);
        }
      },
      () => fs.rmSync(filler),
    );
  });
});
