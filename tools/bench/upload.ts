// `npm run bench:upload [-- --gb N]`: a browser's checkpoint upload to the headless server,
// measured. The real server (the bundled `npm run serve` entry) runs as its own process in a temp
// data folder; this process sends it a checkpoint-shaped file of N GB (default 2; one tensor
// under model.diffusion_model., so the content check accepts it) over loopback with its
// Content-Length, as the studio's upload does. Reported: MB/s end to end (streamed to disk,
// hashed, fsynced, checked), the same file copied by the OS (`cp --sparse=never` then `sync`,
// every byte written: the disk's own pace here) for
// a ratio taken in the same run, the time to hash it alone (the least the server must do per
// byte), and the server's resident memory before and at its peak, to show
// the file is streamed rather than held. One JSON document on stdout (also
// bench-results/upload-<date>.json), progress on stderr.
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { sha256File } from '../../src/main/models/checkpoint-cache';
import { checkpointUploadPath } from '../../src/shared';
import { safetensorsHeader } from '../../tests/fixtures/checkpoint';
import { bundleEntry } from '../../tests/integration/bundle';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const log = (line: string) => process.stderr.write(`bench:upload: ${line}\n`);

/** VmRSS or VmHWM (peak) of a process, in MiB, from /proc (Linux). */
function memoryMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return Math.round(kb / 1024);
}

/** A safetensors file of about `bytes`, sparse: one F16 tensor of zeros after the header. */
async function writeBigCheckpoint(file: string, bytes: number): Promise<number> {
  const elements = Math.floor(bytes / 2);
  const header = safetensorsHeader([
    { name: 'model.diffusion_model.input_blocks.0.0.weight', dtype: 'F16', shape: [elements] },
  ]);
  const handle = await open(file, 'w');
  await handle.write(header);
  await handle.truncate(header.length + elements * 2);
  await handle.close();
  return header.length + elements * 2;
}

async function startServer(dataDir: string): Promise<{ child: ChildProcess; url: string }> {
  const entry = await bundleEntry('src/main/server/main.ts', 'server-main');
  const child = spawn(process.execPath, [entry, '--port', '0', '--data-dir', dataDir], {
    env: { ...process.env, LATENT_STUDIO_RESOURCES_DIR: path.join(repoRoot, 'resources') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /serving the studio at (\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`server exited (${code})`)));
  });
  return { child, url };
}

/**
 * POSTs the file over a plain socket (the body piped from disk), so that the client's own cost
 * stays small beside the server's; returns the server's JSON answer.
 */
function sendRaw(
  origin: string,
  token: string,
  file: string,
  size: number,
): Promise<{ ok: boolean; value?: { path: string } }> {
  const { hostname, port } = new URL(origin);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname);
    let answer = '';
    socket.on('data', (d: Buffer) => (answer += d.toString()));
    socket.on('error', reject);
    socket.on('end', () => {
      try {
        // The body may come chunked: the JSON is from the first { to the last }.
        resolve(JSON.parse(answer.slice(answer.indexOf('{'), answer.lastIndexOf('}') + 1)));
      } catch {
        reject(new Error(`unexpected answer: ${answer.slice(0, 200)}`));
      }
    });
    socket.on('connect', () => {
      socket.write(
        `POST ${checkpointUploadPath}?name=big.safetensors HTTP/1.1\r\nHost: ${hostname}:${port}\r\n` +
          `Authorization: Bearer ${token}\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`,
      );
      fs.createReadStream(file, { highWaterMark: 1 << 20 }).pipe(socket, { end: false });
    });
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { gb: { type: 'string', default: '2' } } });
  const gb = Number(values.gb);
  if (!(gb > 0)) throw new Error('--gb must be a positive number');
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-bench-upload-'));
  const file = path.join(root, 'big.safetensors');
  const size = await writeBigCheckpoint(file, gb * 1e9);
  const { child, url } = await startServer(path.join(root, 'data'));
  try {
    const [origin, token] = url.split('/#token=') as [string, string];
    const rssBefore = memoryMiB(child.pid!, 'VmRSS');
    log(`uploading ${(size / 1e9).toFixed(2)} GB`);
    const started = performance.now();
    const answer = await sendRaw(origin, token, file, size);
    const seconds = (performance.now() - started) / 1000;
    if (!answer.ok) throw new Error(`upload refused: ${JSON.stringify(answer)}`);
    const peak = memoryMiB(child.pid!, 'VmHWM');
    fs.rmSync(answer.value!.path);

    log('copying the same file with cp');
    const copyStarted = performance.now();
    execFileSync('cp', ['--sparse=never', file, path.join(root, 'copy.safetensors')]);
    execFileSync('sync', [path.join(root, 'copy.safetensors')]);
    const copySeconds = (performance.now() - copyStarted) / 1000;

    // The least the server must do per byte: hash it (read from disk here, not a socket).
    log('hashing the same file');
    const hashStarted = performance.now();
    await sha256File(file);
    const hashSeconds = (performance.now() - hashStarted) / 1000;

    const result = {
      date: new Date().toISOString(),
      machine: {
        cpus: os.cpus().length,
        model: os.cpus()[0]?.model ?? '',
        loadAverage1m: Math.round(os.loadavg()[0] * 100) / 100,
        node: process.version,
      },
      bytes: size,
      uploadSeconds: Math.round(seconds * 100) / 100,
      uploadMBps: Math.round(size / 1e6 / seconds),
      cpSeconds: Math.round(copySeconds * 100) / 100,
      cpMBps: Math.round(size / 1e6 / copySeconds),
      sha256Seconds: Math.round(hashSeconds * 100) / 100,
      sha256MBps: Math.round(size / 1e6 / hashSeconds),
      serverRssBeforeMiB: rssBefore,
      serverPeakRssMiB: peak,
    };
    const text = JSON.stringify(result, null, 2);
    console.log(text);
    const outDir = path.join(repoRoot, 'bench-results');
    fs.mkdirSync(outDir, { recursive: true });
    fs.writeFileSync(path.join(outDir, `upload-${result.date.replace(/[:.]/g, '-')}.json`), text);
  } finally {
    child.kill('SIGTERM');
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
