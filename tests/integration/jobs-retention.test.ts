// Retention of finished jobs, on a real library (SQLite in a temp folder) and the real job
// service without an engine: what is kept, what goes, when, and in small transactions.
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { JobService, type JobServiceOptions } from '../../src/main/jobs/service';
import { RECENT_FINISHED } from '../../src/main/jobs/store';
import type { Library } from '../../src/main/library/service';
import { openLibrary, settingsOf, tempDir } from './library-helpers';

const day = 24 * 3600_000;
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function library(): Promise<Library> {
  const d = tempDir('ls-retention-');
  dirs.push(d);
  return (await openLibrary(d)).library;
}

/**
 * Inserts jobs in one transaction; finished ones end `ageMs[i]` before `now`. Calls that must
 * not tie pass the same `now` (each its own Date.now() could make two jobs' times equal).
 */
function addJobs(
  l: Library,
  state: string,
  ageMs: number[],
  prefix: string,
  now = Date.now(),
): string[] {
  const settings = JSON.stringify(settingsOf());
  const insert = l.db.prepare(
    `INSERT INTO jobs (id, state, position, settings, created_at, started_at, finished_at, attempts)
     VALUES (?, ?, ?, ?, ?, ?, ?, 1)`,
  );
  const ids = ageMs.map((_, i) => `${prefix}-${i}`);
  l.transaction(() => {
    ageMs.forEach((age, i) => {
      const finished = ['done', 'failed', 'cancelled'].includes(state);
      insert.run(
        ids[i],
        state,
        state === 'queued' ? i + 1 : null,
        settings,
        now - age - 1000,
        state === 'queued' ? null : now - age - 500,
        finished ? now - age : null,
      );
    });
  });
  return ids;
}

const count = (l: Library, where = '1') =>
  l.db.prepare(`SELECT count(*) FROM jobs WHERE ${where}`).pluck().get() as number;
const finished = "state IN ('done', 'failed', 'cancelled')";

function service(l: Library, options: JobServiceOptions = {}): JobService {
  const logs: string[] = [];
  return new JobService({ ...l.context, log: (line) => logs.push(line) }, l, {
    pruneIntervalMs: 0,
    ...options,
  });
}

describe('retention of finished jobs', () => {
  it('at start: keeps every unfinished job and the newest finished ones within the age', async () => {
    const l = await library();
    // 900 done over the last 60 days (one every 96 minutes), 300 failed and 200 cancelled
    // spread the same way, plus queued and running work that must survive whatever its age.
    const spread = (n: number, offset: number) =>
      Array.from({ length: n }, (_, i) => Math.floor((i * 60 * day) / n) + offset);
    // One clock for all three, so no done, failed and cancelled job finish at the same time.
    const now = Date.now();
    addJobs(l, 'done', spread(900, 0), 'done', now);
    addJobs(l, 'failed', spread(300, 7), 'failed', now);
    addJobs(l, 'cancelled', spread(200, 13), 'cancelled', now);
    const queued = addJobs(l, 'queued', [90 * day, 1000, 0], 'queued');
    const running = addJobs(l, 'running', [400 * day], 'running');
    // A finished job without a finish time (an older version's row) counts as old.
    l.db.prepare("UPDATE jobs SET finished_at = NULL WHERE id = 'done-0'").run();

    const keepFinished = 500;
    const maxAgeMs = 30 * day;
    const newestFinished = l.db
      .prepare(`SELECT id FROM jobs WHERE ${finished} ORDER BY finished_at DESC LIMIT ?`)
      .pluck()
      .all(keepFinished) as string[];
    const jobs = service(l, { retention: { keepFinished, maxAgeMs }, pruneBatch: 100 });
    const deleted = await jobs.prune();
    const withinAge = count(l, `${finished} AND finished_at >= ${Date.now() - maxAgeMs - 60_000}`);

    // 1,400 finished, about 700 within 30 days; the newest 500 of those stay.
    expect(count(l, finished)).toBe(500);
    expect(withinAge).toBe(500);
    expect(deleted).toBe(900);
    const kept = l.db.prepare(`SELECT id FROM jobs WHERE ${finished}`).pluck().all() as string[];
    expect(new Set(kept)).toEqual(new Set(newestFinished));
    for (const id of [...queued, ...running])
      expect(l.db.prepare('SELECT state FROM jobs WHERE id = ?').pluck().get(id)).toBeDefined();
    expect(count(l, "state IN ('queued', 'running')")).toBe(4);
    // The queue state still lists the recent finished jobs, newest first.
    const listed = jobs
      .state()
      .jobs.filter((j) => ['done', 'failed', 'cancelled'].includes(j.state));
    expect(listed.map((j) => j.id)).toEqual(newestFinished.slice(0, RECENT_FINISHED));
    await jobs.close();
    l.close();
  });

  it('the age rule: finished jobs older than maxAgeMs go even when few', async () => {
    const l = await library();
    addJobs(l, 'done', [1 * day, 5 * day, 8 * day, 40 * day], 'done');
    addJobs(l, 'failed', [9 * day], 'failed');
    const jobs = service(l, { retention: { keepFinished: 1000, maxAgeMs: 7 * day } });
    expect(await jobs.prune()).toBe(3);
    expect(l.db.prepare('SELECT id FROM jobs ORDER BY id').pluck().all()).toEqual([
      'done-0',
      'done-1',
    ]);
    await jobs.close();
    l.close();
  });

  it('prunes in small transactions, letting other work run between them', async () => {
    const l = await library();
    addJobs(
      l,
      'done',
      Array.from({ length: 2000 }, (_, i) => i * 1000),
      'done',
    );
    const jobs = service(l, {
      retention: { keepFinished: 100, maxAgeMs: 365 * day },
      pruneBatch: 50,
    });
    // Whatever else the host does (a gallery search, a write) runs while the prune goes on, and
    // sees it part-way: a turn of the event loop between batches, no transaction held across.
    const seen: number[] = [];
    let ticking = true;
    const tick = () => {
      if (!ticking) return;
      l.transaction(() => l.db.prepare("INSERT OR REPLACE INTO meta VALUES ('tick', ?)").run('1'));
      seen.push(count(l, finished));
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const deleted = await jobs.prune();
    ticking = false;
    expect(deleted).toBe(1900);
    expect(count(l, finished)).toBe(100);
    const between = seen.filter((n) => n > 100 && n < 2000);
    expect(between.length).toBeGreaterThanOrEqual(10);
    await jobs.close();
    l.close();
  });

  it('after a job finishes (here: cancelled) and on the timer', async () => {
    const l = await library();
    addJobs(
      l,
      'done',
      Array.from({ length: RECENT_FINISHED }, (_, i) => 1000 + i * 1000),
      'done',
    );
    const queued = addJobs(l, 'queued', [0, 0], 'queued');
    const jobs = service(l, {
      retention: { keepFinished: RECENT_FINISHED, maxAgeMs: 10 * day },
      pruneIntervalMs: 50,
    });
    await jobs.prune();
    expect(count(l, finished)).toBe(RECENT_FINISHED);
    // Cancelling a queued job finishes it: the oldest finished one makes room.
    jobs.cancel(queued[0]);
    await jobs.prune();
    expect(count(l, finished)).toBe(RECENT_FINISHED);
    expect(count(l, "id = 'done-49'")).toBe(0);
    expect(count(l, `id = '${queued[0]}'`)).toBe(1);
    // A job that turns old while the app runs goes on the timer.
    l.db
      .prepare("UPDATE jobs SET finished_at = ? WHERE id = 'done-0'")
      .run(Date.now() - 10 * day + 150);
    await new Promise((r) => setTimeout(r, 600));
    expect(count(l, "id = 'done-0'")).toBe(0);
    expect(count(l, "state = 'queued'")).toBe(1);
    await jobs.close();
    l.close();
  });
});
