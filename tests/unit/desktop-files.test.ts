// The desktop shell's ways to bring a checkpoint (issue 11, item 5) that cannot run here (no
// Electron binary), checked statically: the native file picker's options and what main accepts
// from its answer, the navigation policy that keeps a dropped file from replacing the studio,
// and that main, the preload and the window wiring use them.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  acceptPickedFile,
  checkpointDialogOptions,
  pickKind,
} from '../../src/main/electron/file-dialogs';
import { appOrigin, mayNavigate } from '../../src/main/electron/navigation';

const repo = path.resolve(import.meta.dirname, '..', '..');
const source = (file: string) => fs.readFileSync(path.join(repo, file), 'utf8');

describe('the checkpoint file picker', () => {
  it('opens for a checkpoint or a VAE only, one file, filtered to checkpoint files', () => {
    expect(pickKind('checkpoint')).toBe('checkpoint');
    expect(pickKind('vae')).toBe('vae');
    for (const other of ['/etc/passwd', '', null, undefined, { kind: 'vae' }, ['vae']])
      expect(pickKind(other)).toBeNull();
    for (const kind of ['checkpoint', 'vae'] as const) {
      const options = checkpointDialogOptions(kind);
      expect(options.properties).toEqual(['openFile']);
      expect(options.filters).toHaveLength(1);
      expect(options.filters[0]!.extensions).toEqual(
        expect.arrayContaining(['safetensors', 'ckpt', 'pt', 'bin']),
      );
    }
    expect(checkpointDialogOptions('vae').title).toMatch(/VAE/);
    expect(checkpointDialogOptions('checkpoint').title).not.toMatch(/VAE/);
  });

  it('hands back only one absolute checkpoint path the dialog returned', () => {
    const file = path.resolve('/models/dreamshaper_8.safetensors');
    expect(acceptPickedFile({ canceled: false, filePaths: [file] })).toBe(file);
    expect(acceptPickedFile({ canceled: false, filePaths: [path.resolve('/m/v1.CKPT')] })).toBe(
      path.resolve('/m/v1.CKPT'),
    );
    expect(acceptPickedFile({ canceled: true, filePaths: [file] })).toBeNull();
    expect(acceptPickedFile({ canceled: false, filePaths: [] })).toBeNull();
    expect(acceptPickedFile({ canceled: false, filePaths: [file, file] })).toBeNull();
    expect(acceptPickedFile({ canceled: false, filePaths: ['model.safetensors'] })).toBeNull();
    // Around the filter ("All files" on some platforms): not a checkpoint, nothing goes back.
    expect(
      acceptPickedFile({ canceled: false, filePaths: [path.resolve('/etc/passwd')] }),
    ).toBeNull();
  });

  it('is answered in main for our own windows only, with the kind as the only input', () => {
    const ipc = source('src/main/electron/ipc.ts');
    const handler = ipc.slice(ipc.indexOf('ipcMain.handle(ipcPickCheckpointChannel'));
    expect(handler).toMatch(
      /^ipcMain\.handle\(ipcPickCheckpointChannel, async \(event, kindInput: unknown\)/,
    );
    const body = handler.slice(0, handler.indexOf('\n  });'));
    expect(body).toMatch(
      /const kind = pickKind\(kindInput\);\s+if \(!trusted\(event\) \|\| !kind\) return null;/,
    );
    expect(body).toContain('checkpointDialogOptions(kind)');
    expect(body).toMatch(/return acceptPickedFile\(result\);$/);
    expect(ipc).toContain('ipcMain.removeHandler(ipcPickCheckpointChannel)');
    const preload = source('src/preload/index.ts');
    expect(preload).toMatch(
      /ipcRenderer\s*\.invoke\(ipcPickCheckpointChannel, kind === 'vae' \? 'vae' : 'checkpoint'\)/,
    );
    // Dropped files' paths come from webUtils (File.path is gone since Electron 32).
    expect(preload).toContain('webUtils.getPathForFile(file as File)');
    expect(preload).not.toMatch(/\.path\b/);
  });
});

describe('navigation', () => {
  it('stays on the studio’s own pages; a dropped file’s file:// URL is refused', () => {
    expect(mayNavigate(`${appOrigin}/index.html`)).toBe(true);
    expect(mayNavigate(`${appOrigin}/index.html#models`)).toBe(true);
    for (const url of [
      'file:///home/me/Downloads/dreamshaper_8.safetensors',
      'file:///C:/Users/me/model.ckpt',
      'https://civitai.com/models/4384',
      'http://127.0.0.1:7860/',
      'studio://app.evil.example/index.html',
      'studio://app@evil/index.html',
      'studio://apps/index.html',
      'javascript:alert(1)',
      'data:text/html,<h1>x</h1>',
      'not a url',
      '',
    ])
      expect(mayNavigate(url), url).toBe(false);
  });

  it('is applied to every navigation and redirect of every web contents', () => {
    const main = source('src/main/electron/main.ts');
    const created = main.slice(main.indexOf("app.on('web-contents-created'"));
    expect(created).toMatch(
      /contents\.on\('will-navigate', \(event, url\) => \{\s+if \(!mayNavigate\(url\)\) event\.preventDefault\(\);/,
    );
    expect(created).toMatch(
      /contents\.on\('will-redirect', \(event, url\) => \{\s+if \(!mayNavigate\(url\)\) event\.preventDefault\(\);/,
    );
    expect(created).toMatch(/setWindowOpenHandler\([^)]*\) => \{[\s\S]*?action: 'deny'/);
  });
});
