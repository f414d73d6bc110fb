/** Where downloads go on disk, and how much room the disk has. */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';

/** `dir/name`, or `dir/name-2`, `-3`... when that is taken. */
export async function freeName(dir: string, name: string): Promise<string> {
  for (let i = 1; ; i++) {
    const candidate = path.join(dir, i === 1 ? name : `${name}-${i}`);
    if (!fs.existsSync(candidate)) return candidate;
  }
}

/** `dir/stem.ext`, or `dir/stem-2.ext`, `-3`... when that is taken (the extension kept). */
export function freeFileName(dir: string, name: string): string {
  const ext = path.extname(name);
  const stem = name.slice(0, name.length - ext.length);
  for (let i = 1; ; i++) {
    const candidate = path.join(dir, i === 1 ? name : `${stem}-${i}${ext}`);
    if (!fs.existsSync(candidate)) return candidate;
  }
}

/** Moves a file, copying it when the target is on another disk (rename cannot cross them). */
export async function moveFile(from: string, to: string): Promise<void> {
  await fsp.mkdir(path.dirname(to), { recursive: true });
  try {
    await fsp.rename(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
    await fsp.copyFile(from, to, fs.constants.COPYFILE_EXCL);
    await fsp.rm(from, { force: true });
  }
}

/** Free bytes for this user on the disk that holds `dir` (or its nearest existing parent). */
export async function freeBytes(dir: string): Promise<number> {
  let probe = path.resolve(dir);
  while (!fs.existsSync(probe) && path.dirname(probe) !== probe) probe = path.dirname(probe);
  const st = await fsp.statfs(probe);
  return st.bavail * st.bsize;
}
