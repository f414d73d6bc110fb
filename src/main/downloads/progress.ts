/** Progress of one download: bytes summed over its files, a rate over the last seconds, an ETA. */
import fsp from 'node:fs/promises';
import type { DownloadProgress } from '../../shared';
import type { DownloadFileRow, DownloadRow } from './store';

/** Sums bytes across a download's files and turns them into a rate and an ETA. */
export class ProgressMeter {
  #bytes = 0;
  #filesDone: number;
  #lastEmit = 0;
  /** (time, bytes) samples of the last few seconds, for the rate. */
  #samples: Array<[number, number]> = [];

  constructor(
    readonly row: DownloadRow,
    readonly files: DownloadFileRow[],
    readonly intervalMs: number,
    readonly sink: (p: DownloadProgress) => void,
  ) {
    this.#filesDone = files.filter((f) => f.done).length;
    for (const f of files) if (f.done) this.#bytes += f.size ?? 0;
  }

  async countPartials(partialOf: (f: DownloadFileRow) => string): Promise<void> {
    for (const f of this.files) {
      if (f.done) continue;
      const st = await fsp.stat(partialOf(f)).catch(() => null);
      this.#bytes += st?.size ?? 0;
    }
  }

  add(n: number): void {
    this.#bytes += n;
    this.emit(false);
  }

  fileDone(): void {
    this.#filesDone++;
    this.emit(false);
  }

  emit(force: boolean, row: DownloadRow | undefined = undefined): void {
    const now = Date.now();
    this.#samples.push([now, this.#bytes]);
    while (this.#samples.length > 2 && now - this.#samples[0][0] > 5000) this.#samples.shift();
    if (!force && now - this.#lastEmit < this.intervalMs) return;
    this.#lastEmit = now;
    const [t0, b0] = this.#samples[0];
    const rate = now > t0 ? Math.max(0, ((this.#bytes - b0) * 1000) / (now - t0)) : 0;
    const total = this.row.bytes_total;
    const state = row?.state ?? 'running';
    this.sink({
      id: this.row.id,
      name: this.row.name,
      state,
      bytesDone: state === 'done' && total !== null ? total : this.#bytes,
      bytesTotal: total,
      filesDone: state === 'done' ? this.files.length : this.#filesDone,
      filesTotal: this.files.length,
      bytesPerSecond: Math.round(rate),
      etaSeconds:
        total !== null && rate > 0 && state === 'running'
          ? Math.ceil((total - this.#bytes) / rate)
          : null,
      error: row?.error_message ?? null,
    });
  }
}

export function formatBytes(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
  return `${n} bytes`;
}
