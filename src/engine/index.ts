/**
 * The engine's public API: what the host (src/main) and the CLI use. Everything else under
 * src/engine is internal.
 */
export { DiffusionEngine } from './engine';
export type {
  EmbeddingRequest,
  EngineOptions,
  GenerateRequest,
  GenerateResult,
  RunOptions,
} from './engine';
export { readEmbeddingFile, type EmbeddingFile } from './adapters/embeddings-file';
export type { UsedEmbedding } from './adapters/embeddings';
export type { LoraReport } from './adapters/lora';
export { EngineClient } from './client';
export type { GenerateProgress, GeneratedImage } from './pipelines/generate';
export type { StageTimings } from './pipelines/stats';
export { EngineError, isEngineError } from './errors';
export type { EngineErrorCode } from './errors';
export { describeEngineError } from './describe-error';
export type { PixelImage, WatermarkCheck, WatermarkMessage } from './image';
export {
  WATERMARK_MESSAGES,
  canWatermark,
  checkWatermark,
  embedWatermark,
  findWatermark,
  watermarkForFamily,
} from './image/watermark';
export {
  openModelFolder,
  detectFamily,
  inspectFolder,
  inspectFolderInWorker,
  inspectionTimedOut,
  loadModel,
  openRegularFile,
  readRegularFileSync,
  UnreadableFileError,
} from './models';
export type {
  FolderInspection,
  ModelInfo,
  LoadedModel,
  FamilyInfo,
  ModelFamily,
  ProviderPreference,
} from './models';
export { getRuntimeInfo } from './runtime';
export { randn, batchNoise, TorchGenerator } from './rng';
export { ClipTokenizer } from './tokenizer';
