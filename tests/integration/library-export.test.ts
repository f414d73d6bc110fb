// The output-folder setting: validated when it is set (through the host, as the studio sets it),
// and every saved image exported there atomically, byte for byte the library's own file.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { StudioError } from '../../src/shared';
import { openLibrary, saveOne, tempDir } from './library-helpers';

const dirs: string[] = [];
const dir = (prefix: string) => {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function refusal(fn: () => unknown): Promise<StudioError> {
  try {
    await fn();
  } catch (err) {
    if (err instanceof StudioError) return err;
    throw err;
  }
  throw new Error('expected a StudioError');
}

describe('the output folder', () => {
  it('is checked when it is set: absolute, an existing folder, writable', async () => {
    const data = dir('ls-export-host-');
    const host = new StudioHost({ shell: 'headless', dataDir: data, version: '0.0.0-test' });
    try {
      await host.library.ready;
      const file = path.join(data, 'a-file.txt');
      fs.writeFileSync(file, 'x');
      const cases: Array<[string, RegExp]> = [
        ['relative/folder', /must be a full path/],
        [path.join(data, 'no-such-folder'), /does not exist/],
        [file, /is a file, not a folder/],
        // Not writable even for root.
        ['/proc', /cannot write to the output folder \/proc/],
      ];
      for (const [value, sentence] of cases) {
        const err = await refusal(() => host.service.updateSettings({ outputDir: value }));
        expect(err.code, value).toBe('invalid-argument');
        expect(err.message, value).toMatch(sentence);
        // Refused means not stored: the setting keeps its value.
        expect(host.settings.get().outputDir).toBeNull();
      }
      const good = dir('ls-export-out-');
      expect((await host.service.updateSettings({ outputDir: good })).outputDir).toBe(good);
      // The probe file is gone.
      expect(fs.readdirSync(good)).toEqual([]);
      expect((await host.service.updateSettings({ outputDir: null })).outputDir).toBeNull();
    } finally {
      await host.close();
    }
  });

  it('receives every saved image as <id>.png, identical to the library file; unset: nothing', async () => {
    const data = dir('ls-export-lib-');
    const out = dir('ls-export-out-');
    const { library, context } = await openLibrary(data);
    try {
      const before = await saveOne(library, { prompt: 'not exported' });
      expect(fs.readdirSync(out)).toEqual([]);
      context.settings.update({ outputDir: out });
      const saved = await saveOne(library, { prompt: 'exported', seed: 5 }, { images: 3 });
      const names = fs.readdirSync(out).sort();
      // Only the finished files: no temp file is left behind.
      expect(names).toEqual(saved.imageIds.map((id) => `${id}.png`).sort());
      for (const id of saved.imageIds) {
        const own = fs.readFileSync(library.resolveImage(id).file);
        expect(fs.readFileSync(path.join(out, `${id}.png`)).equals(own)).toBe(true);
      }
      expect(names).not.toContain(`${before.imageIds[0]}.png`);

      // The folder removed after it was set: the save still succeeds, the problem is logged.
      fs.rmSync(out, { recursive: true });
      const later = await saveOne(library, { prompt: 'folder gone', seed: 9 });
      expect(library.resolveImage(later.imageIds[0]).file).toBeTruthy();
      expect(fs.existsSync(out)).toBe(false);
      expect(context.logs.join('\n')).toMatch(/output folder .* is not there any more/);
    } finally {
      library.close();
    }
  });
});
