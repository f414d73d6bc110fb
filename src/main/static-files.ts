import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { mimeType } from './security';

export interface StaticFile {
  body: Buffer;
  contentType: string;
}

/**
 * Resolves a URL path inside `root` and reads it, refusing anything that escapes the folder
 * (`..`, encoded separators, absolute paths) or is not a regular file there (see
 * readRegularFileInside). `/` is index.html.
 */
export async function readStaticFile(root: string, urlPath: string): Promise<StaticFile | null> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return null;
  const relative = decoded === '/' || decoded === '' ? 'index.html' : decoded.replace(/^\/+/, '');
  const file = path.resolve(root, relative);
  const body = await readRegularFileInside(root, file);
  return body ? { body, contentType: mimeType(file) } : null;
}

// Not following links and not blocking on a FIFO; both are 0 where the platform lacks them
// (Windows), and the lstat walk below covers that case.
const openFlags =
  fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW ?? 0) | (fs.constants.O_NONBLOCK ?? 0);

/**
 * The contents of `file` when it is a regular file inside `root`, null otherwise. A file served
 * to a browser must not be a way out of its folder, so this refuses: a path outside `root`; a
 * symbolic link as any component below `root` (a planted link to /etc/passwd, or a linked
 * folder on the way); anything but a regular file once opened (the fstat of the open
 * descriptor, so a swap between the checks and the open cannot slip a FIFO or device in); and a
 * real path that ends up outside the real path of `root`. `root` itself may be a link (a data
 * folder moved elsewhere and linked back is fine).
 */
export async function readRegularFileInside(root: string, file: string): Promise<Buffer | null> {
  const base = path.resolve(root);
  const target = path.resolve(file);
  const relative = path.relative(base, target);
  if (!relative || relative.startsWith('..') || path.isAbsolute(relative)) return null;
  let handle: fsp.FileHandle | null = null;
  try {
    let current = base;
    for (const part of relative.split(path.sep)) {
      current = path.join(current, part);
      if ((await fsp.lstat(current)).isSymbolicLink()) return null;
    }
    handle = await fsp.open(target, openFlags);
    const stat = await handle.stat();
    if (!stat.isFile()) return null;
    const [realBase, realTarget] = await Promise.all([fsp.realpath(base), fsp.realpath(target)]);
    if (!realTarget.startsWith(realBase + path.sep)) return null;
    return await handle.readFile();
  } catch {
    return null;
  } finally {
    await handle?.close().catch(() => {});
  }
}
