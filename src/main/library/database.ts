/**
 * The library's database and its read-only mode: opening and migrating library.sqlite, the
 * integrity check at open, mapping storage failures to clear errors, and reopening after a
 * restore. The other library services and the job queue reach the database through this one
 * owner, and hear `reopened` when the file under them changed.
 */
import fs from 'node:fs';
import { StudioError } from '../../shared';
import type { HostContext } from '../services';
import {
  type Db,
  diskFullError,
  immediate,
  isCorruption,
  isDiskFull,
  openDatabase,
  quickCheck,
} from './db';
import { LibraryError } from './errors';
import { type Migration, migrate } from './migrations';

const readOnlySentence =
  'The library database is damaged, so the library is open read-only; restore the last backup to make changes again.';

/** What the library database announces to the services built on it. */
export interface LibraryDatabaseEvents {
  /** The database file was reopened (a restored backup): cached rows and statements are stale. */
  reopened: () => void;
  /** A damaged database was found while running: the library turned read-only. */
  readOnly: () => void;
}

/**
 * The library database. `open()` never throws: a file that fails its check (or is not a
 * database) opens read-only, or as an empty in-memory library when it cannot even be read, and
 * `problem` says why.
 */
export class LibraryDatabase {
  #db!: Db;
  #readOnly = false;
  #problem: string | null = null;
  #closed = false;
  #listeners: { [E in keyof LibraryDatabaseEvents]: Set<LibraryDatabaseEvents[E]> } = {
    reopened: new Set(),
    readOnly: new Set(),
  };
  /**
   * Runs inside open(), after the migrations and before anything reads the rows (finishing
   * saves a crash cut short); its failure is logged, never fatal.
   */
  afterOpen: ((db: Db) => void) | null = null;

  constructor(
    readonly context: HostContext,
    readonly file: string,
    readonly migrations: readonly Migration[],
    /** Whether the data folder held a library before (backups or images): see emptyFileProblem. */
    readonly hadLibrary: () => boolean = () => false,
  ) {}

  /** The better-sqlite3 database; a new object after `reopen`, so never keep it across calls. */
  get db(): Db {
    return this.#db;
  }

  get readOnly(): boolean {
    return this.#readOnly;
  }

  /** Why the library is read-only (null while it is writable). */
  get problem(): string | null {
    return this.#problem;
  }

  get closed(): boolean {
    return this.#closed;
  }

  on<E extends keyof LibraryDatabaseEvents>(event: E, listener: LibraryDatabaseEvents[E]): void {
    this.#listeners[event].add(listener);
  }

  #emit(event: keyof LibraryDatabaseEvents): void {
    for (const listener of this.#listeners[event])
      try {
        listener();
      } catch (err) {
        this.context.log(`library: a ${event} listener failed: ${String(err)}`);
      }
  }

  /** Runs `fn` in an immediate transaction; refused while the library is read-only. */
  transaction<T>(fn: () => T): T {
    this.assertWritable();
    return immediate(this.#db, fn);
  }

  /** Throws StudioError 'storage' while the library is read-only. */
  assertWritable(): void {
    if (this.#readOnly) throw new LibraryError('read-only', 'storage', readOnlySentence);
  }

  open(): void {
    this.#readOnly = false;
    this.#problem = null;
    const nativeBinding = this.context.sqliteNativeBinding;
    let db: Db | null = null;
    try {
      const empty = this.#emptyFileProblem();
      if (empty) return this.#openReadOnly(empty);
      db = openDatabase(this.file, { nativeBinding });
      const problem = quickCheck(db);
      if (problem) {
        db.close();
        db = null;
        return this.#openReadOnly(`The integrity check failed: ${problem}`);
      }
      migrate(db, this.migrations);
      // Keeps the planner's statistics fresh (cheap: it analyzes only what needs it).
      db.pragma('optimize=0x10002');
      this.#db = db;
      try {
        this.afterOpen?.(db);
      } catch (err) {
        this.context.log(`library: saves cut short could not be read: ${String(err)}`);
      }
    } catch (err) {
      try {
        db?.close();
      } catch {
        // already unusable
      }
      this.context.log(`library: cannot open ${this.file}: ${(err as Error).message}`);
      this.#openReadOnly(
        isCorruption(err)
          ? 'The library database file is damaged or is not a database.'
          : `The library database could not be opened: ${(err as Error).message}`,
      );
    }
  }

  /**
   * Closes the file, runs `swap` (which may replace it) and opens it again; then, once
   * `restart` (the start-up work on the new file) is done, tells the `reopened` listeners.
   */
  async reopen(swap: () => Promise<void>, restart: () => Promise<void>): Promise<void> {
    this.#db.close();
    await swap();
    this.open();
    await restart();
    this.#emit('reopened');
  }

  /**
   * A library.sqlite of zero bytes in a data folder that held a library (backups, images) lost
   * its contents (a full disk, a file system crash, a bad copy). SQLite would take it for a new
   * database: a fresh library would start and the reconciler would re-import every image as a
   * generation of its own. It takes the recovery path instead (read-only, restore the backup).
   * A zero-length file anywhere else is a first start cut short, and becomes a new library.
   */
  #emptyFileProblem(): string | null {
    const size = fs.statSync(this.file, { throwIfNoEntry: false })?.size;
    if (size !== 0 || !this.hadLibrary()) return null;
    return 'The library database file is empty: its contents were lost.';
  }

  /** After a failed check: the file read-only if it still answers, else an empty library. */
  #openReadOnly(problem: string): void {
    this.context.log(`library: ${problem} Opening read-only.`);
    this.#readOnly = true;
    this.#problem = `${problem} The library is read-only until the last backup is restored.`;
    try {
      const db = openDatabase(this.file, {
        nativeBinding: this.context.sqliteNativeBinding,
        readonly: true,
        fileMustExist: true,
      });
      try {
        db.prepare('SELECT count(*) FROM images').get();
        db.prepare('SELECT count(*) FROM models').get();
        this.#db = db;
        return;
      } catch {
        db.close();
      }
    } catch {
      // not even readable: fall through to an empty in-memory library
    }
    const empty = openDatabase(':memory:', { nativeBinding: this.context.sqliteNativeBinding });
    migrate(empty, this.migrations);
    this.#db = empty;
  }

  /** Maps storage failures to clear errors; a corrupt database switches to read-only. */
  async guard<T>(fn: () => T | Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.mapError(err, 'the change was not saved');
    }
  }

  /** A storage failure as a StudioError (`what`: what did not happen, for a full disk). */
  mapError(err: unknown, what: string): unknown {
    if (err instanceof StudioError) return err;
    if (isDiskFull(err)) return diskFullError(what);
    if (isCorruption(err)) {
      this.#becomeReadOnly('The library database turned out to be damaged.');
      return new LibraryError('read-only', 'storage', readOnlySentence);
    }
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && code.startsWith('SQLITE_')) {
      this.context.log(`library: ${code}: ${(err as Error).message}`);
      return new StudioError(
        'storage',
        code === 'SQLITE_BUSY'
          ? 'The library database is busy (another Latent Studio may be using it); try again.'
          : `The library database failed (${code}); the change was not saved.`,
      );
    }
    return err;
  }

  #becomeReadOnly(problem: string): void {
    if (this.#readOnly) return;
    this.#readOnly = true;
    this.#problem = `${problem} The library is read-only until the last backup is restored.`;
    this.#emit('readOnly');
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      if (!this.#readOnly) this.#db.pragma('optimize');
    } catch {
      // optional
    }
    try {
      this.#db.close();
    } catch {
      // closing twice or after a failure
    }
  }
}
