// scripts/electron-native.mjs keeps an Electron-ABI build of better-sqlite3 beside the Node one.
// `npm install` runs it with --postinstall (the network is there then), `npm start` without. The
// build itself needs Electron's binary and the network, neither of which CI has; what is checked
// here is what decides whether it runs: ELECTRON_SKIP_BINARY_DOWNLOAD -> the install goes on
// without touching the network; a build for this Electron version already made -> nothing to
// do, in either mode. (Without the variable and without a binary it would download Electron,
// which a test must not.)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const script = path.resolve(import.meta.dirname, '../../scripts/electron-native.mjs');
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function project(withElectron: boolean): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-native-'));
  dirs.push(dir);
  const electron = path.join(dir, 'node_modules', 'electron');
  fs.mkdirSync(electron, { recursive: true });
  fs.writeFileSync(path.join(electron, 'package.json'), JSON.stringify({ version: '45.1.0' }));
  if (withElectron) {
    fs.writeFileSync(path.join(electron, 'path.txt'), 'electron');
    fs.mkdirSync(path.join(electron, 'dist'));
    fs.writeFileSync(path.join(electron, 'dist', 'electron'), '');
  }
  return dir;
}

const run = (cwd: string, args: string[], env: Record<string, string> = {}) => {
  const base = { ...process.env };
  delete base.ELECTRON_SKIP_BINARY_DOWNLOAD;
  return spawnSync(process.execPath, [script, ...args], {
    cwd,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...base, ...env },
  });
};

describe('scripts/electron-native.mjs', () => {
  it('lets npm install go on, offline, with ELECTRON_SKIP_BINARY_DOWNLOAD=1', () => {
    const dir = project(false);
    const r = run(dir, ['--postinstall'], { ELECTRON_SKIP_BINARY_DOWNLOAD: '1' });
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/ELECTRON_SKIP_BINARY_DOWNLOAD is set: skipping Electron/);
    expect(r.stderr).not.toMatch(/Downloading/);
    expect(fs.existsSync(path.join(dir, '.cache'))).toBe(false);
  });

  it('does nothing when the build for this Electron version is there, in both modes', () => {
    const dir = project(true);
    const built = path.join(
      dir,
      '.cache',
      'electron-native',
      `45.1.0-${process.platform}-${process.arch}`,
      'better_sqlite3.node',
    );
    fs.mkdirSync(path.dirname(built), { recursive: true });
    fs.writeFileSync(built, 'built before');
    for (const args of [['--postinstall'], []]) {
      const r = run(dir, args);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stderr).toBe('');
      expect(fs.readFileSync(built, 'utf8')).toBe('built before');
    }
  });

  it('--check (first in `npm start`) says in one line what to do when Electron cannot be fetched', () => {
    const dir = project(false);
    // Electron's install.js as it behaves offline: a stack trace and exit code 1.
    fs.writeFileSync(
      path.join(dir, 'node_modules', 'electron', 'install.js'),
      "console.error(new Error('getaddrinfo ENOTFOUND github.com').stack); process.exit(1);",
    );
    const r = run(dir, ['--check']);
    expect(r.status).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual([
      "Downloading Electron's binary (once)...",
      expect.stringMatching(/could not be downloaded .*`npm start` again, or run `npm run serve`/),
    ]);
    expect(r.stderr).not.toMatch(/ENOTFOUND|at /);
    expect(fs.existsSync(path.join(dir, '.cache'))).toBe(false);
  });

  it('--check passes at once when the binary is there, and builds nothing', () => {
    const dir = project(true);
    const r = run(dir, ['--check']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(fs.existsSync(path.join(dir, '.cache'))).toBe(false);
  });
});
