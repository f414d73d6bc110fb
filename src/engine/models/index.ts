export * from './types';
export { openModelFolder, readJsonFile } from './folder';
export { detectFamily } from './family';
export {
  answerInspection,
  inspectFolder,
  inspectFolderInWorker,
  inspectionTimedOut,
  type FolderInspection,
} from './inspect';
export {
  fileLimits,
  openRegularFile,
  readRegularFileSync,
  UnreadableFileError,
  type FileKind,
} from './safe-read';
export {
  readOnnxHeader,
  OnnxFormatError,
  type OnnxHeader,
  type ExternalDataRef,
} from './onnx-file';
export {
  signatureFromSession,
  validateSignature,
  findInput,
  findOutput,
  staticDim,
} from './signature';
export {
  chooseProviders,
  createSession,
  physicalCoreCount,
  resetProviderFailures,
  sessionOptions,
  type CreatedSession,
  type ProviderName,
  type ProviderPreference,
  type SessionOptionsInput,
} from './providers';
export { SessionCache, sessionCache, type SessionKey } from './session-cache';
export {
  componentSession,
  loadModel,
  type ComponentSession,
  type LoadedModel,
  type LoadOptions,
} from './load';
