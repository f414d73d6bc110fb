/**
 * Errors that cross the contract. Every failure a user can meet reaches the studio as one of
 * these codes plus one sentence written for a person; stacks stay in the host's log.
 */
export const errorCodes = [
  'invalid-argument',
  'unknown-method',
  'unauthorized',
  'forbidden',
  'not-found',
  'cancelled',
  'model',
  'engine',
  'storage',
  'disk-full',
  'unavailable',
  'internal',
] as const;

export type ErrorCode = (typeof errorCodes)[number];

export interface ErrorInfo {
  code: ErrorCode;
  message: string;
}

/** The error a StudioApi call rejects with, on either transport. */
export class StudioError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'StudioError';
    this.code = code;
  }

  toJSON(): ErrorInfo {
    return { code: this.code, message: this.message };
  }
}

/** What every call returns on the wire: a value or an error, never a thrown stack. */
export type Envelope<T = unknown> = { ok: true; value: T } | { ok: false; error: ErrorInfo };
