import type Sqlite from 'better-sqlite3';
import type { JobDatabase } from '../jobs/types';

export type DownloadState = 'queued' | 'running' | 'paused' | 'done' | 'failed' | 'cancelled';

/** A row of `downloads` (library migration 7), as stored. */
export interface DownloadRow {
  id: string;
  kind: 'repo' | 'url';
  /** The repo id, or the file's URL. */
  source: string;
  /** The revision asked for (a branch, tag or sha), null for a URL. */
  revision: string | null;
  /** The commit every file is pinned to (resolved when the download was added). */
  sha: string | null;
  /** The model folder's name under the data folder's models/ (or the file's name). */
  name: string;
  license: string | null;
  state: DownloadState;
  bytes_total: number | null;
  created_at: number;
  finished_at: number | null;
  error_code: string | null;
  error_message: string | null;
  /** Where the finished model (or file) is. */
  result_path: string | null;
  model_id: string | null;
  /** The model this download updates (migration 11): it switches to the new folder when done. */
  replaces: string | null;
}

/** A row of `download_files`. */
export interface DownloadFileRow {
  download_id: string;
  path: string;
  url: string;
  size: number | null;
  sha256: string | null;
  git_oid: string | null;
  validator: string | null;
  done: number;
}

/** The queue's SQL over the library's database (read per statement: a restore replaces it). */
export class DownloadStore {
  constructor(private readonly database: JobDatabase) {}

  get #db(): Sqlite.Database {
    return this.database.db;
  }

  insert(
    row: DownloadRow,
    files: Omit<DownloadFileRow, 'download_id' | 'done' | 'validator'>[],
  ): void {
    this.database.transaction(() => {
      this.#db
        .prepare(
          `INSERT INTO downloads (id, kind, source, revision, sha, name, license, state, bytes_total,
             created_at, finished_at, error_code, error_message, result_path, model_id, replaces)
           VALUES (@id, @kind, @source, @revision, @sha, @name, @license, @state, @bytes_total,
             @created_at, @finished_at, @error_code, @error_message, @result_path, @model_id,
             @replaces)`,
        )
        .run(row);
      const add = this.#db.prepare(
        `INSERT INTO download_files (download_id, path, url, size, sha256, git_oid)
         VALUES (?, ?, ?, ?, ?, ?)`,
      );
      for (const f of files) add.run(row.id, f.path, f.url, f.size, f.sha256, f.git_oid);
    });
  }

  get(id: string): DownloadRow | undefined {
    return this.#db.prepare('SELECT * FROM downloads WHERE id = ?').get(id) as
      DownloadRow | undefined;
  }

  /** All downloads, unfinished first, then newest first. */
  list(): DownloadRow[] {
    return this.#db
      .prepare(
        `SELECT * FROM downloads ORDER BY state IN ('done','cancelled'), created_at DESC, id`,
      )
      .all() as DownloadRow[];
  }

  /** The oldest queued download. */
  next(): DownloadRow | undefined {
    return this.#db
      .prepare("SELECT * FROM downloads WHERE state = 'queued' ORDER BY created_at, id LIMIT 1")
      .get() as DownloadRow | undefined;
  }

  /** An unfinished download of the same source (and commit, for a repo), to resume instead of repeat. */
  unfinished(source: string, sha: string | null): DownloadRow | undefined {
    return this.#db
      .prepare(
        `SELECT * FROM downloads WHERE source = ? AND sha IS ? AND state IN ('queued','running','paused','failed')
         ORDER BY created_at DESC LIMIT 1`,
      )
      .get(source, sha) as DownloadRow | undefined;
  }

  files(id: string): DownloadFileRow[] {
    return this.#db
      .prepare('SELECT * FROM download_files WHERE download_id = ? ORDER BY path')
      .all(id) as DownloadFileRow[];
  }

  setState(
    id: string,
    state: DownloadState,
    extra: { error?: { code: string; message: string } | null; finished?: boolean } = {},
  ): void {
    this.database.transaction(() =>
      this.#db
        .prepare(
          `UPDATE downloads SET state = ?, error_code = ?, error_message = ?, finished_at = ? WHERE id = ?`,
        )
        .run(
          state,
          extra.error?.code ?? null,
          extra.error?.message ?? null,
          extra.finished ? Date.now() : null,
          id,
        ),
    );
  }

  finish(id: string, resultPath: string, modelId: string | null): void {
    this.database.transaction(() =>
      this.#db
        .prepare(
          `UPDATE downloads SET state = 'done', result_path = ?, model_id = ?, finished_at = ?,
             error_code = NULL, error_message = NULL WHERE id = ?`,
        )
        .run(resultPath, modelId, Date.now(), id),
    );
  }

  fileDone(id: string, file: string): void {
    this.database.transaction(() =>
      this.#db
        .prepare('UPDATE download_files SET done = 1 WHERE download_id = ? AND path = ?')
        .run(id, file),
    );
  }

  setValidator(id: string, file: string, validator: string | null): void {
    this.database.transaction(() =>
      this.#db
        .prepare('UPDATE download_files SET validator = ? WHERE download_id = ? AND path = ?')
        .run(validator, id, file),
    );
  }

  /** Downloads a crash or quit left running go back to the queue (their partial files stay). */
  requeueRunning(): string[] {
    return this.database.transaction(() => {
      const ids = this.#db
        .prepare("SELECT id FROM downloads WHERE state = 'running'")
        .pluck()
        .all() as string[];
      this.#db.prepare("UPDATE downloads SET state = 'queued' WHERE state = 'running'").run();
      return ids;
    });
  }

  /**
   * Forgets finished downloads (done or cancelled) beyond the newest `keep`, and those finished
   * before `olderThan` (ms since the epoch), so the panel's history stays short. Unfinished and
   * failed ones stay: they can still be resumed. Returns how many rows went.
   */
  prune(options: { keep: number; olderThan: number }): number {
    return this.database.transaction(
      () =>
        this.#db
          .prepare(
            `DELETE FROM downloads WHERE state IN ('done','cancelled') AND (
               finished_at < ? OR id NOT IN (
                 SELECT id FROM downloads WHERE state IN ('done','cancelled')
                 ORDER BY finished_at DESC, id LIMIT ?))`,
          )
          .run(options.olderThan, options.keep).changes,
    );
  }

  remove(id: string): void {
    this.database.transaction(() => this.#db.prepare('DELETE FROM downloads WHERE id = ?').run(id));
  }
}
