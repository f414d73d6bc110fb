// A browser's checkpoint upload to the real headless server over a real socket (issue 11, item
// 5): the file is streamed into the data folder under its own name (never a path the client
// chose), hashed on the way so the import does not read it again, kept once per content, and
// then imported by the ordinary path. Every refused, lying, cut or cancelled upload leaves no
// file behind and the server keeps answering.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { StudioHost } from '../../src/main/api';
import {
  CheckpointUploads,
  maxCheckpointUploadBytes,
} from '../../src/main/models/checkpoint-uploads';
import { type RunningServer, startServer } from '../../src/main/server/server';
import {
  type CheckpointImportProgress,
  type ModelEntry,
  checkpointUploadPath,
} from '../../src/shared';
import { writeLoraFile } from '../fixtures/checkpoint';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { callServer, tempDir } from './library-helpers';

const RESOURCES = path.join(import.meta.dirname, '..', '..', 'resources');

let root: string;
let dataDir: string;
let host: StudioHost;
let server: RunningServer;
const progress: CheckpointImportProgress[] = [];

beforeAll(async () => {
  root = tempDir('ls-ckpt-upload-');
  dataDir = path.join(root, 'data');
  host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: '0.0.0',
    resourcesDir: RESOURCES,
    log: () => {},
  });
  await host.library.ready;
  host.events.subscribe((event, payload) => {
    if (event === 'checkpointImport') progress.push(payload as CheckpointImportProgress);
  });
  server = await startServer({ host, port: 0, uploadIdleMs: 1_000 });
});
afterAll(async () => {
  await server.close();
  await host.close();
  fs.rmSync(root, { recursive: true, force: true });
});

type Envelope<T> = { ok: boolean; value?: T; error?: { code: string; message: string } };
interface Stored {
  path: string;
  sha256: string;
  bytes: number;
  reused: boolean;
}

const uploadUrl = (name: string, extra = '') =>
  `${server.url}${checkpointUploadPath}?name=${encodeURIComponent(name)}${extra}`;

async function upload(
  name: string,
  body: Buffer,
  extra = '',
): Promise<{ status: number } & Envelope<Stored>> {
  const res = await fetch(uploadUrl(name, extra), {
    method: 'POST',
    headers: { Authorization: `Bearer ${server.token}` },
    body,
  });
  return { status: res.status, ...((await res.json()) as Envelope<Stored>) };
}

/** Every file under the data folder's checkpoints/ (the upload area), relative to it. */
function uploadedFiles(): string[] {
  const dir = path.join(dataDir, 'checkpoints');
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => fs.statSync(path.join(dir, f)).isFile())
    .sort();
}

/** Sends raw bytes on a fresh socket, then either waits for the answer or cuts the connection. */
function rawRequest(head: string, body: Buffer, then: 'read' | 'cut'): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(server.port, '127.0.0.1');
    let answer = '';
    socket.on('data', (d) => (answer += d.toString()));
    socket.on('error', () => resolve(answer));
    socket.on('close', () => resolve(answer));
    socket.on('connect', () => {
      socket.write(head);
      socket.write(body, () => {
        if (then === 'cut') setTimeout(() => socket.destroy(), 100);
      });
    });
    setTimeout(() => reject(new Error('no answer')), 10_000).unref();
  });
}

const headOf = (name: string, length: number | null, extra = '') =>
  `POST ${checkpointUploadPath}?name=${encodeURIComponent(name)} HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nAuthorization: Bearer ${server.token}\r\n${length === null ? 'Transfer-Encoding: chunked\r\n' : `Content-Length: ${length}\r\n`}${extra}\r\n`;

/** Waits until the upload area holds nothing but finished uploads (the server cleans up async). */
async function expectNoPartialFiles(kept: string[]): Promise<void> {
  await expect.poll(() => uploadedFiles(), { timeout: 5_000 }).toEqual(kept);
}

async function expectServerAnswers(): Promise<void> {
  const info = await callServer<{ name: string }>(server, 'getAppInfo');
  expect(info.name).toBe('Latent Studio');
}

describe('checkpoint upload', () => {
  let first: Stored;
  let file: string;
  let sha256: string;

  it('stores the file under its own name inside the data folder, hashed on the way', async () => {
    ({ file } = await smallCheckpoint(root, 'sd1'));
    const bytes = fs.readFileSync(file);
    sha256 = createHash('sha256').update(bytes).digest('hex');
    // A name that climbs out of the folder keeps only its last part.
    const res = await upload('../../../escape/portrait.safetensors', bytes);
    expect(res.status).toBe(200);
    first = res.value!;
    expect(first).toMatchObject({ sha256, bytes: bytes.length, reused: false });
    expect(first.path).toBe(
      path.join(dataDir, 'checkpoints', sha256.slice(0, 16), 'portrait.safetensors'),
    );
    expect(fs.readFileSync(first.path).equals(bytes)).toBe(true);
    expect(fs.existsSync(path.join(root, 'escape'))).toBe(false);
    expect(fs.existsSync(path.join(dataDir, '..', 'escape'))).toBe(false);
    // The hash is known to the conversion cache by path, size and time.
    const known = JSON.parse(
      fs.readFileSync(path.join(dataDir, 'checkpoint-hashes.json'), 'utf8'),
    ) as Record<string, string>;
    const id = Object.keys(known).find((k) => k.startsWith(`${first.path}|`));
    expect(id && known[id]).toBe(sha256);
  });

  it('imports the upload by the ordinary path without hashing it again', async () => {
    const { arch } = await smallCheckpoint(root, 'sd1');
    // The small configuration needs its architecture given, so its conversion is made here.
    await convertCheckpoint(
      file,
      path.join(dataDir, 'converted', `${sha256.slice(0, 16)}-fp16`, 'portrait'),
      { vocabularyFile: VOCABULARY, architecture: arch, sha256 },
    );
    const entry = await callServer<ModelEntry>(server, 'importCheckpoint', { path: first.path });
    expect(entry).toMatchObject({ name: 'portrait', family: 'sd1', status: 'ok' });
    const phases = progress.filter((p) => p.path === first.path).map((p) => p.phase);
    expect(phases).toEqual(['done']);
  });

  it('keeps one copy of the same content sent again under another name', async () => {
    const res = await upload('copy of portrait.safetensors', fs.readFileSync(file));
    expect(res.value).toMatchObject({ path: first.path, sha256, reused: true });
    await expectNoPartialFiles([path.join(sha256.slice(0, 16), 'portrait.safetensors')]);
  });

  it('refuses a LoRA with the detector’s sentence and keeps nothing', async () => {
    const lora = path.join(root, 'detail-tweaker.safetensors');
    await writeLoraFile(lora);
    const res = await upload('detail-tweaker.safetensors', fs.readFileSync(lora));
    expect(res.status).toBe(400);
    expect(res.error?.message).toMatch(
      /^detail-tweaker\.safetensors is a LoRA .*, not a Stable Diffusion 1\.x, 2\.x or SDXL checkpoint that can be converted\.$/,
    );
    await expectNoPartialFiles([path.join(sha256.slice(0, 16), 'portrait.safetensors')]);
  });

  it('refuses a checkpoint sent as a VAE, and a file that is no checkpoint at all', async () => {
    const asVae = await upload('portrait.safetensors', fs.readFileSync(file), '&kind=vae');
    expect(asVae.status).toBe(400);
    expect(asVae.error?.message).toBe(
      'portrait.safetensors is a whole checkpoint, not a VAE-only file.',
    );
    const text = await upload('notes.safetensors', Buffer.from('just some text, not tensors'));
    expect(text.status).toBe(400);
    expect(text.error?.message).toBe(
      'notes.safetensors is neither a .safetensors file nor a PyTorch checkpoint.',
    );
    const name = await upload('../notes.txt', Buffer.from('hello'));
    expect(name.status).toBe(400);
    expect(name.error?.message).toMatch(/^notes\.txt is not a checkpoint file \(\.safetensors, /);
    await expectNoPartialFiles([path.join(sha256.slice(0, 16), 'portrait.safetensors')]);
  });

  it('takes a VAE-only file as a replacement VAE, and says what it is when sent as a model', async () => {
    // The small checkpoint's VAE alone, in ldm naming without the first_stage_model. prefix.
    const { file: vae } = await smallCheckpoint(root, 'sd1', (n) =>
      n.startsWith('first_stage_model.') ? n.slice('first_stage_model.'.length) : null,
    );
    const bytes = fs.readFileSync(vae);
    const asModel = await upload('vae-ft-mse.safetensors', bytes);
    expect(asModel.status).toBe(400);
    expect(asModel.error?.message).toMatch(
      /^vae-ft-mse\.safetensors is a VAE on its own .*, not a Stable Diffusion 1\.x, 2\.x or SDXL checkpoint that can be converted\.$/,
    );
    const asVae = await upload('vae-ft-mse.safetensors', bytes, '&kind=vae');
    expect(asVae.status).toBe(200);
    const vaeSha = createHash('sha256').update(bytes).digest('hex');
    expect(asVae.value).toMatchObject({ sha256: vaeSha, reused: false });
    await expectNoPartialFiles(
      [
        path.join(sha256.slice(0, 16), 'portrait.safetensors'),
        path.join(vaeSha.slice(0, 16), 'vae-ft-mse.safetensors'),
      ].sort(),
    );
    fs.rmSync(path.dirname(asVae.value!.path), { recursive: true });
  });

  it('answers the check asked before an upload, for the size it will have', async () => {
    const ok = await fetch(uploadUrl('a.safetensors', '&check=1&size=1000'), {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.token}` },
    });
    expect(ok.status).toBe(204);
    const tooBig = await fetch(
      uploadUrl('a.safetensors', `&check=1&size=${maxCheckpointUploadBytes + 1}`),
      { method: 'POST', headers: { Authorization: `Bearer ${server.token}` } },
    );
    expect(((await tooBig.json()) as Envelope<never>).error?.message).toMatch(
      /^a\.safetensors is 42\.9 GB, more than the 42\.9 GB an upload may be\.$/,
    );
  });

  it('refuses, before reading the body, a size over the limit, no size, or no token', async () => {
    const big = await rawRequest(
      headOf('huge.safetensors', maxCheckpointUploadBytes + 1),
      Buffer.alloc(0),
      'read',
    );
    expect(big).toMatch(/^HTTP\/1\.1 413 /);
    expect(big).toMatch(/Connection: close/i);
    const chunked = await rawRequest(
      headOf('a.safetensors', null),
      Buffer.from('0\r\n\r\n'),
      'read',
    );
    expect(chunked).toMatch(/^HTTP\/1\.1 411 /);
    expect(chunked).toContain('Content-Length header');
    const anonymous = await fetch(uploadUrl('a.safetensors'), {
      method: 'POST',
      body: Buffer.alloc(10),
    });
    expect(anonymous.status).toBe(401);
    await expectNoPartialFiles([path.join(sha256.slice(0, 16), 'portrait.safetensors')]);
    await expectServerAnswers();
  });

  it('leaves nothing of a body cut mid-way or of a Content-Length that lies', async () => {
    const bytes = fs.readFileSync(file);
    // Half the file, then the connection drops (a cancelled upload looks the same).
    await rawRequest(
      headOf('cut.safetensors', bytes.length),
      bytes.subarray(0, bytes.length >> 1),
      'cut',
    );
    await expectNoPartialFiles([path.join(sha256.slice(0, 16), 'portrait.safetensors')]);
    // Claims twice its size and closes after the real bytes.
    await rawRequest(headOf('liar.safetensors', bytes.length * 2), bytes, 'cut');
    await expectNoPartialFiles([path.join(sha256.slice(0, 16), 'portrait.safetensors')]);
    // Claims less than it sends: only the declared bytes are read as the file, and the rest is
    // not a request the server can read, so the connection is refused and closed.
    const short = await rawRequest(
      headOf('short.safetensors', 100),
      bytes.subarray(0, 4096),
      'read',
    );
    expect(short).toMatch(/^HTTP\/1\.1 400 /);
    await expectNoPartialFiles([path.join(sha256.slice(0, 16), 'portrait.safetensors')]);
    await expectServerAnswers();
  });

  it('drops an upload that stalls, and its partial file', async () => {
    const bytes = fs.readFileSync(file);
    const started = Date.now();
    // Half the body, then silence with the connection open: the server hangs up after 1 s.
    const answer = await rawRequest(
      headOf('stalled.safetensors', bytes.length),
      bytes.subarray(0, bytes.length >> 1),
      'read',
    );
    expect(answer).toBe('');
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
    await expectNoPartialFiles([path.join(sha256.slice(0, 16), 'portrait.safetensors')]);
    await expectServerAnswers();
  });

  it('refuses an upload the disk has no room for, before writing', async () => {
    const uploads = new CheckpointUploads(path.join(root, 'small-disk'), {
      freeBytes: async () => 3e9,
    });
    await expect(
      uploads.check({ name: 'sdxl.safetensors', kind: 'checkpoint', bytes: 6.9e9 }),
    ).rejects.toMatchObject({
      code: 'disk-full',
      message:
        'Not enough disk space in the data folder for sdxl.safetensors: it needs 6.9 GB and 3.0 GB are free.',
    });
  });
});
