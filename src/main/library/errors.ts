import { type ErrorCode, StudioError } from '../../shared';

/**
 * Why a library lookup or write failed, for callers inside the host that react differently to
 * each (the job queue words an unknown model apart from a model whose folder is gone). The wire
 * sees only the StudioError's code and sentence.
 */
export type LibraryErrorReason =
  /** No model with that id or folder is registered. */
  | 'unknown-model'
  /** The model is registered but its folder is gone. */
  | 'model-folder-gone'
  /** No live image or upload has that id (deleted, missing, never uploaded). */
  | 'unknown-image'
  /** The database failed its integrity check: the library is read-only. */
  | 'read-only';

/** A StudioError with a typed reason; tell errors apart by `reason`, never by the message. */
export class LibraryError extends StudioError {
  constructor(
    readonly reason: LibraryErrorReason,
    code: ErrorCode,
    message: string,
  ) {
    super(code, message);
  }
}

export function isLibraryError(err: unknown, reason: LibraryErrorReason): err is LibraryError {
  return err instanceof LibraryError && err.reason === reason;
}
