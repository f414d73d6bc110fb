/**
 * The desktop app's native file picker for checkpoints (DesktopBridge.pickCheckpointFile), as
 * data so it is tested without Electron: the dialog's options for each kind of file, and what
 * main accepts from the dialog's answer. The page names only the kind; the one path that goes
 * back is the one the person chose in the OS dialog, so the renderer cannot use this call to
 * have main vouch for a path of its own.
 */
import path from 'node:path';
import { CHECKPOINT_EXTENSIONS, isCheckpointFile } from '../models/checkpoint-cache';

/** What the picker is asked for: a model checkpoint, or a VAE-only file for the VAE field. */
export type PickKind = 'checkpoint' | 'vae';

/** The kind named by the page, or null for anything else (then no dialog opens). */
export function pickKind(input: unknown): PickKind | null {
  return input === 'checkpoint' || input === 'vae' ? input : null;
}

/** The subset of Electron's OpenDialogOptions used here (kept free of the electron import). */
export interface CheckpointDialogOptions {
  title: string;
  buttonLabel: string;
  properties: Array<'openFile'>;
  filters: Array<{ name: string; extensions: string[] }>;
}

export function checkpointDialogOptions(kind: PickKind): CheckpointDialogOptions {
  const extensions = CHECKPOINT_EXTENSIONS.map((e) => e.slice(1));
  return kind === 'vae'
    ? {
        title: 'Choose a replacement VAE',
        buttonLabel: 'Use this VAE',
        properties: ['openFile'],
        filters: [{ name: 'VAE files', extensions }],
      }
    : {
        title: 'Import a checkpoint',
        buttonLabel: 'Import',
        properties: ['openFile'],
        filters: [{ name: 'Checkpoints', extensions }],
      };
}

/**
 * The path to hand back from the dialog's answer: one absolute path with a checkpoint's
 * extension (some platforms let a person step around the filter), else null.
 */
export function acceptPickedFile(result: {
  canceled: boolean;
  filePaths: string[];
}): string | null {
  if (result.canceled || result.filePaths.length !== 1) return null;
  const [file] = result.filePaths;
  if (!file || !path.isAbsolute(file) || !isCheckpointFile(file)) return null;
  return file;
}
