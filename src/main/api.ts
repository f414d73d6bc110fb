import {
  type AppInfo,
  type EngineStatus,
  type StudioService,
  StudioError,
  previewDecoderFile,
  safetyCheckerFile,
} from '../shared';
import { checkWatermarkFile } from './images/watermark';
import { getRuntimeInfo } from '../engine/runtime';
import { NetworkService } from './adapters/service';
import { DownloadService } from './downloads/service';
import { EventHub } from './events';
import { JobService } from './jobs/service';
import { outputDirProblem } from './library/export';
import { checkerFileProblem, contentFilterStatus } from './jobs/content-filter';
import { Library } from './library/service';
import { CheckpointImports } from './models/imports';
import { VaeService, vaeFolderProblem } from './models/vaes';
import { ControlNetService, controlNetFolderProblem } from './models/controlnets';
import { previewDecoderStatus } from './models/taesd';
import type { DesktopIntegration, HostContext } from './services';
import { SettingsStore } from './settings-store';

export interface HostOptions {
  shell: AppInfo['shell'];
  dataDir: string;
  version: string;
  /** Extra version strings to report (Electron's, Chromium's). */
  versions?: Record<string, string>;
  resourcesDir?: string | null;
  workerPath?: string | null;
  sqliteNativeBinding?: string | null;
  desktop?: DesktopIntegration | null;
  log?: (line: string) => void;
}

/**
 * The studio's host: the contract implemented once by composing the services (settings,
 * library, jobs). Both shells (Electron and the headless server) create one of these and bind
 * it to their transport.
 */
export class StudioHost {
  readonly events = new EventHub();
  readonly settings: SettingsStore;
  readonly library: Library;
  readonly jobs: JobService;
  readonly imports: CheckpointImports;
  readonly vaes: VaeService;
  readonly controlNets: ControlNetService;
  readonly networks: NetworkService;
  readonly downloads: DownloadService;
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
    const context: HostContext = {
      dataDir: options.dataDir,
      resourcesDir: options.resourcesDir ?? null,
      workerPath: options.workerPath ?? null,
      sqliteNativeBinding: options.sqliteNativeBinding ?? null,
      desktop: options.desktop ?? null,
      events: this.events,
      settings: this.settings,
      updateEngineStatus: (patch) => {
        this.#engineStatus = { ...this.#engineStatus, ...patch };
        this.events.emit('engineStatus', structuredClone(this.#engineStatus));
      },
      log: options.log ?? ((line) => console.error(line)),
    };
    this.library = new Library(context);
    this.networks = new NetworkService(options.dataDir, () => this.settings.get());
    this.jobs = new JobService(context, this.library, { networks: this.networks });
    this.imports = new CheckpointImports(context, (folder) => this.library.addModel(folder));
    this.vaes = new VaeService(context);
    this.controlNets = new ControlNetService(context, (id) => this.library.resolveImage(id));
    this.downloads = new DownloadService(context, this.library, this.imports, {
      // VAE and ControlNet folders are read at each listing; LoRAs and embeddings are cached.
      forgetListing: (kind) => {
        if (kind === 'lora' || kind === 'embedding') this.networks.settingsChanged();
      },
    });
    // Downloads a quit interrupted continue once the library has finished its start-up.
    void this.library.ready
      .then(() => {
        if (!this.library.database.closed && !this.library.database.readOnly)
          this.downloads.start();
      })
      .catch((err: unknown) => context.log(`downloads: ${(err as Error).message}`));

    this.service = {
      getAppInfo: () => this.appInfo(),
      getEngineStatus: () => structuredClone(this.#engineStatus),
      getSettings: () => this.settings.get(),
      getContentFilterStatus: () => contentFilterStatus(this.settings.get(), options.dataDir),
      downloadContentFilterModel: () => this.downloads.startFile(safetyCheckerFile),
      getPreviewDecoders: () => previewDecoderStatus(options.dataDir),
      downloadPreviewDecoders: async () => {
        const entries = [];
        for (const s of await previewDecoderStatus(options.dataDir))
          if (!s.present)
            entries.push(await this.downloads.startFile(previewDecoderFile(s.variant)));
        return entries;
      },
      updateSettings: (patch) => {
        // Checked when it is set, so a folder that cannot take images is refused at once.
        const problem =
          (patch.outputDir ? outputDirProblem(patch.outputDir) : null) ??
          (patch.vaeDir ? vaeFolderProblem(patch.vaeDir) : null) ??
          (patch.contentFilterModel ? checkerFileProblem(patch.contentFilterModel) : null) ??
          (patch.controlnetDir ? controlNetFolderProblem(patch.controlnetDir) : null);
        if (problem) throw new StudioError('invalid-argument', problem);
        const next = this.settings.update(patch);
        this.events.emit('settingsChanged', next);
        this.jobs.settingsChanged(next);
        if ('loraDir' in patch || 'embeddingsDir' in patch) this.networks.settingsChanged();
        return next;
      },
      ...this.networks.methods,
      ...this.library.methods,
      ...({
        checkWatermark: async ({ imageId }) =>
          checkWatermarkFile(this.library.resolveImage(imageId).file),
      } satisfies Pick<StudioService, 'checkWatermark'>),
      ...this.jobs.methods,
      ...this.imports.methods,
      ...this.vaes.methods,
      ...({
        listControlNets: () => this.controlNets.list(),
        previewControlImage: (input) => this.controlNets.preview(input),
      } satisfies Pick<StudioService, 'listControlNets' | 'previewControlImage'>),
      ...this.downloads.methods,
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

  /**
   * The desktop shell's report that no studio window is focused (or one is again): with
   * Settings' `backgroundMode` 'gentle' the engine yields the CPU meanwhile. The headless server
   * never calls it: its studio is a browser tab, perhaps on another machine.
   */
  setBackground(background: boolean): void {
    this.jobs.setBackground(background);
  }

  /**
   * The desktop shell's report that the machine went on battery (or back on mains power): with
   * Settings' `backgroundMode` 'gentle', models loaded meanwhile do not spin their idle threads.
   * The headless server never calls it (a server's power is not the person's laptop).
   */
  setOnBattery(onBattery: boolean): void {
    this.jobs.setOnBattery(onBattery);
  }

  /** Stops the queue (letting the step in flight finish), then closes the library. */
  async close(): Promise<void> {
    await this.jobs.close();
    await this.downloads.close();
    this.library.close();
  }
}
