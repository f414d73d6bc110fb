import type Sqlite from 'better-sqlite3';
import type { ModelEntry } from '../../shared';
import type { ResolvedImage, SaveGenerationInput, SaveGenerationResult } from '../library/service';

export type { GenerationNetwork, SaveImageInput } from '../library/service';

type MaybePromise<T> = T | Promise<T>;

/**
 * The database the queue keeps its rows in: the `jobs` and `meta` tables of the library's file
 * (src/main/library/database.ts). `db` may be a new object after the library reopened its file,
 * so the queue reads it per statement and never keeps it.
 */
export interface JobDatabase {
  readonly db: Sqlite.Database;
  /** Runs `fn` in one immediate write transaction (refused while the library is read-only). */
  transaction<T>(fn: () => T): T;
  /**
   * A storage failure as the library words it: a damaged database turns the library read-only
   * and gives its StudioError 'storage' (never a generic internal error); a full disk 'disk-full'.
   */
  mapError(err: unknown, what: string): unknown;
}

/**
 * What the queue needs from the library (src/main/library/service.ts): its database, model and
 * image lookups, saving a finished generation, and hearing that the library reopened its file.
 * Lookups fail with a LibraryError whose `reason` says why (library/errors.ts).
 */
export interface JobLibrary {
  readonly database: JobDatabase;
  /** A model by library id or folder path; LibraryError 'unknown-model' / 'model-folder-gone'. */
  resolveModel(idOrPath: string): MaybePromise<ModelEntry & { path: string }>;
  /** An image or upload of the library by id; LibraryError 'unknown-image' when unknown. */
  resolveImage(imageId: string): MaybePromise<ResolvedImage>;
  /**
   * Writes the images durably and their rows (setting the job's generation_id). The library
   * alone decides whether each PNG carries its metadata (the embedMetadata setting).
   */
  saveGeneration(input: SaveGenerationInput): MaybePromise<SaveGenerationResult>;
  /**
   * `listener` runs after the library reopened its database (a restored backup) and finished
   * its start-up on it: the queue recovers the jobs of that file and runs again.
   */
  onReopened(listener: () => void): void;
}
