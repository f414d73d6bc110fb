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

/** Free bytes for this user on the disk that holds `dir` (or its nearest existing parent). */
export async function freeBytes(dir: string): Promise<number> {
  let probe = path.resolve(dir);
  while (!fs.existsSync(probe) && path.dirname(probe) !== probe) probe = path.dirname(probe);
  const st = await fsp.statfs(probe);
  return st.bavail * st.bsize;
}
