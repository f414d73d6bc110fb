import path from 'node:path';
import { type BuildOptions, build } from 'esbuild';

const repoRoot = path.resolve(import.meta.dirname, '..', '..');

/**
 * Bundles a Node entry (the engine worker, the CLI) the way scripts/build.mjs does, into
 * out/test-bundles inside the repo so npm packages resolve, and returns its path. Lets the
 * integration suite run on its own, without `npm run build` first.
 */
export async function bundleEntry(entry: string, name: string): Promise<string> {
  return bundle({ entryPoints: [path.join(repoRoot, entry)] }, name);
}

/** The same for TypeScript source given as text (a test's child-process entry). */
export async function bundleSource(source: string, name: string): Promise<string> {
  return bundle(
    { stdin: { contents: source, resolveDir: repoRoot, sourcefile: `${name}.ts`, loader: 'ts' } },
    name,
  );
}

async function bundle(
  input: Pick<BuildOptions, 'entryPoints' | 'stdin'>,
  name: string,
): Promise<string> {
  const outfile = path.join(repoRoot, 'out', 'test-bundles', `${name}.mjs`);
  await build({
    ...input,
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
