/**
 * The download queue: downloads are rows in the library's database (store.ts) and run one at a
 * time in the order they were added, each with several files at once under one progress
 * (bytes, rate, ETA). Files land in the data folder's downloads/<id>/ (partial/ while they come,
 * files/ once verified); the whole model folder is moved into models/ and added to the library
 * only when every file is verified, so a partial or wrong file never loads. Pause keeps the
 * partial files, cancel removes them, a restart picks up where the rows and files say.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { DownloadProgress } from '../../shared';
import { DownloadError, isDownloadError } from './errors';
import { freeBytes, freeFileName, freeName, moveFile } from './disk';
import { fetchFile } from './fetch-file';
import type { HubClient } from './hub';
import { type DownloadPlan, planDownload } from './plan';
import { ProgressMeter, formatBytes } from './progress';
import { safeJoin } from './safe-path';
import { type DownloadFileRow, type DownloadRow, DownloadStore } from './store';
import type { JobDatabase } from '../jobs/types';
import { newId } from '../library/ids';

export type { DownloadProgress };
export { formatBytes, freeBytes };

/** What the queue needs from its host. */
export interface DownloadHost {
  dataDir: string;
  /** A Hub client with the current endpoint and token (read at each start: Settings may change). */
  hub(): HubClient;
  /** Adds a finished model folder to the library; returns its id. */
  addModel(folder: string): Promise<string>;
  /**
   * Points model `modelId` at the verified folder of its update (the old folder goes to the
   * trash); returns the model's id. Absent: the update is added as a model of its own.
   */
  replaceModel?(modelId: string, folder: string): Promise<string>;
  /**
   * Hands on a finished, verified single file: a checkpoint to the checkpoint import, a LoRA,
   * VAE, embedding or ControlNet to its folder. Returns the model it became (or null) and where the file is
   * now; throws a DownloadError with a sentence for a file the studio cannot use.
   */
  importFile(file: string): Promise<{ modelId: string | null; path: string }>;
  /**
   * Where a finished single file goes instead of files/ and the import (a catalogue file such as
   * the content filter's checker), or null for the usual way.
   */
  placeFile?(row: DownloadRow): string | null;
  onProgress?(progress: DownloadProgress): void;
  log(line: string): void;
}

export interface DownloadManagerOptions {
  /** Files fetched at once within a download (default 4). */
  parallelFiles?: number;
  /** Free space to leave on the disk beyond the download (default 256 MiB). */
  reserveBytes?: number;
  /** Fine-tuning for tests: stall, retries and backoff of each file. */
  stallMs?: number;
  retries?: number;
  backoffMs?: number;
  /** Progress events at most this often (default 250 ms). */
  progressIntervalMs?: number;
  /** Free bytes on the data folder's disk (tests set it to simulate a full one). */
  freeBytes?: (dir: string) => Promise<number>;
  /** Finished downloads kept in the history: the newest `keep`, none older than `days` (50, 30). */
  history?: { keep: number; days: number };
}

/** Why a running download's controller was aborted. */
type StopReason = 'pause' | 'cancel' | 'close';

export class DownloadManager {
  readonly store: DownloadStore;
  readonly #options: Required<Omit<DownloadManagerOptions, 'freeBytes'>> &
    Pick<DownloadManagerOptions, 'freeBytes'>;
  #running: {
    id: string;
    controller: AbortController;
    reason: StopReason | null;
    done: Promise<void>;
  } | null = null;
  #closed = false;
  readonly #waiters = new Map<string, Array<(row: DownloadRow) => void>>();

  constructor(
    database: JobDatabase,
    readonly host: DownloadHost,
    options: DownloadManagerOptions = {},
  ) {
    this.store = new DownloadStore(database);
    this.#options = {
      parallelFiles: 4,
      reserveBytes: 256 * 1024 * 1024,
      stallMs: 60_000,
      retries: 5,
      backoffMs: 1000,
      progressIntervalMs: 250,
      history: { keep: 50, days: 30 },
      ...options,
    };
  }

  /** Drops old finished downloads from the history (at start and after each one ends). */
  prune(now = Date.now()): void {
    const { keep, days } = this.#options.history;
    this.store.prune({ keep, olderThan: now - days * 24 * 3600_000 });
  }

  /** Puts downloads a crash or quit left running back in the queue, and starts the queue. */
  start(): void {
    const requeued = this.store.requeueRunning();
    if (requeued.length) this.host.log(`resuming ${requeued.length} download(s) left running`);
    this.prune();
    this.#kick();
  }

  /**
   * Resolves `reference` (a repo id, a Hub page, a file URL) to a download pinned to its commit,
   * checks the disk has room, and queues it. The same repo at the same commit that is still
   * unfinished is resumed instead of started again.
   */
  async add(
    reference: string,
    options: { revision?: string | null; signal?: AbortSignal; replaces?: string | null } = {},
  ): Promise<DownloadRow> {
    const plan = await planDownload(this.host.hub(), reference, options);
    const existing = this.store.unfinished(plan.source, plan.sha);
    if (existing) {
      if (existing.state === 'paused' || existing.state === 'failed') this.resume(existing.id);
      return this.store.get(existing.id)!;
    }
    await this.#checkSpace(plan);
    const row: DownloadRow = {
      id: newId(),
      kind: plan.kind,
      source: plan.source,
      revision: plan.revision,
      sha: plan.sha,
      name: plan.name,
      license: plan.license,
      state: 'queued',
      bytes_total: plan.bytesTotal,
      created_at: Date.now(),
      finished_at: null,
      error_code: null,
      error_message: null,
      result_path: null,
      model_id: null,
      replaces: options.replaces ?? null,
    };
    this.store.insert(
      row,
      plan.files.map((f) => ({
        path: f.path,
        url: f.url,
        size: f.size,
        sha256: f.sha256,
        git_oid: f.gitOid,
      })),
    );
    this.host.log(
      `queued ${plan.source}${plan.sha ? `@${plan.sha}` : ''} (${plan.files.length} files)`,
    );
    this.#kick();
    return this.store.get(row.id)!;
  }

  list(): DownloadRow[] {
    return this.store.list();
  }

  /** Stops a queued or running download, keeping its partial files for resume. */
  pause(id: string): void {
    const row = this.#get(id);
    if (row.state !== 'queued' && row.state !== 'running') return;
    this.store.setState(id, 'paused');
    this.#stop(id, 'pause');
    this.#emit(id);
  }

  /** Queues a paused or failed download again; it resumes from its partial files. */
  resume(id: string): void {
    const row = this.#get(id);
    if (row.state !== 'paused' && row.state !== 'failed') return;
    this.store.setState(id, 'queued');
    this.#emit(id);
    this.#kick();
  }

  /** Stops a download and removes what it had fetched. */
  async cancel(id: string): Promise<void> {
    const row = this.#get(id);
    if (row.state === 'done' || row.state === 'cancelled') return;
    this.store.setState(id, 'cancelled', { finished: true });
    const running = this.#running?.id === id ? this.#running : null;
    this.#stop(id, 'cancel');
    await running?.done;
    await fsp.rm(this.#workDir(id), { recursive: true, force: true });
    this.#emit(id);
    this.#settle(id);
  }

  /** Resolves when the download has finished, failed, paused or been cancelled. */
  wait(id: string): Promise<DownloadRow> {
    const row = this.#get(id);
    if (!['queued', 'running'].includes(row.state)) return Promise.resolve(row);
    return new Promise((resolve) => {
      const list = this.#waiters.get(id) ?? [];
      list.push(resolve);
      this.#waiters.set(id, list);
    });
  }

  /** Stops the running download (it stays queued for the next start) and waits for it. */
  async close(): Promise<void> {
    this.#closed = true;
    const running = this.#running;
    if (running) {
      running.reason = 'close';
      running.controller.abort();
      await running.done;
    }
  }

  #get(id: string): DownloadRow {
    const row = this.store.get(id);
    if (!row) throw new DownloadError('not-found', 'That download is not in the list.');
    return row;
  }

  #stop(id: string, reason: StopReason): void {
    if (this.#running?.id !== id) return;
    this.#running.reason = reason;
    this.#running.controller.abort();
  }

  #workDir(id: string): string {
    return path.join(this.host.dataDir, 'downloads', id);
  }

  #settle(id: string): void {
    const row = this.store.get(id);
    if (!row || row.state === 'queued' || row.state === 'running') return;
    for (const resolve of this.#waiters.get(id) ?? []) resolve(row);
    this.#waiters.delete(id);
  }

  async #checkSpace(plan: DownloadPlan): Promise<void> {
    if (plan.bytesTotal === null) return;
    const free = await (this.#options.freeBytes ?? freeBytes)(this.host.dataDir);
    const needed = plan.bytesTotal + this.#options.reserveBytes;
    if (free < needed)
      throw new DownloadError(
        'disk-full',
        `${plan.source} needs ${formatBytes(plan.bytesTotal)} and the disk has ${formatBytes(Math.max(0, free - this.#options.reserveBytes))} free; free some space first.`,
      );
  }

  #kick(): void {
    if (this.#running || this.#closed) return;
    const row = this.store.next();
    if (!row) return;
    const controller = new AbortController();
    const running = {
      id: row.id,
      controller,
      reason: null as StopReason | null,
      done: Promise.resolve(),
    };
    this.#running = running;
    running.done = this.#run(row, controller.signal)
      .catch((err: unknown) => this.host.log(`download ${row.id}: ${(err as Error).message}`))
      .finally(() => {
        this.#running = null;
        this.#settle(row.id);
        try {
          this.prune();
        } catch (err) {
          this.host.log(`downloads: pruning the history failed: ${(err as Error).message}`);
        }
        this.#kick();
      });
  }

  async #run(row: DownloadRow, signal: AbortSignal): Promise<void> {
    this.store.setState(row.id, 'running');
    const work = this.#workDir(row.id);
    const files = this.store.files(row.id);
    const progress = new ProgressMeter(row, files, this.#options.progressIntervalMs, (p) =>
      this.host.onProgress?.(p),
    );
    await progress.countPartials((f) => this.#partialOf(work, f));
    progress.emit(true);
    const hub = this.host.hub();
    try {
      const pending = files.filter((f) => f.done === 0);
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < pending.length && !signal.aborted) {
          const file = pending[next++];
          await fetchFile(
            {
              url: file.url,
              dest: safeJoin(path.join(work, 'files'), file.path),
              partial: this.#partialOf(work, file),
              size: file.size,
              sha256: file.sha256,
              gitOid: file.git_oid,
              validator: file.validator,
              what: row.kind === 'repo' ? `${file.path} of ${row.source}` : file.path,
            },
            {
              http: hub.http,
              signal,
              stallMs: this.#options.stallMs,
              retries: this.#options.retries,
              backoffMs: this.#options.backoffMs,
              onBytes: (n) => progress.add(n),
              onValidator: (v) => this.store.setValidator(row.id, file.path, v),
            },
          );
          this.store.fileDone(row.id, file.path);
          progress.fileDone();
        }
      };
      const workers = Array.from(
        { length: Math.min(this.#options.parallelFiles, pending.length) },
        worker,
      );
      const results = await Promise.allSettled(workers);
      const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
      if (signal.aborted) throw new DownloadError('cancelled', 'stopped');
      const { resultPath, modelId } = await this.#install(row, work);
      this.store.finish(row.id, resultPath, modelId);
      await fsp.rm(work, { recursive: true, force: true });
      this.host.log(`downloaded ${row.source} into ${resultPath}`);
    } catch (err) {
      const reason = this.#running?.reason ?? null;
      if (reason === 'close') this.store.setState(row.id, 'queued');
      else if (reason === null) {
        const message = isDownloadError(err)
          ? err.message
          : `The download of ${row.name} failed: ${(err as Error).message}`;
        const code = isDownloadError(err) ? err.failure : 'internal';
        this.store.setState(row.id, 'failed', { error: { code, message }, finished: true });
        this.host.log(`download of ${row.source} failed: ${message}`);
      }
      // 'pause' and 'cancel' set their own state.
    } finally {
      progress.emit(true, this.store.get(row.id));
    }
  }

  #partialOf(work: string, file: DownloadFileRow): string {
    return `${safeJoin(path.join(work, 'partial'), file.path)}.part`;
  }

  /** Moves the verified files into place and adds them to the library. */
  async #install(
    row: DownloadRow,
    work: string,
  ): Promise<{ resultPath: string; modelId: string | null }> {
    const files = path.join(work, 'files');
    const placed = row.kind === 'url' ? (this.host.placeFile?.(row) ?? null) : null;
    if (placed) {
      await fsp.mkdir(path.dirname(placed), { recursive: true });
      await fsp.rename(safeJoin(files, row.name), placed);
      return { resultPath: placed, modelId: null };
    }
    if (row.kind === 'url') {
      const verified = safeJoin(files, row.name);
      if (!fs.existsSync(verified)) throw handedOn(row);
      const target = freeFileName(path.join(this.host.dataDir, 'files'), row.name);
      await moveFile(verified, target);
      const handed = await this.host.importFile(target);
      return { resultPath: handed.path, modelId: handed.modelId };
    }
    // A retry after the library refused the folder (an update that did not load): it is gone.
    if (!fs.existsSync(files)) throw handedOn(row);
    const target = await freeName(path.join(this.host.dataDir, 'models'), row.name);
    await fsp.mkdir(path.dirname(target), { recursive: true });
    await fsp.rename(files, target);
    await fsp.writeFile(
      path.join(target, '.download.json'),
      JSON.stringify(
        { source: row.source, revision: row.revision, sha: row.sha, license: row.license },
        null,
        2,
      ),
    );
    const modelId =
      row.replaces && this.host.replaceModel
        ? await this.host.replaceModel(row.replaces, target)
        : await this.host.addModel(target);
    return { resultPath: target, modelId };
  }

  #emit(id: string): void {
    const row = this.store.get(id);
    if (!row) return;
    const files = this.store.files(id);
    new ProgressMeter(row, files, 0, (p) => this.host.onProgress?.(p)).emit(true, row);
  }
}

/** A retry of a download whose verified files an earlier try already moved on. */
function handedOn(row: DownloadRow): DownloadError {
  return new DownloadError(
    'bad-input',
    `${row.name} was already handed on by an earlier try; download it again to fetch it anew.`,
  );
}
