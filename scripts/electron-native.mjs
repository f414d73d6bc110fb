// Before `electron .` from a checkout: better-sqlite3 in node_modules is built for Node's ABI
// (the tests and the headless server run on Node), and Electron cannot load it. Rather than
// rebuilding it in place (which would break the Node side), keep a second build for this
// Electron version in .cache/electron-native/, which the Electron main process loads through
// better-sqlite3's `nativeBinding` option. Packaged apps don't need this: electron-builder
// rebuilds native modules for Electron.
//
// It needs the network once (a prebuilt binary from better-sqlite3's releases, or Electron's
// headers for a source build), and so does Electron itself: since Electron 45 its binary is no
// longer fetched by `npm install` but on first use. So `npm install` runs this script
// (`--postinstall`), when the network is there anyway: it fetches Electron's binary, then makes
// the build, and the later `npm start` works offline. In that mode it never fails the install:
// with ELECTRON_SKIP_BINARY_DOWNLOAD=1 (as in CI) it skips, and when a download or the build
// fails it says so and `npm start` tries again.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const postinstall = process.argv.includes('--postinstall');
// `npm start` runs `--check` before anything else: where Electron's binary is missing and cannot
// be fetched, it says so in one line (and what to do instead) rather than building first and
// ending in Electron's own stack trace.
const check = process.argv.includes('--check');
const offlineHint =
  'connect to the network once and run `npm start` again, or run `npm run serve` to open the studio in a browser.';
// Not require('electron'): since Electron 45 that starts a download when the binary is
// missing, and throws when it fails; its own install.js reports instead.
const electronDir = path.join('node_modules', 'electron');
const pathFile = path.join(electronDir, 'path.txt');
const installed = () =>
  fs.existsSync(pathFile) &&
  fs.existsSync(path.join(electronDir, 'dist', fs.readFileSync(pathFile, 'utf8').trim()));
if (postinstall) {
  const skip = process.env.ELECTRON_SKIP_BINARY_DOWNLOAD;
  if (skip && skip !== '0' && skip !== 'false') {
    console.error(
      'ELECTRON_SKIP_BINARY_DOWNLOAD is set: skipping Electron and better-sqlite3 for Electron (`npm start` prepares them).',
    );
    process.exit(0);
  }
}
if ((postinstall || check) && !installed()) {
  console.error("Downloading Electron's binary (once)...");
  // Its output is a stack trace when the download fails; the line below says what matters.
  const r = spawnSync(process.execPath, [path.join(electronDir, 'install.js')], {
    stdio: postinstall ? 'inherit' : 'ignore',
  });
  if (!installed()) {
    const why = r.error ? `(${r.error.message})` : '(no network?)';
    console.error(`Electron's binary could not be downloaded ${why}: ${offlineHint}`);
    process.exit(postinstall ? 0 : 1);
  }
}
if (check) process.exit(0);

const electronPkg = JSON.parse(fs.readFileSync('node_modules/electron/package.json', 'utf8'));
const version = electronPkg.version;
const arch = process.env.npm_config_arch || process.arch;
const target = path.join(
  '.cache',
  'electron-native',
  `${version}-${process.platform}-${arch}`,
  'better_sqlite3.node',
);
if (fs.existsSync(target)) process.exit(0);

console.error(`Preparing better-sqlite3 for Electron ${version} (once)...`);
const work = path.join('.cache', 'electron-native', 'build');
fs.rmSync(work, { recursive: true, force: true });
fs.cpSync(path.join('node_modules', 'better-sqlite3'), work, {
  recursive: true,
  filter: (src) => !src.includes(`${path.sep}build${path.sep}`),
});
fs.rmSync(path.join(work, 'build'), { recursive: true, force: true });

const bin = (name) =>
  path.resolve('node_modules', '.bin', process.platform === 'win32' ? `${name}.cmd` : name);
const run = (cmd, args) =>
  spawnSync(cmd, args, { cwd: work, stdio: 'inherit', shell: process.platform === 'win32' })
    .status === 0;
// A prebuilt binary for this Electron ABI when one is published, else a source build against
// Electron's headers.
const ok =
  run(bin('prebuild-install'), ['--runtime', 'electron', '--target', version, '--arch', arch]) ||
  run(bin('node-gyp'), [
    'rebuild',
    '--release',
    `--target=${version}`,
    `--arch=${arch}`,
    '--dist-url=https://electronjs.org/headers',
  ]);
const built = path.join(work, 'build', 'Release', 'better_sqlite3.node');
if (!ok || !fs.existsSync(built)) {
  console.error(
    `Could not build better-sqlite3 for Electron (it needs the network once, and python3, make and a C++ compiler): ${offlineHint}`,
  );
  process.exit(postinstall ? 0 : 1);
}
fs.mkdirSync(path.dirname(target), { recursive: true });
fs.copyFileSync(built, target);
fs.rmSync(work, { recursive: true, force: true });
console.error(`Ready: ${target}`);
