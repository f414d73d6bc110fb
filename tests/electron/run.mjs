// Runs the desktop suite (Playwright's _electron) where the Electron binary is installed.
// CI installs with ELECTRON_SKIP_BINARY_DOWNLOAD=1, so there it prints one line and exits 0;
// the rest of `npm test` still runs.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const electronPath = (() => {
  try {
    return require('electron');
  } catch {
    return null;
  }
})();
if (typeof electronPath !== 'string') {
  console.log(
    'Electron suite skipped: the Electron binary is not installed (npm installed with ELECTRON_SKIP_BINARY_DOWNLOAD=1; run `node node_modules/electron/install.js` with network access to enable it).',
  );
  process.exit(0);
}

const args = ['playwright', 'test', '--config', 'tests/electron/playwright.config.ts'];
const needsDisplay = process.platform === 'linux' && !process.env.DISPLAY;
const cmd = needsDisplay ? 'xvfb-run' : 'npx';
const result = spawnSync(cmd, needsDisplay ? ['-a', 'npx', ...args] : args, { stdio: 'inherit' });
process.exit(result.status ?? 1);
