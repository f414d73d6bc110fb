import { type ErrorCode, StudioError } from '../../shared';

/** Why a download stopped, for the queue's decisions (retry, pause, fail). */
export type DownloadFailure =
  /** No or a refused token (HTTP 401). */
  | 'unauthorized'
  /** Gated or forbidden (HTTP 403). */
  | 'forbidden'
  | 'not-found'
  /** Still limited after the retries (HTTP 429). */
  | 'rate-limited'
  /** The connection failed or kept dropping. */
  | 'network'
  /** The server answered with something this client cannot use (5xx, a bad API document). */
  | 'server'
  /** The bytes did not match the size or hash the Hub published. */
  | 'verification'
  /** Verified files the studio cannot use (an update whose model folder does not load). */
  | 'unusable'
  /** A name or request that cannot be honoured (a hostile path, a bad repo id). */
  | 'bad-input'
  | 'disk-full'
  | 'cancelled';

const studioCodes: Record<DownloadFailure, ErrorCode> = {
  unauthorized: 'unauthorized',
  forbidden: 'forbidden',
  'not-found': 'not-found',
  'rate-limited': 'unavailable',
  network: 'unavailable',
  server: 'unavailable',
  verification: 'model',
  unusable: 'model',
  'bad-input': 'invalid-argument',
  'disk-full': 'disk-full',
  cancelled: 'cancelled',
};

/**
 * A download that could not go on, with one sentence for a person (`message`) and its reason
 * for the code. It is a StudioError, so it crosses the contract as it is.
 */
export class DownloadError extends StudioError {
  constructor(
    readonly failure: DownloadFailure,
    message: string,
  ) {
    super(studioCodes[failure], message);
    this.name = 'DownloadError';
  }
}

export function isDownloadError(err: unknown, failure?: DownloadFailure): err is DownloadError {
  return err instanceof DownloadError && (failure === undefined || err.failure === failure);
}
