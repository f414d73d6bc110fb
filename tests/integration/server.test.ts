import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { StudioHost } from '../../src/main/api';
import { type RunningServer, startServer, wsProtocol } from '../../src/main/server/server';

let dataDir: string;
let host: StudioHost;
let server: RunningServer;

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-server-'));
  const rendererDir = path.join(dataDir, 'renderer');
  fs.mkdirSync(rendererDir);
  fs.writeFileSync(path.join(rendererDir, 'index.html'), '<!doctype html><title>t</title>');
  fs.writeFileSync(path.join(dataDir, 'secret.txt'), 'outside the renderer');
  host = new StudioHost({ shell: 'headless', dataDir, version: '9.9.9' });
  server = await startServer({ host, port: 0, rendererDir });
});
afterAll(async () => {
  await server.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

type Reply = {
  type: string;
  id?: number;
  response?: { ok: boolean; value?: unknown; error?: { code: string; message: string } };
  event?: string;
  payload?: unknown;
};

function connect(
  opts: { token?: string | null; origin?: string } = {},
): Promise<{ ws: WebSocket; messages: Reply[] }> {
  const token = opts.token === undefined ? server.token : opts.token;
  const protocols = token === null ? [wsProtocol] : [wsProtocol, `token.${token}`];
  const ws = new WebSocket(
    `${server.url.replace('http', 'ws')}/api/ws`,
    protocols,
    opts.origin ? { origin: opts.origin } : {},
  );
  const messages: Reply[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve({ ws, messages }));
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
    ws.once('error', reject);
  });
}

async function call(
  ws: WebSocket,
  messages: Reply[],
  id: number,
  method: string,
  input?: unknown,
): Promise<Reply> {
  ws.send(JSON.stringify({ type: 'call', id, method, input }));
  for (let i = 0; i < 200; i++) {
    const found = messages.find((m) => m.type === 'result' && m.id === id);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no reply to ${method}`);
}

describe('headless server over a real socket', () => {
  it('binds loopback only by default', () => {
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(server.studioUrl).toContain(`#token=${server.token}`);
  });

  it('round-trips contract calls and pushes events over the WebSocket', async () => {
    const { ws, messages } = await connect({ origin: server.url });
    expect(ws.protocol).toBe(wsProtocol);
    const info = await call(ws, messages, 1, 'getAppInfo');
    expect(info.response).toMatchObject({
      ok: true,
      value: { name: 'Latent Studio', version: '9.9.9', shell: 'headless' },
    });
    const status = await call(ws, messages, 2, 'getEngineStatus');
    expect(status.response?.ok).toBe(true);
    expect(
      (status.response?.value as { providers: { name: string }[] }).providers.map((p) => p.name),
    ).toContain('cpu');
    const updated = await call(ws, messages, 3, 'updateSettings', { theme: 'dark' });
    expect(updated.response).toMatchObject({ ok: true, value: { theme: 'dark' } });
    expect(messages.some((m) => m.type === 'event' && m.event === 'settingsChanged')).toBe(true);
    ws.close();
  });

  it('rejects a WebSocket without the token, or with a wrong one', async () => {
    await expect(connect({ token: null })).rejects.toThrow('HTTP 401');
    await expect(connect({ token: 'x'.repeat(43) })).rejects.toThrow('HTTP 401');
  });

  it('rejects a foreign Origin even with the token', async () => {
    await expect(connect({ origin: 'http://evil.example' })).rejects.toThrow('HTTP 403');
    const res = await fetch(`${server.url}/api/call/getAppInfo`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.token}`, Origin: 'http://evil.example' },
    });
    expect(res.status).toBe(403);
  });

  it('answers an invalid payload with a clear invalid-argument error', async () => {
    const { ws, messages } = await connect();
    const bad = await call(ws, messages, 7, 'updateSettings', { threads: 'lots' });
    expect(bad.response).toEqual({
      ok: false,
      error: {
        code: 'invalid-argument',
        message: expect.stringMatching(/Invalid argument "threads"/),
      },
    });
    const unknown = await call(ws, messages, 8, 'deleteEverything', {});
    expect(unknown.response?.error?.code).toBe('unknown-method');
    ws.send(JSON.stringify({ type: 'call', id: 9, method: 'getAppInfo', extra: 'field' }));
    await new Promise((r) => setTimeout(r, 100));
    expect(messages.find((m) => m.id === 9)?.response?.error?.code).toBe('invalid-argument');
    const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
    ws.send('not json');
    expect(await closed).toBe(1007);
  });

  it('guards the HTTP API and static files', async () => {
    const noToken = await fetch(`${server.url}/api/call/getAppInfo`, { method: 'POST' });
    expect(noToken.status).toBe(401);
    const ok = await fetch(`${server.url}/api/call/getSettings`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.token}` },
    });
    expect(await ok.json()).toMatchObject({ ok: true, value: { theme: 'dark' } });
    const page = await fetch(`${server.url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect((await fetch(`${server.url}/..%2fsecret.txt`)).status).toBe(404);
    expect((await fetch(`${server.url}/%2e%2e/secret.txt`)).status).toBe(404);
  });

  it('refuses requests for foreign Host names (DNS rebinding)', async () => {
    const http = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(
        `${server.url}/`,
        { headers: { Host: `evil.example:${server.port}` } },
        (res) => resolve(res.statusCode ?? 0),
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(421);
  });
});
