/**
 * Checkpoints sent to the headless server by a browser, which cannot name a file on the host:
 * the bytes stream into the data folder's `checkpoints/` (never held whole in memory; a
 * checkpoint is gigabytes) while their sha256 is computed, and the file is kept once per
 * content, so the import that follows (imports.ts) neither hashes it again nor stores a second
 * copy of the same file. An upload that is refused, cut off or cancelled leaves nothing behind.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { describeOtherFile } from '../../engine/convert/detect';
import { openCheckpoint } from '../../engine/convert/readers/index';
import { isEngineError } from '../../engine/errors';
import { StudioError } from '../../shared';
import { CHECKPOINT_EXTENSIONS, isCheckpointFile, rememberHash } from './checkpoint-cache';

/** What an upload is for: a model to import, or a replacement VAE for one. */
export type UploadKind = 'checkpoint' | 'vae';

/**
 * The largest upload accepted: an SDXL checkpoint with fp32 weights is about 14 GB; nothing the
 * converter reads comes near 40 GiB, so a larger declared size is a mistake, not a model.
 */
export const maxCheckpointUploadBytes = 40 * 1024 ** 3;

/** How much of an upload is gathered before it is written (see receive). */
const WRITE_BATCH_BYTES = 4 * 1024 ** 2;

/** Room left on the disk after an upload, for the database and the images made meanwhile. */
const SPACE_RESERVE_BYTES = 256 * 1024 ** 2;

/** What an accepted upload became. */
export interface StoredUpload {
  /** The file on the host, to hand to importCheckpoint (as `path` or `vae`). */
  path: string;
  sha256: string;
  bytes: number;
  /** True when the same content was already here and that copy is used. */
  reused: boolean;
}

/** An upload's name, size and kind, checked before a byte of it is read. */
export interface UploadRequest {
  /** The file's name as the browser gave it (may carry folders or `../`: only its last part counts). */
  name: string;
  kind: UploadKind;
  /** The declared size (Content-Length). */
  bytes: number;
}

const gb = (n: number): string => `${(n / 1e9).toFixed(1)} GB`;

/**
 * The name an uploaded file is stored under: the last part of what the browser sent (so
 * `../../x.safetensors` is `x.safetensors`), with characters that are unsafe in file names
 * replaced, never starting with a dot. Throws one sentence when it is not a checkpoint's name.
 */
export function uploadFileName(raw: string): string {
  const last = raw.split(/[/\\]/).pop() ?? '';
  const name = last
    .replace(/[^\p{L}\p{N} ._()+-]/gu, '_')
    .replace(/^[. ]+/, '')
    .slice(-200);
  if (!name || !isCheckpointFile(name)) {
    const shown = last.slice(0, 100) || 'That file';
    throw new StudioError(
      'invalid-argument',
      `${shown} is not a checkpoint file (${CHECKPOINT_EXTENSIONS.join(', ')}).`,
    );
  }
  return name;
}

export class CheckpointUploads {
  /** Where uploads are kept: `checkpoints/<sha256 prefix>/<name>`. */
  readonly dir: string;
  /** Uploads being received, each in its own folder; nothing in it survives a restart. */
  readonly #incoming: string;

  constructor(
    readonly dataDir: string,
    private readonly options: {
      /** Free bytes on the disk holding `dir`; defaults to statfs (tests pass a smaller one). */
      freeBytes?: (dir: string) => Promise<number>;
    } = {},
  ) {
    this.dir = path.join(dataDir, 'checkpoints');
    this.#incoming = path.join(this.dir, '.incoming');
  }

  /** Removes what an upload cut short by a crash or a kill left behind. */
  async sweep(): Promise<void> {
    await rm(this.#incoming, { recursive: true, force: true });
  }

  /**
   * Checks an upload before its body is read: a checkpoint's name, a size within the limit,
   * and room on the disk for it. Returns the name it will be stored under.
   */
  async check(request: UploadRequest): Promise<string> {
    const name = uploadFileName(request.name);
    if (!Number.isSafeInteger(request.bytes) || request.bytes <= 0) {
      throw new StudioError('invalid-argument', `${name} is empty.`);
    }
    if (request.bytes > maxCheckpointUploadBytes) {
      throw new StudioError(
        'invalid-argument',
        `${name} is ${gb(request.bytes)}, more than the ${gb(maxCheckpointUploadBytes)} an upload may be.`,
      );
    }
    await mkdir(this.dir, { recursive: true });
    const free = await (this.options.freeBytes ?? freeBytesOf)(this.dir);
    if (free < request.bytes + SPACE_RESERVE_BYTES) {
      throw new StudioError(
        'disk-full',
        `Not enough disk space in the data folder for ${name}: it needs ${gb(request.bytes)} and ${gb(free)} are free.`,
      );
    }
    return name;
  }

  /**
   * Receives an upload's body: streamed to a file in its own folder under `.incoming/` while
   * hashed, then checked (the declared size, a file the converter can read, a checkpoint or a
   * VAE as asked) and moved into place, or dropped for a copy of the same content already kept.
   * Whatever fails, the partial file is removed and the error is one sentence.
   */
  async receive(body: AsyncIterable<Uint8Array>, request: UploadRequest): Promise<StoredUpload> {
    const name = await this.check(request);
    const folder = path.join(this.#incoming, randomUUID());
    await mkdir(folder, { recursive: true });
    const temp = path.join(folder, name);
    try {
      const hash = createHash('sha256');
      let received = 0;
      const handle = await open(temp, 'wx');
      try {
        // The socket's chunks (64 KB or less) are gathered into writes of a few MB: one system
        // call and one wait each instead of dozens. The body is read on only once a batch is on
        // disk, so memory stays at one batch however large the file.
        let batch: Uint8Array[] = [];
        let batchBytes = 0;
        for await (const chunk of body) {
          received += chunk.length;
          // Node's parser stops at Content-Length, so this is a second line of defence.
          if (received > request.bytes) {
            throw new StudioError('invalid-argument', `${name} is larger than it said it was.`);
          }
          hash.update(chunk);
          batch.push(chunk);
          batchBytes += chunk.length;
          if (batchBytes >= WRITE_BATCH_BYTES) {
            await handle.writev(batch);
            batch = [];
            batchBytes = 0;
          }
        }
        if (batch.length) await handle.writev(batch);
        await handle.sync();
      } finally {
        await handle.close();
      }
      if (received !== request.bytes) {
        throw new StudioError(
          'invalid-argument',
          `The upload of ${name} was cut off after ${received} of ${request.bytes} bytes; nothing was kept.`,
        );
      }
      await checkContent(temp, name, request.kind);
      const sha256 = hash.digest('hex');
      return await this.#keep(temp, name, sha256, received);
    } catch (e) {
      if (e instanceof StudioError) throw e;
      if ((e as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new StudioError(
          'disk-full',
          `The disk filled up while receiving ${name}; nothing was kept.`,
        );
      }
      throw new StudioError(
        'cancelled',
        `The upload of ${name} stopped before the end; nothing was kept.`,
      );
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  }

  /** Moves a received file to `checkpoints/<sha256 prefix>/`, or reuses the copy already there. */
  async #keep(temp: string, name: string, sha256: string, bytes: number): Promise<StoredUpload> {
    const slot = path.join(this.dir, sha256.slice(0, 16));
    for (const entry of await readdir(slot).catch(() => [] as string[])) {
      const existing = path.join(slot, entry);
      const st = await stat(existing).catch(() => null);
      if (st?.isFile() && st.size === bytes && isCheckpointFile(entry)) {
        return { path: existing, sha256, bytes, reused: true };
      }
    }
    await mkdir(slot, { recursive: true });
    const file = path.join(slot, name);
    await rename(temp, file);
    await rememberHash(this.dataDir, file, sha256);
    return { path: file, sha256, bytes, reused: false };
  }
}

async function freeBytesOf(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
}

/** VAE-only files in ldm naming (what the converter's --vae reads). */
const isVaeOnly = (names: readonly string[]): boolean =>
  names.some((n) => /^(first_stage_model\.)?encoder\.conv_in\.weight$/.test(n)) &&
  names.some((n) => /^(first_stage_model\.)?decoder\.conv_out\.weight$/.test(n)) &&
  !names.some((n) => n.startsWith('model.diffusion_model.'));

/**
 * Refuses, with the detector's sentence, a file the converter cannot read or one that is not
 * what it was uploaded as (a LoRA sent as a checkpoint, a checkpoint sent as a VAE). Only the
 * tensor listing is read; whether a checkpoint converts is the import's to say.
 */
async function checkContent(file: string, name: string, kind: UploadKind): Promise<void> {
  let names: string[];
  try {
    const { source } = await openCheckpoint(file);
    try {
      names = source.list().map((t) => t.name);
    } finally {
      await source.close();
    }
  } catch (e) {
    if (isEngineError(e)) throw new StudioError('invalid-argument', e.message);
    throw e;
  }
  if (kind === 'vae') {
    if (!isVaeOnly(names)) {
      const what = describeOtherFile(names) ?? 'a whole checkpoint';
      throw new StudioError(
        'invalid-argument',
        `${name} is ${what.replace(/ \(.*\)$/, '')}, not a VAE-only file.`,
      );
    }
    return;
  }
  const other = describeOtherFile(names);
  if (other) {
    throw new StudioError(
      'invalid-argument',
      `${name} is ${other}, not a Stable Diffusion 1.x, 2.x or SDXL checkpoint that can be converted.`,
    );
  }
}
