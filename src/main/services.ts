import type { EngineStatus, MethodName, StudioService } from '../shared';
import type { SecretEncryptor } from './downloads/token';
import type { EventHub } from './events';
import type { SettingsStore } from './settings-store';

export const libraryMethodNames = [
  'listModels',
  'addModel',
  'removeModel',
  'countTokens',
  'uploadImage',
  'getImage',
  'searchGallery',
  'getGeneration',
  'setFavorite',
  'setRating',
  'setTags',
  'deleteImages',
  'undoDelete',
  'revealImage',
  'getLibraryStatus',
  'restoreBackup',
] as const satisfies readonly MethodName[];

export const jobMethodNames = [
  'enqueue',
  'getQueue',
  'pauseQueue',
  'resumeQueue',
  'cancelJob',
  'cancelAll',
  'moveJob',
] as const satisfies readonly MethodName[];

export type LibraryMethods = Pick<StudioService, (typeof libraryMethodNames)[number]>;
export type JobMethods = Pick<StudioService, (typeof jobMethodNames)[number]>;

/** What the desktop shell can do that the headless one cannot. */
export interface DesktopIntegration {
  /** Moves files to the OS trash (Electron's shell.trashItem). */
  trash(file: string): Promise<void>;
  /** Shows a file in the OS file manager (shell.showItemInFolder). */
  reveal(file: string): void;
  /** Encrypts secrets (the Hub token) for this user (Electron's safeStorage). */
  secrets?: SecretEncryptor;
}

/** Everything a service gets from the host that composes it. */
export interface HostContext {
  dataDir: string;
  /** Folder holding the app's resources (the built-in models under models/). */
  resourcesDir: string | null;
  /** The bundled engine worker (out/main/engine-worker.mjs). */
  workerPath: string | null;
  /** better-sqlite3 binary built for Electron's ABI, when running Electron from a checkout. */
  sqliteNativeBinding: string | null;
  desktop: DesktopIntegration | null;
  events: EventHub;
  settings: SettingsStore;
  /** Merges into the engine status and broadcasts it. */
  updateEngineStatus(patch: Partial<EngineStatus>): void;
  log(line: string): void;
}
