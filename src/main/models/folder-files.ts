/**
 * Model files offered from a folder the settings name (replacement VAEs, ControlNets): the files
 * with the kind's extensions directly in it, a name or path resolved to one, and why a folder
 * cannot be used, each in the sentences the studio shows.
 */
import { statSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { StudioError } from '../../shared';

/** A kind of file offered from a folder. */
export interface FolderFileKind {
  /** How the studio names one ('VAE', 'ControlNet'). */
  what: string;
  /** The file name endings taken, lower case with their dot. */
  extensions: readonly string[];
}

const hasExtension = (kind: FolderFileKind, name: string): boolean =>
  kind.extensions.includes(path.extname(name).toLowerCase());

/** The files of `kind` directly in `folder`, by name; none when the folder does not exist. */
export async function listFolderFiles(
  folder: string,
  kind: FolderFileKind,
): Promise<{ name: string; bytes: number }[]> {
  const entries = await readdir(folder, { withFileTypes: true }).catch(() => []);
  const files: { name: string; bytes: number }[] = [];
  for (const e of entries) {
    if (e.name.startsWith('.') || !hasExtension(kind, e.name)) continue;
    const st = await stat(path.join(folder, e.name)).catch(() => null);
    if (st?.isFile()) files.push({ name: e.name, bytes: st.size });
  }
  return files.sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * The file `name` stands for: a path (absolute, or with a folder in it) as it is, a bare name
 * inside `folder`. Throws StudioError with one sentence when it is not there or not of `kind`.
 */
export async function resolveFolderFile(
  name: string,
  folder: string,
  kind: FolderFileKind,
): Promise<string> {
  const bare = path.basename(name) === name && !path.isAbsolute(name);
  const file = bare ? path.join(folder, name) : path.resolve(name);
  const st = await stat(file).catch(() => null);
  if (!st?.isFile())
    throw new StudioError(
      'not-found',
      bare
        ? `The ${kind.what} "${name}" is not in the ${kind.what} folder ${folder}: put the file there or choose another ${kind.what}.`
        : `The ${kind.what} file ${file} does not exist.`,
    );
  if (!hasExtension(kind, file))
    throw new StudioError(
      'invalid-argument',
      `${path.basename(file)} is not a ${kind.what} file (${kind.extensions.join(', ')}).`,
    );
  return file;
}

/** Why `dir` cannot be the folder of `kind` (one sentence), or null; checked when it is set. */
export function folderProblem(dir: string, kind: FolderFileKind): string | null {
  const shown = dir.length > 200 ? `${dir.slice(0, 200)}…` : dir;
  if (!path.isAbsolute(dir))
    return `The ${kind.what} folder must be a full path (such as ${path.resolve('/', 'models', kind.what)}), not "${shown}".`;
  let st;
  try {
    st = statSync(dir);
  } catch {
    return `The ${kind.what} folder ${shown} does not exist: create it first, or choose another.`;
  }
  if (!st.isDirectory())
    return `${shown} is a file, not a folder: choose the folder that holds the ${kind.what} files.`;
  return null;
}
