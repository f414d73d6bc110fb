import type { CheckpointImportProgress, CheckpointImportRequest, ModelEntry } from '../../shared';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

/**
 * Models -> Import checkpoint: one single-file checkpoint at a time, converted by the host
 * (cached by its sha256) and added to the models table. Progress comes from the host's
 * `checkpointImport` events; cancel asks the host to stop, which leaves nothing behind.
 */
export class CheckpointImport {
  /** The file being imported, as typed; null when idle. */
  running = $state<string | null>(null);
  progress = $state.raw<CheckpointImportProgress | null>(null);
  /** The last failure's sentence. */
  problem = $state<string | null>(null);

  constructor(private readonly studio: Studio) {}

  /** From the host's `checkpointImport` event. */
  onProgress(p: CheckpointImportProgress): void {
    if (p.path === this.running) this.progress = p;
  }

  async start(request: CheckpointImportRequest): Promise<ModelEntry | null> {
    const api = this.studio.api;
    const file = request.path.trim();
    if (!api || !file || this.running) return null;
    this.running = file;
    this.progress = null;
    this.problem = null;
    try {
      const entry = await api.importCheckpoint({ ...request, path: file });
      this.studio.notices.push('info', `Imported ${entry.name}.`);
      return entry;
    } catch (err) {
      this.problem = describeError(err);
      return null;
    } finally {
      this.running = null;
    }
  }

  async cancel(): Promise<void> {
    const api = this.studio.api;
    if (!api || !this.running) return;
    try {
      await api.cancelCheckpointImport({ path: this.running });
    } catch (err) {
      this.studio.notices.error(err, 'Could not cancel the import');
    }
  }
}

/** "unet: 412/1131 tensors, 85 MB/s, 14 s left" for the progress line. */
export function describeImportProgress(p: CheckpointImportProgress | null): string {
  if (!p) return 'Starting…';
  if (p.phase === 'hashing') {
    return `Checking the file… ${Math.round((100 * p.bytesDone) / Math.max(1, p.bytesTotal))}%`;
  }
  if (p.phase === 'done') return 'Adding to the models…';
  const eta = p.etaSeconds === null ? '' : `, ${Math.ceil(p.etaSeconds)} s left`;
  return `${p.phase.replace('_', ' ')}: ${p.tensorsDone}/${p.tensorsTotal} tensors, ${p.mbPerSecond.toFixed(0)} MB/s${eta}`;
}
