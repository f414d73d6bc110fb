import type * as ort from 'onnxruntime-node';
import type { ComponentSession } from '../models';

/** Wall time per pipeline stage, plus the time spent inside ONNX Runtime itself. */
export interface StageTimings {
  loadMs: number;
  textMs: number;
  encodeMs: number;
  denoiseMs: number;
  decodeMs: number;
  totalMs: number;
  /** Sum of the raw session.run calls: total / this is the engine's overhead. */
  sessionRunMs: number;
  sessionRuns: number;
}

export function emptyTimings(): StageTimings {
  return {
    loadMs: 0,
    textMs: 0,
    encodeMs: 0,
    denoiseMs: 0,
    decodeMs: 0,
    totalMs: 0,
    sessionRunMs: 0,
    sessionRuns: 0,
  };
}

/** Runs a session and books the time ONNX Runtime took. */
export async function timedRun(
  timings: StageTimings,
  component: ComponentSession,
  feeds: Record<string, ort.Tensor>,
  signal?: AbortSignal,
): Promise<Record<string, ort.Tensor>> {
  const started = performance.now();
  try {
    return await component.run(feeds, signal);
  } finally {
    timings.sessionRunMs += performance.now() - started;
    timings.sessionRuns += 1;
  }
}
