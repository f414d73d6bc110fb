// Builds the app into out/: the Svelte renderer with Vite, and the Node-side bundles (Electron
// main, preload, headless server, CLI, engine worker) with esbuild. See README "Development"
// for why two tools. Benchmarks live in tools/bench/ and scripts/run-tool.mjs bundles them.
import { build as esbuild } from 'esbuild';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { build as viteBuild } from 'vite';

const nodeOnly = process.argv.includes('--node-only');
const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
const define = { __APP_VERSION__: JSON.stringify(pkg.version) };

if (!nodeOnly) await rm('out', { recursive: true, force: true });

const nodeEntries = {
  electron: 'src/main/electron/main.ts',
  server: 'src/main/server/main.ts',
};
const optionalEntries = {
  cli: 'src/main/cli.ts',
  convert: 'src/main/convert-cli.ts',
  models: 'src/main/models-cli.ts',
  watermark: 'src/main/watermark-cli.ts',
  'engine-worker': 'src/engine/worker.ts',
};
const { existsSync } = await import('node:fs');
for (const [name, file] of Object.entries(optionalEntries))
  if (existsSync(file)) nodeEntries[name] = file;

await esbuild({
  entryPoints: nodeEntries,
  outdir: 'out/main',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  packages: 'external',
  sourcemap: true,
  define,
  logLevel: 'warning',
  // Bundled CommonJS helpers may call require(); give ESM output one.
  banner: {
    js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
  },
});

// Sandboxed preloads must be a single CommonJS file that requires only 'electron'.
await esbuild({
  entryPoints: { index: 'src/preload/index.ts' },
  outdir: 'out/preload',
  outExtension: { '.js': '.cjs' },
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['electron'],
  sourcemap: false,
  logLevel: 'warning',
});

if (!nodeOnly) await viteBuild({ configFile: 'vite.config.ts', logLevel: 'warn' });
console.error(
  `built out/ (${Object.keys(nodeEntries).join(', ')}, preload${nodeOnly ? '' : ', renderer'})`,
);
