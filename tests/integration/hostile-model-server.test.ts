// Hostile model folders against the headless server's own process (issue 14 item 2): the server
// (src/main/server/main.ts, bundled as the build does) starts with a built-in model whose
// README.md is a FIFO, is asked to add folders holding /dev/zero and FIFOs, and must answer its
// cheap calls promptly throughout, report each folder with a sentence, and still stop on SIGTERM.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixtureModel } from '../fixtures/models';
import { bundleEntry } from './bundle';
import { callServer, tempDir } from './library-helpers';

let root: string;
let child: ChildProcess;
let server: { url: string; token: string };
let stderr = '';

function mkfifo(p: string): void {
  fs.rmSync(p, { force: true });
  expect(spawnSync('mkfifo', [p]).status).toBe(0);
}

beforeAll(async () => {
  root = tempDir('ls-hostile-server-');
  const source = await fixtureModel('sd15', {});
  const builtIn = path.join(root, 'resources', 'models', 'card-is-a-fifo');
  fs.cpSync(source, builtIn, { recursive: true });
  mkfifo(path.join(builtIn, 'README.md'));
  fs.cpSync(source, path.join(root, 'resources', 'models', 'fine'), { recursive: true });

  // As the build lays them out: the server finds engine-worker.mjs beside it, and inspects
  // model folders in threads of that bundle.
  const entry = await bundleEntry('src/main/server/main.ts', 'hostile-server/server');
  await bundleEntry('src/engine/worker.ts', 'hostile-server/engine-worker');
  child = spawn(process.execPath, [entry, '--port', '0', '--data-dir', path.join(root, 'data')], {
    env: { ...process.env, LATENT_STUDIO_RESOURCES_DIR: path.join(root, 'resources') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  let stdout = '';
  server = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address (stderr: ${stderr})`)), 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      const m = /(http:\/\/127\.0\.0\.1:\d+)\/#token=([\w-]+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], token: m[2] });
      }
    });
  });
}, 60_000);

afterAll(() => {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  fs.rmSync(root, { recursive: true, force: true });
});

/** A contract call that must answer within `ms` (the server keeps answering). */
async function promptly<T>(method: string, input?: unknown, ms = 3000): Promise<T> {
  const started = performance.now();
  const result = await Promise.race([
    callServer<T>(server, method, input).then(
      (value) => ({ value }),
      (error: unknown) => ({ error }),
    ),
    new Promise<never>((_, reject) =>
      setTimeout(() => reject(new Error(`${method} did not answer within ${ms} ms`)), ms),
    ),
  ]);
  expect(performance.now() - started).toBeLessThan(ms);
  if ('error' in result) throw result.error;
  return result.value;
}

type Model = { name: string; status: string; error: string | null; builtIn: boolean };

describe('the headless server with hostile model folders', () => {
  it('registers a built-in model whose README.md is a FIFO as unusable, and keeps answering', async () => {
    let models: Model[] = [];
    for (let i = 0; i < 100; i++) {
      await promptly('getAppInfo');
      models = await promptly<Model[]>('listModels');
      if (models.length === 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(models).toEqual([
      expect.objectContaining({
        name: 'card-is-a-fifo',
        status: 'error',
        error:
          'README.md is a named pipe, not a regular file; a model folder holds regular files only.',
      }),
      expect.objectContaining({ name: 'fine', status: 'ok' }),
    ]);
  }, 30_000);

  it('refuses folders holding /dev/zero or FIFOs with a sentence, promptly', async () => {
    const source = await fixtureModel('sd15', {});
    const plants: Array<[string, (p: string) => void, RegExp]> = [
      ['about.json', (p) => fs.symlinkSync('/dev/zero', p), /^about\.json is a device/],
      ['model_index.json', mkfifo, /^model_index\.json is a named pipe/],
      ['unet/model.onnx', mkfifo, /^unet\/model\.onnx is a named pipe/],
      ['tokenizer/vocab.json', (p) => fs.symlinkSync('/dev/zero', p), /vocab\.json is a device/],
    ];
    for (const [file, plant, message] of plants) {
      const dir = path.join(root, `added-${file.replace(/\W/g, '-')}`);
      fs.cpSync(source, dir, { recursive: true });
      fs.rmSync(path.join(dir, file), { force: true });
      plant(path.join(dir, file));
      await expect(promptly('addModel', { path: dir })).rejects.toMatchObject({
        code: 'model',
        message: expect.stringMatching(message),
      });
      await promptly('getAppInfo');
    }
    expect(await promptly<Model[]>('listModels')).toHaveLength(2);
  }, 60_000);

  it('still stops on SIGTERM', async () => {
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    );
    child.kill('SIGTERM');
    const code = await Promise.race([
      exited,
      new Promise<string>((r) => setTimeout(() => r('still running after 10 s'), 10_000)),
    ]);
    expect(code, stderr).toBe(0);
  }, 20_000);
});
