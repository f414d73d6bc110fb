// The benchmarks' random-weight fixture models, built once from the checkout's fixture builder.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type FixtureInfo,
  type FixtureSpec,
  buildFixtureModel,
  loadFixtureInfo,
} from '../../tests/fixtures/models';

const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

/** The checkout's root (out/tools/bench.mjs -> ../..), else the working directory. */
export function repoRoot(): string {
  const here = fileURLToPath(new URL('../../', import.meta.url));
  return existsSync(path.join(here, 'tests', 'fixtures', 'models.ts')) ? here : process.cwd();
}

/**
 * The model folder, built once into tests/fixtures/.models/bench-<unet>-<hash>/. The hash covers
 * the spec and the builder's sources as they are in the checkout (the bundled builder cannot
 * read them beside itself), so a changed builder rebuilds.
 */
export async function benchModel(
  root: string,
  name: string,
  spec: FixtureSpec,
): Promise<{ info: FixtureInfo; built: boolean; buildMs: number }> {
  const fixtures = path.join(root, 'tests', 'fixtures');
  const h = createHash('sha256').update(JSON.stringify(spec));
  for (const f of ['models.ts', 'unet.ts', 'components.ts', 'onnx-builder.ts', 'clip-tokenizer.ts'])
    h.update(readFileSync(path.join(fixtures, f)));
  const cache = process.env.LATENT_STUDIO_FIXTURE_CACHE ?? path.join(fixtures, '.models');
  const dir = path.join(cache, `bench-${name}-${h.digest('hex').slice(0, 12)}`);
  if (existsSync(path.join(dir, 'fixture-info.json')))
    return { info: await loadFixtureInfo(dir), built: false, buildMs: 0 };
  log(`building the ${name} fixture model into ${path.relative(root, dir)} (once)`);
  const started = performance.now();
  await mkdir(cache, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}`;
  try {
    await buildFixtureModel(tmp, spec);
    await rename(tmp, dir);
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return { info: await loadFixtureInfo(dir), built: true, buildMs: performance.now() - started };
}

/**
 * Whether this process was started as the bundled tool `name` (out/tools/<name>.mjs): a bench
 * module imported by another bench is bundled into it and must not run its own main.
 */
export function isEntry(name: string): boolean {
  return path.basename(process.argv[1] ?? '') === `${name}.mjs`;
}

/**
 * Print a bench's JSON document on stdout and keep it in `out`, else in
 * bench-results/<name>-<date>.json under the checkout.
 */
export async function writeResult(name: string, doc: unknown, out?: string): Promise<void> {
  const file = path.resolve(
    out ??
      path.join(
        repoRoot(),
        'bench-results',
        `${name}-${new Date().toISOString().replace(/[:.]/g, '-')}.json`,
      ),
  );
  await mkdir(path.dirname(file), { recursive: true });
  const json = JSON.stringify(doc, null, 2);
  await writeFile(file, json + '\n');
  process.stdout.write(json + '\n');
}
