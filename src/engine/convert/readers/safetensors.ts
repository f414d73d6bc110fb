/**
 * A TensorSource over a `.safetensors` file (huggingface/safetensors' format: an 8-byte
 * little-endian header length, a JSON header naming each tensor's dtype, shape and
 * `data_offsets` relative to the end of the header, then the raw little-endian data).
 *
 * Only the header is held in memory; each read touches one tensor's bytes. The header is
 * checked against the file before anything is read, so a header that lies (sizes that do not
 * match the shape, overlapping or out-of-file offsets) or a truncated file is refused with one
 * sentence instead of returning garbage later.
 */
import { open, type FileHandle } from 'node:fs/promises';
import type { TensorInfo } from '../types';
import { DTYPE_BYTES, elementCount, isCheckpointDType, toFloat32 } from './dtype';
import { FileTensorSource, corrupt, readExactly } from './file-source';

/** The reference implementation refuses headers over 100 MB; so do we. */
const MAX_HEADER_BYTES = 100_000_000;

interface Located extends TensorInfo {
  /** Absolute offset of the first byte in the file. */
  readonly offset: number;
}

export class SafetensorsSource extends FileTensorSource<Located> {
  private constructor(
    file: string,
    handle: FileHandle,
    tensors: readonly Located[],
    /** The header's `__metadata__` (string to string), e.g. `modelspec.architecture`. */
    readonly metadata: Readonly<Record<string, string>>,
  ) {
    super(file, handle, tensors);
  }

  /** Opens and validates the header; throws `model-corrupt` with one sentence if it lies. */
  static async open(file: string): Promise<SafetensorsSource> {
    const handle = await open(file, 'r');
    try {
      const { size } = await handle.stat();
      if (size < 8) throw corrupt(file, 'the file is too short to be a safetensors file.');
      const lengthBytes = await readExactly(handle, file, 0, 8);
      const headerLength = Number(lengthBytes.readBigUInt64LE(0));
      if (headerLength < 2 || headerLength > MAX_HEADER_BYTES) {
        throw corrupt(file, `the header length ${headerLength} is not that of a safetensors file.`);
      }
      if (8 + headerLength > size) {
        throw corrupt(file, 'the file ends inside its header (truncated).');
      }
      const headerText = (await readExactly(handle, file, 8, headerLength)).toString('utf8');
      let header: unknown;
      try {
        header = JSON.parse(headerText);
      } catch {
        throw corrupt(file, 'the header is not valid JSON.');
      }
      if (typeof header !== 'object' || header === null || Array.isArray(header)) {
        throw corrupt(file, 'the header is not a JSON object.');
      }
      const dataStart = 8 + headerLength;
      const { tensors, metadata } = parseHeader(file, header as Record<string, unknown>, dataStart);
      const dataEnd = tensors.reduce((end, t) => Math.max(end, t.offset + t.byteLength), dataStart);
      if (dataEnd > size) {
        throw corrupt(
          file,
          `the file is truncated: its header describes ${dataEnd} bytes but it has ${size}.`,
        );
      }
      return new SafetensorsSource(file, handle, tensors, metadata);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  async readFloat32(name: string): Promise<Float32Array> {
    const t = this.located(name);
    const bytes = await readExactly(this.handle, this.path, t.offset, t.byteLength);
    return toFloat32(bytes, t.dtype, elementCount(t.shape));
  }
}

function parseHeader(
  file: string,
  header: Record<string, unknown>,
  dataStart: number,
): { tensors: Located[]; metadata: Record<string, string> } {
  const tensors: Located[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (typeof entry === 'object' && entry !== null) {
        metadata = Object.fromEntries(
          Object.entries(entry).filter((kv): kv is [string, string] => typeof kv[1] === 'string'),
        );
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    if (typeof e !== 'object' || e === null) {
      throw corrupt(file, `the header entry for ${name} is not an object.`);
    }
    if (!isCheckpointDType(e.dtype)) {
      throw corrupt(
        file,
        `tensor ${name} has an element type (${String(e.dtype)}) we cannot read.`,
      );
    }
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw corrupt(file, `tensor ${name} has an invalid shape in the header.`);
    }
    const offsets = e.data_offsets;
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[1] < offsets[0]
    ) {
      throw corrupt(file, `tensor ${name} has invalid data offsets in the header.`);
    }
    const [begin, end] = offsets as [number, number];
    const byteLength = elementCount(shape as number[]) * DTYPE_BYTES[e.dtype];
    if (end - begin !== byteLength) {
      throw corrupt(
        file,
        `the header lies about tensor ${name}: its shape [${shape.join(', ')}] of ${e.dtype} needs ${byteLength} bytes but its offsets span ${end - begin}.`,
      );
    }
    tensors.push({
      name,
      dtype: e.dtype,
      shape: shape as number[],
      byteLength,
      offset: dataStart + begin,
    });
  }
  const byOffset = [...tensors].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const before = byOffset[i - 1]!;
    const t = byOffset[i]!;
    if (t.byteLength > 0 && before.offset + before.byteLength > t.offset) {
      throw corrupt(file, `the header lies: tensors ${before.name} and ${t.name} overlap.`);
    }
  }
  return { tensors: byOffset, metadata };
}
