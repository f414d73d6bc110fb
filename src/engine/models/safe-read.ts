/**
 * Reading the small files of a model folder without trusting what they are.
 *
 * A model folder may come from anywhere: any file in it can be a symlink to /dev/zero, a named
 * pipe, a folder, or far larger than its kind ever is. Reading such a file the plain way hangs
 * (a FIFO blocks open(2) until a writer comes; /dev/zero never ends) or grows the process by
 * gigabytes. So every read here opens without blocking (O_NONBLOCK: opening a FIFO returns at
 * once), checks the opened descriptor with fstat (regular files only: the check is on what was
 * opened, so swapping the file between a stat and the open changes nothing), refuses a size over
 * the cap of its kind, and reads at most that cap. Symlinks to regular files are followed as
 * before: Hugging Face cache snapshots are symlinks into ../../blobs.
 */
import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

/**
 * The largest file of each kind that is read. Real files are far below: model_index.json and
 * the configs are a few KiB, CLIP's vocab.json 1 MiB and its tokenizer.json 2 MiB, model cards
 * tens of KiB. ONNX files are protobuf messages, which protobuf caps at 2 GiB (weights beyond
 * that live in external data files, which are never read here, only sized).
 */
export const fileLimits = {
  /** model_index.json, scheduler_config.json, config.json, tokenizer_config.json... */
  json: { bytes: 4 * MiB, what: 'a JSON config' },
  /** vocab.json, merges.txt, tokenizer.json. */
  tokenizer: { bytes: 32 * MiB, what: 'a tokenizer file' },
  /** about.json beside model_index.json. */
  about: { bytes: 1 * MiB, what: 'a model card' },
  /** README.md and friends: only this much of the start is read (the first paragraph is used). */
  card: { bytes: 256 * KiB, what: 'a model card' },
  /** model.onnx: the protobuf limit. */
  onnx: { bytes: 2 * GiB, what: 'an ONNX file' },
  /** External weights: never read whole here (only sized, and sampled for a fingerprint). */
  weights: { bytes: Number.MAX_SAFE_INTEGER, what: 'a weights file' },
} as const;

export type FileKind = keyof typeof fileLimits;

/** Why a file was not read; `sentence(name)` says it for a person. */
export class UnreadableFileError extends Error {
  constructor(
    readonly reason: 'folder' | 'pipe' | 'device' | 'socket' | 'special' | 'too-large',
    readonly size: number,
    readonly kind: FileKind,
  ) {
    super(reason);
  }

  /** One sentence about the file shown as `name` (its path relative to the model folder). */
  sentence(name: string): string {
    switch (this.reason) {
      case 'folder':
        return `${name} is a folder, not a file.`;
      case 'too-large': {
        const cap = formatBytes(fileLimits[this.kind].bytes);
        // Just over the cap rounds to the cap itself: then the exact size says why.
        const size =
          formatBytes(this.size) === cap
            ? `${this.size.toLocaleString('en-US')} bytes`
            : formatBytes(this.size);
        return `${name} is ${size}, too large for ${fileLimits[this.kind].what} (at most ${cap}); it was not read.`;
      }
      default:
        return `${name} is ${article[this.reason]}, not a regular file; a model folder holds regular files only.`;
    }
  }
}

const article = {
  pipe: 'a named pipe',
  device: 'a device',
  socket: 'a socket',
  special: 'a special file',
} as const;

export function formatBytes(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(1)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (n >= KiB) return `${(n / KiB).toFixed(0)} KiB`;
  return `${n} bytes`;
}

/** O_NONBLOCK is POSIX; Windows has no FIFOs in folders and no such flag. */
const openFlags = constants.O_RDONLY | (constants.O_NONBLOCK ?? 0);

/** The error for a file that is not a regular one (a folder, FIFO, device...), or null. */
export function notRegularFile(st: Stats, kind: FileKind): UnreadableFileError | null {
  if (st.isFile()) return null;
  return new UnreadableFileError(
    st.isDirectory()
      ? 'folder'
      : st.isFIFO()
        ? 'pipe'
        : st.isCharacterDevice() || st.isBlockDevice()
          ? 'device'
          : st.isSocket()
            ? 'socket'
            : 'special',
    0,
    kind,
  );
}

/** Throws UnreadableFileError unless `st` is a regular file within its kind's cap. */
function checkOpened(st: Stats, kind: FileKind, truncate: boolean): void {
  const wrongType = notRegularFile(st, kind);
  if (wrongType) throw wrongType;
  if (!truncate && st.size > fileLimits[kind].bytes)
    throw new UnreadableFileError('too-large', st.size, kind);
}

/** A missing file (or a path through a file): the callers' "not there". */
function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** How many bytes of an opened file of `size` are read: at most the cap of its kind. */
function bytesToRead(size: number, kind: FileKind): number {
  // A file that grows while it is read stops at the cap, never past it.
  return Math.min(size, fileLimits[kind].bytes);
}

/**
 * Opens a regular file for reading without blocking, checked as above (with `truncate`, a file
 * over the cap is not refused: only the cap is read from it). fs errors (ENOENT, EACCES...)
 * pass through; the caller closes the handle.
 */
export async function openRegularFile(
  path: string,
  kind: FileKind,
  { truncate = false }: { truncate?: boolean } = {},
): Promise<{ handle: FileHandle; size: number }> {
  const handle = await open(path, openFlags);
  try {
    const st = await handle.stat();
    checkOpened(st, kind, truncate);
    return { handle, size: st.size };
  } catch (e) {
    await handle.close();
    throw e;
  }
}

/** The synchronous twin of openRegularFile, for readers that work on a descriptor. */
export function openRegularFileSync(
  path: string,
  kind: FileKind,
  { truncate = false }: { truncate?: boolean } = {},
): { fd: number; size: number } {
  const fd = openSync(path, openFlags);
  try {
    const st = fstatSync(fd);
    checkOpened(st, kind, truncate);
    return { fd, size: st.size };
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** The synchronous twin of readRegularFile, for small files read where nothing can wait. */
export function readRegularFileSync(
  path: string,
  kind: FileKind,
  opts: { truncate?: boolean } = {},
): Buffer | null {
  let opened: { fd: number; size: number };
  try {
    opened = openRegularFileSync(path, kind, opts);
  } catch (e) {
    if (isMissing(e)) return null;
    throw e;
  }
  const { fd, size } = opened;
  try {
    const buf = Buffer.allocUnsafe(bytesToRead(size, kind));
    let got = 0;
    for (let n = -1; got < buf.length && n !== 0; got += n)
      n = readSync(fd, buf, got, buf.length - got, got);
    return buf.subarray(0, got);
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a regular file of `kind` whole (at most its cap). With `truncate`, a larger file is not
 * refused: only its first cap bytes are read (model cards: the start is what is shown).
 * Missing (ENOENT, ENOTDIR): null. Anything else not a readable regular file: throws.
 */
export async function readRegularFile(
  path: string,
  kind: FileKind,
  opts: { truncate?: boolean } = {},
): Promise<Buffer | null> {
  let opened: { handle: FileHandle; size: number };
  try {
    opened = await openRegularFile(path, kind, opts);
  } catch (e) {
    if (isMissing(e)) return null;
    throw e;
  }
  const { handle, size } = opened;
  try {
    const buf = Buffer.allocUnsafe(bytesToRead(size, kind));
    let got = 0;
    for (let n = -1; got < buf.length && n !== 0; got += n)
      n = (await handle.read(buf, got, buf.length - got, got)).bytesRead;
    return buf.subarray(0, got);
  } finally {
    await handle.close();
  }
}

/** readRegularFile as UTF-8 text (a byte-order mark is kept; JSON readers strip it). */
export async function readRegularText(
  path: string,
  kind: FileKind,
  opts: { truncate?: boolean } = {},
): Promise<string | null> {
  const buf = await readRegularFile(path, kind, opts);
  return buf === null ? null : buf.toString('utf8');
}

/**
 * Checks that `path` is a readable regular file within its kind's cap, without reading it (a
 * file read later, in another thread, is checked here at inspection). Missing: false.
 */
export async function isRegularFile(path: string, kind: FileKind): Promise<boolean> {
  try {
    const { handle } = await openRegularFile(path, kind);
    await handle.close();
    return true;
  } catch (e) {
    if (isMissing(e)) return false;
    throw e;
  }
}
