/**
 * The central directory of a zip file (PKWARE APPNOTE.TXT 6.3: end of central directory
 * record, its ZIP64 form, central directory headers and the ZIP64 extended information extra
 * field), read with positioned reads so the archive is never loaded whole. torch.save writes
 * its entries stored (uncompressed), so a tensor's bytes are a plain range of the file.
 */
import { type FileHandle } from 'node:fs/promises';
import { inflateRawSync } from 'node:zlib';
import { corrupt, readExactly } from './file-source';

export interface ZipEntry {
  readonly name: string;
  /** 0 stored, 8 deflated. */
  readonly method: number;
  readonly compressedSize: number;
  readonly size: number;
  /** Where the entry's data starts (after its local header). */
  readonly dataOffset: number;
}

const EOCD = 0x06054b50;
const ZIP64_LOCATOR = 0x07064b50;
const ZIP64_EOCD = 0x06064b50;
const CENTRAL = 0x02014b50;
const LOCAL = 0x04034b50;

/** Lists the entries of the zip file open in `handle`; throws one sentence if it is not a zip. */
export async function readZipDirectory(handle: FileHandle, file: string): Promise<ZipEntry[]> {
  const { size } = await handle.stat();
  const tailLength = Math.min(size, 22 + 65535);
  const tail = await readExactly(handle, file, size - tailLength, tailLength);
  let eocd = -1;
  for (let i = tail.length - 22; i >= 0; i--) {
    if (tail.readUInt32LE(i) === EOCD) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    throw corrupt(file, 'the zip archive has no end record (the file is truncated or not a zip).');
  }
  let count = tail.readUInt16LE(eocd + 10);
  let directorySize = tail.readUInt32LE(eocd + 12);
  let directoryOffset = tail.readUInt32LE(eocd + 16);
  const locator = eocd - 20;
  if (locator >= 0 && tail.readUInt32LE(locator) === ZIP64_LOCATOR) {
    const zip64Offset = Number(tail.readBigUInt64LE(locator + 8));
    const record = await readExactly(handle, file, zip64Offset, 56);
    if (record.readUInt32LE(0) !== ZIP64_EOCD) {
      throw corrupt(file, 'the zip archive has a broken ZIP64 end record.');
    }
    count = Number(record.readBigUInt64LE(32));
    directorySize = Number(record.readBigUInt64LE(40));
    directoryOffset = Number(record.readBigUInt64LE(48));
  }
  if (directoryOffset + directorySize > size) {
    throw corrupt(file, 'the zip directory points past the end of the file (truncated).');
  }
  const directory = await readExactly(handle, file, directoryOffset, directorySize);
  const entries: ZipEntry[] = [];
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > directory.length || directory.readUInt32LE(p) !== CENTRAL) {
      throw corrupt(file, 'the zip directory is damaged.');
    }
    const method = directory.readUInt16LE(p + 10);
    let compressedSize = directory.readUInt32LE(p + 20);
    let uncompressedSize = directory.readUInt32LE(p + 24);
    const nameLength = directory.readUInt16LE(p + 28);
    const extraLength = directory.readUInt16LE(p + 30);
    const commentLength = directory.readUInt16LE(p + 32);
    let localOffset = directory.readUInt32LE(p + 42);
    const name = directory.toString('utf8', p + 46, p + 46 + nameLength);
    // ZIP64 extended information: the 0xFFFFFFFF fields, in this order (APPNOTE 4.5.3).
    let x = p + 46 + nameLength;
    const extraEnd = x + extraLength;
    while (x + 4 <= extraEnd) {
      const id = directory.readUInt16LE(x);
      const length = directory.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let f = x + 4;
        if (uncompressedSize === 0xffffffff) {
          uncompressedSize = Number(directory.readBigUInt64LE(f));
          f += 8;
        }
        if (compressedSize === 0xffffffff) {
          compressedSize = Number(directory.readBigUInt64LE(f));
          f += 8;
        }
        if (localOffset === 0xffffffff) localOffset = Number(directory.readBigUInt64LE(f));
      }
      x += 4 + length;
    }
    p = extraEnd + commentLength;
    const local = await readExactly(handle, file, localOffset, 30);
    if (local.readUInt32LE(0) !== LOCAL) throw corrupt(file, `the zip entry ${name} is damaged.`);
    const dataOffset = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    if (dataOffset + compressedSize > size) {
      throw corrupt(file, `the zip entry ${name} runs past the end of the file (truncated).`);
    }
    entries.push({ name, method, compressedSize, size: uncompressedSize, dataOffset });
  }
  return entries;
}

/** Reads a whole (small) entry, inflating it if it was deflated. */
export async function readZipEntry(
  handle: FileHandle,
  file: string,
  entry: ZipEntry,
): Promise<Buffer> {
  const raw = await readExactly(handle, file, entry.dataOffset, entry.compressedSize);
  if (entry.method === 0) return raw;
  if (entry.method === 8) return inflateRawSync(raw);
  throw corrupt(file, `the zip entry ${entry.name} uses a compression we do not read.`);
}
