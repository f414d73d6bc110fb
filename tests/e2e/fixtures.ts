import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test as base, expect } from '@playwright/test';

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
): Promise<StudioServer & { stop(): Promise<void> }> {
  const dir = dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ls-e2e-'));
  const child: ChildProcess = spawn(
    process.execPath,
    [path.join(repoRoot, 'out/main/server.mjs'), '--port', '0', '--data-dir', dir],
    {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
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
