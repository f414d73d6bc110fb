// `npm run models` as the bundled entry in child processes against the loopback Hub: a download
// killed mid-way (SIGKILL) resumes from its partial files when the same command runs again;
// list shows where each model came from; remove deletes a downloaded folder; a checkpoint file
// by URL goes through the checkpoint import; failures are one sentence and a non-zero exit.
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { type FakeHub, startFakeHub } from '../fixtures/hub-server';
import { fixtureModel } from '../fixtures/models';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { bundleEntry } from './bundle';
import { tempDir } from './library-helpers';

const RESOURCES = path.join(import.meta.dirname, '..', '..', 'resources');
let cli: string;
let hub: FakeHub;
let fixtureDir: string;
let dataDir: string;
let checkpoint: Buffer;

beforeAll(async () => {
  cli = await bundleEntry('src/main/models-cli.ts', 'models-cli');
  fixtureDir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  const tmp = tempDir('ls-models-ckpt-');
  const { file, arch } = await smallCheckpoint(tmp, 'sd1');
  checkpoint = fs.readFileSync(file);
  dataDir = tempDir('ls-models-cli-');
  // The conversion a first import would make (the small test configuration needs its
  // architecture given, which an import cannot do); the import then finds and registers it.
  const sha256 = createHash('sha256').update(checkpoint).digest('hex');
  await convertCheckpoint(
    file,
    path.join(dataDir, 'converted', `${sha256.slice(0, 16)}-fp16`, 'tiny'),
    {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      sha256,
    },
  );
  fs.rmSync(tmp, { recursive: true, force: true });
  hub = await startFakeHub([
    { id: 'studio/tiny-sd', dir: fixtureDir, license: 'openrail' },
    {
      id: 'studio/checkpoints',
      files: {
        'tiny.safetensors': checkpoint,
        'README.md': Buffer.from('# tiny'),
        'extra/lookup.onnx_data': Buffer.alloc(40_000, 3),
      },
    },
  ]);
});
afterAll(async () => {
  await hub?.close();
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI without blocking this process (the Hub it talks to runs here). */
function run(
  args: string[],
  options: { killWhen?: () => boolean; env?: Record<string, string> } = {},
): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cli, ...args, '--data-dir', dataDir], {
      env: {
        ...process.env,
        HF_ENDPOINT: hub.url,
        HF_TOKEN: '',
        LATENT_STUDIO_RESOURCES_DIR: RESOURCES,
        ...options.env,
      },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = options.killWhen
      ? setInterval(() => {
          if (options.killWhen!()) {
            clearInterval(timer!);
            child.kill('SIGKILL');
          }
        }, 5)
      : null;
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (timer) clearInterval(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

function sameTree(a: string, b: string): void {
  const list = (d: string): string[] =>
    fs
      .readdirSync(d, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .map((e) => path.relative(d, path.join(e.parentPath, e.name)))
      .filter((p) => p !== '.download.json')
      .sort();
  expect(list(a)).toEqual(list(b));
  for (const f of list(b))
    expect(fs.readFileSync(path.join(a, f)).equals(fs.readFileSync(path.join(b, f))), f).toBe(true);
}

describe('npm run models', () => {
  it('resumes a download whose process was killed mid-way, from its partial files', async () => {
    hub.faults.slow = { chunk: 4 * 1024, delayMs: 10 };
    const killed = await run(['download', 'studio/tiny-sd'], {
      killWhen: () => hub.bytesServed > 120_000,
    });
    expect(killed.signal).toBe('SIGKILL');
    const servedBeforeKill = hub.bytesServed;
    hub.faults.slow = undefined;
    hub.requests.length = 0;

    const again = await run(['download', 'studio/tiny-sd', '--quiet']);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    const folder = again.stdout.trim();
    expect(folder).toBe(path.join(dataDir, 'models', 'studio--tiny-sd'));
    sameTree(folder, fixtureDir);
    // The second process asked for the rest of what the first had started.
    const resumed = hub.requests.filter((r) => r.range !== null && r.status === 206);
    expect(resumed.length).toBeGreaterThan(0);
    const total = fs
      .readdirSync(fixtureDir, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile())
      .reduce((n, e) => n + fs.statSync(path.join(e.parentPath, e.name)).size, 0);
    // Bytes the first process had on disk were not fetched again (only what was in flight).
    expect(hub.bytesServed - servedBeforeKill).toBeLessThan(total - 100_000);

    const list = await run(['list']);
    expect(list.code).toBe(0);
    const line = list.stdout.split('\n').find((l) => l.includes('studio--tiny-sd'))!;
    expect(line).toContain(`studio/tiny-sd@${hub.repos.get('studio/tiny-sd')!.sha}`);
    expect(line).toContain('\tok\t');
  });

  it('hands a checkpoint file by URL to the checkpoint import, verified against the Hub sha256', async () => {
    const url = `${hub.url}/studio/checkpoints/resolve/main/tiny.safetensors`;
    const r = await run(['download', url, '--quiet']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const saved = r.stdout.trim();
    expect(saved).toBe(path.join(dataDir, 'files', 'tiny.safetensors'));
    expect(fs.readFileSync(saved).equals(checkpoint)).toBe(true);
    const list = await run(['list']);
    expect(list.stdout).toMatch(
      /^tiny\tsd1\tok\tstudio\/checkpoints\/tiny\.safetensors@[0-9a-f]{40}\t/m,
    );
  });

  it("removes a downloaded model, moving its folder to the app's trash", async () => {
    const r = await run(['remove', 'studio--tiny-sd']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(
      `removed studio--tiny-sd and moved ${path.join(dataDir, 'models', 'studio--tiny-sd')} to ${path.join(dataDir, 'trash')}`,
    );
    expect(fs.existsSync(path.join(dataDir, 'models', 'studio--tiny-sd'))).toBe(false);
    const trashed = fs
      .readdirSync(path.join(dataDir, 'trash'))
      .map((d) => path.join(dataDir, 'trash', d, 'studio--tiny-sd'));
    expect(trashed.filter((d) => fs.existsSync(path.join(d, 'model_index.json')))).toHaveLength(1);
    expect((await run(['list'])).stdout).not.toContain('studio--tiny-sd');
  });

  it('says what went wrong in one line and exits non-zero', async () => {
    const missing = await run(['download', 'studio/nothing-here']);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe(
      'latent-studio models: studio/nothing-here was not found on the Hub; check its name (a private repo also needs an access token).',
    );
    const usage = await run(['remove']);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('remove takes one model name.');
    const unknown = await run(['remove', 'no-such-model']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('No model is called "no-such-model"');
  });
});

/**
 * A forward proxy on loopback (CONNECT tunnels and absolute-form requests), recording the
 * hosts it was asked for.
 */
async function startProxy(): Promise<{ url: string; hosts: string[]; close(): Promise<void> }> {
  const hosts: string[] = [];
  const server = http.createServer((req, res) => {
    const target = new URL(req.url ?? '');
    hosts.push(target.host);
    const upstream = http.request(target, { method: req.method, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connect', (req, socket, head) => {
    hosts.push(req.url ?? '');
    const [host, port] = (req.url ?? '').split(':');
    const upstream = net.connect(Number(port), host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    hosts,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

describe('proxies from the environment', () => {
  it('sends the Hub and CDN requests through HTTP_PROXY, and keeps a file the studio cannot use, saying so', async () => {
    const proxy = await startProxy();
    try {
      const url = `${hub.url}/studio/checkpoints/resolve/main/extra/lookup.onnx_data`;
      const r = await run(['download', url, '--quiet'], {
        env: { HTTP_PROXY: proxy.url, NO_PROXY: '', no_proxy: '' },
      });
      expect(r.code).toBe(1);
      const saved = path.join(dataDir, 'files', 'lookup.onnx_data');
      expect(r.stdout.trim()).toBe('');
      expect(r.stderr.trim()).toBe(
        `latent-studio models: lookup.onnx_data cannot be used: it is neither a .safetensors file nor a PyTorch file (.onnx_data). It was kept as ${saved}.`,
      );
      expect(fs.readFileSync(saved).equals(Buffer.alloc(40_000, 3))).toBe(true);
      const hubHost = new URL(hub.url).host;
      const cdnHost = new URL(hub.cdnUrl).host;
      expect(proxy.hosts).toContain(hubHost);
      expect(proxy.hosts).toContain(cdnHost);
    } finally {
      await proxy.close();
    }
  });
});
