// Runs the desktop suite (Playwright's _electron) where the Electron binary is installed.
// CI installs with ELECTRON_SKIP_BINARY_DOWNLOAD=1, so there it prints one line and exits 0;
// the rest of `npm test` still runs.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

// Look for the binary without require('electron'): since Electron 45 that starts a download
// when the binary is missing, which an offline CI must not attempt.
const electronDir = path.join('node_modules', 'electron');
const pathFile = path.join(electronDir, 'path.txt');
const binary = fs.existsSync(pathFile)
  ? path.join(electronDir, 'dist', fs.readFileSync(pathFile, 'utf8').trim())
  : null;
if (!binary || !fs.existsSync(binary)) {
  console.log(
    'Electron suite skipped: the Electron binary is not installed (npm installed with ELECTRON_SKIP_BINARY_DOWNLOAD=1; run `npx install-electron` with network access to enable it).',
  );
  process.exit(0);
}

const args = ['playwright', 'test', '--config', 'tests/electron/playwright.config.ts'];
const needsDisplay = process.platform === 'linux' && !process.env.DISPLAY;
const cmd = needsDisplay ? 'xvfb-run' : 'npx';
const result = spawnSync(cmd, needsDisplay ? ['-a', 'npx', ...args] : args, { stdio: 'inherit' });
process.exit(result.status ?? 1);
