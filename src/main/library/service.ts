/**
 * The library: SQLite history of prompts, seeds and generations; the image store; the models
 * registry; gallery queries; delete with undo; integrity checks and backups.
 *
 * This class composes the services that do each of those (one file each) over one database
 * (LibraryDatabase) and one file store, and gives the host their slices of the contract as
 * `methods`. Runs on the host's main thread (better-sqlite3 is synchronous and fast). The
 * constructor opens and migrates the database; `ready` then reconciles the files with the rows,
 * registers the built-in models and takes a backup when the last one is old. It never rejects:
 * problems are logged and surface through getLibraryStatus.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { LibraryStatus, ModelEntry } from '../../shared';
import { ModelRegistry } from '../models/registry';
import type { HostContext, LibraryMethods } from '../services';
import { LibraryDatabase } from './database';
import { listBackups } from './backup';
import type { Db } from './db';
import { FileStore } from './file-store';
import { GalleryService } from './gallery-service';
import { IntegrityService } from './integrity';
import { type MediaFile, MediaResolver, type ResolvedImage } from './media';
import { type Migration, migrations as defaultMigrations } from './migrations';
import { Reconciler } from './reconcile';
import { GenerationSaver, type SaveGenerationInput, type SaveGenerationResult } from './saving';
import { TrashService } from './trash';
import { UploadService } from './uploads';
import { vaeFolder } from '../models/vaes';
import { controlNetFolder } from '../models/controlnets';

export type { MediaFile, ResolvedImage } from './media';
export type {
  GenerationNetwork,
  SaveGenerationInput,
  SaveGenerationResult,
  SaveImageInput,
} from './saving';

export interface LibraryOptions {
  /** How often to back the database up while running (default 6 h); 0 disables the timer. */
  backupIntervalMs?: number;
  /** Back up at start when the newest backup is older than this (default 24 h). */
  backupMaxAgeMs?: number;
  /** Migrations to run (tests); defaults to the app's. */
  migrations?: readonly Migration[];
}

const dbFileName = 'library.sqlite';
const hour = 3600_000;

export class Library {
  readonly methods: LibraryMethods;
  readonly store: FileStore;
  readonly dbFile: string;
  readonly database: LibraryDatabase;
  readonly models: ModelRegistry;
  readonly gallery: GalleryService;
  readonly saver: GenerationSaver;
  readonly media: MediaResolver;
  readonly uploads: UploadService;
  readonly trash: TrashService;
  readonly integrity: IntegrityService;
  readonly reconciler: Reconciler;
  /** Resolves once the start-up work (reconcile, built-in models, backup) is done. */
  ready: Promise<void>;
  readonly #options: Required<Omit<LibraryOptions, 'migrations'>>;

  constructor(
    readonly context: HostContext,
    options: LibraryOptions = {},
  ) {
    this.#options = {
      backupIntervalMs: options.backupIntervalMs ?? 6 * hour,
      backupMaxAgeMs: options.backupMaxAgeMs ?? 24 * hour,
    };
    this.store = new FileStore(context.dataDir);
    this.dbFile = path.join(context.dataDir, dbFileName);
    fs.mkdirSync(context.dataDir, { recursive: true });
    const database = new LibraryDatabase(
      context,
      this.dbFile,
      options.migrations ?? defaultMigrations,
      () => this.#hadLibrary(),
    );
    this.database = database;
    this.models = new ModelRegistry(context, database);
    this.gallery = new GalleryService(context, database, () => this.models.listModels());
    const changed = this.gallery.changed.bind(this.gallery);
    this.saver = new GenerationSaver(context, database, this.store, {
      ready: () => this.ready,
      modelRowFor: (idOrPath) => this.models.modelRowFor(idOrPath),
      added: (ids) => changed(ids, [], [], { countNew: true }),
    });
    this.media = new MediaResolver(database, this.store);
    this.uploads = new UploadService(
      database,
      this.store,
      () => vaeFolder(context.settings.get(), context.dataDir),
      () => controlNetFolder(context.settings.get(), context.dataDir),
    );
    this.trash = new TrashService(context, database, this.store, this.media, changed);
    this.reconciler = new Reconciler(context, database, this.store, this.saver, changed);
    this.integrity = new IntegrityService(context, database, this.store, {
      restart: () => {
        this.ready = this.#start();
        return this.ready;
      },
      announce: () => {
        this.context.events.emit('modelsChanged', this.models.listModels());
        changed([], [], []);
      },
    });
    database.afterOpen = () => this.saver.finishPendingSaves();
    database.open();
    this.ready = this.#start();
    this.methods = {
      ...this.models.methods,
      ...this.uploads.methods,
      ...this.gallery.methods,
      ...this.trash.methods,
      ...this.integrity.methods,
    } satisfies LibraryMethods;
  }

  // -------------------------------------------------------------------------------------
  // Database, for the job queue and the tests

  /** The better-sqlite3 database (the job queue keeps its rows in the same file). */
  get db(): Db {
    return this.database.db;
  }

  get readOnly(): boolean {
    return this.database.readOnly;
  }

  /** Runs `fn` in an immediate transaction; refused while the library is read-only. */
  transaction<T>(fn: () => T): T {
    return this.database.transaction(fn);
  }

  /** Throws StudioError 'storage' while the library is read-only. */
  assertWritable(): void {
    this.database.assertWritable();
  }

  /** `listener` runs after a restore reopened the database and its start-up finished. */
  onReopened(listener: () => void): void {
    this.database.on('reopened', listener);
  }

  /** Test hook of the saver: runs when a save's files are written, before its rows commit. */
  get beforeCommit(): ((generationId: string) => void) | null {
    return this.saver.beforeCommit;
  }

  set beforeCommit(hook: ((generationId: string) => void) | null) {
    this.saver.beforeCommit = hook;
  }

  // -------------------------------------------------------------------------------------
  // Start-up

  /** Backups or image files in the data folder: a library lived here before. */
  #hadLibrary(): boolean {
    if (listBackups(this.store.backupsDir).length > 0) return true;
    try {
      return fs.readdirSync(this.store.imagesDir).length > 0;
    } catch {
      return false;
    }
  }

  async #start(): Promise<void> {
    if (this.database.readOnly) return;
    const steps: Array<[string, () => Promise<void>]> = [
      ['finishing deletes', () => this.trash.purgeDeleted()],
      ['reconciling files', () => this.reconcile().then(() => undefined)],
      ['registering built-in models', () => this.models.registerBuiltInModels()],
      ['backing up', () => this.integrity.backupIfOld(this.#options.backupMaxAgeMs)],
    ];
    for (const [what, step] of steps) {
      if (this.database.closed || this.database.readOnly) return;
      try {
        await step();
      } catch (err) {
        this.context.log(`library: ${what} failed: ${(err as Error).stack ?? String(err)}`);
      }
    }
    this.integrity.startTimer(this.#options.backupIntervalMs);
  }

  // -------------------------------------------------------------------------------------
  // What the job queue, the shells and the tests call directly

  reconcile(): ReturnType<Reconciler['reconcile']> {
    return this.reconciler.reconcile();
  }

  saveGeneration(input: SaveGenerationInput): Promise<SaveGenerationResult> {
    return this.saver.saveGeneration(input);
  }

  resolveModel(idOrPath: string): ModelEntry & { path: string } {
    return this.models.resolveModel(idOrPath);
  }

  resolveImage(imageId: string): ResolvedImage {
    return this.media.resolveImage(imageId);
  }

  readMedia(urlPath: string): MediaFile | null {
    return this.media.readMedia(urlPath);
  }

  listModels(): ModelEntry[] {
    return this.models.listModels();
  }

  addModel(folder: string): Promise<ModelEntry> {
    return this.models.addModel(folder);
  }

  getLibraryStatus(): LibraryStatus {
    return this.integrity.getLibraryStatus();
  }

  backupNow(): Promise<string> {
    return this.integrity.backupNow();
  }

  close(): void {
    if (this.database.closed) return;
    this.integrity.stopTimer();
    this.database.close();
  }
}
