// Writing a conversion's output folder so that a failed or cancelled conversion leaves nothing:
// everything goes into a hidden temporary folder beside the target, renamed into place at the
// end (a rename within one folder is atomic).
import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';

/** `outDir` resolved; EngineError 'bad-input' with a sentence when it already exists. */
export async function newOutputDir(outDir: string): Promise<string> {
  const target = path.resolve(outDir);
  if (await stat(target).catch(() => null)) {
    throw new EngineError('bad-input', `${target} already exists; choose a new output folder.`, {
      file: target,
    });
  }
  return target;
}

/**
 * Runs `fill(temp)` on a fresh temporary folder beside `target`, then renames it to `target`.
 * On any failure, or when `signal` fired meanwhile ('cancelled'), the temporary folder is removed.
 */
export async function intoPlace<R>(
  target: string,
  signal: AbortSignal | undefined,
  fill: (temp: string) => Promise<R>,
): Promise<R> {
  await mkdir(path.dirname(target), { recursive: true });
  const temp = path.join(
    path.dirname(target),
    `.${path.basename(target)}.partial-${randomBytes(4).toString('hex')}`,
  );
  let done = false;
  try {
    const result = await fill(temp);
    if (signal?.aborted) throw new EngineError('cancelled', 'The conversion was cancelled.');
    await rename(temp, target);
    done = true;
    return result;
  } finally {
    if (!done) await rm(temp, { recursive: true, force: true });
  }
}
