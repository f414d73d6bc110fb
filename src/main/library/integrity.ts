/**
 * Integrity and backups: the library's status, automatic backups (at start when the last is
 * old, then on a timer), and restoring the newest sound backup after a failed integrity check.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { type LibraryStatus, type StudioService, StudioError } from '../../shared';
import type { HostContext } from '../services';
import { backupDatabase, listBackups } from './backup';
import type { LibraryDatabase } from './database';
import { type Db, openDatabase, quickCheck } from './db';
import type { FileStore } from './file-store';

export class IntegrityService {
  #backupRunning: Promise<unknown> | null = null;
  #backupTimer: NodeJS.Timeout | null = null;
  /** This slice of the contract (the type check holds it to the contract's schemas). */
  readonly methods;

  constructor(
    readonly context: HostContext,
    readonly database: LibraryDatabase,
    readonly store: FileStore,
    readonly deps: {
      /** The start-up work (reconcile, built-in models, backup) on a restored database. */
      restart: () => Promise<void>;
      /** Sends modelsChanged and galleryChanged after a restore (everything may differ). */
      announce: () => void;
    },
  ) {
    const guard = database.guard.bind(database);
    this.methods = {
      getLibraryStatus: () => guard(() => this.getLibraryStatus()),
      restoreBackup: () => guard(() => this.restoreBackup()),
    } satisfies Pick<StudioService, 'getLibraryStatus' | 'restoreBackup'>;
    database.on('readOnly', () =>
      this.context.events.emit('libraryStatus', this.getLibraryStatus()),
    );
  }

  get #db(): Db {
    return this.database.db;
  }

  /** Backs the database up every `intervalMs` (when the last backup is that old). */
  startTimer(intervalMs: number): void {
    if (intervalMs <= 0 || this.database.closed) return;
    this.#backupTimer = setInterval(() => {
      void this.backupIfOld(intervalMs).catch((err: unknown) =>
        this.context.log(`library: backup failed: ${(err as Error).message}`),
      );
    }, intervalMs);
    this.#backupTimer.unref();
  }

  stopTimer(): void {
    if (this.#backupTimer) clearInterval(this.#backupTimer);
  }

  getLibraryStatus(): LibraryStatus {
    let generations = 0;
    let images = 0;
    let bytes = 0;
    try {
      generations = (
        this.#db.prepare('SELECT count(*) AS n FROM generations').get() as { n: number }
      ).n;
      const r = this.#db
        .prepare(
          'SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM images WHERE deleted_at IS NULL',
        )
        .get() as { n: number; b: number };
      images = r.n;
      bytes = r.b;
    } catch {
      // a damaged database may not answer; the status still does
    }
    return {
      readOnly: this.database.readOnly,
      problem: this.database.problem,
      lastBackupAt: listBackups(this.store.backupsDir)[0]?.time ?? null,
      generations,
      images,
      bytes,
    };
  }

  /** Backs the database up now (never while it is damaged). */
  async backupNow(): Promise<string> {
    this.database.assertWritable();
    const run = backupDatabase(this.#db, this.store.backupsDir);
    this.#backupRunning = run.catch(() => {});
    return run;
  }

  async backupIfOld(maxAgeMs: number): Promise<void> {
    if (this.database.readOnly || this.database.closed) return;
    const last = listBackups(this.store.backupsDir)[0];
    if (last && Date.now() - last.time < maxAgeMs) return;
    await this.backupNow();
  }

  /**
   * After a failed integrity check: sets the damaged file aside (corrupt/), then opens the newest
   * backup that passes quick_check, or a new empty library when there is none; the reconciler then
   * re-imports every image saved since from its PNG metadata.
   */
  async restoreBackup(): Promise<LibraryStatus> {
    if (!this.database.readOnly)
      throw new StudioError(
        'invalid-argument',
        'The library passed its integrity check; there is nothing to restore.',
      );
    await this.#backupRunning;
    let restoredFrom: string | null = null;
    await this.database.reopen(
      async () => {
        restoredFrom = await this.#swapInBackup();
      },
      async () => {
        this.context.log(
          restoredFrom
            ? `library: restored ${restoredFrom}`
            : 'library: no usable backup; started a new library',
        );
        if (!this.database.readOnly) await this.deps.restart();
      },
    );
    const status = this.getLibraryStatus();
    this.context.events.emit('libraryStatus', status);
    this.deps.announce();
    return status;
  }

  /**
   * Sets the damaged file aside (corrupt/) and copies the newest backup that passes quick_check
   * in its place; returns that backup, or null when none was usable (a new library then).
   */
  async #swapInBackup(): Promise<string | null> {
    const asideDir = path.join(this.context.dataDir, 'corrupt');
    await fsp.mkdir(asideDir, { recursive: true });
    const stamp = Date.now();
    for (const suffix of ['', '-wal', '-shm']) {
      const f = this.database.file + suffix;
      if (fs.existsSync(f))
        await this.store.move(f, path.join(asideDir, `library-${stamp}.sqlite${suffix}`));
    }
    let restoredFrom: string | null = null;
    for (const b of listBackups(this.store.backupsDir)) {
      try {
        const probe = openDatabase(b.file, {
          nativeBinding: this.context.sqliteNativeBinding,
          readonly: true,
          fileMustExist: true,
        });
        const problem = quickCheck(probe);
        probe.close();
        if (problem) continue;
        await fsp.copyFile(b.file, this.database.file);
        restoredFrom = b.file;
        break;
      } catch {
        continue;
      }
    }
    return restoredFrom;
  }
}
