/**
 * Errors the engine reports to its callers.
 *
 * Every `EngineError` carries a machine-readable `code` and a message that is one sentence a
 * person can act on: which file, what is wrong with it. Stack traces and native log lines never
 * go into the message; the original error, when there is one, is kept as `cause`.
 */

export type EngineErrorCode =
  /** A folder or file the model needs is not there. `file` names it. */
  | 'model-missing-file'
  /** A file is there but cannot be read as what it should be (truncated, not ONNX, bad JSON). */
  | 'model-corrupt'
  /** The files are fine but describe a model this engine does not run. */
  | 'model-unsupported'
  /** A graph input or output has a rank, size or dtype other than the engine expects. */
  | 'model-shape'
  /** The caller passed something unusable (bad size, empty image, wrong tensor length). */
  | 'bad-input'
  /** The caller's AbortSignal fired. */
  | 'cancelled'
  /** ONNX Runtime or the host ran out of memory. */
  | 'out-of-memory'
  /** An execution provider could not be used. */
  | 'provider'
  /** ONNX Runtime failed while running a graph. */
  | 'inference'
  /** Anything else: a bug on our side. */
  | 'internal';

export interface EngineErrorOptions {
  /** The file the error is about, relative to the model folder when there is one. */
  file?: string;
  cause?: unknown;
}

export class EngineError extends Error {
  override readonly name = 'EngineError';
  readonly code: EngineErrorCode;
  readonly file?: string;

  constructor(code: EngineErrorCode, message: string, options: EngineErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.file !== undefined) this.file = options.file;
  }

  /** A plain object for crossing a worker or IPC boundary (Error instances lose fields there). */
  toJSON(): { name: 'EngineError'; code: EngineErrorCode; message: string; file?: string } {
    return this.file === undefined
      ? { name: this.name, code: this.code, message: this.message }
      : { name: this.name, code: this.code, message: this.message, file: this.file };
  }
}

export function isEngineError(e: unknown, code?: EngineErrorCode): e is EngineError {
  return e instanceof EngineError && (code === undefined || e.code === code);
}

const MAX_REASON = 240;

/**
 * The useful part of an error thrown by ONNX Runtime (or anything else), as a short single line:
 * no stack, no native source paths, no "Load model from ... failed:" prefix, no colour codes.
 * Absolute paths under `baseDir` are shown relative to it.
 */
export function shortReason(e: unknown, baseDir?: string): string {
  let text: string;
  if (e instanceof Error) text = e.message;
  else if (typeof e === 'string') text = e;
  else text = String(e);
  // First line only: ORT appends native log text after a newline, Node appends stacks.
  text = text.split(/\r?\n/).find((l) => l.trim() !== '') ?? '';
  text = text
    // ANSI colour escapes from the native logger.
    .replace(new RegExp(String.fromCharCode(27) + '\\[[0-9;]*m', 'g'), '')
    // "Load model from /x/model.onnx failed:" prefix; the caller names the file itself.
    .replace(/^Load model from .*? failed:\s*/, '')
    .replace(/^Load model .*? failed\.\s*/, '')
    // Native source locations: "/onnxruntime_src/.../file.cc:136 ".
    .replace(/\S*\/onnxruntime_src\/\S+:\d+\s+/g, '')
    // C++ signatures that follow those locations: "void* onnxruntime::BFCArena::Alloc(size_t, bool) ".
    .replace(/(\b[\w*&<>]+\s+)?\b\w+(::~?\w+)+\([^)]*\)(::<lambda\(\)>)?\s*/g, '')
    .replace(/\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*(\w+\s*:\s*)?/g, '')
    .trim();
  // ORT_ENFORCE failures read "<C++ function> <condition> was false. <message>": keep the message.
  const enforced = /\bwas false\.\s*(\S.*)$/.exec(text);
  if (enforced) text = enforced[1];
  if (baseDir) {
    const base = baseDir.endsWith('/') || baseDir.endsWith('\\') ? baseDir : baseDir + '/';
    text = text.split(base).join('');
  }
  if (text.length > MAX_REASON) text = text.slice(0, MAX_REASON - 1).trimEnd() + '…';
  return text.replace(/[.\s]+$/, '') || 'unknown error';
}

/** True when an error's text says memory ran out (ORT's BFC arena, CUDA, DirectML, V8). */
export function looksLikeOutOfMemory(e: unknown): boolean {
  const text = e instanceof Error ? e.message : String(e);
  return /out of memory|failed to allocate memory|bad_alloc|E_OUTOFMEMORY|CUDNN_STATUS_ALLOC_FAILED|allocation failed/i.test(
    text,
  );
}

/**
 * Wrap an error thrown while ONNX Runtime created a session from `file` (relative to the model
 * folder, e.g. "unet/model.onnx") into an EngineError whose message names the file.
 */
export function wrapSessionCreateError(
  e: unknown,
  file: string,
  context: { baseDir?: string; provider?: string } = {},
): EngineError {
  if (e instanceof EngineError) return e;
  const reason = shortReason(e, context.baseDir);
  if (looksLikeOutOfMemory(e)) {
    return new EngineError(
      'out-of-memory',
      `Not enough memory to load ${file}${context.provider ? ` on ${context.provider}` : ''} (onnxruntime: ${reason}).`,
      { file, cause: e },
    );
  }
  if (/protobuf parsing failed|invalid model|model_proto|ModelProto|no graph/i.test(reason)) {
    return new EngineError(
      'model-corrupt',
      `${file} is truncated or not an ONNX model (onnxruntime: ${reason}).`,
      { file, cause: e },
    );
  }
  if (/doesn't exist|does not exist|no such file|cannot open|failed to open/i.test(reason)) {
    return new EngineError(
      'model-missing-file',
      `${file} or a weights file it refers to is missing (onnxruntime: ${reason}).`,
      { file, cause: e },
    );
  }
  if (/external (data|initializer)|exceeds? file|out of bounds|offset/i.test(reason)) {
    return new EngineError(
      'model-corrupt',
      `The external weights of ${file} are truncated or do not match it (onnxruntime: ${reason}).`,
      { file, cause: e },
    );
  }
  if (
    /opset|not implemented|not supported|unsupported|no kernel|could not find an implementation/i.test(
      reason,
    )
  ) {
    return new EngineError(
      'model-unsupported',
      `${file} uses something this ONNX Runtime cannot run (onnxruntime: ${reason}).`,
      { file, cause: e },
    );
  }
  return new EngineError('model-corrupt', `${file} could not be loaded (onnxruntime: ${reason}).`, {
    file,
    cause: e,
  });
}

/** Wrap an error thrown by `session.run` for the component stored in `file`. */
export function wrapRunError(e: unknown, file: string): EngineError {
  if (e instanceof EngineError) return e;
  const reason = shortReason(e);
  if (looksLikeOutOfMemory(e)) {
    return new EngineError(
      'out-of-memory',
      `Ran out of memory while running ${file} (onnxruntime: ${reason}).`,
      {
        file,
        cause: e,
      },
    );
  }
  if (
    /invalid rank|got invalid dimensions|unexpected input data type|input .* not found|invalid input name/i.test(
      reason,
    )
  ) {
    return new EngineError('model-shape', `${file} rejected its inputs (onnxruntime: ${reason}).`, {
      file,
      cause: e,
    });
  }
  return new EngineError('inference', `Running ${file} failed (onnxruntime: ${reason}).`, {
    file,
    cause: e,
  });
}

/** Throw `cancelled` if the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what = 'The operation'): void {
  if (signal?.aborted) throw new EngineError('cancelled', `${what} was cancelled.`);
}
