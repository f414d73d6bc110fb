import { EngineError, looksLikeOutOfMemory, shortReason } from './errors';

export interface EngineErrorInfo {
  code: string;
  message: string;
  file?: string;
}

/**
 * Any error of a run, as what crosses the worker boundary: EngineErrors as they are, aborts as
 * `cancelled`, allocation failures as `out-of-memory`, anything else as `internal` with a short
 * reason (no stack).
 */
export function describeEngineError(err: unknown): EngineErrorInfo {
  if (err instanceof EngineError) return err.toJSON();
  const name = (err as { name?: unknown })?.name;
  if (name === 'AbortError') return { code: 'cancelled', message: 'Generation was cancelled.' };
  if (looksLikeOutOfMemory(err)) {
    return {
      code: 'out-of-memory',
      message: 'Ran out of memory: try a smaller size or batch, or another execution provider.',
    };
  }
  return { code: 'internal', message: `The engine failed: ${shortReason(err)}` };
}
