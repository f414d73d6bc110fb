/**
 * Uploads: init images, masks and imported PNGs the studio hands over (stored once per content
 * and purpose), and looking an image or upload up by id.
 */
import fsp from 'node:fs/promises';
import {
  type ImageRef,
  type StudioService,
  StudioError,
  type UploadedImage,
  parseNetworkHashes,
} from '../../shared';
import { checkUploadedImage } from '../images/decode';
import type { LibraryDatabase } from './database';
import { type Db, immediate } from './db';
import { type FileStore, existsFile } from './file-store';
import { newId, sha256 } from './ids';
import { readImageMetadata } from './metadata';
import { vaeFromImported } from '../models/vaes';
import { controlNetsFromImported } from '../models/controlnets';

const uploadFormats: Record<string, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };

export class UploadService {
  /** This slice of the contract (the type check holds it to the contract's schemas). */
  readonly methods;

  constructor(
    readonly database: LibraryDatabase,
    readonly store: FileStore,
    /** The studio's VAE folder, where an imported image's VAE is looked for. */
    readonly vaeFolder: (() => string) | null = null,
    /** The studio's ControlNet folder, where an imported image's ControlNets are looked for. */
    readonly controlNetFolder: (() => string) | null = null,
  ) {
    const guard = database.guard.bind(database);
    this.methods = {
      uploadImage: (input) => guard(() => this.uploadImage(input)),
      getImage: (input) => guard(() => this.getImage(input.id)),
    } satisfies Pick<StudioService, 'uploadImage' | 'getImage'>;
  }

  get #db(): Db {
    return this.database.db;
  }

  async uploadImage(input: {
    data: string;
    purpose: 'init' | 'mask' | 'import';
    name?: string;
  }): Promise<UploadedImage> {
    this.database.assertWritable();
    const data = Buffer.from(input.data.replace(/^data:[^,]*,/, ''), 'base64');
    const {
      format,
      width = 0,
      height = 0,
    } = await checkUploadedImage(data, input.name, Object.keys(uploadFormats));
    const ext = format ? uploadFormats[format] : undefined;
    if (!ext)
      throw new StudioError(
        'invalid-argument',
        `Only PNG, JPEG and WebP images can be used${format ? ` (this one is ${format.toUpperCase()})` : ''}.`,
      );
    const hash = sha256(data);
    const existing = this.#db
      .prepare('SELECT id, file FROM uploads WHERE sha256 = ? AND purpose = ?')
      .get(hash, input.purpose) as { id: string; file: string } | undefined;
    let imageId: string;
    if (existing && existsFile(this.store.abs(existing.file))) {
      imageId = existing.id;
    } else {
      imageId = newId();
      const file = `uploads/${imageId}.${ext}`;
      try {
        await this.store.writeAtomic(this.store.abs(file), data);
        immediate(this.#db, () =>
          this.#db
            .prepare(
              `INSERT INTO uploads (id, file, sha256, purpose, name, width, height, bytes, created_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
            )
            .run(
              imageId,
              file,
              hash,
              input.purpose,
              input.name ?? null,
              width,
              height,
              data.length,
              Date.now(),
            ),
        );
      } catch (err) {
        await fsp.rm(this.store.abs(file), { force: true }).catch(() => {});
        throw this.database.mapError(err, 'the image was not stored');
      }
    }
    let metadata: UploadedImage['metadata'] = null;
    if (input.purpose === 'import') {
      const read = readImageMetadata(data);
      metadata = {
        source: read.source,
        settings: read.settings,
        networks: [
          ...parseNetworkHashes(read.raw['Lora hashes']).map((h) => ({
            kind: 'lora' as const,
            ...h,
          })),
          ...parseNetworkHashes(read.raw['TI hashes']).map((h) => ({
            kind: 'embedding' as const,
            ...h,
          })),
        ],
      };
      // The VAE it names (ours: settings.vae; A1111: `VAE:`) is chosen when the folder has it.
      const named = read.source === 'a1111' ? read.raw.VAE : read.settings.vae;
      if (named && this.vaeFolder) {
        const { vae, note } = await vaeFromImported(named, this.vaeFolder());
        metadata.settings = { ...read.settings, vae };
        if (note) metadata.notes = [note];
      }
      if (read.source === 'a1111' && this.controlNetFolder) {
        const found = await controlNetsFromImported(read.raw, this.controlNetFolder());
        if (found.units.length) {
          metadata.controlnets = found.units;
          metadata.notes = [...(metadata.notes ?? []), ...found.notes];
        }
      }
    }
    return { imageId, url: `/media/uploads/${imageId}`, width, height, metadata };
  }

  /** A library image or an upload by id (ids only: the contract refuses anything else). */
  getImage(id: string): ImageRef {
    const image = this.#db
      .prepare(
        `SELECT file, width, height, generation_id, content_filter FROM images
         WHERE id = ? AND deleted_at IS NULL`,
      )
      .get(id) as
      | {
          file: string;
          width: number;
          height: number;
          generation_id: string;
          content_filter: 'flagged' | 'clean' | null;
        }
      | undefined;
    const upload = image
      ? undefined
      : (this.#db.prepare('SELECT file, width, height FROM uploads WHERE id = ?').get(id) as
          { file: string; width: number; height: number } | undefined);
    const row = image ?? upload;
    if (!row || !existsFile(this.store.abs(row.file)))
      throw new StudioError(
        'not-found',
        'That image is not in the library any more (deleted or missing).',
      );
    return image
      ? {
          imageId: id,
          kind: 'image',
          url: `/media/images/${id}`,
          width: image.width,
          height: image.height,
          generationId: image.generation_id,
          contentFilter: image.content_filter ?? 'unchecked',
        }
      : {
          imageId: id,
          kind: 'upload',
          url: `/media/uploads/${id}`,
          width: row.width,
          height: row.height,
          generationId: null,
          contentFilter: 'unchecked',
        };
  }
}
