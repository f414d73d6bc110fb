import type { EngineOptions, GenerateRequest, GenerateResult } from './engine';
import type { BackgroundState } from './models/priority';
import type { GenerateProgress } from './pipelines/generate';

/** Messages from the host to the engine worker. */
export type ToWorker =
  | { type: 'generate'; id: number; request: GenerateRequest }
  | { type: 'cancel'; id: number }
  | { type: 'configure'; options: EngineOptions }
  /** Whether the studio is in the background, and the person's setting (models/priority.ts). */
  | { type: 'background'; state: BackgroundState }
  | { type: 'release'; id: number }
  /** Cancel everything, let the step in flight finish, release sessions, end the thread. */
  | { type: 'shutdown' };

/** Messages from the engine worker to the host. */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'progress'; id: number; progress: GenerateProgress }
  | { type: 'result'; id: number; result: GenerateResult }
  | { type: 'released'; id: number }
  /** The engine's threads could not follow a background change (raising priority refused). */
  | { type: 'notice'; message: string }
  | { type: 'error'; id: number; error: { code: string; message: string; file?: string } };
