import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SettingsStore } from '../../src/main/settings-store';
import { defaultSettings } from '../../src/shared';

let dir: string;
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));
const fresh = () => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-settings-')));

describe('SettingsStore', () => {
  it('starts from defaults and persists updates across instances', () => {
    fresh();
    const a = new SettingsStore(dir);
    expect(a.get()).toEqual(defaultSettings);
    a.update({ theme: 'dark', embedMetadata: false });
    expect(new SettingsStore(dir).get()).toMatchObject({
      theme: 'dark',
      embedMetadata: false,
      threads: 0,
    });
    expect(fs.readdirSync(dir)).toEqual(['settings.json']);
  });

  it('sets a corrupt file aside instead of crashing or overwriting it silently', () => {
    fresh();
    fs.writeFileSync(path.join(dir, 'settings.json'), '{"theme": "dark", ');
    const s = new SettingsStore(dir);
    expect(s.get()).toEqual(defaultSettings);
    const kept = fs.readdirSync(dir).filter((f) => f.startsWith('settings.json.corrupt-'));
    expect(kept).toHaveLength(1);
    expect(fs.readFileSync(path.join(dir, kept[0]), 'utf8')).toBe('{"theme": "dark", ');
  });

  it('keeps unknown-but-valid older files loading with defaults for new fields', () => {
    fresh();
    fs.writeFileSync(path.join(dir, 'settings.json'), JSON.stringify({ theme: 'light' }));
    expect(new SettingsStore(dir).get()).toEqual({ ...defaultSettings, theme: 'light' });
  });

  it('keeps the LoRA and embeddings folders: absolute paths, null for the data folder defaults', () => {
    fresh();
    const s = new SettingsStore(dir);
    expect(s.get()).toMatchObject({ loraDir: null, embeddingsDir: null });
    s.update({ loraDir: '/srv/sd/models/Lora', embeddingsDir: 'C:\\sd\\embeddings' });
    expect(new SettingsStore(dir).get()).toMatchObject({
      loraDir: '/srv/sd/models/Lora',
      embeddingsDir: 'C:\\sd\\embeddings',
    });
    expect(() => s.update({ loraDir: 'models/Lora' })).toThrow(
      'Give the folder as an absolute path (starting with / or a drive letter).',
    );
    expect(s.get().loraDir).toBe('/srv/sd/models/Lora');
    s.update({ loraDir: null });
    expect(s.get().loraDir).toBeNull();
  });
});
