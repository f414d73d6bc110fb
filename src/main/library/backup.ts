/**
 * Automatic database backups: the SQLite online backup API into backups/library-<ms>.sqlite
 * (written under a temp name, then renamed), keeping the newest few.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Db } from './db';
import { syncDir } from './file-store';

const keepBackups = 3;
const pattern = /^library-(\d+)\.sqlite$/;

export interface BackupFile {
  file: string;
  time: number;
}

/** Backups in `dir`, newest first. */
export function listBackups(dir: string): BackupFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .map((name) => ({ name, m: pattern.exec(name) }))
    .filter((e): e is { name: string; m: RegExpExecArray } => e.m !== null)
    .map((e) => ({ file: path.join(dir, e.name), time: Number(e.m[1]) }))
    .sort((a, b) => b.time - a.time);
}

/** Backs the database up now; returns the backup's file. Removes all but the newest few. */
export async function backupDatabase(db: Db, dir: string, now = Date.now()): Promise<string> {
  await fsp.mkdir(dir, { recursive: true });
  const target = path.join(dir, `library-${now}.sqlite`);
  const temp = path.join(dir, `.library-${now}.sqlite.tmp-${process.pid}`);
  try {
    await db.backup(temp);
    await fsp.rename(temp, target);
  } catch (err) {
    await fsp.rm(temp, { force: true }).catch(() => {});
    throw err;
  }
  await syncDir(dir);
  for (const old of listBackups(dir).slice(keepBackups))
    await fsp.rm(old.file, { force: true }).catch(() => {});
  return target;
}
