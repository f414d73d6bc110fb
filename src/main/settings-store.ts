import fs from 'node:fs';
import path from 'node:path';
import { Settings, type SettingsPatch, defaultSettings } from '../shared';

/**
 * Settings as one small JSON file, written atomically (temp file, fsync, rename) so a crash
 * mid-write leaves the previous version. A file that does not parse is set aside, not lost.
 */
export class SettingsStore {
  readonly file: string;
  #current: Settings;

  constructor(dataDir: string) {
    this.file = path.join(dataDir, 'settings.json');
    this.#current = this.#load();
  }

  get(): Settings {
    return structuredClone(this.#current);
  }

  update(patch: SettingsPatch): Settings {
    const next = Settings.parse({ ...this.#current, ...patch });
    this.#write(next);
    this.#current = next;
    return this.get();
  }

  #load(): Settings {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch {
      return structuredClone(defaultSettings);
    }
    try {
      const parsed = Settings.safeParse(JSON.parse(text));
      if (parsed.success) return parsed.data;
    } catch {
      // fall through: keep the unreadable file for the user to inspect
    }
    try {
      fs.renameSync(this.file, `${this.file}.corrupt-${Date.now()}`);
    } catch {
      // nothing more we can do; defaults still load
    }
    return structuredClone(defaultSettings);
  }

  #write(value: Settings): void {
    fs.mkdirSync(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.tmp-${process.pid}`;
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, JSON.stringify(value, null, 2));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, this.file);
  }
}
