/**
 * Resolving ids to files: the images and uploads the job queue reads, and the files behind the
 * /media URLs both shells serve.
 */
import path from 'node:path';
import type { LibraryDatabase } from './database';
import type { Db } from './db';
import { LibraryError } from './errors';
import { type FileStore, existsFile } from './file-store';

export interface ResolvedImage {
  /** Absolute path. */
  file: string;
  width: number;
  height: number;
}

export interface MediaFile {
  /** Absolute path. */
  file: string;
  contentType: string;
}

const uploadTypes: Record<string, string> = {
  png: 'image/png',
  jpg: 'image/jpeg',
  webp: 'image/webp',
};

export class MediaResolver {
  constructor(
    readonly database: LibraryDatabase,
    readonly store: FileStore,
  ) {}

  get #db(): Db {
    return this.database.db;
  }

  /** The file of a library image or an upload, by id; StudioError 'not-found' otherwise. */
  resolveImage(imageId: string): ResolvedImage {
    const row = (this.#db
      .prepare('SELECT file, width, height FROM images WHERE id = ? AND deleted_at IS NULL')
      .get(imageId) ??
      this.#db.prepare('SELECT file, width, height FROM uploads WHERE id = ?').get(imageId)) as
      { file: string; width: number; height: number } | undefined;
    const file = row ? this.store.abs(row.file) : null;
    if (!row || !file || !existsFile(file))
      throw new LibraryError(
        'unknown-image',
        'not-found',
        'That image is not in the library any more (deleted or missing); choose another.',
      );
    return { file, width: row.width, height: row.height };
  }

  /**
   * The file behind a /media URL path: /media/images/<id>, /media/thumbs/<id> (the image itself
   * when its thumbnail is not there) or /media/uploads/<id>. Null for anything else.
   */
  readMedia(urlPath: string): MediaFile | null {
    const m = /^\/media\/(images|thumbs|uploads)\/([A-Za-z0-9_-]{1,64})$/.exec(urlPath);
    if (!m) return null;
    const [, kind, id] = m;
    try {
      if (kind === 'uploads') {
        const row = this.#db.prepare('SELECT file FROM uploads WHERE id = ?').get(id) as
          { file: string } | undefined;
        if (!row) return null;
        const file = this.store.abs(row.file);
        const ext = path.extname(file).slice(1);
        return existsFile(file)
          ? { file, contentType: uploadTypes[ext] ?? 'application/octet-stream' }
          : null;
      }
      const row = this.#db
        .prepare('SELECT file, thumb FROM images WHERE id = ? AND deleted_at IS NULL')
        .get(id) as { file: string; thumb: string | null } | undefined;
      if (!row) return null;
      if (kind === 'thumbs' && row.thumb) {
        const thumb = this.store.abs(row.thumb);
        if (existsFile(thumb)) return { file: thumb, contentType: 'image/webp' };
      }
      const file = this.store.abs(row.file);
      return existsFile(file) ? { file, contentType: 'image/png' } : null;
    } catch {
      return null;
    }
  }
}
