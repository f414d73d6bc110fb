import type { z } from 'zod';
import {
  type Envelope,
  type ErrorCode,
  type StudioService,
  StudioError,
  isMethodName,
  studioMethods,
} from '../shared';

/** Turns a zod failure into one sentence that names the offending field. */
export function describeIssues(error: z.ZodError): string {
  const first = error.issues[0];
  if (!first) return 'The request was not valid.';
  const where = first.path.length ? ` "${first.path.join('.')}"` : '';
  const more = error.issues.length > 1 ? ` (and ${error.issues.length - 1} more problem(s))` : '';
  return `Invalid argument${where}: ${first.message.replace(/\.$/, '')}${more}.`;
}

/** Maps anything thrown inside the host to the wire's error shape, keeping stacks out of it. */
export function toErrorInfo(err: unknown): { code: ErrorCode; message: string } {
  if (err instanceof StudioError) return { code: err.code, message: err.message };
  if (err && typeof err === 'object') {
    const e = err as { name?: unknown; code?: unknown; message?: unknown };
    if (e.name === 'AbortError') return { code: 'cancelled', message: 'Cancelled.' };
    if (e.code === 'ENOSPC')
      return { code: 'disk-full', message: 'The disk is full: free some space and try again.' };
  }
  return { code: 'internal', message: 'Something went wrong inside Latent Studio.' };
}

export interface DispatchOptions {
  /** Called with errors that are not StudioErrors, so the host can log their stacks. */
  onUnexpectedError?: (method: string, err: unknown) => void;
}

/**
 * The single entry of both transports: checks the method name against the contract,
 * validates the input with its schema, runs the service, and wraps the outcome.
 */
export async function dispatch(
  service: StudioService,
  method: unknown,
  rawInput: unknown,
  options: DispatchOptions = {},
): Promise<Envelope> {
  if (!isMethodName(method)) {
    return {
      ok: false,
      error: {
        code: 'unknown-method',
        message: `Unknown method "${String(method).slice(0, 100)}".`,
      },
    };
  }
  const parsed = studioMethods[method].input.safeParse(rawInput);
  if (!parsed.success) {
    return {
      ok: false,
      error: { code: 'invalid-argument', message: describeIssues(parsed.error) },
    };
  }
  try {
    const impl = service[method] as (input: unknown) => unknown;
    const value = await impl.call(service, parsed.data);
    return { ok: true, value };
  } catch (err) {
    if (!(err instanceof StudioError)) options.onUnexpectedError?.(method, err);
    return { ok: false, error: toErrorInfo(err) };
  }
}
