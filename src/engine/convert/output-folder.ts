import { stat } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';

/**
 * `outDir` resolved, after checking that nothing is there yet: converters write a new folder and
 * never into (or over) an existing one. Throws EngineError 'bad-input' otherwise.
 */
export async function newOutputFolder(outDir: string): Promise<string> {
  const target = path.resolve(outDir);
  if (await stat(target).catch(() => null)) {
    throw new EngineError('bad-input', `${target} already exists; choose a new output folder.`, {
      file: target,
    });
  }
  return target;
}
