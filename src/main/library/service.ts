/**
 * The library: SQLite history of prompts, seeds and generations; the image store; the models
 * registry; gallery queries; delete with undo; integrity checks and backups.
 *
 * Runs on the host's main thread (better-sqlite3 is synchronous and fast). The constructor opens
 * and migrates the database; `ready` then reconciles the files with the rows, registers the
 * built-in models and takes a backup when the last one is old. It never rejects: problems are
 * logged and surface through getLibraryStatus.
 */
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import {
  type DeleteResult,
  type GalleryPage,
  type GenerationDetail,
  GenerationSettings,
  type ImageRef,
  type LibraryStatus,
  type ModelEntry,
  StudioError,
  type UploadedImage,
} from '../../shared';
import { type HostContext, type LibraryMethods } from '../services';
import { backupDatabase, listBackups } from './backup';
import {
  type Db,
  diskFullError,
  immediate,
  isCorruption,
  isDiskFull,
  openDatabase,
  quickCheck,
} from './db';
import { checkStudioPng, checkUploadedImage } from '../images/decode';
import { FileStore, existsFile, isTempName } from './file-store';
import {
  type CountCache,
  type ItemRow,
  countAdded,
  itemSelect,
  searchGallery,
  toItems,
} from './gallery';
import { newId, newToken, sha256 } from './ids';
import { type Migration, migrate, migrations as defaultMigrations } from './migrations';
import { type ModelRow, TokenizerCache, inspectModel, toModelEntry, upsertModel } from './models';
import {
  LATENT_STUDIO_KEYWORD,
  addPngTextChunks,
  formatA1111Parameters,
  generationTextEntries,
  readGenerationMetadata,
  readPngTextChunks,
} from './png-metadata';

/** One image of a finished generation, as the job queue hands it over. */
export interface SaveImageInput {
  /** The encoded PNG; our metadata chunks are added when it does not carry them. */
  png: Uint8Array;
  width: number;
  height: number;
  seed: number;
  batchIndex: number;
}

export interface SaveGenerationInput {
  settings: GenerationSettings;
  images: SaveImageInput[];
  family: string | null;
  provider: string | null;
  fallbackReason: string | null;
  timings: Record<string, number>;
  /** Lineage; when absent and settings.initImage is a library image, its generation. */
  parentId?: string | null;
  /** The job that made it: its row's generation_id is set in the same transaction. */
  jobId?: string | null;
}

export interface SaveGenerationResult {
  generationId: string;
  imageIds: string[];
}

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

export interface LibraryOptions {
  /** How often to back the database up while running (default 6 h); 0 disables the timer. */
  backupIntervalMs?: number;
  /** Back up at start when the newest backup is older than this (default 24 h). */
  backupMaxAgeMs?: number;
  /** Migrations to run (tests); defaults to the app's. */
  migrations?: readonly Migration[];
}

interface UndoEntry {
  imageId: string;
  file: string;
  thumb: string | null;
  /** Absolute paths of the copies kept for undo (null when the file was already missing). */
  trashFile: string | null;
  trashThumb: string | null;
}

const dbFileName = 'library.sqlite';
const hour = 3600_000;
const uploadFormats: Record<string, string> = { png: 'png', jpeg: 'jpg', webp: 'webp' };
const uploadTypes: Record<string, string> = {
  png: 'image/png',
  jpg: 'image/jpeg',
  webp: 'image/webp',
};
const idPattern = /^[A-Za-z0-9_-]{1,64}$/;

const readOnlySentence =
  'The library database is damaged, so the library is open read-only; restore the last backup to make changes again.';

/** Key of "the same generation except the seed": settings without seed and batch counts. */
export function variantKeyOf(settings: GenerationSettings): string {
  const { seed: _seed, batchSize: _bs, batchCount: _bc, ...rest } = settings;
  return sha256(new TextEncoder().encode(JSON.stringify(rest))).slice(0, 32);
}

/** Milliseconds encoded at the start of an id made by newId, or null. */
function timeOfId(id: string): number | null {
  if (!/^[0-9a-z]{21}$/.test(id)) return null;
  const ms = parseInt(id.slice(0, 9), 36);
  return Number.isFinite(ms) && ms > 946_684_800_000 && ms < 32_503_680_000_000 ? ms : null;
}

function isPng(data: Uint8Array): boolean {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  return data.length > 8 && sig.every((b, i) => data[i] === b);
}

export class Library {
  readonly methods: LibraryMethods;
  readonly store: FileStore;
  readonly dbFile: string;
  /** Resolves once the start-up work (reconcile, built-in models, backup) is done. */
  ready: Promise<void>;
  #db!: Db;
  #readOnly = false;
  #problem: string | null = null;
  #countCache: CountCache = new Map();
  #undo = new Map<string, UndoEntry[]>();
  #tokenizers = new TokenizerCache();
  #backupTimer: NodeJS.Timeout | null = null;
  #backupRunning: Promise<unknown> | null = null;
  #closed = false;
  /**
   * Test hook: called when a save's files are all written, before its rows are committed (a
   * kill -9 test stops the process here).
   */
  beforeCommit: ((generationId: string) => void) | null = null;
  readonly #options: Required<Omit<LibraryOptions, 'migrations'>> & {
    migrations: readonly Migration[];
  };

  constructor(
    readonly context: HostContext,
    options: LibraryOptions = {},
  ) {
    this.#options = {
      backupIntervalMs: options.backupIntervalMs ?? 6 * hour,
      backupMaxAgeMs: options.backupMaxAgeMs ?? 24 * hour,
      migrations: options.migrations ?? defaultMigrations,
    };
    this.store = new FileStore(context.dataDir);
    this.dbFile = path.join(context.dataDir, dbFileName);
    fs.mkdirSync(context.dataDir, { recursive: true });
    this.#openDatabase();
    this.ready = this.#start();

    const m = (fn: (input: never) => unknown) => (input: never) => this.#guard(() => fn(input));
    this.methods = {
      listModels: m(() => this.listModels()),
      addModel: m((input: { path: string }) => this.addModel(input.path)),
      removeModel: m((input: { id: string }) => this.removeModel(input.id)),
      countTokens: m((input: { modelId: string; prompt: string }) =>
        this.countTokens(input.modelId, input.prompt),
      ),
      uploadImage: m((input: Parameters<LibraryMethods['uploadImage']>[0]) =>
        this.uploadImage(input),
      ),
      getImage: m((input: { id: string }) => this.getImage(input.id)),
      searchGallery: m((input: Parameters<LibraryMethods['searchGallery']>[0]) =>
        this.searchGallery(input),
      ),
      getGeneration: m((input: { id: string }) => this.getGeneration(input.id)),
      setFavorite: m((input: { imageIds: string[]; favorite: boolean }) =>
        this.setFavorite(input.imageIds, input.favorite),
      ),
      setRating: m((input: { imageIds: string[]; rating: number }) =>
        this.setRating(input.imageIds, input.rating),
      ),
      setTags: m((input: { imageId: string; tags: string[] }) =>
        this.setTags(input.imageId, input.tags),
      ),
      deleteImages: m((input: { imageIds: string[] }) => this.deleteImages(input.imageIds)),
      undoDelete: m((input: { token: string }) => this.undoDelete(input.token)),
      revealImage: m((input: { imageId: string }) => this.revealImage(input.imageId)),
      getLibraryStatus: m(() => this.getLibraryStatus()),
      restoreBackup: m(() => this.restoreBackup()),
    } as LibraryMethods;
  }

  // -------------------------------------------------------------------------------------
  // Database, for the job queue

  /** The better-sqlite3 database (the job queue keeps its rows in the same file). */
  get db(): Db {
    return this.#db;
  }

  get readOnly(): boolean {
    return this.#readOnly;
  }

  /** Runs `fn` in an immediate transaction; refused while the library is read-only. */
  transaction<T>(fn: () => T): T {
    this.assertWritable();
    return immediate(this.#db, fn);
  }

  /** Throws StudioError 'storage' while the library is read-only. */
  assertWritable(): void {
    if (this.#readOnly) throw new StudioError('storage', readOnlySentence);
  }

  #openDatabase(): void {
    this.#readOnly = false;
    this.#problem = null;
    const nativeBinding = this.context.sqliteNativeBinding;
    let db: Db | null = null;
    try {
      db = openDatabase(this.dbFile, { nativeBinding });
      const problem = quickCheck(db);
      if (problem) {
        db.close();
        db = null;
        return this.#openReadOnly(`The integrity check failed: ${problem}`);
      }
      migrate(db, this.#options.migrations);
      // Keeps the planner's statistics fresh (cheap: it analyzes only what needs it).
      db.pragma('optimize=0x10002');
      this.#db = db;
      try {
        this.#finishPendingSaves();
      } catch (err) {
        this.context.log(`library: saves cut short could not be read: ${String(err)}`);
      }
    } catch (err) {
      try {
        db?.close();
      } catch {
        // already unusable
      }
      this.context.log(`library: cannot open ${this.dbFile}: ${(err as Error).message}`);
      this.#openReadOnly(
        isCorruption(err)
          ? 'The library database file is damaged or is not a database.'
          : `The library database could not be opened: ${(err as Error).message}`,
      );
    }
  }

  /** After a failed check: the file read-only if it still answers, else an empty library. */
  #openReadOnly(problem: string): void {
    this.context.log(`library: ${problem} Opening read-only.`);
    this.#readOnly = true;
    this.#problem = `${problem} The library is read-only until the last backup is restored.`;
    try {
      const db = openDatabase(this.dbFile, {
        nativeBinding: this.context.sqliteNativeBinding,
        readonly: true,
        fileMustExist: true,
      });
      try {
        db.prepare('SELECT count(*) FROM images').get();
        db.prepare('SELECT count(*) FROM models').get();
        this.#db = db;
        return;
      } catch {
        db.close();
      }
    } catch {
      // not even readable: fall through to an empty in-memory library
    }
    const empty = openDatabase(':memory:', { nativeBinding: this.context.sqliteNativeBinding });
    migrate(empty, this.#options.migrations);
    this.#db = empty;
  }

  /** Maps storage failures to clear errors; a corrupt database switches to read-only. */
  async #guard<T>(fn: () => T | Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.#mapError(err, 'the change was not saved');
    }
  }

  #mapError(err: unknown, what: string): unknown {
    if (err instanceof StudioError) return err;
    if (isDiskFull(err)) return diskFullError(what);
    if (isCorruption(err)) {
      this.#becomeReadOnly('The library database turned out to be damaged.');
      return new StudioError('storage', readOnlySentence);
    }
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code === 'string' && code.startsWith('SQLITE_')) {
      this.context.log(`library: ${code}: ${(err as Error).message}`);
      return new StudioError(
        'storage',
        code === 'SQLITE_BUSY'
          ? 'The library database is busy (another Latent Studio may be using it); try again.'
          : `The library database failed (${code}); the change was not saved.`,
      );
    }
    return err;
  }

  #becomeReadOnly(problem: string): void {
    if (this.#readOnly) return;
    this.#readOnly = true;
    this.#problem = `${problem} The library is read-only until the last backup is restored.`;
    this.context.events.emit('libraryStatus', this.getLibraryStatus());
  }

  /**
   * `countNew`: the added rows were committed in the same turn of the event loop (no search can
   * have counted them yet), so they join the cached totals they match instead of every search
   * being counted again: a gallery search stays cheap while the queue keeps saving.
   */
  #changed(
    added: string[],
    updated: string[],
    removed: string[],
    { countNew = false }: { countNew?: boolean } = {},
  ): void {
    if (countNew && updated.length === 0 && removed.length === 0)
      try {
        countAdded(this.#db, this.#countCache, added);
      } catch {
        this.#countCache.clear();
      }
    else this.#countCache.clear();
    // Disk use per model follows the images; the models view shows it.
    if (added.length || removed.length)
      this.context.events.emit('modelsChanged', this.listModels());
    this.context.events.emit('galleryChanged', { added, updated, removed });
  }

  // -------------------------------------------------------------------------------------
  // Start-up

  async #start(): Promise<void> {
    if (this.#readOnly) return;
    const steps: Array<[string, () => Promise<void>]> = [
      ['finishing deletes', () => this.#purgeDeleted()],
      ['reconciling files', () => this.reconcile().then(() => undefined)],
      ['registering built-in models', () => this.#registerBuiltInModels()],
      ['backing up', () => this.#backupIfOld(this.#options.backupMaxAgeMs)],
    ];
    for (const [what, step] of steps) {
      if (this.#closed || this.#readOnly) return;
      try {
        await step();
      } catch (err) {
        this.context.log(`library: ${what} failed: ${(err as Error).stack ?? String(err)}`);
      }
    }
    if (this.#options.backupIntervalMs > 0 && !this.#closed) {
      this.#backupTimer = setInterval(() => {
        void this.#backupIfOld(this.#options.backupIntervalMs).catch((err: unknown) =>
          this.context.log(`library: backup failed: ${(err as Error).message}`),
        );
      }, this.#options.backupIntervalMs);
      this.#backupTimer.unref();
    }
  }

  /**
   * Saves a crash cut short (pending_saves, migration 3). When every image file is there, whole
   * (its recorded hash), the save is finished with the ids it was given, so the job that made it
   * is marked done at its recovery and never runs again; otherwise the files it wrote are removed
   * and its job runs again. Synchronous, at open: before the job queue recovers its jobs and
   * before the reconciler looks for files without rows.
   */
  #finishPendingSaves(): void {
    const db = this.#db;
    const rows = db.prepare('SELECT generation_id, record FROM pending_saves').all() as Array<{
      generation_id: string;
      record: string;
    }>;
    for (const row of rows)
      try {
        this.#finishPendingSave(row.generation_id, row.record);
      } catch (err) {
        // Left recorded for the next start; the reconciler leaves its files alone meanwhile.
        this.context.log(
          `library: the save of generation ${row.generation_id} cut short could not be finished: ${String(err)}`,
        );
      }
  }

  #finishPendingSave(generationId: string, record: string): void {
    const db = this.#db;
    let pending: PendingSave | null;
    try {
      const parsed = JSON.parse(record) as PendingSave;
      pending = { ...parsed, settings: GenerationSettings.parse(parsed.settings) };
    } catch {
      pending = null;
    }
    const whole =
      pending !== null &&
      pending.images.length > 0 &&
      pending.images.every((i) => this.#hashOf(i.file) === i.sha256);
    if (pending && whole) {
      const saved = pending;
      immediate(db, () => {
        if (!db.prepare('SELECT 1 FROM generations WHERE id = ?').get(generationId))
          this.#insertGeneration(saved);
        db.prepare('DELETE FROM pending_saves WHERE generation_id = ?').run(generationId);
      });
      this.context.log(
        `library: finished the save of generation ${generationId} that the app was stopped in${saved.jobId ? ` (job ${saved.jobId})` : ''}`,
      );
      return;
    }
    // Files first, then the record: a crash in between leaves the record to finish this.
    for (const i of pending?.images ?? [])
      for (const f of [i.file, i.thumb])
        if (f)
          try {
            fs.rmSync(this.store.abs(f), { force: true });
          } catch {
            // a path outside the library: never ours to remove
          }
    immediate(db, () =>
      db.prepare('DELETE FROM pending_saves WHERE generation_id = ?').run(generationId),
    );
    this.context.log(
      `library: removed the incomplete save of generation ${generationId}${pending?.jobId ? `; job ${pending.jobId} runs again` : ''}`,
    );
  }

  /** SHA-256 of a library file (relative path), or null when it cannot be read. */
  #hashOf(rel: string): string | null {
    try {
      return sha256(fs.readFileSync(this.store.abs(rel)));
    } catch {
      return null;
    }
  }

  /** Deletes of an earlier session: finish moving their files to the trash, drop the rows. */
  async #purgeDeleted(): Promise<void> {
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
      this.#changed([], [...missingNow, ...foundAgain], []);
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
    if (reimported.length) this.#changed(reimported, [], []);

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
      if (this.#closed) break;
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
      this.#insertGeneration({
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
          },
        ],
      }),
    );
    return id;
  }

  async #registerBuiltInModels(): Promise<void> {
    const root = this.context.resourcesDir ? path.join(this.context.resourcesDir, 'models') : null;
    const dirs: string[] = [];
    if (root) {
      for (const e of await fsp.readdir(root, { withFileTypes: true }).catch(() => []))
        if (e.isDirectory() && !e.name.startsWith('.')) dirs.push(path.join(root, e.name));
    }
    const known = this.#db.prepare('SELECT id, path, status, built_in FROM models').all() as Array<
      Pick<ModelRow, 'id' | 'path' | 'status' | 'built_in'>
    >;
    const signatureOf = this.#db.prepare('SELECT value FROM meta WHERE key = ?').pluck();
    const setSignature = this.#db.prepare(
      'INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value',
    );
    let changed = false;
    for (const dir of dirs) {
      const row = known.find((k) => k.path === dir);
      // A built-in folder is inspected again when its files changed (an update of the app that
      // ships new weights or a new model card): their names, sizes and times are its signature,
      // so an unchanged start costs a few stat calls, not reading the weights.
      const key = `builtin-model:${dir}`;
      const signature = await folderSignature(dir);
      if (row && row.built_in === 1 && row.status === 'ok' && signatureOf.get(key) === signature)
        continue;
      let inspected = null;
      let error: string | null = null;
      try {
        inspected = await inspectModel(dir);
      } catch (err) {
        error = (err as Error).message;
      }
      immediate(this.#db, () => {
        upsertModel(this.#db, dir, inspected, { builtIn: true, error, now: Date.now() });
        setSignature.run(key, signature);
      });
      changed = true;
    }
    // Built-in models of an earlier install that are no longer shipped.
    const stale = known.filter((k) => k.built_in === 1 && !dirs.includes(k.path));
    if (stale.length) {
      immediate(this.#db, () => {
        const del = this.#db.prepare('DELETE FROM models WHERE id = ?');
        const forget = this.#db.prepare('DELETE FROM meta WHERE key = ?');
        for (const s of stale) {
          del.run(s.id);
          forget.run(`builtin-model:${s.path}`);
        }
      });
      changed = true;
    }
    if (changed) this.context.events.emit('modelsChanged', this.listModels());
  }

  // -------------------------------------------------------------------------------------
  // Saving generations (the job queue calls this)

  /**
   * Stores a finished generation: each PNG (with our metadata) and its thumbnail are written
   * durably first, then the prompt, generation and image rows go in one transaction. On any
   * failure the files written so far are removed and nothing changes; a full disk gives
   * StudioError 'disk-full'. Emits galleryChanged { added }.
   */
  async saveGeneration(input: SaveGenerationInput): Promise<SaveGenerationResult> {
    await this.ready;
    this.assertWritable();
    const settings = GenerationSettings.parse(input.settings);
    if (input.images.length === 0)
      throw new StudioError('invalid-argument', 'A generation to save needs at least one image.');
    const created = Date.now();
    const generationId = newId(created);
    const written: string[] = [];
    let recorded = false;
    const db = this.#db;
    let pending: PendingSave;
    try {
      // Everything to write, in memory first: each PNG with our metadata and its thumbnail.
      const prepared: Array<{ record: ImageRecord; png: Uint8Array; thumb: Uint8Array | null }> =
        [];
      for (const image of input.images) {
        if (!isPng(image.png))
          throw new StudioError('invalid-argument', 'An image to save must be a PNG.');
        const id = newId(created);
        const { file, thumb } = this.store.imagePaths(id, created);
        const png = this.#withMetadata(image.png, settings);
        const thumbData = await this.store.makeThumb(png).catch(() => null);
        prepared.push({
          png,
          thumb: thumbData,
          record: {
            id,
            file,
            thumb: thumbData ? thumb : null,
            sha256: sha256(png),
            width: image.width,
            height: image.height,
            bytes: png.length,
            seed: image.seed,
            batchIndex: image.batchIndex,
          },
        });
      }
      pending = {
        generationId,
        settings,
        family: input.family,
        provider: input.provider,
        fallbackReason: input.fallbackReason,
        timings: input.timings,
        parentId: input.parentId ?? null,
        jobId: input.jobId ?? null,
        created,
        images: prepared.map((p) => p.record),
      };
      // The save is on record before its first file exists: a crash from here on is finished or
      // undone at the next start (#finishPendingSaves), never re-imported as a second generation.
      immediate(db, () =>
        db
          .prepare(
            'INSERT INTO pending_saves (generation_id, job_id, record, created_at) VALUES (?, ?, ?, ?)',
          )
          .run(generationId, pending.jobId, JSON.stringify(pending), created),
      );
      recorded = true;
      for (const { record, png, thumb } of prepared) {
        await this.store.writeAtomic(this.store.abs(record.file), png);
        written.push(this.store.abs(record.file));
        if (!thumb || !record.thumb) continue;
        try {
          await this.store.writeAtomic(this.store.abs(record.thumb), thumb);
          written.push(this.store.abs(record.thumb));
        } catch (err) {
          if (isDiskFull(err)) throw err;
          record.thumb = null;
        }
      }
      this.beforeCommit?.(generationId);
      immediate(db, () => {
        this.#insertGeneration(pending);
        db.prepare('DELETE FROM pending_saves WHERE generation_id = ?').run(generationId);
      });
    } catch (err) {
      for (const f of written.reverse()) await fsp.rm(f, { force: true }).catch(() => {});
      if (recorded)
        try {
          immediate(db, () =>
            db.prepare('DELETE FROM pending_saves WHERE generation_id = ?').run(generationId),
          );
        } catch {
          // left for the next start, which finds its files gone and drops it
        }
      throw this.#mapError(err, 'the image was not saved');
    }
    const images = pending.images;
    const imageIds = images.map((i) => i.id);
    this.#changed(imageIds, [], [], { countNew: true });
    return { generationId, imageIds };
  }

  /**
   * Adds our text chunks to a PNG that does not carry them yet, unless the user turned PNG
   * metadata off (then the file stays as given; the database still holds every setting, and a
   * crash between file and row is finished from pending_saves; only a restored backup that
   * predates the image leaves a file that can be quarantined, not re-imported).
   */
  #withMetadata(png: Uint8Array, settings: GenerationSettings): Uint8Array {
    try {
      if (!this.context.settings.get().embedMetadata) return png;
      if (readPngTextChunks(png).some((c) => c.keyword === LATENT_STUDIO_KEYWORD)) return png;
      return addPngTextChunks(png, generationTextEntries({ settings }));
    } catch {
      throw new StudioError('invalid-argument', 'An image to save is not a readable PNG.');
    }
  }

  #modelRowFor(idOrPath: string): ModelRow | undefined {
    const byId = this.#db.prepare('SELECT * FROM models WHERE id = ?').get(idOrPath) as
      ModelRow | undefined;
    if (byId) return byId;
    if (!path.isAbsolute(idOrPath)) return undefined;
    return this.#db.prepare('SELECT * FROM models WHERE path = ?').get(path.resolve(idOrPath)) as
      ModelRow | undefined;
  }

  /** Rows of one generation; call inside a transaction. */
  #insertGeneration(g: PendingSave): void {
    const db = this.#db;
    const s = g.settings;
    db.prepare(
      'INSERT INTO prompts (text, negative) VALUES (?, ?) ON CONFLICT (text, negative) DO NOTHING',
    ).run(s.prompt, s.negativePrompt);
    const promptId = (
      db
        .prepare('SELECT id FROM prompts WHERE text = ? AND negative = ?')
        .get(s.prompt, s.negativePrompt) as { id: number }
    ).id;
    const model = this.#modelRowFor(s.model);
    let parentId = g.parentId;
    if (parentId && !db.prepare('SELECT 1 FROM generations WHERE id = ?').get(parentId))
      parentId = null;
    if (!parentId && s.initImage && idPattern.test(s.initImage)) {
      const parent = db
        .prepare('SELECT generation_id FROM images WHERE id = ?')
        .get(s.initImage) as { generation_id: string } | undefined;
      parentId = parent?.generation_id ?? null;
    }
    const variantKey = variantKeyOf(s);
    db.prepare(
      `INSERT INTO generations (id, settings, prompt_id, model_id, model_name, seed, sampler, mode,
         steps, guidance, width, height, parent_id, variant_key, timings, provider,
         fallback_reason, family, status, job_id, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'done', ?, ?)`,
    ).run(
      g.generationId,
      JSON.stringify(s),
      promptId,
      model?.id ?? null,
      model?.name ?? path.basename(s.model),
      s.seed,
      s.sampler,
      s.mode,
      s.steps,
      s.guidance,
      s.width,
      s.height,
      parentId,
      variantKey,
      JSON.stringify(g.timings),
      g.provider,
      g.fallbackReason,
      g.family ?? model?.family ?? null,
      g.jobId,
      g.created,
    );
    const insertImage = db.prepare(
      `INSERT INTO images (id, generation_id, file, thumb, sha256, width, height, bytes, seed,
         batch_index, prompt_id, model_id, sampler, mode, variant_key, created_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    for (const i of g.images)
      insertImage.run(
        i.id,
        g.generationId,
        i.file,
        i.thumb,
        i.sha256,
        i.width,
        i.height,
        i.bytes,
        i.seed,
        i.batchIndex,
        promptId,
        model?.id ?? null,
        s.sampler,
        s.mode,
        variantKey,
        g.created,
      );
    if (g.jobId)
      db.prepare('UPDATE jobs SET generation_id = ? WHERE id = ?').run(g.generationId, g.jobId);
  }

  // -------------------------------------------------------------------------------------
  // Resolving ids for the job queue

  /** A registered model by id (or by its folder path); StudioError 'not-found' otherwise. */
  resolveModel(idOrPath: string): ModelEntry & { path: string } {
    const row = this.#modelRowFor(idOrPath);
    if (!row)
      throw new StudioError(
        'not-found',
        'That model is not in the library; add its folder under Models first.',
      );
    const entry = toModelEntry(row, 0);
    if (entry.status === 'missing')
      throw new StudioError('not-found', `The model folder ${row.path} is not there any more.`);
    return entry;
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
      throw new StudioError(
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

  // -------------------------------------------------------------------------------------
  // Models

  listModels(): ModelEntry[] {
    const rows = this.#db
      .prepare('SELECT * FROM models ORDER BY built_in DESC, name')
      .all() as ModelRow[];
    const bytes = new Map(
      (
        this.#db
          .prepare(
            `SELECT model_id AS id, sum(bytes) AS n FROM images
             WHERE deleted_at IS NULL AND model_id IS NOT NULL GROUP BY model_id`,
          )
          .all() as Array<{ id: string; n: number }>
      ).map((r) => [r.id, r.n]),
    );
    return rows.map((r) => toModelEntry(r, bytes.get(r.id) ?? 0));
  }

  async addModel(folder: string): Promise<ModelEntry> {
    this.assertWritable();
    const dir = path.resolve(folder);
    const inspected = await inspectModel(dir);
    this.assertWritable();
    const id = immediate(this.#db, () =>
      upsertModel(this.#db, dir, inspected, { builtIn: false, now: Date.now() }),
    );
    this.#tokenizers.forget(id);
    const models = this.listModels();
    this.context.events.emit('modelsChanged', models);
    return models.find((m) => m.id === id)!;
  }

  removeModel(id: string): null {
    this.assertWritable();
    const row = this.#db.prepare('SELECT built_in FROM models WHERE id = ?').get(id) as
      { built_in: number } | undefined;
    if (!row) throw new StudioError('not-found', 'That model is not in the library.');
    if (row.built_in === 1)
      throw new StudioError(
        'forbidden',
        'The built-in model comes with the app and cannot be removed.',
      );
    immediate(this.#db, () => this.#db.prepare('DELETE FROM models WHERE id = ?').run(id));
    this.#tokenizers.forget(id);
    this.context.events.emit('modelsChanged', this.listModels());
    return null;
  }

  async countTokens(modelId: string, prompt: string): Promise<{ total: number; chunks: number[] }> {
    const model = this.resolveModel(modelId);
    const tokenizer = await this.#tokenizers.get(model.id, model.path);
    const chunks = tokenizer.chunkTokenCounts(prompt);
    return { total: chunks.reduce((a, b) => a + b, 0), chunks };
  }

  // -------------------------------------------------------------------------------------
  // Uploads

  async uploadImage(input: {
    data: string;
    purpose: 'init' | 'mask' | 'import';
    name?: string;
  }): Promise<UploadedImage> {
    this.assertWritable();
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
        throw this.#mapError(err, 'the image was not stored');
      }
    }
    let metadata: UploadedImage['metadata'] = null;
    if (input.purpose === 'import') {
      const read = ext === 'png' ? readGenerationMetadata(data) : null;
      metadata = read
        ? { source: read.source, settings: read.settings }
        : { source: 'none', settings: {} };
    }
    return { imageId, url: `/media/uploads/${imageId}`, width, height, metadata };
  }

  /** A library image or an upload by id (ids only: the contract refuses anything else). */
  getImage(id: string): ImageRef {
    const image = this.#db
      .prepare(
        'SELECT file, width, height, generation_id FROM images WHERE id = ? AND deleted_at IS NULL',
      )
      .get(id) as
      { file: string; width: number; height: number; generation_id: string } | undefined;
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
        }
      : {
          imageId: id,
          kind: 'upload',
          url: `/media/uploads/${id}`,
          width: row.width,
          height: row.height,
          generationId: null,
        };
  }

  // -------------------------------------------------------------------------------------
  // Gallery

  searchGallery(query: Parameters<LibraryMethods['searchGallery']>[0]): GalleryPage {
    return searchGallery(this.#db, query, this.#countCache);
  }

  getGeneration(id: string): GenerationDetail {
    const db = this.#db;
    let g = db.prepare('SELECT * FROM generations WHERE id = ?').get(id) as
      GenerationRow | undefined;
    if (!g) {
      const img = db.prepare('SELECT generation_id FROM images WHERE id = ?').get(id) as
        { generation_id: string } | undefined;
      if (img)
        g = db.prepare('SELECT * FROM generations WHERE id = ?').get(img.generation_id) as
          GenerationRow | undefined;
    }
    if (!g) throw new StudioError('not-found', 'That generation is not in the library.');
    const settings = GenerationSettings.parse(JSON.parse(g.settings));
    const rows = db
      .prepare(
        `${itemSelect} WHERE i.generation_id = ? AND i.deleted_at IS NULL ORDER BY i.batch_index, i.id`,
      )
      .all(g.id) as ItemRow[];
    const childIds = (
      db
        .prepare('SELECT id FROM generations WHERE parent_id = ? ORDER BY created_at, id')
        .all(g.id) as Array<{ id: string }>
    ).map((r) => r.id);
    return {
      generationId: g.id,
      settings,
      images: toItems(db, rows),
      modelName: g.model_name,
      family: g.family,
      provider: g.provider,
      fallbackReason: g.fallback_reason,
      timings: JSON.parse(g.timings) as Record<string, number>,
      createdAt: g.created_at,
      parentId: g.parent_id,
      childIds,
      parametersText: formatA1111Parameters(settings, { modelName: g.model_name }),
    };
  }

  #liveIds(ids: string[]): string[] {
    return (
      this.#db
        .prepare(
          'SELECT id FROM images WHERE id IN (SELECT value FROM json_each(?)) AND deleted_at IS NULL',
        )
        .all(JSON.stringify(ids)) as Array<{ id: string }>
    ).map((r) => r.id);
  }

  setFavorite(imageIds: string[], favorite: boolean): null {
    this.assertWritable();
    const ids = this.#liveIds(imageIds);
    immediate(this.#db, () =>
      this.#db
        .prepare('UPDATE images SET favorite = ? WHERE id IN (SELECT value FROM json_each(?))')
        .run(favorite ? 1 : 0, JSON.stringify(ids)),
    );
    this.#changed([], ids, []);
    return null;
  }

  setRating(imageIds: string[], rating: number): null {
    this.assertWritable();
    const ids = this.#liveIds(imageIds);
    immediate(this.#db, () =>
      this.#db
        .prepare('UPDATE images SET rating = ? WHERE id IN (SELECT value FROM json_each(?))')
        .run(rating, JSON.stringify(ids)),
    );
    this.#changed([], ids, []);
    return null;
  }

  setTags(imageId: string, tags: string[]): null {
    this.assertWritable();
    if (this.#liveIds([imageId]).length === 0)
      throw new StudioError('not-found', 'That image is not in the library.');
    const byKey = new Map<string, string>();
    for (const t of tags)
      if (!byKey.has(t.trim().toLowerCase())) byKey.set(t.trim().toLowerCase(), t.trim());
    const unique = [...byKey.values()];
    immediate(this.#db, () => {
      const db = this.#db;
      db.prepare('DELETE FROM image_tags WHERE image_id = ?').run(imageId);
      const addTag = db.prepare('INSERT INTO tags (name) VALUES (?) ON CONFLICT (name) DO NOTHING');
      const tagId = db.prepare('SELECT id FROM tags WHERE name = ?');
      const link = db.prepare('INSERT OR IGNORE INTO image_tags (image_id, tag_id) VALUES (?, ?)');
      for (const t of unique) {
        addTag.run(t);
        link.run(imageId, (tagId.get(t) as { id: number }).id);
      }
      db.prepare('DELETE FROM tags WHERE id NOT IN (SELECT tag_id FROM image_tags)').run();
    });
    this.#changed([], [imageId], []);
    return null;
  }

  // -------------------------------------------------------------------------------------
  // Delete and undo

  /**
   * Deletes images: rows are marked deleted (with an undo token), then files go to the OS trash
   * (desktop; a hard link, or a copy, is kept in the app's trash folder so that undo works) or
   * to <dataDir>/trash/<token>/ (headless). Rows of deletes not undone are dropped at the next
   * start; the app's trash folders are emptied after 30 days.
   */
  async deleteImages(imageIds: string[]): Promise<DeleteResult> {
    this.assertWritable();
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
    this.#changed(
      [],
      [],
      rows.map((r) => r.id),
    );
    return { deleted: rows.length, undoToken: token, trashedTo };
  }

  async undoDelete(token: string): Promise<{ restored: number }> {
    this.assertWritable();
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
    this.#changed(restored, [], []);
    return { restored: restored.length };
  }

  revealImage(imageId: string): null {
    const desktop = this.context.desktop;
    if (!desktop)
      throw new StudioError(
        'unavailable',
        'Showing a file in the file manager works in the desktop app only.',
      );
    desktop.reveal(this.resolveImage(imageId).file);
    return null;
  }

  // -------------------------------------------------------------------------------------
  // Integrity and backups

  getLibraryStatus(): LibraryStatus {
    let generations = 0;
    let images = 0;
    let bytes = 0;
    try {
      generations = (
        this.#db.prepare('SELECT count(*) AS n FROM generations').get() as { n: number }
      ).n;
      const r = this.#db
        .prepare(
          'SELECT count(*) AS n, coalesce(sum(bytes), 0) AS b FROM images WHERE deleted_at IS NULL',
        )
        .get() as { n: number; b: number };
      images = r.n;
      bytes = r.b;
    } catch {
      // a damaged database may not answer; the status still does
    }
    return {
      readOnly: this.#readOnly,
      problem: this.#problem,
      lastBackupAt: listBackups(this.store.backupsDir)[0]?.time ?? null,
      generations,
      images,
      bytes,
    };
  }

  /** Backs the database up now (never while it is damaged). */
  async backupNow(): Promise<string> {
    this.assertWritable();
    const run = backupDatabase(this.#db, this.store.backupsDir);
    this.#backupRunning = run.catch(() => {});
    return run;
  }

  async #backupIfOld(maxAgeMs: number): Promise<void> {
    if (this.#readOnly || this.#closed) return;
    const last = listBackups(this.store.backupsDir)[0];
    if (last && Date.now() - last.time < maxAgeMs) return;
    await this.backupNow();
  }

  /**
   * After a failed integrity check: sets the damaged file aside (corrupt/), then opens the newest
   * backup that passes quick_check, or a new empty library when there is none; the reconciler then
   * re-imports every image saved since from its PNG metadata.
   */
  async restoreBackup(): Promise<LibraryStatus> {
    if (!this.#readOnly)
      throw new StudioError(
        'invalid-argument',
        'The library passed its integrity check; there is nothing to restore.',
      );
    await this.#backupRunning;
    this.#db.close();
    const asideDir = path.join(this.context.dataDir, 'corrupt');
    await fsp.mkdir(asideDir, { recursive: true });
    const stamp = Date.now();
    for (const suffix of ['', '-wal', '-shm']) {
      const f = this.dbFile + suffix;
      if (fs.existsSync(f))
        await this.store.move(f, path.join(asideDir, `library-${stamp}.sqlite${suffix}`));
    }
    let restoredFrom: string | null = null;
    for (const b of listBackups(this.store.backupsDir)) {
      try {
        const probe = openDatabase(b.file, {
          nativeBinding: this.context.sqliteNativeBinding,
          readonly: true,
          fileMustExist: true,
        });
        const problem = quickCheck(probe);
        probe.close();
        if (problem) continue;
        await fsp.copyFile(b.file, this.dbFile);
        restoredFrom = b.file;
        break;
      } catch {
        continue;
      }
    }
    this.#openDatabase();
    this.context.log(
      restoredFrom
        ? `library: restored ${restoredFrom}`
        : 'library: no usable backup; started a new library',
    );
    this.#countCache.clear();
    this.#tokenizers = new TokenizerCache();
    this.#undo.clear();
    if (!this.#readOnly) {
      this.ready = this.#start();
      await this.ready;
    }
    const status = this.getLibraryStatus();
    this.context.events.emit('libraryStatus', status);
    this.context.events.emit('modelsChanged', this.listModels());
    this.#changed([], [], []);
    return status;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#backupTimer) clearInterval(this.#backupTimer);
    try {
      if (!this.#readOnly) this.#db.pragma('optimize');
    } catch {
      // optional
    }
    try {
      this.#db.close();
    } catch {
      // closing twice or after a failure
    }
  }
}

/** A generation's rows to insert; a save in flight, as pending_saves records it. */
interface PendingSave {
  generationId: string;
  settings: GenerationSettings;
  family: string | null;
  provider: string | null;
  fallbackReason: string | null;
  timings: Record<string, number>;
  parentId: string | null;
  jobId: string | null;
  created: number;
  images: ImageRecord[];
}

interface ImageRecord {
  id: string;
  file: string;
  thumb: string | null;
  sha256: string;
  width: number;
  height: number;
  bytes: number;
  seed: number;
  batchIndex: number;
}

interface GenerationRow {
  id: string;
  settings: string;
  model_name: string;
  family: string | null;
  provider: string | null;
  fallback_reason: string | null;
  timings: string;
  created_at: number;
  parent_id: string | null;
}

/** Names, sizes and modification times of a folder's files (two levels): cheap change detection. */
async function folderSignature(dir: string): Promise<string> {
  const parts: string[] = [];
  const walk = async (d: string, depth: number): Promise<void> => {
    const entries = await fsp.readdir(d, { withFileTypes: true }).catch(() => []);
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) {
        if (depth > 0) await walk(p, depth - 1);
        continue;
      }
      const st = await fsp.stat(p).catch(() => null);
      if (st) parts.push(`${path.relative(dir, p)}:${st.size}:${Math.round(st.mtimeMs)}`);
    }
  };
  await walk(dir, 1);
  return parts.join('|');
}
