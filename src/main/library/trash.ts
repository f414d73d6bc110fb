/**
 * Delete and undo: images go to the OS trash (desktop) or the app's trash folder, with an undo
 * token that lasts until the app closes; deletes of an earlier session are finished at start.
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { type DeleteResult, type StudioService, StudioError } from '../../shared';
import type { HostContext } from '../services';
import type { LibraryDatabase } from './database';
import { type Db, immediate } from './db';
import { type FileStore, existsFile } from './file-store';
import { newToken } from './ids';
import type { MediaResolver } from './media';

interface UndoEntry {
  imageId: string;
  file: string;
  thumb: string | null;
  /** Absolute paths of the copies kept for undo (null when the file was already missing). */
  trashFile: string | null;
  trashThumb: string | null;
}

const hour = 3600_000;

export class TrashService {
  #undo = new Map<string, UndoEntry[]>();
  /** This slice of the contract (the type check holds it to the contract's schemas). */
  readonly methods;

  constructor(
    readonly context: HostContext,
    readonly database: LibraryDatabase,
    readonly store: FileStore,
    readonly media: MediaResolver,
    /** galleryChanged (added: restored by undo; removed: deleted). */
    readonly changed: (added: string[], updated: string[], removed: string[]) => void,
  ) {
    const guard = database.guard.bind(database);
    this.methods = {
      deleteImages: (input) => guard(() => this.deleteImages(input.imageIds)),
      undoDelete: (input) => guard(() => this.undoDelete(input.token)),
      revealImage: (input) => guard(() => this.revealImage(input.imageId)),
    } satisfies Pick<StudioService, 'deleteImages' | 'undoDelete' | 'revealImage'>;
    // Undo tokens name rows of the database that was replaced.
    database.on('reopened', () => this.#undo.clear());
  }

  get #db(): Db {
    return this.database.db;
  }

  /** Deletes of an earlier session: finish moving their files to the trash, drop the rows. */
  async purgeDeleted(): Promise<void> {
    const rows = this.#db
      .prepare('SELECT id, file, thumb, delete_token FROM images WHERE deleted_at IS NOT NULL')
      .all() as Array<{ id: string; file: string; thumb: string | null; delete_token: string }>;
    for (const r of rows) {
      const token = r.delete_token ?? 'unknown';
      const file = this.store.abs(r.file);
      if (existsFile(file))
        await this.store.move(file, path.join(this.store.trashDir, token, path.basename(file)));
      if (r.thumb) await fsp.rm(this.store.abs(r.thumb), { force: true });
    }
    if (rows.length)
      immediate(this.#db, () =>
        this.#db.prepare('DELETE FROM images WHERE deleted_at IS NOT NULL').run(),
      );
    // Trash folders older than 30 days go for good.
    const cutoff = Date.now() - 30 * 24 * hour;
    for (const name of await fsp.readdir(this.store.trashDir).catch(() => [] as string[])) {
      const dir = path.join(this.store.trashDir, name);
      const st = await fsp.stat(dir).catch(() => null);
      if (st && st.mtimeMs < cutoff) await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * Deletes images: rows are marked deleted (with an undo token), then files go to the OS trash
   * (desktop; a hard link, or a copy, is kept in the app's trash folder so that undo works) or
   * to <dataDir>/trash/<token>/ (headless). Rows of deletes not undone are dropped at the next
   * start; the app's trash folders are emptied after 30 days.
   */
  async deleteImages(imageIds: string[]): Promise<DeleteResult> {
    this.database.assertWritable();
    const desktop = this.context.desktop;
    let trashedTo: DeleteResult['trashedTo'] = desktop ? 'os-trash' : 'app-trash';
    const rows = this.#db
      .prepare(
        `SELECT id, file, thumb, missing FROM images
         WHERE id IN (SELECT value FROM json_each(?)) AND deleted_at IS NULL`,
      )
      .all(JSON.stringify(imageIds)) as Array<{
      id: string;
      file: string;
      thumb: string | null;
      missing: number;
    }>;
    if (rows.length === 0) return { deleted: 0, undoToken: null, trashedTo };
    const token = newToken();
    immediate(this.#db, () =>
      this.#db
        .prepare(
          `UPDATE images SET deleted_at = ?, delete_token = ?
           WHERE id IN (SELECT value FROM json_each(?))`,
        )
        .run(Date.now(), token, JSON.stringify(rows.map((r) => r.id))),
    );
    const trash = path.join(this.store.trashDir, token);
    const entries: UndoEntry[] = [];
    for (const r of rows) {
      const entry: UndoEntry = {
        imageId: r.id,
        file: r.file,
        thumb: r.thumb,
        trashFile: null,
        trashThumb: null,
      };
      const file = this.store.abs(r.file);
      try {
        if (existsFile(file)) {
          const kept = path.join(trash, path.basename(file));
          if (desktop) {
            await this.store.keepCopy(file, kept);
            try {
              await desktop.trash(file);
            } catch (err) {
              this.context.log(
                `library: OS trash failed (${(err as Error).message}); app trash used`,
              );
              await fsp.rm(file, { force: true });
              trashedTo = 'app-trash';
            }
          } else {
            await this.store.move(file, kept);
          }
          entry.trashFile = kept;
        }
        if (r.thumb && existsFile(this.store.abs(r.thumb))) {
          const keptThumb = path.join(trash, path.basename(r.thumb));
          await this.store.move(this.store.abs(r.thumb), keptThumb);
          entry.trashThumb = keptThumb;
        }
      } catch (err) {
        this.context.log(
          `library: moving ${r.file} to the trash failed: ${(err as Error).message}`,
        );
      }
      entries.push(entry);
    }
    this.#undo.set(token, entries);
    this.changed(
      [],
      [],
      rows.map((r) => r.id),
    );
    return { deleted: rows.length, undoToken: token, trashedTo };
  }

  async undoDelete(token: string): Promise<{ restored: number }> {
    this.database.assertWritable();
    const entries = this.#undo.get(token);
    if (!entries)
      throw new StudioError(
        'not-found',
        'That delete can no longer be undone (undo lasts until the app is closed).',
      );
    const restored: string[] = [];
    for (const e of entries) {
      const file = this.store.abs(e.file);
      if (e.trashFile && existsFile(e.trashFile)) {
        if (existsFile(file)) await fsp.rm(e.trashFile, { force: true });
        else await this.store.move(e.trashFile, file);
      }
      if (e.thumb && e.trashThumb && existsFile(e.trashThumb))
        await this.store.move(e.trashThumb, this.store.abs(e.thumb));
      restored.push(e.imageId);
    }
    immediate(this.#db, () =>
      this.#db
        .prepare('UPDATE images SET deleted_at = NULL, delete_token = NULL WHERE delete_token = ?')
        .run(token),
    );
    // A file that could not be brought back is marked missing rather than left pointing nowhere.
    const gone = entries.filter((e) => !existsFile(this.store.abs(e.file))).map((e) => e.imageId);
    if (gone.length)
      immediate(this.#db, () =>
        this.#db
          .prepare('UPDATE images SET missing = 1 WHERE id IN (SELECT value FROM json_each(?))')
          .run(JSON.stringify(gone)),
      );
    this.#undo.delete(token);
    await fsp.rm(path.join(this.store.trashDir, token), { recursive: true, force: true });
    this.changed(restored, [], []);
    return { restored: restored.length };
  }

  revealImage(imageId: string): null {
    const desktop = this.context.desktop;
    if (!desktop)
      throw new StudioError(
        'unavailable',
        'Showing a file in the file manager works in the desktop app only.',
      );
    desktop.reveal(this.media.resolveImage(imageId).file);
    return null;
  }
}
