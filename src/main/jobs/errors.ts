import { EngineError, type EngineErrorCode } from '../../engine';
import { StudioError } from '../../shared';

/** Why a job failed, as stored on the job and shown in the queue. */
export interface JobFailure {
  /** An engine code (model-corrupt, out-of-memory, ...) or a contract code (not-found, ...). */
  code: string;
  /** One sentence a person can act on. */
  message: string;
}

const sentence = (text: string) => (/[.!?]$/.test(text.trim()) ? text.trim() : `${text.trim()}.`);

const engineSentences: Record<EngineErrorCode, (message: string, model: string) => string> = {
  'model-missing-file': (m, model) => `The model ${model} is missing a file: ${m}`,
  'model-corrupt': (m, model) => `The model ${model} is damaged: ${m}`,
  'model-unsupported': (m, model) => `The model ${model} cannot be used for this: ${m}`,
  'model-shape': (m, model) =>
    `The model ${model} is laid out differently from what the engine expects: ${m}`,
  'bad-input': (m) => `These settings cannot be used: ${m}`,
  cancelled: () => 'The job was cancelled.',
  'out-of-memory': (m) =>
    /try a smaller/i.test(m)
      ? m
      : `${sentence(m)} Try a smaller size or batch, or another execution provider.`,
  provider: (m) => `The execution provider could not be used: ${m}`,
  inference: (m) => `The engine failed while generating: ${m}`,
  internal: (m) => m,
};

/** Any error of a job's run as a code and one sentence. `model` names the model, quoted. */
export function describeJobFailure(err: unknown, modelName?: string | null): JobFailure {
  const model = modelName ? `"${modelName}"` : 'of this job';
  if (err instanceof StudioError) return { code: err.code, message: sentence(err.message) };
  if (err instanceof EngineError) {
    const describe = engineSentences[err.code] ?? engineSentences.internal;
    return { code: err.code, message: sentence(describe(err.message, model)) };
  }
  const e = err as { code?: unknown; message?: unknown; name?: unknown } | null;
  if (e?.code === 'ENOSPC' || e?.code === 'EDQUOT' || e?.code === 'SQLITE_FULL')
    return {
      code: 'disk-full',
      message: 'The disk is full: the images of this job could not be saved.',
    };
  if (e?.name === 'AbortError') return { code: 'cancelled', message: 'The job was cancelled.' };
  const reason = typeof e?.message === 'string' ? e.message.split('\n')[0] : String(err);
  return {
    code: 'internal',
    message: sentence(`Something went wrong running this job: ${reason}`),
  };
}

/**
 * A SQLite error of a queue write, as a StudioError: a read-only library (failed integrity
 * check) or a full disk get their own sentences; anything else is rethrown as is.
 */
export function storageError(err: unknown): never {
  const code = (err as { code?: unknown } | null)?.code;
  if (
    code === 'SQLITE_READONLY' ||
    (typeof code === 'string' && code.startsWith('SQLITE_READONLY'))
  )
    throw new StudioError(
      'storage',
      'The library is read-only after a failed integrity check: restore the backup before changing the queue.',
    );
  if (code === 'SQLITE_FULL')
    throw new StudioError('disk-full', 'The disk is full: free some space and try again.');
  throw err;
}
