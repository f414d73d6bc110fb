import { randomUUID } from 'node:crypto';
import type Sqlite from 'better-sqlite3';
import { GenerationSettings, type JobState } from '../../shared';
import type { JobDatabase } from './types';

/** A row of the `jobs` table (migration 1 of the library), as stored. */
export interface JobRow {
  id: string;
  state: JobState;
  position: number | null;
  settings: string;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  attempts: number;
  error_code: string | null;
  error_message: string | null;
  generation_id: string | null;
}

/** Key of the queue's paused flag in the `meta` table ('1' or '0'). */
const PAUSED_KEY = 'queue.paused';
/** How many finished jobs (done, failed, cancelled) the queue state lists, newest first. */
export const RECENT_FINISHED = 50;
/** A job found running at start this many times is failed instead of retried. */
const MAX_ATTEMPTS = 3;

/**
 * How long finished jobs (done, failed, cancelled) stay in the `jobs` table. Queued and running
 * jobs are always kept; what a finished job made stays in the library (its generation).
 */
export interface JobRetention {
  /** The newest this many finished jobs are kept (at least RECENT_FINISHED). */
  keepFinished: number;
  /** Finished jobs older than this (ms since they finished) go. */
  maxAgeMs: number;
}

export const DEFAULT_RETENTION: JobRetention = {
  keepFinished: 500,
  maxAgeMs: 30 * 24 * 3600_000,
};

/** The condition of the partial index jobs_finished (migration 2), which these queries use. */
const finishedStates = "state IN ('done', 'failed', 'cancelled')";

export interface RecoveredJobs {
  requeued: string[];
  /** Saved before the crash, not yet marked done. */
  done: string[];
  failed: string[];
}

/**
 * The queue's SQL over the library's database: every statement the job service runs, and the
 * multi-statement changes each in one transaction (through `transaction`, the library's
 * immediate write transaction).
 */
export class JobStore {
  readonly #database: JobDatabase;

  /** Over the library's database; its `db` is read per statement (a restore replaces it). */
  constructor(database: JobDatabase) {
    this.#database = database;
  }

  get #db(): Sqlite.Database {
    return this.#database.db;
  }

  #transaction<T>(fn: () => T): T {
    return this.#database.transaction(fn);
  }

  get(id: string): JobRow | undefined {
    return this.#db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined;
  }

  /** Queued jobs in the order they run. */
  queued(): JobRow[] {
    return this.#db
      .prepare("SELECT * FROM jobs WHERE state = 'queued' ORDER BY position, created_at, id")
      .all() as JobRow[];
  }

  /** The job that runs next, if any. */
  next(): JobRow | undefined {
    return this.#db
      .prepare(
        "SELECT * FROM jobs WHERE state = 'queued' ORDER BY position, created_at, id LIMIT 1",
      )
      .get() as JobRow | undefined;
  }

  running(): JobRow[] {
    return this.#db
      .prepare("SELECT * FROM jobs WHERE state IN ('running', 'paused') ORDER BY started_at")
      .all() as JobRow[];
  }

  recentFinished(limit = RECENT_FINISHED): JobRow[] {
    // A damaged library opened read-only may predate the index (migrations do not run on it).
    const hasIndex = this.#db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'jobs_finished'")
      .get();
    return this.#db
      .prepare(
        `SELECT * FROM jobs ${hasIndex ? 'INDEXED BY jobs_finished' : ''} WHERE ${finishedStates}
         ORDER BY finished_at DESC, created_at DESC LIMIT ?`,
      )
      .all(limit) as JobRow[];
  }

  /**
   * One small transaction of retention: deletes at most `batch` finished jobs that are past
   * `retention` (beyond the newest keepFinished, or finished before maxAgeMs ago; a finished job
   * without a finish time counts as old). Returns how many went, and whether more may be left.
   */
  pruneFinished(
    retention: JobRetention,
    batch: number,
    now = Date.now(),
  ): { deleted: number; more: boolean } {
    const keep = Math.max(RECENT_FINISHED, Math.floor(retention.keepFinished));
    return this.#transaction(() => {
      const excess = this.#db
        .prepare(
          `SELECT id FROM jobs INDEXED BY jobs_finished WHERE ${finishedStates}
           ORDER BY finished_at DESC, created_at DESC LIMIT ? OFFSET ?`,
        )
        .pluck()
        .all(batch, keep) as string[];
      const old =
        excess.length < batch
          ? (this.#db
              .prepare(
                `SELECT id FROM jobs INDEXED BY jobs_finished WHERE ${finishedStates}
                 AND (finished_at IS NULL OR finished_at < ?) LIMIT ?`,
              )
              .pluck()
              .all(now - retention.maxAgeMs, batch - excess.length) as string[])
          : [];
      const more = excess.length + old.length >= batch;
      const ids = [...new Set([...excess, ...old])];
      if (ids.length === 0) return { deleted: 0, more: false };
      const deleted = this.#db
        .prepare(
          `DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?)) AND ${finishedStates}`,
        )
        .run(JSON.stringify(ids)).changes;
      return { deleted, more };
    });
  }

  /** Adds a queued job after every other one; returns its id. */
  insert(settings: GenerationSettings, now = Date.now()): string {
    const id = randomUUID();
    this.#transaction(() => {
      this.#db
        .prepare(
          `INSERT INTO jobs (id, state, position, settings, created_at, attempts)
           VALUES (?, 'queued', (SELECT COALESCE(MAX(position), 0) + 1 FROM jobs), ?, ?, 0)`,
        )
        .run(id, JSON.stringify(settings), now);
    });
    return id;
  }

  /** queued -> running, with started_at and one more attempt; false if it was not queued. */
  markRunning(id: string, now = Date.now()): boolean {
    return this.#transaction(
      () =>
        this.#db
          .prepare(
            `UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1,
               finished_at = NULL, error_code = NULL, error_message = NULL
             WHERE id = ? AND state = 'queued'`,
          )
          .run(now, id).changes === 1,
    );
  }

  markDone(id: string, generationId: string, now = Date.now()): void {
    this.#transaction(() => {
      this.#db
        .prepare(
          `UPDATE jobs SET state = 'done', finished_at = ?, generation_id = ?,
             error_code = NULL, error_message = NULL WHERE id = ?`,
        )
        .run(now, generationId, id);
    });
  }

  markFailed(id: string, code: string, message: string, now = Date.now()): void {
    this.#transaction(() => {
      this.#db
        .prepare(
          `UPDATE jobs SET state = 'failed', finished_at = ?, error_code = ?, error_message = ?
           WHERE id = ?`,
        )
        .run(now, code, message, id);
    });
  }

  /** Cancels the given jobs that are in one of `from`; returns how many changed. */
  markCancelled(ids: string[], from: JobState[], now = Date.now()): number {
    if (ids.length === 0) return 0;
    const states = from.map((s) => `'${s}'`).join(', ');
    const stmt = this.#db.prepare(
      `UPDATE jobs SET state = 'cancelled', finished_at = ? WHERE id = ? AND state IN (${states})`,
    );
    return this.#transaction(() => {
      let changed = 0;
      for (const id of ids) changed += stmt.run(now, id).changes;
      return changed;
    });
  }

  /**
   * Puts a job back at the front of the queue. `countAttempt: false` gives back the attempt its
   * start took (the app was closed, the job did not fail).
   */
  requeueFront(id: string, { countAttempt }: { countAttempt: boolean }): void {
    this.#transaction(() => this.#requeueFront(id, countAttempt));
  }

  #requeueFront(id: string, countAttempt: boolean): void {
    this.#db
      .prepare(
        `UPDATE jobs SET state = 'queued', started_at = NULL, finished_at = NULL,
           attempts = CASE WHEN ? THEN attempts ELSE MAX(attempts - 1, 0) END,
           position = (SELECT COALESCE(MIN(position), 1) - 1 FROM jobs WHERE state = 'queued')
         WHERE id = ?`,
      )
      .run(countAttempt ? 1 : 0, id);
  }

  /**
   * Jobs left 'running' while none runs (a full disk failed the write that ended them): each goes
   * back to the front, its attempt given back, or is done when its generation was saved. Returns
   * the ids that changed.
   */
  requeueStranded(runningId: string | null, now = Date.now()): string[] {
    return this.#transaction(() => {
      const stranded = this.running().filter((r) => r.id !== runningId);
      for (const row of [...stranded].reverse())
        if (row.generation_id !== null)
          this.#db
            .prepare("UPDATE jobs SET state = 'done', finished_at = ? WHERE id = ?")
            .run(now, row.id);
        else this.#requeueFront(row.id, false);
      return stranded.map((r) => r.id);
    });
  }

  /**
   * Moves queued job `id` to `index` among the queued jobs (0 = next), renumbering the queued
   * positions 0..n-1 in one transaction. Returns false if the job is not queued.
   */
  move(id: string, index: number): boolean {
    return this.#transaction(() => {
      const ids = this.queued().map((r) => r.id);
      const from = ids.indexOf(id);
      if (from < 0) return false;
      ids.splice(from, 1);
      ids.splice(Math.min(Math.max(index, 0), ids.length), 0, id);
      const stmt = this.#db.prepare('UPDATE jobs SET position = ? WHERE id = ?');
      ids.forEach((jobId, i) => stmt.run(i, jobId));
      return true;
    });
  }

  /**
   * At start: jobs a crash left running go back to the front of the queue (in the order they
   * started), unless they have been started MAX_ATTEMPTS times, which fails them with a
   * sentence, or their generation was saved already, which makes them done. Queued jobs whose stored settings no longer parse are failed too. One transaction.
   */
  recover(now = Date.now()): RecoveredJobs {
    return this.#transaction(() => {
      const out: RecoveredJobs = { requeued: [], done: [], failed: [] };
      const stale = this.running();
      // Re-queue in reverse start order, each at the front: the first started runs first.
      for (const row of [...stale].reverse()) {
        if (row.generation_id !== null) {
          // The crash came after the library saved the generation (it sets generation_id in the
          // same transaction) and before the job was marked done.
          this.#db
            .prepare(
              "UPDATE jobs SET state = 'done', finished_at = COALESCE(finished_at, ?) WHERE id = ?",
            )
            .run(now, row.id);
          out.done.push(row.id);
        } else if (row.attempts >= MAX_ATTEMPTS) {
          this.#db
            .prepare(
              `UPDATE jobs SET state = 'failed', finished_at = ?, error_code = 'interrupted',
                 error_message = ? WHERE id = ?`,
            )
            .run(
              now,
              `The app stopped while this job was running (${row.attempts} times); it was not retried again.`,
              row.id,
            );
          out.failed.push(row.id);
        } else {
          // The attempt was counted when it started; the next start counts the retry.
          this.#requeueFront(row.id, true);
          out.requeued.push(row.id);
        }
      }
      for (const row of this.queued()) {
        if (parseSettings(row.settings)) continue;
        this.#db
          .prepare(
            `UPDATE jobs SET state = 'failed', finished_at = ?, error_code = 'invalid-argument',
               error_message = ? WHERE id = ?`,
          )
          .run(
            now,
            'The settings stored with this job are not valid for this version of the app.',
            row.id,
          );
        out.failed.push(row.id);
      }
      return out;
    });
  }

  isPaused(): boolean {
    const row = this.#db.prepare('SELECT value FROM meta WHERE key = ?').get(PAUSED_KEY) as
      { value: string } | undefined;
    return row?.value === '1';
  }

  setPaused(paused: boolean): void {
    this.#transaction(() => {
      this.#db
        .prepare(
          `INSERT INTO meta (key, value) VALUES (?, ?)
           ON CONFLICT(key) DO UPDATE SET value = excluded.value`,
        )
        .run(PAUSED_KEY, paused ? '1' : '0');
    });
  }
}

/** The stored settings JSON, parsed and checked; null if it no longer fits the schema. */
export function parseSettings(json: string): GenerationSettings | null {
  try {
    const parsed = GenerationSettings.safeParse(JSON.parse(json));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}
