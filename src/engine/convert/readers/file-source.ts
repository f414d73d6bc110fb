/**
 * What the file readers share: positioned reads that say when a file is truncated, one-sentence
 * `model-corrupt` errors naming the file, and a TensorSource over an index of located tensors.
 */
import { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../../errors';
import type { TensorInfo, TensorSource } from '../types';

export function corrupt(file: string, message: string): EngineError {
  return new EngineError('model-corrupt', `${path.basename(file)}: ${message}`, { file });
}

/** Reads exactly `length` bytes at `position`, or says the file is truncated. */
export async function readExactly(
  handle: FileHandle,
  file: string,
  position: number,
  length: number,
): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) {
      throw corrupt(file, `the file ends early (truncated at ${position + done} bytes).`);
    }
    done += bytesRead;
  }
  return buffer;
}

/** A TensorSource over one open file and its tensors' locations (`T`), in file order. */
export abstract class FileTensorSource<T extends TensorInfo> implements TensorSource {
  private readonly byName: ReadonlyMap<string, T>;

  protected constructor(
    readonly path: string,
    protected readonly handle: FileHandle,
    private readonly tensors: readonly T[],
  ) {
    this.byName = new Map(tensors.map((t) => [t.name, t]));
  }

  list(): readonly TensorInfo[] {
    return this.tensors;
  }

  info(name: string): TensorInfo | undefined {
    return this.byName.get(name);
  }

  /** The located tensor, or a sentence saying the file has none of that name. */
  protected located(name: string): T {
    const t = this.byName.get(name);
    if (!t) throw corrupt(this.path, `it has no tensor named ${name}.`);
    return t;
  }

  abstract readFloat32(name: string): Promise<Float32Array>;

  async close(): Promise<void> {
    await this.handle.close();
  }
}
