import path from 'node:path';
import { build } from 'esbuild';

const repoRoot = path.resolve(import.meta.dirname, '..', '..');

/**
 * Bundles a Node entry (the engine worker, the CLI) the way scripts/build.mjs does, into
 * out/test-bundles inside the repo so npm packages resolve, and returns its path. Lets the
 * integration suite run on its own, without `npm run build` first.
 */
export async function bundleEntry(entry: string, name: string): Promise<string> {
  const outfile = path.join(repoRoot, 'out', 'test-bundles', `${name}.mjs`);
  await build({
    entryPoints: [path.join(repoRoot, entry)],
    outfile,
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    packages: 'external',
    logLevel: 'warning',
    define: { __APP_VERSION__: JSON.stringify('0.0.0-test') },
    banner: {
      js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);",
    },
  });
  return outfile;
}
