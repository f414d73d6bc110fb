/**
 * Replacement VAEs chosen per generation (issue 11 item 4): the studio's VAE folder
 * (Settings.vaeDir, else the data folder's vae/) lists the VAE-only files offered; a
 * generation's `vae` (a file name in that folder, or a path) is resolved to its file, converted
 * once into the data folder's cache (ensureVaeConverted) and handed to the engine as `vaeDir`.
 * The infotext records it as A1111 does: `VAE: <file name>` and `VAE hash: <first 10 hex of the
 * file's sha256>` (modules/sd_vae.py get_loaded_vae_name / get_loaded_vae_hash).
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import {
  type Settings,
  type StudioService,
  StudioError,
  type VaeFile,
  type VaeList,
  vaeFileExtensions,
} from '../../shared';
import { isEngineError } from '../../engine/errors';
import { describeEngineError } from '../../engine/describe-error';
import type { ConvertProgress } from '../../engine/convert/convert';
import type { HostContext } from '../services';
import { type CachedVae, ensureVaeConverted, shortHash } from './checkpoint-cache';
import { folderProblem, listFolderFiles, resolveFolderFile } from './folder-files';

/** The VAE folder the settings name: Settings.vaeDir, else `<data folder>/vae`. */
export function vaeFolder(settings: Pick<Settings, 'vaeDir'>, dataDir: string): string {
  return path.resolve(settings.vaeDir ?? path.join(dataDir, 'vae'));
}

const vaeKind = { what: 'VAE', extensions: vaeFileExtensions };

/** Why `dir` cannot be the VAE folder (one sentence), or null; checked when it is set. */
export function vaeFolderProblem(dir: string): string | null {
  return folderProblem(dir, vaeKind);
}

/** The VAE-only files directly in `folder`, by name; none when the folder does not exist. */
export function listVaeFiles(folder: string): Promise<VaeFile[]> {
  return listFolderFiles(folder, vaeKind);
}

/**
 * The file a generation's `vae` names: a path (absolute, or with a folder in it) as it is, a
 * bare name inside `folder`. Throws StudioError 'not-found' with one sentence when it is not a
 * file there.
 */
export function resolveVaeFile(vae: string, folder: string): Promise<string> {
  return resolveFolderFile(vae, folder, vaeKind);
}

/** The infotext fields of a replacement VAE, as A1111 writes them. */
export function vaeInfotextFields(vae: { file: string; sha256: string }): {
  'VAE hash': string;
  VAE: string;
} {
  // In A1111's order (create_infotext): the hash, then the name.
  return { 'VAE hash': shortHash(vae.sha256), VAE: path.basename(vae.file) };
}

/**
 * The VAE an imported image names (our own settings' `vae`, or A1111's `VAE:`), matched to a
 * file of the VAE folder by name (the extension may be left out, as older A1111 wrote it):
 * `vae` is that file's name, or null with a note saying which file is missing.
 */
export async function vaeFromImported(
  named: string | null | undefined,
  folder: string,
): Promise<{ vae: string | null; note: string | null }> {
  const wanted = named?.trim();
  if (!wanted || wanted === 'None' || wanted === 'Automatic') return { vae: null, note: null };
  // Our own settings may hold the path a CLI generation used: that file, when it is still there.
  if (path.isAbsolute(wanted) && (await stat(wanted).catch(() => null))?.isFile())
    return { vae: wanted, note: null };
  const base = path.basename(wanted.replaceAll('\\', '/'));
  const files = await listVaeFiles(folder);
  const stem = (n: string) => n.slice(0, n.length - path.extname(n).length);
  const found =
    files.find((f) => f.name === base) ??
    files.find((f) => stem(f.name) === base) ??
    files.find((f) => f.name.toLowerCase() === base.toLowerCase());
  if (found) return { vae: found.name, note: null };
  return {
    vae: null,
    note: `The image was made with the VAE ${base}, which is not in the VAE folder ${folder}; put it there to use it (the model's own VAE is chosen).`,
  };
}

/** Progress of preparing a VAE: hashing the file, then writing its converted weights. */
export type VaePrepareProgress =
  ConvertProgress | { phase: 'hashing'; bytesDone: number; bytesTotal: number };

/** The contract's VAE listing (the type check holds it to its schema). */
export class VaeService {
  constructor(private readonly context: HostContext) {}

  readonly methods = {
    listVaes: () => this.list(),
  } satisfies Pick<StudioService, 'listVaes'>;

  folder(): string {
    return vaeFolder(this.context.settings.get(), this.context.dataDir);
  }

  async list(): Promise<VaeList> {
    const folder = this.folder();
    return { folder, files: await listVaeFiles(folder) };
  }

  /**
   * A generation's VAE, converted (once, cached by sha256) for the engine: its folder and the
   * infotext fields. `onProgress` gets the hashing and conversion progress.
   */
  async prepare(
    vae: string,
    options: {
      signal?: AbortSignal;
      onProgress?: (p: VaePrepareProgress) => void;
    } = {},
  ): Promise<{ dir: string; fields: { 'VAE hash': string; VAE: string } }> {
    const file = await resolveVaeFile(vae, this.folder());
    let converted: CachedVae;
    try {
      converted = await ensureVaeConverted(file, {
        dataDir: this.context.dataDir,
        // Off the host's thread: widening and writing the weights takes seconds for a real VAE.
        workerPath: this.context.workerPath,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      });
    } catch (e) {
      if (isEngineError(e, 'cancelled')) throw e;
      const code = isEngineError(e, 'model-unsupported') ? 'invalid-argument' : 'model';
      throw new StudioError(code, describeEngineError(e).message);
    }
    return { dir: converted.dir, fields: vaeInfotextFields({ file, sha256: converted.sha256 }) };
  }
}
