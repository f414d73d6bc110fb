import type Sqlite from 'better-sqlite3';
import type { ModelEntry } from '../../shared';
import type {
  ResolvedImage,
  SaveGenerationInput,
  SaveGenerationResult,
  SaveImageInput,
} from '../library/service';

export type { SaveGenerationInput, SaveGenerationResult, SaveImageInput };

type MaybePromise<T> = T | Promise<T>;

/**
 * What the queue needs from the library (src/main/library/service.ts): the database holding the
 * `jobs` and `meta` tables, its write transaction, model and image lookups, and saving a
 * finished generation. An interface so the queue depends on these five members only.
 */
export interface JobLibrary {
  readonly db: Sqlite.Database;
  /** Runs `fn` in one immediate write transaction (refused while the library is read-only). */
  transaction<T>(fn: () => T): T;
  /** A model by library id or folder path; throws StudioError 'not-found' when unknown. */
  resolveModel(idOrPath: string): MaybePromise<ModelEntry & { path: string }>;
  /** An image or upload of the library by id; throws StudioError 'not-found' when unknown. */
  resolveImage(imageId: string): MaybePromise<ResolvedImage>;
  /** Writes the images durably and their rows (setting the job's generation_id). */
  saveGeneration(input: SaveGenerationInput): MaybePromise<SaveGenerationResult>;
}
