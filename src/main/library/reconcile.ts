/**
 * Start-up repair: what a crash left behind between the files and the rows (stale temp files,
 * image files without a row, rows without a file, missing thumbnails, loose uploads).
 */
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ContentFilterVerdict, GenerationSettings } from '../../shared';
import { checkStudioPng } from '../images/decode';
import type { HostContext } from '../services';
import type { LibraryDatabase } from './database';
import { type Db, immediate } from './db';
import { type FileStore, isTempName } from './file-store';
import { newId, sha256 } from './ids';
import { readGenerationMetadata } from './png-metadata';
import { type GenerationSaver, type PendingSave, idPattern } from './saving';

/** Milliseconds encoded at the start of an id made by newId, or null. */
function timeOfId(id: string): number | null {
  if (!/^[0-9a-z]{21}$/.test(id)) return null;
  const ms = parseInt(id.slice(0, 9), 36);
  return Number.isFinite(ms) && ms > 946_684_800_000 && ms < 32_503_680_000_000 ? ms : null;
}

export class Reconciler {
  constructor(
    readonly context: HostContext,
    readonly database: LibraryDatabase,
    readonly store: FileStore,
    readonly saver: GenerationSaver,
    /** galleryChanged (updated: marked missing or found again; added: re-imported). */
    readonly changed: (added: string[], updated: string[], removed: string[]) => void,
  ) {}

  get #db(): Db {
    return this.database.db;
  }

  /**
   * Repairs what a crash left behind: stale temp files are removed; image files without a row
   * are re-imported from their PNG metadata (ours) or moved to quarantine/; rows whose file is
   * gone are marked missing (and unmarked when it is back); missing thumbnails are rebuilt;
   * uploads without rows (or rows without files) are dropped.
   */
  async reconcile(): Promise<{
    tempRemoved: number;
    reimported: number;
    quarantined: number;
    markedMissing: number;
  }> {
    const result = { tempRemoved: 0, reimported: 0, quarantined: 0, markedMissing: 0 };
    const s = this.store;
    const all = [
      ...(await s.listFiles(s.imagesDir)),
      ...(await s.listFiles(s.thumbsDir)),
      ...(await s.listFiles(s.uploadsDir)),
    ];
    const files = new Set<string>();
    for (const f of all) {
      if (isTempName(path.basename(f))) {
        await fsp.rm(s.abs(f), { force: true });
        result.tempRemoved++;
      } else files.add(f);
    }

    const rows = this.#db
      .prepare('SELECT id, file, thumb, missing, deleted_at FROM images')
      .all() as Array<{
      id: string;
      file: string;
      thumb: string | null;
      missing: number;
      deleted_at: number | null;
    }>;
    const rowFiles = new Set<string>();
    // Files of a save in flight (its rows are about to be committed) are not orphans.
    for (const p of this.#db.prepare('SELECT record FROM pending_saves').pluck().all() as string[])
      try {
        for (const i of (JSON.parse(p) as PendingSave).images) {
          rowFiles.add(i.file);
          if (i.thumb) rowFiles.add(i.thumb);
        }
      } catch {
        // a damaged record: its files are dealt with at the next start
      }
    const missingNow: string[] = [];
    const foundAgain: string[] = [];
    const needThumbs: Array<{ id: string; file: string; thumb: string }> = [];
    for (const r of rows) {
      rowFiles.add(r.file);
      if (r.thumb) rowFiles.add(r.thumb);
      if (r.deleted_at !== null) continue;
      const present = files.has(r.file);
      if (!present && r.missing === 0) missingNow.push(r.id);
      if (present && r.missing === 1) foundAgain.push(r.id);
      if (present && r.thumb && !files.has(r.thumb))
        needThumbs.push({ id: r.id, file: r.file, thumb: r.thumb });
    }
    if (missingNow.length || foundAgain.length) {
      immediate(this.#db, () => {
        const set = this.#db.prepare('UPDATE images SET missing = ? WHERE id = ?');
        for (const id of missingNow) set.run(1, id);
        for (const id of foundAgain) set.run(0, id);
      });
      result.markedMissing = missingNow.length;
      this.changed([], [...missingNow, ...foundAgain], []);
    }

    const reimported: string[] = [];
    for (const f of files) {
      if (rowFiles.has(f)) continue;
      if (f.startsWith('images/')) {
        const id = await this.#reimport(f);
        if (id) {
          reimported.push(id);
          result.reimported++;
        } else {
          await s.move(s.abs(f), path.join(s.quarantineDir, f));
          result.quarantined++;
        }
      } else if (f.startsWith('thumbs/')) {
        await fsp.rm(s.abs(f), { force: true });
      }
    }
    if (reimported.length) this.changed(reimported, [], []);

    // Uploads: transient inputs; keep rows and files only in pairs.
    const uploads = this.#db.prepare('SELECT id, file FROM uploads').all() as Array<{
      id: string;
      file: string;
    }>;
    const uploadFiles = new Set(uploads.map((u) => u.file));
    const gone = uploads.filter((u) => !files.has(u.file)).map((u) => u.id);
    if (gone.length)
      immediate(this.#db, () => {
        const del = this.#db.prepare('DELETE FROM uploads WHERE id = ?');
        for (const id of gone) del.run(id);
      });
    for (const f of files)
      if (f.startsWith('uploads/') && !uploadFiles.has(f)) await fsp.rm(s.abs(f), { force: true });

    for (const t of needThumbs) {
      if (this.database.closed) break;
      try {
        const png = await fsp.readFile(s.abs(t.file));
        await s.writeAtomic(s.abs(t.thumb), await s.makeThumb(png));
      } catch (err) {
        this.context.log(`library: thumbnail of ${t.id} failed: ${(err as Error).message}`);
      }
    }
    if (Object.values(result).some((n) => n > 0))
      this.context.log(`library: reconciled ${JSON.stringify(result)}`);
    return result;
  }

  /** A file found without a row: a generation again when it carries our metadata. */
  async #reimport(rel: string): Promise<string | null> {
    const abs = this.store.abs(rel);
    const base = path.basename(rel);
    if (!base.endsWith('.png')) return null;
    const id = base.slice(0, -4);
    if (!idPattern.test(id)) return null;
    let png: Buffer;
    let width: number;
    let height: number;
    try {
      png = await fsp.readFile(abs);
      // A half-written file fails to decode.
      const size = await checkStudioPng(png);
      if (!size) return null;
      ({ width, height } = size);
    } catch {
      return null;
    }
    const read = readGenerationMetadata(png);
    if (read.source !== 'latent-studio') return null;
    const parsed = GenerationSettings.safeParse(read.settings);
    if (!parsed.success) return null;
    const settings = parsed.data;
    const created = timeOfId(id) ?? (await fsp.stat(abs)).mtimeMs;
    const thumb = this.store.imagePaths(id, created).thumb;
    try {
      await this.store.writeAtomic(this.store.abs(thumb), await this.store.makeThumb(png));
    } catch {
      // the image is what matters; the thumbnail is rebuilt later
    }
    const generationId = newId(created);
    immediate(this.#db, () =>
      this.saver.insertGeneration({
        generationId,
        settings,
        family: null,
        provider: null,
        fallbackReason: null,
        timings: {},
        parentId: null,
        jobId: null,
        created: Math.round(created),
        images: [
          {
            id,
            file: rel,
            thumb,
            sha256: sha256(png),
            width,
            height,
            bytes: png.length,
            seed: settings.seed,
            batchIndex: 0,
            // A flagged image stays flagged (blurred) when its row is rebuilt from its PNG.
            contentFilter: contentFilterOf(read.raw),
          },
        ],
      }),
    );
    return id;
  }
}

/**
 * The content filter's verdict as the PNG recorded it (`Content filter`: `passed` or
 * `flagged (concepts 1 4)`, `Content filter scores`: { special, concepts }), or null when it
 * was not checked or the fields do not read.
 */
export function contentFilterOf(raw: Record<string, string>): ContentFilterVerdict | null {
  const said = raw['Content filter'];
  if (said === undefined) return null;
  const flagged = said.startsWith('flagged');
  let scores: unknown = null;
  try {
    scores = JSON.parse(raw['Content filter scores'] ?? 'null');
  } catch {
    // scores unreadable: the verdict alone still decides the blur
  }
  const s = scores as { special?: unknown; concepts?: unknown } | null;
  const parsed = ContentFilterVerdict.safeParse({
    flagged,
    badConcepts: flagged
      ? (/\(concepts ([\d ]*)\)/.exec(said)?.[1] ?? '').split(' ').filter(Boolean).map(Number)
      : [],
    specialScores: Array.isArray(s?.special) ? s.special : [],
    conceptScores: Array.isArray(s?.concepts) ? s.concepts : [],
  });
  return parsed.success ? parsed.data : null;
}
