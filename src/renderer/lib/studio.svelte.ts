import type { AppInfo, EngineStatus, Settings, SettingsPatch, StudioApi } from '../../shared';
import { StudioError } from '../../shared';
import { type TransportKind, connectStudio } from './transport';

export type View = 'generate' | 'gallery' | 'models' | 'settings';

/** Turns any failure into words for a person; codes stay available for tests and logs. */
export function describeError(err: unknown): string {
  if (err instanceof StudioError) return err.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** The studio's top-level state. Components read it and call its methods; they hold none. */
export class Studio {
  api: StudioApi | null = null;
  transport = $state<TransportKind | null>(null);
  connected = $state(false);
  view = $state<View>('generate');
  appInfo = $state.raw<AppInfo | null>(null);
  engine = $state.raw<EngineStatus | null>(null);
  settings = $state.raw<Settings | null>(null);
  error = $state<string | null>(null);
  systemDark = $state(false);

  theme = $derived.by(() => {
    const chosen = this.settings?.theme ?? 'system';
    return chosen === 'system' ? (this.systemDark ? 'dark' : 'light') : chosen;
  });

  async start(): Promise<void> {
    const media = window.matchMedia('(prefers-color-scheme: dark)');
    this.systemDark = media.matches;
    media.addEventListener('change', (e) => (this.systemDark = e.matches));
    try {
      const { api, kind } = connectStudio((connected) => (this.connected = connected));
      this.api = api;
      this.transport = kind;
      api.on('engineStatus', (status) => (this.engine = status));
      api.on('settingsChanged', (settings) => (this.settings = settings));
      const [appInfo, engine, settings] = await Promise.all([
        api.getAppInfo(),
        api.getEngineStatus(),
        api.getSettings(),
      ]);
      this.appInfo = appInfo;
      this.engine = engine;
      this.settings = settings;
      this.connected = true;
    } catch (err) {
      this.error = describeError(err);
    }
  }

  async updateSettings(patch: SettingsPatch): Promise<void> {
    if (!this.api) return;
    try {
      this.settings = await this.api.updateSettings(patch);
      this.error = null;
    } catch (err) {
      this.error = describeError(err);
    }
  }
}
