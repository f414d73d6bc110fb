/**
 * The files of the library, under the data folder:
 *
 *   images/YYYY/MM/<id>.png     generated images (the database row points at them)
 *   thumbs/YYYY/MM/<id>.webp    256 px thumbnails (rebuilt when missing)
 *   uploads/<id>.<ext>          init images, masks and imported PNGs given by the studio
 *   trash/<token>/...           deleted images (headless: the trash; desktop: the undo copy)
 *   quarantine/...              files found without a row that could not be re-imported
 *   backups/                    automatic database backups
 *
 * Paths stored in the database are relative to the data folder, with forward slashes.
 * A write is: temp file next to the target, fsync, rename, fsync the folder.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { makeThumbnail } from '../images/decode';

const thumbSize = 256;
const tempMarker = '.tmp-';

export function isTempName(name: string): boolean {
  return name.startsWith('.') && name.includes(tempMarker);
}

export class FileStore {
  readonly imagesDir: string;
  readonly thumbsDir: string;
  readonly uploadsDir: string;
  readonly trashDir: string;
  readonly quarantineDir: string;
  readonly backupsDir: string;
  /**
   * Test hook: called with the target path before each file write; throwing simulates a
   * failing disk (e.g. an error with code 'ENOSPC').
   */
  beforeWrite: ((target: string) => void) | null = null;

  constructor(readonly dataDir: string) {
    this.imagesDir = path.join(dataDir, 'images');
    this.thumbsDir = path.join(dataDir, 'thumbs');
    this.uploadsDir = path.join(dataDir, 'uploads');
    this.trashDir = path.join(dataDir, 'trash');
    this.quarantineDir = path.join(dataDir, 'quarantine');
    this.backupsDir = path.join(dataDir, 'backups');
  }

  /** Absolute path of a stored relative path; null when it would leave the data folder. */
  abs(relative: string): string {
    const root = path.resolve(this.dataDir);
    const file = path.resolve(root, relative);
    if (!file.startsWith(root + path.sep)) throw new Error(`Path ${relative} leaves the library.`);
    return file;
  }

  rel(absolute: string): string {
    return path.relative(this.dataDir, absolute).split(path.sep).join('/');
  }

  /** images/YYYY/MM/<id>.png and thumbs/YYYY/MM/<id>.webp for an image made at `time`. */
  imagePaths(id: string, time: number): { file: string; thumb: string } {
    const d = new Date(time);
    const yyyy = String(d.getFullYear()).padStart(4, '0');
    const mm = String(d.getMonth() + 1).padStart(2, '0');
    return { file: `images/${yyyy}/${mm}/${id}.png`, thumb: `thumbs/${yyyy}/${mm}/${id}.webp` };
  }

  /** Writes `data` to `target` atomically and durably (temp, fsync, rename, fsync folder). */
  async writeAtomic(target: string, data: Uint8Array): Promise<void> {
    const dir = path.dirname(target);
    await fsp.mkdir(dir, { recursive: true });
    const temp = path.join(
      dir,
      `.${path.basename(target)}${tempMarker}${process.pid}-${crypto.randomBytes(4).toString('hex')}`,
    );
    let handle: fsp.FileHandle | null = null;
    try {
      this.beforeWrite?.(target);
      handle = await fsp.open(temp, 'wx');
      await handle.writeFile(data);
      await handle.sync();
      await handle.close();
      handle = null;
      await fsp.rename(temp, target);
    } catch (err) {
      await handle?.close().catch(() => {});
      await fsp.rm(temp, { force: true }).catch(() => {});
      throw err;
    }
    await syncDir(dir);
  }

  /** A WebP thumbnail, at most thumbSize on its longer side. */
  makeThumb(png: Uint8Array): Promise<Uint8Array> {
    return makeThumbnail(png, thumbSize);
  }

  /** Moves a file, across file systems too; creates the target folder. */
  async move(from: string, to: string): Promise<void> {
    await fsp.mkdir(path.dirname(to), { recursive: true });
    try {
      await fsp.rename(from, to);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      await fsp.copyFile(from, to);
      await fsp.rm(from, { force: true });
    }
  }

  /** A second name for a file (hard link, or a copy where links are not possible). */
  async keepCopy(from: string, to: string): Promise<void> {
    await fsp.mkdir(path.dirname(to), { recursive: true });
    await fsp.rm(to, { force: true });
    try {
      await fsp.link(from, to);
    } catch {
      await fsp.copyFile(from, to);
    }
  }

  /** Every file under `dir` (relative to the data folder), temp files included. */
  async listFiles(dir: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (d: string) => {
      let entries: fs.Dirent[];
      try {
        entries = await fsp.readdir(d, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) out.push(this.rel(p));
      }
    };
    await walk(dir);
    return out;
  }
}

/** fsync a folder so a rename in it survives a power cut (not possible on Windows: skipped). */
export async function syncDir(dir: string): Promise<void> {
  let handle: fsp.FileHandle | null = null;
  try {
    handle = await fsp.open(dir, 'r');
    await handle.sync();
  } catch {
    // Windows cannot open folders; some file systems refuse fsync on them.
  } finally {
    await handle?.close().catch(() => {});
  }
}

export function existsFile(file: string): boolean {
  try {
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
