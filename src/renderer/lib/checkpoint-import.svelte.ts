import {
  type CheckpointImportProgress,
  type CheckpointImportRequest,
  type ModelEntry,
  checkpointFileExtensions,
  isCheckpointFileName,
} from '../../shared';
import { type RunningUpload, uploadCheckpoint } from './checkpoint-upload';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

/** A browser upload's progress, for the dialog's bar and line. */
export interface UploadProgress {
  name: string;
  sent: number;
  total: number;
  mbPerSecond: number;
  etaSeconds: number | null;
}

/** A file or folder dropped on the window. */
export interface DroppedItem {
  file: File;
  /** Known in a browser from the drop's entry; the desktop app opens what it is given. */
  isDirectory: boolean;
}

/**
 * Models -> Import checkpoint: one single-file checkpoint at a time, converted by the host
 * (cached by its sha256) and added to the models table. The file is a path on the host (typed,
 * chosen in the desktop app's file picker, or dropped on its window) or, in a browser, a file
 * the person chose or dropped, which is first uploaded to the headless server. Progress comes
 * from the upload and then from the host's `checkpointImport` events; cancel stops either, and
 * the host keeps nothing of it.
 */
export class CheckpointImport {
  /** The form's fields, kept here so that a drop anywhere on the window can fill them. */
  path = $state('');
  vae = $state('');
  /** Files chosen or dropped in a browser; uploaded when the import starts (instead of the paths). */
  file = $state.raw<File | null>(null);
  vaeFile = $state.raw<File | null>(null);
  /** What is being imported (a name while uploading, then the host's path); null when idle. */
  running = $state<string | null>(null);
  upload = $state.raw<UploadProgress | null>(null);
  progress = $state.raw<CheckpointImportProgress | null>(null);
  /** The last failure's sentence. */
  problem = $state<string | null>(null);
  #upload: RunningUpload | null = null;
  #cancelled = false;

  constructor(private readonly studio: Studio) {}

  /** Whether files can be sent to the host (the browser studio; the desktop app names paths). */
  get canUpload(): boolean {
    return this.studio.transport === 'websocket';
  }

  /** From the host's `checkpointImport` event. */
  onProgress(p: CheckpointImportProgress): void {
    if (p.path === this.running) this.progress = p;
  }

  /** The path typed (or picked) in the checkpoint or VAE field. */
  typed(target: 'checkpoint' | 'vae'): string {
    return target === 'vae' ? this.vae : this.path;
  }

  /** Fills the checkpoint (or VAE) field with a path on the host or a file to upload. */
  choose(target: 'checkpoint' | 'vae', chosen: string | File): void {
    this.problem = null;
    if (target === 'vae') {
      this.vae = typeof chosen === 'string' ? chosen : '';
      this.vaeFile = typeof chosen === 'string' ? null : chosen;
    } else {
      this.path = typeof chosen === 'string' ? chosen : '';
      this.file = typeof chosen === 'string' ? null : chosen;
    }
  }

  /**
   * A drop on the window: a checkpoint fills the import form (the desktop app by its path, a
   * browser with the file to upload); in the desktop app anything else is offered to Add model
   * (a diffusers ONNX folder, or a sentence saying what it is not).
   */
  async takeDrop(items: DroppedItem[]): Promise<void> {
    const item = items.find((i) => isCheckpointFileName(i.file.name)) ?? items[0];
    if (!item) return;
    this.studio.view = 'models';
    this.problem = null;
    const desktop = window.studioDesktop ?? null;
    if (desktop) {
      const dropped = desktop.pathForFile(item.file);
      if (!dropped) {
        this.problem = `The studio could not tell where ${item.file.name} is; choose it with Choose file… instead.`;
      } else if (isCheckpointFileName(item.file.name)) {
        if (!this.running) this.choose('checkpoint', dropped);
      } else {
        await this.studio.models.add(dropped);
      }
      return;
    }
    if (item.isDirectory) {
      this.problem = `A browser cannot send a model folder (${item.file.name}): type its path on the server under Add a model folder.`;
    } else if (!isCheckpointFileName(item.file.name)) {
      this.problem = `${item.file.name} is not a checkpoint file (${checkpointFileExtensions.join(', ')}).`;
    } else if (this.running) {
      this.problem = 'An import is already running; drop the next file when it has finished.';
    } else {
      this.choose('checkpoint', item.file);
    }
  }

  /** Uploads what was chosen as files (browser), then imports; the entry, or null on failure. */
  async start(
    options: Pick<CheckpointImportRequest, 'precision' | 'prediction' | 'controlnet'> = {},
  ): Promise<ModelEntry | null> {
    const api = this.studio.api;
    const path = this.path.trim();
    const name = this.file?.name ?? path;
    if (!api || !name || this.running) return null;
    this.running = name;
    this.progress = null;
    this.upload = null;
    this.problem = null;
    this.#cancelled = false;
    try {
      let vae = this.vae.trim() || undefined;
      if (this.vaeFile) vae = await this.#send(this.vaeFile, 'vae');
      const file = this.file ? await this.#send(this.file, 'checkpoint') : path;
      this.upload = null;
      if (this.#cancelled) throw new Error(`The import of ${name} was cancelled.`);
      this.running = file;
      const entry = await api.importCheckpoint({ ...options, path: file, ...(vae ? { vae } : {}) });
      this.studio.notices.push('info', `Imported ${entry.name}.`);
      this.path = '';
      this.file = null;
      return entry;
    } catch (err) {
      this.problem = describeError(err);
      return null;
    } finally {
      this.running = null;
      this.upload = null;
      this.#upload = null;
    }
  }

  async #send(file: File, kind: 'checkpoint' | 'vae'): Promise<string> {
    const started = performance.now();
    this.upload = { name: file.name, sent: 0, total: file.size, mbPerSecond: 0, etaSeconds: null };
    this.#upload = uploadCheckpoint(file, kind, (sent, total) => {
      const seconds = (performance.now() - started) / 1000;
      const rate = seconds > 0 ? sent / seconds : 0;
      this.upload = {
        name: file.name,
        sent,
        total,
        mbPerSecond: rate / 1e6,
        etaSeconds: rate > 0 ? (total - sent) / rate : null,
      };
    });
    return (await this.#upload.done).path;
  }

  async cancel(): Promise<void> {
    const api = this.studio.api;
    if (!api || !this.running) return;
    this.#cancelled = true;
    if (this.#upload) {
      this.#upload.abort();
      return;
    }
    try {
      await api.cancelCheckpointImport({ path: this.running });
    } catch (err) {
      this.studio.notices.error(err, 'Could not cancel the import');
    }
  }
}

/** "Uploading sd15.safetensors: 45%, 120 MB/s, 9 s left" for the progress line. */
export function describeUploadProgress(u: UploadProgress): string {
  const percent = Math.floor((100 * u.sent) / Math.max(1, u.total));
  const eta = u.etaSeconds === null ? '' : `, ${Math.ceil(u.etaSeconds)} s left`;
  return `Uploading ${u.name}: ${percent}%, ${u.mbPerSecond.toFixed(0)} MB/s${eta}`;
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
