/**
 * Removing a model from the studio, with undo. Its row goes at once; its folder goes to the trash
 * only when a download put it in the data folder's models/ (a folder a person added stays where
 * it is). The folder is first moved (one rename) to the app's trash folder, trash/models-<token>/,
 * so that undo is another rename; when the app closes, a desktop hands the folders not undone to
 * the OS trash (Electron's shell.trashItem), while headless they stay in the app's trash, which
 * empties itself after 30 days (library/trash.ts). A symlink, or a path that resolves outside
 * models/, is never moved: nothing outside the models folder is touched.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { type ModelEntry, type ModelTrashResult, StudioError } from '../../shared';
import type { Library } from '../library/service';
import { newToken } from '../library/ids';
import type { HostContext } from '../services';

interface Trashed {
  row: Record<string, unknown>;
  /** Download rows that pointed at the model (their model_id is cleared by the delete). */
  downloads: string[];
  /** Where the folder was and where it is now, when it was moved. */
  folder: { from: string; to: string } | null;
}

/**
 * Whether `folder` is a real folder (not a symlink) strictly inside `modelsDir` once every link
 * on the way is resolved: the only folders a remove may move.
 */
export function isOwnedModelFolder(modelsDir: string, folder: string): boolean {
  let real: string;
  let root: string;
  try {
    if (!fs.lstatSync(folder).isDirectory()) return false;
    real = fs.realpathSync(folder);
    root = fs.realpathSync(modelsDir);
  } catch {
    return false;
  }
  // The folder as named must also be inside: models/x -> ../../elsewhere/models/y is not ours.
  const named = path.relative(path.resolve(modelsDir), path.resolve(folder));
  const resolved = path.relative(root, real);
  const inside = (rel: string) => rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
  return inside(named) && inside(resolved);
}

export class ModelTrash {
  readonly #trashed = new Map<string, Trashed>();

  constructor(
    private readonly context: Pick<HostContext, 'dataDir' | 'desktop' | 'events' | 'log'>,
    private readonly library: Library,
  ) {}

  get modelsDir(): string {
    return path.join(this.context.dataDir, 'models');
  }

  /** Removes model `id`; its folder goes to the trash when a download put it in models/. */
  async trash(id: string): Promise<ModelTrashResult> {
    const db = this.library.database.db;
    const row = db.prepare('SELECT * FROM models WHERE id = ?').get(id) as
      Record<string, unknown> | undefined;
    if (!row) throw new StudioError('not-found', 'That model is not in the library.');
    const downloads = db
      .prepare('SELECT id FROM downloads WHERE model_id = ?')
      .pluck()
      .all(id) as string[];
    // Refuses the built-in model, emits modelsChanged.
    this.library.models.removeModel(id);
    const token = newToken();
    const folder = String(row.path);
    let moved: Trashed['folder'] = null;
    if (isOwnedModelFolder(this.modelsDir, folder)) {
      const to = path.join(this.context.dataDir, 'trash', `models-${token}`, path.basename(folder));
      try {
        await fsp.mkdir(path.dirname(to), { recursive: true });
        await fsp.rename(folder, to);
        moved = { from: folder, to };
      } catch (err) {
        this.context.log(`models: moving ${folder} to the trash failed: ${(err as Error).message}`);
      }
    }
    this.#trashed.set(token, { row, downloads, folder: moved });
    this.context.log(
      moved ? `removed model ${row.name}; ${folder} is in the trash` : `removed model ${row.name}`,
    );
    return {
      trashedTo: moved ? (this.context.desktop ? 'os-trash' : 'app-trash') : null,
      undoToken: token,
    };
  }

  /** Brings back a model removed by trash(): its folder, its row (same id), its downloads. */
  async undo(token: string): Promise<ModelEntry> {
    const t = this.#trashed.get(token);
    if (!t)
      throw new StudioError(
        'not-found',
        'That removal can no longer be undone (undo lasts until the app is closed).',
      );
    if (t.folder) {
      if (fs.existsSync(t.folder.from))
        throw new StudioError(
          'invalid-argument',
          `${t.folder.from} exists again, so the removed model cannot be put back there.`,
        );
      await fsp.rename(t.folder.to, t.folder.from);
      await fsp.rm(path.dirname(t.folder.to), { recursive: true, force: true });
    }
    const db = this.library.database.db;
    const columns = Object.keys(t.row);
    this.library.database.transaction(() => {
      db.prepare(
        `INSERT INTO models (${columns.join(', ')}) VALUES (${columns.map((c) => `@${c}`).join(', ')})`,
      ).run(t.row);
      const relink = db.prepare('UPDATE downloads SET model_id = ? WHERE id = ?');
      for (const d of t.downloads) relink.run(t.row.id, d);
    });
    this.#trashed.delete(token);
    const models = this.library.models.listModels();
    this.context.events.emit('modelsChanged', models);
    return models.find((m) => m.id === t.row.id)!;
  }

  /**
   * At close: removals not undone are final. A desktop hands their folders to the OS trash
   * (the app's trash keeps them when that fails); headless they stay in the app's trash.
   */
  async finish(): Promise<void> {
    for (const [token, t] of this.#trashed) {
      this.#trashed.delete(token);
      if (!t.folder || !this.context.desktop) continue;
      try {
        await this.context.desktop.trash(t.folder.to);
        await fsp.rm(path.dirname(t.folder.to), { recursive: true, force: true });
      } catch (err) {
        this.context.log(`models: the OS trash refused ${t.folder.to}: ${(err as Error).message}`);
      }
    }
  }
}
