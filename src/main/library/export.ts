/**
 * The output folder (Settings.outputDir): every saved image is also exported there, as
 * <image id>.png, atomically (a temp file in that folder, fsync, rename), so a program watching
 * the folder never sees half an image. The library keeps its own copy either way; an export that
 * fails is logged and loses nothing.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { FileStore } from './file-store';

/**
 * Why `dir` cannot be the output folder, as one sentence; null when it can: an absolute path of
 * an existing folder that Latent Studio can create files in (tried with a probe file).
 */
export function outputDirProblem(dir: string): string | null {
  const shown = dir.length > 200 ? `${dir.slice(0, 200)}…` : dir;
  if (!path.isAbsolute(dir))
    return `The output folder must be a full path (such as ${path.resolve('/', 'Pictures')}), not "${shown}".`;
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    return `The output folder ${shown} does not exist: create it first, or choose another.`;
  }
  if (!stat.isDirectory()) return `${shown} is a file, not a folder: choose a folder for images.`;
  const probe = path.join(dir, `.latent-studio-probe-${process.pid}-${Date.now()}`);
  try {
    fs.writeFileSync(probe, '', { flag: 'wx' });
    fs.rmSync(probe, { force: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'an error';
    return `Latent Studio cannot write to the output folder ${shown} (${code}): choose a folder you can write to.`;
  }
  return null;
}

/**
 * Writes each image into `dir` as <id>.png; never throws. Returns one sentence per image that
 * could not be exported (the folder is gone, the disk is full).
 */
export async function exportImages(
  store: FileStore,
  dir: string,
  images: Array<{ id: string; png: Uint8Array }>,
): Promise<string[]> {
  const problems: string[] = [];
  // The folder must still be there: writeAtomic would create a missing one, and a folder that
  // was removed (an unplugged drive's mount point) is not ours to make again.
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory())
    return [`The output folder ${dir} is not there any more; images stay in the library only.`];
  for (const { id, png } of images)
    try {
      await store.writeAtomic(path.join(dir, `${id}.png`), png);
    } catch (err) {
      problems.push(
        `Image ${id} could not be exported to ${dir}: ${(err as Error).message.split('\n')[0]}`,
      );
    }
  return problems;
}
