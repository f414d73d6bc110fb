/**
 * One file onto disk, verified: bytes go to a partial file beside nothing that loads; a drop or
 * a restart resumes it with an HTTP Range request (RFC 9110 §14.2) pinned by If-Range to the
 * strong ETag the partial started from (§13.1.5), so a changed file restarts instead of being
 * spliced; a server that ignores Range (200 instead of 206) restarts the file cleanly; a stalled
 * body is dropped and resumed. The finished bytes are checked against the size and hash the
 * source published (LFS sha256, or the git blob id) before the partial is renamed into place.
 */
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { DownloadError, isDownloadError } from './errors';
import { type HttpClient, cancelled, networkError, sleep } from './http';

/** A file to fetch and what it must turn out to be. */
export interface FileTarget {
  url: string;
  /** Where the verified file ends up. */
  dest: string;
  /** Where its bytes go while they come (kept across drops and restarts). */
  partial: string;
  /** Published size in bytes, or null when the source does not say (a plain URL). */
  size: number | null;
  /** Published SHA-256 (hex), or null. */
  sha256: string | null;
  /** Published git blob id (hex sha1 of "blob SIZE\0" + content), or null. */
  gitOid: string | null;
  /** The strong ETag of the response the partial file started from, or null. */
  validator: string | null;
  /** How a sentence names the file ("unet/model.onnx"). */
  what: string;
}

export interface FetchFileOptions {
  http: HttpClient;
  signal?: AbortSignal;
  /** Bytes added to (or, when the file restarts, taken from) the partial file. */
  onBytes?: (delta: number) => void;
  /** The validator to keep for resuming (saved by the queue so a restart can use it). */
  onValidator?: (validator: string | null) => void;
  /** A body that sends nothing for this long is dropped and resumed (default 60 s). */
  stallMs?: number;
  /** Failed tries that added no bytes before giving up (default 5). */
  retries?: number;
  /** First wait after a failed try, doubled per try (default 1 s). */
  backoffMs?: number;
}

export interface FetchedFile {
  size: number;
  /** SHA-256 (hex) of the verified file. */
  sha256: string;
}

/** A try that ended early; the partial file keeps what came. */
class Dropped extends Error {}

/** Fetches `target` (resuming its partial file), verifies it, and renames it into place. */
export async function fetchFile(
  target: FileTarget,
  options: FetchFileOptions,
): Promise<FetchedFile> {
  const retries = options.retries ?? 5;
  const backoffMs = options.backoffMs ?? 1000;
  await fsp.mkdir(path.dirname(target.partial), { recursive: true });
  let validator = target.validator;
  let failures = 0;
  let wrongBytes = 0;
  for (;;) {
    if (options.signal?.aborted) throw cancelled(target.what);
    let have = await sizeOf(target.partial);
    if (target.size !== null && have > target.size) {
      await fsp.truncate(target.partial, 0);
      options.onBytes?.(-have);
      have = 0;
    }
    let complete = target.size !== null && have === target.size;
    let lastError: unknown = null;
    if (!complete) {
      try {
        const result = await fetchOnce(target, have, validator, options);
        validator = result.validator;
        complete = result.complete;
      } catch (err) {
        if (isDownloadError(err)) throw err;
        if (options.signal?.aborted) throw cancelled(target.what);
        lastError = err;
      }
    }
    if (complete) {
      const verdict = await verify(target);
      if (verdict.ok) {
        await fsp.mkdir(path.dirname(target.dest), { recursive: true });
        await fsp.rename(target.partial, target.dest);
        return { size: verdict.size, sha256: verdict.sha256 };
      }
      // Wrong bytes: nothing of them is kept; one more clean try, since a proxy or CDN can
      // hand out a damaged copy once.
      const size = await sizeOf(target.partial);
      await fsp.rm(target.partial, { force: true });
      options.onBytes?.(-size);
      validator = null;
      options.onValidator?.(null);
      if (++wrongBytes >= 2)
        throw new DownloadError(
          'verification',
          `${target.what} came down damaged twice (${verdict.why}); nothing of it was kept, try again later.`,
        );
      continue;
    }
    const gained = (await sizeOf(target.partial)) > have;
    if (gained) failures = 0;
    else if (++failures > retries)
      throw lastError
        ? networkError(target.url, lastError)
        : new DownloadError(
            'network',
            `The connection kept dropping while downloading ${target.what}; try again later.`,
          );
    if (!gained) await sleep(backoffMs * 2 ** (failures - 1), options.signal, target.what);
  }
}

/** One request: resumes from `have` when that is safe. Throws Dropped (or a network error). */
async function fetchOnce(
  target: FileTarget,
  have: number,
  validator: string | null,
  options: FetchFileOptions,
): Promise<{ complete: boolean; validator: string | null }> {
  // Splicing two versions is only safe when something will notice: a strong validator the
  // server checks (If-Range), or a published hash checked at the end.
  const resumable =
    have > 0 && (validator !== null || target.sha256 !== null || target.gitOid !== null);
  const headers: Record<string, string> = { 'accept-encoding': 'identity' };
  if (resumable) {
    headers.range = `bytes=${have}-`;
    if (validator) headers['if-range'] = validator;
  }
  const attempt = new AbortController();
  const onAbort = (): void => attempt.abort();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const stallMs = options.stallMs ?? 60_000;
  let stallTimer: NodeJS.Timeout | null = null;
  // The validator of what the partial file holds now (a restarted file gets the new one).
  let current = validator;
  const armStall = (): void => {
    if (stallTimer) clearTimeout(stallTimer);
    stallTimer = setTimeout(() => attempt.abort(new Dropped('stalled')), stallMs);
  };
  try {
    armStall();
    const response = await options.http.request(target.url, {
      what: target.what,
      headers,
      signal: attempt.signal,
    });
    let offset = 0;
    if (response.status === 206) {
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(
        response.headers.get('content-range') ?? '',
      );
      offset = range ? Number(range[1]) : -1;
      if (offset !== have) {
        // A range we did not ask for: start over rather than guess where the bytes belong.
        await response.body?.cancel().catch(() => {});
        await fsp.truncate(target.partial, 0).catch(() => {});
        options.onBytes?.(-have);
        throw new Dropped('unexpected range');
      }
    } else if (have > 0) {
      // 200: the server ignored Range, or the file changed (If-Range failed): start over.
      options.onBytes?.(-have);
    }
    const etag = response.headers.get('etag');
    const next = etag && !etag.startsWith('W/') ? etag : null;
    if (offset === 0) {
      current = next;
      options.onValidator?.(next);
    }
    const handle = await fsp.open(target.partial, offset === 0 ? 'w' : 'a');
    let written = offset;
    try {
      if (!response.body) throw new Dropped('no body');
      for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
        armStall();
        await writeAll(handle, chunk, target.what);
        written += chunk.length;
        options.onBytes?.(chunk.length);
        if (target.size !== null && written > target.size) break;
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    const complete = target.size === null ? true : written >= target.size;
    return { complete, validator: current };
  } catch (err) {
    if (options.signal?.aborted) throw cancelled(target.what);
    // 'cancelled' here is the stall timer's abort of this one try, not the person's.
    if (isDownloadError(err) && err.failure !== 'cancelled') throw err;
    // A cut connection, a stall, a short body: the caller resumes from what was written.
    return { complete: false, validator: current };
  } finally {
    if (stallTimer) clearTimeout(stallTimer);
    options.signal?.removeEventListener('abort', onAbort);
  }
}

async function writeAll(handle: fsp.FileHandle, chunk: Uint8Array, what: string): Promise<void> {
  try {
    let done = 0;
    while (done < chunk.length) {
      const { bytesWritten } = await handle.write(chunk, done, chunk.length - done);
      done += bytesWritten;
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT')
      throw new DownloadError(
        'disk-full',
        `The disk filled up while downloading ${what}; free some space and resume it.`,
      );
    throw err;
  }
}

type Verdict = { ok: true; size: number; sha256: string } | { ok: false; why: string };

/** Hashes the partial file and checks it against what was published. */
async function verify(target: FileTarget): Promise<Verdict> {
  const size = await sizeOf(target.partial);
  if (target.size !== null && size !== target.size)
    return { ok: false, why: `${size} bytes instead of ${target.size}` };
  const sha256 = createHash('sha256');
  const hashes: Hash[] = [sha256];
  let gitSha1: Hash | null = null;
  if (target.gitOid) {
    // git's blob id: sha1 over a "blob <size>\0" header and the content.
    gitSha1 = createHash('sha1').update(`blob ${size}\0`);
    hashes.push(gitSha1);
  }
  for await (const chunk of createReadStream(target.partial) as AsyncIterable<Buffer>)
    for (const h of hashes) h.update(chunk);
  const digest = sha256.digest('hex');
  if (target.sha256 && digest !== target.sha256.toLowerCase())
    return { ok: false, why: 'its SHA-256 is not the one published' };
  if (gitSha1 && gitSha1.digest('hex') !== target.gitOid!.toLowerCase())
    return { ok: false, why: 'its git hash is not the one published' };
  return { ok: true, size, sha256: digest };
}

async function sizeOf(file: string): Promise<number> {
  const st = await fsp.stat(file).catch(() => null);
  return st?.size ?? 0;
}
