// The headless server under hostile clients (issue 14, items 1, 3, 4). It runs as its own
// process, as `npm run serve` does, so "the server survived" means the process is alive and
// answers a cheap call promptly; a healthy client stays connected throughout and an upload made
// before the attacks is still served after them.
import { type ChildProcess, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import WebSocket from 'ws';
import { maxMessageBytes, wsProtocol } from '../../src/main/server/server';
import { ImageUpload } from '../../src/shared';
import { bundleEntry } from './bundle';
import { pngBomb } from './hostile-images';

// Each case is quick when the server survives; a dead server should fail fast, not hang.
vi.setConfig({ testTimeout: 30_000 });

let root: string;
let dataDir: string;
let child: ChildProcess;
let url: string;
let token: string;
let port: number;
let healthy: WebSocket;
let keptUpload: { imageId: string; url: string; bytes: Buffer };
let stderr = '';

type Envelope = { ok: boolean; value?: unknown; error?: { code: string; message: string } };

async function call<T = unknown>(
  method: string,
  input?: unknown,
): Promise<Envelope & { value?: T }> {
  const res = await fetch(`${url}/api/call/${method}`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ input }),
    signal: AbortSignal.timeout(5_000),
  });
  return (await res.json()) as Envelope & { value?: T };
}

/** The process is alive and answers getAppInfo within a few seconds. */
async function expectServerAnswers(): Promise<void> {
  expect(child.exitCode, `the server exited; stderr:\n${stderr}`).toBeNull();
  expect(child.signalCode).toBeNull();
  const info = await call<{ name: string }>('getAppInfo');
  expect(info.value?.name).toBe('Latent Studio');
}

const media = (urlPath: string) =>
  fetch(`${url}${urlPath}`, {
    headers: { Authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(5_000),
  });

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-hostile-'));
  dataDir = path.join(root, 'data');
  const entry = await bundleEntry('src/main/server/main.ts', 'server-main');
  child = spawn(process.execPath, [entry, '--port', '0', '--data-dir', dataDir], {
    env: { ...process.env, LATENT_STUDIO_RESOURCES_DIR: path.join(root, 'no-resources') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const studioUrl = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /serving the studio at (\S+)/.exec(out);
      if (m) resolve(m[1]);
    });
    child.once('exit', (code) => reject(new Error(`server exited (${code}): ${stderr}`)));
  });
  token = studioUrl.split('#token=')[1];
  url = studioUrl.split('/#')[0];
  port = Number(new URL(url).port);

  const png = await sharp({
    create: { width: 24, height: 16, channels: 3, background: '#3080c0' },
  })
    .png()
    .toBuffer();
  const up = await call<{ imageId: string; url: string }>('uploadImage', {
    data: png.toString('base64'),
    purpose: 'init',
    name: 'kept.png',
  });
  keptUpload = { ...up.value!, bytes: png };

  healthy = new WebSocket(`${url.replace('http', 'ws')}/api/ws`, [wsProtocol, `token.${token}`]);
  await new Promise((resolve, reject) => {
    healthy.once('open', resolve);
    healthy.once('error', reject);
  });
});

afterAll(async () => {
  healthy?.terminate();
  if (child && child.exitCode === null) {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  fs.rmSync(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Raw WebSocket frames (RFC 6455 section 5.2), written on a TCP socket after a valid upgrade.

/** A TCP connection to the server; fails at once when nothing listens any more. */
function connected(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.off('error', reject);
      socket.on('error', () => {});
      resolve(socket);
    });
  });
}

/** Opens a TCP connection and completes the WebSocket handshake with the token. */
async function upgradedSocket(): Promise<{ socket: net.Socket; received: () => Buffer }> {
  const socket = await connected();
  let data = Buffer.alloc(0);
  socket.on('data', (d) => (data = Buffer.concat([data, d])));
  socket.write(
    [
      'GET /api/ws HTTP/1.1',
      `Host: 127.0.0.1:${port}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}`,
      'Sec-WebSocket-Version: 13',
      `Sec-WebSocket-Protocol: ${wsProtocol}, token.${token}`,
      '',
      '',
    ].join('\r\n'),
  );
  for (let i = 0; i < 200 && !data.includes('\r\n\r\n'); i++)
    await new Promise((r) => setTimeout(r, 10));
  const head = data.subarray(0, data.indexOf('\r\n\r\n') + 4);
  expect(head.toString()).toMatch(/^HTTP\/1\.1 101 /);
  return { socket, received: () => data.subarray(head.length) };
}

interface FrameSpec {
  fin?: boolean;
  /** RSV1..3 as the bits 0x40, 0x20, 0x10 of the first byte. */
  rsv?: number;
  opcode: number;
  payload?: Buffer;
  masked?: boolean;
  /** A declared length other than the payload's (the payload is then not sent in full). */
  declaredLength?: number;
}

/** One frame as a client writes it: masked unless told otherwise. */
function frame(spec: FrameSpec): Buffer {
  const payload = spec.payload ?? Buffer.alloc(0);
  const length = spec.declaredLength ?? payload.length;
  const masked = spec.masked ?? true;
  const head = [(spec.fin === false ? 0 : 0x80) | (spec.rsv ?? 0) | spec.opcode];
  const maskBit = masked ? 0x80 : 0;
  let lengthBytes: Buffer;
  if (length < 126) lengthBytes = Buffer.from([maskBit | length]);
  else if (length < 65536) {
    lengthBytes = Buffer.alloc(3);
    lengthBytes[0] = maskBit | 126;
    lengthBytes.writeUInt16BE(length, 1);
  } else {
    lengthBytes = Buffer.alloc(9);
    lengthBytes[0] = maskBit | 127;
    lengthBytes.writeBigUInt64BE(BigInt(length), 1);
  }
  if (!masked) return Buffer.concat([Buffer.from(head), lengthBytes, payload]);
  const key = crypto.randomBytes(4);
  const body = Buffer.from(payload.map((b, i) => b ^ key[i % 4]));
  return Buffer.concat([Buffer.from(head), lengthBytes, key, body]);
}

const closePayload = (code: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(code);
  return b;
};

/** Waits for the server to close the socket and returns the code of its close frame. */
async function serverCloseCode(socket: net.Socket, received: () => Buffer): Promise<number> {
  if (!socket.destroyed) await new Promise((r) => socket.once('close', r));
  const data = received();
  // The server's frames are unmasked; find its close frame (opcode 8) among them.
  for (let at = 0; at + 2 <= data.length;) {
    const opcode = data[at] & 0x0f;
    let length = data[at + 1] & 0x7f;
    let start = at + 2;
    if (length === 126) {
      length = data.readUInt16BE(at + 2);
      start += 2;
    } else if (length === 127) {
      length = Number(data.readBigUInt64BE(at + 2));
      start += 8;
    }
    if (opcode === 8) return length >= 2 ? data.readUInt16BE(start) : 1005;
    at = start + length;
  }
  return -1;
}

const malformedFrames: [string, Buffer, number][] = [
  ['an unmasked frame', frame({ opcode: 1, payload: Buffer.from('{}'), masked: false }), 1002],
  ['a length past the limit', frame({ opcode: 1, declaredLength: maxMessageBytes + 1 }), 1009],
  ['a 2^63-byte length', Buffer.from([0x81, 0xff, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]), 1009],
  ['invalid UTF-8 in a text frame', frame({ opcode: 1, payload: Buffer.from([0xc3, 0x28]) }), 1007],
  ['a reserved data opcode (3)', frame({ opcode: 3, payload: Buffer.from('x') }), 1002],
  ['a reserved control opcode (0xB)', frame({ opcode: 0xb }), 1002],
  [
    'the RSV1 bit without an extension',
    frame({ opcode: 1, rsv: 0x40, payload: Buffer.from('{}') }),
    1002,
  ],
  ['the RSV2 bit', frame({ opcode: 1, rsv: 0x20, payload: Buffer.from('{}') }), 1002],
  [
    'a 126-byte ping (control frames hold 125)',
    frame({ opcode: 9, payload: Buffer.alloc(126) }),
    1002,
  ],
  ['a fragmented ping', frame({ opcode: 9, fin: false, payload: Buffer.from('p') }), 1002],
  [
    'a continuation with nothing to continue',
    frame({ opcode: 0, payload: Buffer.from('x') }),
    1002,
  ],
  ['a close code below 1000', frame({ opcode: 8, payload: closePayload(999) }), 1002],
  ['the reserved close code 1005', frame({ opcode: 8, payload: closePayload(1005) }), 1002],
  ['a one-byte close payload', frame({ opcode: 8, payload: Buffer.from([3]) }), 1002],
];

describe('size limits', () => {
  it("take the contract's largest call, a maximal image upload, and no more than 1 MiB beyond", () => {
    const dataLimit = ImageUpload.shape.data.maxLength!;
    const largest = JSON.stringify({
      type: 'call',
      id: Number.MAX_SAFE_INTEGER,
      method: 'uploadImage',
      // A name of 255 characters that all need escaping, the longest the schema allows.
      input: { data: 'A'.repeat(dataLimit), purpose: 'import', name: '\u0001'.repeat(255) },
    });
    expect(Buffer.byteLength(largest)).toBeLessThanOrEqual(maxMessageBytes);
    expect(maxMessageBytes - dataLimit).toBeLessThanOrEqual(1024 * 1024);
  });
});

describe('malformed WebSocket frames close that socket, not the server', () => {
  it.each(malformedFrames)('%s: closed with %i', async (_name, bytes, expectedCode) => {
    const { socket, received } = await upgradedSocket();
    socket.write(bytes);
    expect(await serverCloseCode(socket, received)).toBe(expectedCode);
    await expectServerAnswers();
    expect(healthy.readyState).toBe(WebSocket.OPEN);
  });

  it('invalid UTF-8 split over fragments closes with 1007', async () => {
    const { socket, received } = await upgradedSocket();
    socket.write(frame({ opcode: 1, fin: false, payload: Buffer.from([0x7b, 0xe2]) }));
    socket.write(frame({ opcode: 0, payload: Buffer.from([0x28, 0xa1]) }));
    expect(await serverCloseCode(socket, received)).toBe(1007);
    await expectServerAnswers();
  });

  it('a client that resets mid-frame only loses its own socket', async () => {
    const { socket } = await upgradedSocket();
    socket.write(frame({ opcode: 1, declaredLength: 1000 }).subarray(0, 20));
    socket.resetAndDestroy();
    await expectServerAnswers();
  });
});

// ---------------------------------------------------------------------------------------------
// HTTP the parser cannot read, and requests cut off half way.

async function rawHttp(text: string | Buffer): Promise<string> {
  const socket = await connected();
  let data = '';
  socket.on('data', (d) => (data += d.toString('latin1')));
  socket.end(text);
  await new Promise((r) => socket.once('close', r));
  return data;
}

describe('HTTP garbage and aborted requests end that request only', () => {
  it.each([
    ['bytes that are not HTTP', Buffer.from([0, 1, 2, 0xff, 13, 10, 13, 10]), /^HTTP\/1\.1 400 /],
    ['a bad request line', 'GET\r\n\r\n', /^HTTP\/1\.1 400 /],
    [
      'headers past the parser limit',
      `GET / HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nX-Big: ${'a'.repeat(100_000)}\r\n\r\n`,
      /^HTTP\/1\.1 431 /,
    ],
    [
      'a URL that does not parse',
      `GET //[ HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nConnection: close\r\n\r\n`,
      /^HTTP\/1\.1 400 /,
    ],
    [
      'a chunked body with a bad chunk size',
      `POST /api/call/getAppInfo HTTP/1.1\r\nHost: 127.0.0.1:PORT\r\nAuthorization: Bearer TOKEN\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n`,
      /^HTTP\/1\.1 400 /,
    ],
  ])('%s', async (_name, request, status) => {
    const text =
      typeof request === 'string'
        ? request.replaceAll('PORT', String(port)).replaceAll('TOKEN', token)
        : request;
    expect(await rawHttp(text)).toMatch(status);
    await expectServerAnswers();
  });

  it('a body that declares more than the limit is refused before it is read', async () => {
    const reply = await rawHttp(
      `POST /api/call/uploadImage HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${maxMessageBytes + 1}\r\nConnection: close\r\n\r\n{`,
    );
    expect(reply).toMatch(/^HTTP\/1\.1 413 /);
    expect(reply).toContain('too large');
    await expectServerAnswers();
  });

  it('uploads cut off half way leave nothing behind', async () => {
    const before = fs.readdirSync(path.join(dataDir, 'uploads')).sort();
    const png = await sharp({
      create: { width: 300, height: 300, channels: 3, background: '#804020' },
    })
      .png({ compressionLevel: 0 })
      .toBuffer();
    const body = JSON.stringify({
      input: { data: png.toString('base64'), purpose: 'init', name: 'cut.png' },
    });
    for (let i = 0; i < 5; i++) {
      const socket = await connected();
      socket.write(
        `POST /api/call/uploadImage HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${token}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`,
      );
      socket.write(body.slice(0, Math.floor(body.length / 2)));
      await new Promise((r) => setTimeout(r, 20));
      if (i % 2) socket.resetAndDestroy();
      else socket.destroy();
    }
    await expectServerAnswers();
    expect(fs.readdirSync(path.join(dataDir, 'uploads')).sort()).toEqual(before);
  });
});

// ---------------------------------------------------------------------------------------------
// Decompression bombs.

describe('images larger than the limit are refused before they are decoded', () => {
  it('a small PNG declaring 16383x16383 is refused with both sizes in the message', async () => {
    const bomb = pngBomb(16383, 16383);
    expect(bomb.length).toBeLessThan(1024 * 1024);
    const reply = await call('uploadImage', { data: bomb.toString('base64'), purpose: 'init' });
    expect(reply.ok).toBe(false);
    expect(reply.error?.code).toBe('invalid-argument');
    expect(reply.error?.message).toMatch(/16383x16383 \(268\.4 megapixels\)/);
    expect(reply.error?.message).toMatch(/at most 16\.8 megapixels \(4096x4096/);
    await expectServerAnswers();
  });

  it('four bombs at once are all refused and the server keeps answering', async () => {
    const bombs = [
      pngBomb(16383, 16383),
      pngBomb(16000, 16000),
      pngBomb(8192, 8192),
      pngBomb(4097, 4096),
    ];
    const replies = await Promise.all(
      bombs.map((b, i) =>
        call('uploadImage', { data: b.toString('base64'), purpose: i % 2 ? 'mask' : 'import' }),
      ),
    );
    for (const r of replies) expect(r.error?.message).toMatch(/megapixels.*at most 16\.8/);
    await expectServerAnswers();
  });

  it('an image of exactly 4096x4096 is still accepted', async () => {
    const reply = await call<{ width: number; height: number }>('uploadImage', {
      data: pngBomb(4096, 4096).toString('base64'),
      purpose: 'init',
    });
    expect(reply.value).toMatchObject({ width: 4096, height: 4096 });
  });
});

// ---------------------------------------------------------------------------------------------
// Links planted in the data folder.

describe('the media routes serve regular files inside the data folder only', () => {
  const uploadFile = () => path.join(dataDir, 'uploads', `${keptUpload.imageId}.png`);

  it('serves the upload as it is', async () => {
    const res = await media(keptUpload.url);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(keptUpload.bytes)).toBe(true);
  });

  it('an upload replaced by a link to /etc/passwd is not served', async () => {
    const file = uploadFile();
    const aside = `${file}.aside`;
    fs.renameSync(file, aside);
    fs.symlinkSync('/etc/passwd', file);
    try {
      const res = await media(keptUpload.url);
      expect(res.status).toBe(404);
      expect(await res.text()).not.toContain('root:');
    } finally {
      fs.rmSync(file);
      fs.renameSync(aside, file);
    }
    await expectServerAnswers();
  });

  it('a link to another file inside the data folder is not served either', async () => {
    const file = uploadFile();
    const aside = `${file}.aside`;
    fs.renameSync(file, aside);
    fs.symlinkSync(aside, file);
    try {
      expect((await media(keptUpload.url)).status).toBe(404);
    } finally {
      fs.rmSync(file);
      fs.renameSync(aside, file);
    }
  });

  it('an uploads folder replaced by a link to a folder outside is not followed', async () => {
    const uploads = path.join(dataDir, 'uploads');
    const outside = path.join(root, 'outside-uploads');
    fs.renameSync(uploads, outside);
    fs.symlinkSync(outside, uploads);
    try {
      expect((await media(keptUpload.url)).status).toBe(404);
    } finally {
      fs.rmSync(uploads);
      fs.renameSync(outside, uploads);
    }
    await expectServerAnswers();
  });

  it('after the links are gone the upload is served again: nothing was lost', async () => {
    const res = await media(keptUpload.url);
    expect(res.status).toBe(200);
    expect(Buffer.from(await res.arrayBuffer()).equals(keptUpload.bytes)).toBe(true);
    expect(healthy.readyState).toBe(WebSocket.OPEN);
  });
});
