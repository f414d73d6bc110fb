/**
 * A TensorSource over a PyTorch checkpoint (`.ckpt`, `.pt`, `.pth`, `.bin`) in torch.save's
 * zip format (torch >= 1.6): `<root>/data.pkl` describes the state dict and each storage is an
 * uncompressed entry `<root>/data/<key>`. The pickle goes through the restricted reader in
 * pickle.ts, so opening a checkpoint never runs code from it.
 */
import { open, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../../errors';
import type { TensorInfo } from '../types';
import { DTYPE_BYTES, elementCount, toFloat32 } from './dtype';
import { FileTensorSource, corrupt, readExactly } from './file-source';
import { PickleRefused, readPickle, type TensorRef } from './pickle';
import { readZipDirectory, readZipEntry, type ZipEntry } from './zip';

interface Located extends TensorInfo {
  readonly ref: TensorRef;
  readonly entry: ZipEntry;
}

function isContiguous(shape: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    if (shape[d]! !== 1 && stride[d]! !== expected) return false;
    expected *= shape[d]!;
  }
  return true;
}

/** The dict of tensors inside what torch.save wrote: the object itself or its `state_dict`. */
function stateDict(root: unknown): Map<unknown, unknown> | undefined {
  if (!(root instanceof Map)) return undefined;
  const inner = root.get('state_dict');
  return inner instanceof Map ? inner : root;
}

export class TorchZipSource extends FileTensorSource<Located> {
  private constructor(
    file: string,
    handle: FileHandle,
    tensors: readonly Located[],
    /** The `global_step` saved beside the weights by ldm/Lightning training, when present. */
    readonly globalStep: number | undefined,
  ) {
    super(file, handle, tensors);
  }

  static async open(file: string): Promise<TorchZipSource> {
    const handle = await open(file, 'r');
    try {
      const entries = await readZipDirectory(handle, file);
      const pkl = entries.find(
        (e) => e.name.endsWith('data.pkl') && e.name.split('/').length === 2,
      );
      if (!pkl) throw corrupt(file, 'it is a zip file but not a PyTorch checkpoint (no data.pkl).');
      const root = pkl.name.slice(0, pkl.name.length - 'data.pkl'.length);
      const byEntryName = new Map(entries.map((e) => [e.name, e]));
      let object: unknown;
      try {
        object = readPickle(await readZipEntry(handle, file, pkl));
      } catch (e) {
        if (e instanceof PickleRefused) {
          throw new EngineError(
            'model-unsupported',
            `${path.basename(file)} was refused because ${e.message}; only plain weights are read from checkpoints.`,
            { file, cause: e },
          );
        }
        throw e;
      }
      const dict = stateDict(object);
      if (!dict) throw corrupt(file, 'its pickle holds no dictionary of tensors.');
      const tensors: Located[] = [];
      for (const [name, value] of dict) {
        const ref = value as TensorRef | null;
        if (typeof name !== 'string' || ref?.kind !== 'tensor') continue;
        const entry = byEntryName.get(`${root}data/${ref.storage.key}`);
        if (!entry)
          throw corrupt(file, `the storage of tensor ${name} is missing from the archive.`);
        if (entry.method !== 0) throw corrupt(file, `the storage of tensor ${name} is compressed.`);
        const itemBytes = DTYPE_BYTES[ref.storage.dtype];
        let lastElement = ref.storageOffset;
        for (let d = 0; d < ref.shape.length; d++) {
          lastElement += Math.max(0, ref.shape[d]! - 1) * ref.stride[d]!;
        }
        const empty = elementCount(ref.shape) === 0;
        if (!empty && (lastElement + 1) * itemBytes > entry.size) {
          throw corrupt(file, `tensor ${name} reaches past the end of its storage.`);
        }
        tensors.push({
          name,
          dtype: ref.storage.dtype,
          shape: ref.shape,
          byteLength: elementCount(ref.shape) * itemBytes,
          ref,
          entry,
        });
      }
      const step = object instanceof Map ? object.get('global_step') : undefined;
      return new TorchZipSource(file, handle, tensors, typeof step === 'number' ? step : undefined);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  async readFloat32(name: string): Promise<Float32Array> {
    const t = this.located(name);
    const { ref, entry } = t;
    const itemBytes = DTYPE_BYTES[t.dtype];
    const count = elementCount(ref.shape);
    if (count === 0) return new Float32Array(0);
    const start = entry.dataOffset + ref.storageOffset * itemBytes;
    if (isContiguous(ref.shape, ref.stride)) {
      const bytes = await readExactly(this.handle, this.path, start, count * itemBytes);
      return toFloat32(bytes, t.dtype, count);
    }
    // A strided view (a transpose saved as is): read the span it covers, then gather.
    let span = 1;
    for (let d = 0; d < ref.shape.length; d++) span += (ref.shape[d]! - 1) * ref.stride[d]!;
    const whole = toFloat32(
      await readExactly(this.handle, this.path, start, span * itemBytes),
      t.dtype,
      span,
    );
    const out = new Float32Array(count);
    const index = new Array<number>(ref.shape.length).fill(0);
    for (let i = 0; i < count; i++) {
      let source = 0;
      for (let d = 0; d < index.length; d++) source += index[d]! * ref.stride[d]!;
      out[i] = whole[source]!;
      for (let d = index.length - 1; d >= 0; d--) {
        if (++index[d]! < ref.shape[d]!) break;
        index[d] = 0;
      }
    }
    return out;
  }
}
