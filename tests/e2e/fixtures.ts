import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type Page, test as base, expect } from '@playwright/test';
import { fixtureModel } from '../fixtures/models';

export interface StudioServer {
  /** Origin of the server, e.g. http://127.0.0.1:40123 */
  url: string;
  /** The address a person opens (carries the token in the fragment). */
  studioUrl: string;
  token: string;
  dataDir: string;
}

const repoRoot = path.resolve(import.meta.dirname, '..', '..');

/** Starts the real headless server (the built out/main/server.mjs) on a free loopback port. */
export async function startStudioServer(
  dataDir?: string,
  opts: { builtInModels?: boolean } = {},
): Promise<StudioServer & { stop(): Promise<void> }> {
  const dir = dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ls-e2e-'));
  // Journeys run on fixture models with known answers; the shipped model only where asked.
  const resources = opts.builtInModels
    ? path.join(repoRoot, 'resources')
    : path.join(dir, 'no-resources');
  const child: ChildProcess = spawn(
    process.execPath,
    [path.join(repoRoot, 'out/main/server.mjs'), '--port', '0', '--data-dir', dir],
    {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        // A developer's own Hub login (huggingface_hub's token file) must not reach the
        // loopback Hubs; a spec that tests that file sets HF_TOKEN_PATH itself.
        HF_TOKEN_PATH: '/nonexistent/latent-studio-tests/hf-token',
        ...process.env,
        LATENT_STUDIO_RESOURCES_DIR: resources,
      },
    },
  );
  let output = '';
  const studioUrl = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const match = /serving the studio at (http:\/\/\S+)/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => reject(new Error(`server exited with ${code}:\n${output}`)));
  });
  const url = studioUrl.replace(/\/#token=.*$/, '');
  return {
    url,
    studioUrl,
    token: studioUrl.split('#token=')[1],
    dataDir: dir,
    stop: async () => {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      }
      if (!dataDir) fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Screenshots for reviewers land in test-results/, one per journey. */
export function screenshotPath(name: string): string {
  return path.join(repoRoot, 'test-results', 'screenshots', `${name}.png`);
}

/** Calls a StudioApi method over HTTP with the token, as a script would; throws on errors. */
export async function callApi<T = unknown>(
  studio: StudioServer,
  method: string,
  input?: unknown,
): Promise<T> {
  const res = await fetch(`${studio.url}/api/call/${method}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${studio.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(input === undefined ? {} : { input }),
  });
  const envelope = (await res.json()) as
    { ok: true; value: T } | { ok: false; error: { code: string; message: string } };
  if (!envelope.ok) throw new Error(`${method}: ${envelope.error.code}: ${envelope.error.message}`);
  return envelope.value;
}

export interface FixtureModelEntry {
  id: string;
  name: string;
  family: string | null;
}

/**
 * The e2e model: the known-answer fixture (64x64 native, each image four flat colour quadrants
 * picked by the seed), so generations take well under a second and pixels can be compared.
 */
export async function addFixtureModel(studio: StudioServer): Promise<FixtureModelEntry> {
  const dir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  return callApi<FixtureModelEntry>(studio, 'addModel', { path: dir });
}

/** A slower model (a real, random-weight UNet) for the journeys that need time to act. */
export async function addSlowModel(studio: StudioServer): Promise<FixtureModelEntry> {
  const dir = await fixtureModel('e2e-slow', { unet: 'tiny' });
  return callApi<FixtureModelEntry>(studio, 'addModel', { path: dir });
}

/** RGBA pixels of an image the page can load (media URLs carry the session cookie). */
export async function imagePixels(
  page: Page,
  url: string,
): Promise<{ width: number; height: number; data: number[] }> {
  return page.evaluate(async (src) => {
    const img = new Image();
    img.src = src;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    const ctx = canvas.getContext('2d')!;
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    return { width: canvas.width, height: canvas.height, data: Array.from(data) };
  }, url);
}

export const test = base.extend<{ studio: StudioServer; consoleErrors: string[] }>({
  // Playwright requires the fixtures argument to be destructured, even when none is used.
  // eslint-disable-next-line no-empty-pattern
  studio: async ({}, use) => {
    const server = await startStudioServer();
    await use(server);
    await server.stop();
  },
  consoleErrors: async ({ page }, use) => {
    const errors: string[] = [];
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });
    page.on('pageerror', (err) => errors.push(err.message));
    await use(errors);
  },
});

export { expect };
