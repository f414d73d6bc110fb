/**
 * Opening the library database: better-sqlite3 with WAL, foreign keys, a busy timeout and
 * synchronous=NORMAL (durable across an app crash; WAL keeps the file consistent across power
 * loss, losing at most the last transactions).
 */
import Database from 'better-sqlite3';
import { StudioError } from '../../shared';

export type Db = Database.Database;

export interface OpenOptions {
  /** better-sqlite3 binary built for another ABI (Electron from a checkout). */
  nativeBinding?: string | null;
  readonly?: boolean;
  /** Fail instead of creating a missing file. */
  fileMustExist?: boolean;
}

const busyTimeoutMs = 5000;

export function openDatabase(file: string, options: OpenOptions = {}): Db {
  const db = new Database(file, {
    readonly: options.readonly ?? false,
    fileMustExist: options.fileMustExist ?? false,
    ...(options.nativeBinding ? { nativeBinding: options.nativeBinding } : {}),
  });
  try {
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    if (!options.readonly) {
      db.pragma('journal_mode = WAL');
      db.pragma('synchronous = NORMAL');
    }
    db.pragma('foreign_keys = ON');
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

/** Runs `fn` in a BEGIN IMMEDIATE transaction (a savepoint when already inside one). */
export function immediate<T>(db: Db, fn: () => T): T {
  return db.transaction(fn).immediate();
}

/** `PRAGMA quick_check`: null when the database is sound, else the first problems found. */
export function quickCheck(db: Db): string | null {
  const rows = db.pragma('quick_check(5)') as Array<Record<string, string>>;
  const lines = rows.map((r) => String(Object.values(r)[0]));
  return lines.length === 1 && lines[0] === 'ok' ? null : lines.join('; ');
}

/** SQLite error codes that mean the disk (or the quota) is full. */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}

/** SQLite error codes that mean the file is damaged or not a database at all. */
export function isCorruption(err: unknown): boolean {
  const code = String((err as { code?: unknown } | null)?.code ?? '');
  return code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB';
}

export function diskFullError(what: string): StudioError {
  return new StudioError(
    'disk-full',
    `The disk is full, so ${what}. Free some space and try again; nothing saved before was lost.`,
  );
}
