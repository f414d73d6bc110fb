import type { AppInfo, EngineStatus, StudioService } from '../shared';
import { getRuntimeInfo } from '../engine/runtime';
import { EventHub } from './events';
import { SettingsStore } from './settings-store';

export interface HostOptions {
  shell: AppInfo['shell'];
  dataDir: string;
  version: string;
  /** Extra version strings to report (Electron's, Chromium's). */
  versions?: Record<string, string>;
}

/**
 * The studio's host: the contract implemented once by composing the services. Both shells
 * (Electron and the headless server) create one of these and bind it to their transport.
 */
export class StudioHost {
  readonly events = new EventHub();
  readonly settings: SettingsStore;
  readonly service: StudioService;
  #engineStatus: EngineStatus;

  constructor(readonly options: HostOptions) {
    this.settings = new SettingsStore(options.dataDir);
    const runtime = getRuntimeInfo();
    this.#engineStatus = {
      state: 'idle',
      onnxruntime: runtime.onnxruntime,
      providers: runtime.providers,
      activeProvider: null,
      fallbackReason: null,
      message: null,
    };

    this.service = {
      getAppInfo: () => this.appInfo(),
      getEngineStatus: () => structuredClone(this.#engineStatus),
      getSettings: () => this.settings.get(),
      updateSettings: (patch) => {
        const next = this.settings.update(patch);
        this.events.emit('settingsChanged', next);
        return next;
      },
    };
  }

  appInfo(): AppInfo {
    return {
      name: 'Latent Studio',
      version: this.options.version,
      shell: this.options.shell,
      platform: process.platform,
      arch: process.arch,
      versions: {
        node: process.versions.node,
        onnxruntime: this.#engineStatus.onnxruntime,
        ...this.options.versions,
      },
      dataDir: this.options.dataDir,
    };
  }

  async close(): Promise<void> {
    // Services with resources (engine worker, database) release them here as they land.
  }
}
