// Downloads through the contract, over the headless server's real WebSocket: startDownload
// from the loopback Hub, `downloadProgress` events to done, the model in listModels; a bad
// reference and a gated repo end in their sentences.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { StudioHost } from '../../src/main/api';
import { type RunningServer, startServer, wsProtocol } from '../../src/main/server/server';
import { type FakeHub, startFakeHub } from '../fixtures/hub-server';
import { fixtureModel } from '../fixtures/models';

let dataDir: string;
let host: StudioHost;
let server: RunningServer;
let hub: FakeHub;
const savedEnv = { endpoint: process.env.HF_ENDPOINT, token: process.env.HF_TOKEN };

beforeAll(async () => {
  const fixtureDir = await fixtureModel('e2e-known-answer', {
    unet: 'known-answer',
    knownLatents: 8,
  });
  hub = await startFakeHub([
    { id: 'studio/tiny-sd', dir: fixtureDir, license: 'openrail', tags: ['onnx'] },
    { id: 'studio/gated-sd', dir: fixtureDir, gated: true },
  ]);
  process.env.HF_ENDPOINT = hub.url;
  delete process.env.HF_TOKEN;
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-dl-server-'));
  const rendererDir = path.join(dataDir, 'renderer');
  fs.mkdirSync(rendererDir);
  fs.writeFileSync(path.join(rendererDir, 'index.html'), '<!doctype html><title>t</title>');
  host = new StudioHost({ shell: 'headless', dataDir, version: '9.9.9', log: () => {} });
  await host.library.ready;
  server = await startServer({ host, port: 0, rendererDir });
});
afterAll(async () => {
  await server?.close();
  await hub?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
  process.env.HF_ENDPOINT = savedEnv.endpoint;
  if (savedEnv.token !== undefined) process.env.HF_TOKEN = savedEnv.token;
  if (savedEnv.endpoint === undefined) delete process.env.HF_ENDPOINT;
});

type Reply = {
  type: string;
  id?: number;
  response?: { ok: boolean; value?: unknown; error?: { code: string; message: string } };
  event?: string;
  payload?: unknown;
};

async function connect(): Promise<{ ws: WebSocket; messages: Reply[] }> {
  const ws = new WebSocket(
    `${server.url.replace('http', 'ws')}/api/ws`,
    [wsProtocol, `token.${server.token}`],
    {
      origin: server.url,
    },
  );
  const messages: Reply[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return { ws, messages };
}

let nextId = 1;
async function call(
  ws: WebSocket,
  messages: Reply[],
  method: string,
  input?: unknown,
): Promise<Reply['response']> {
  const id = nextId++;
  ws.send(JSON.stringify({ type: 'call', id, method, input }));
  for (let i = 0; i < 1000; i++) {
    const found = messages.find((m) => m.type === 'result' && m.id === id);
    if (found) return found.response;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`no reply to ${method}`);
}

async function progressUntil(
  messages: Reply[],
  id: string,
  states: string[],
): Promise<Record<string, unknown>> {
  for (let i = 0; i < 3000; i++) {
    const found = messages.find(
      (m) =>
        m.type === 'event' &&
        m.event === 'downloadProgress' &&
        (m.payload as { id: string }).id === id &&
        states.includes((m.payload as { state: string }).state),
    );
    if (found) return found.payload as Record<string, unknown>;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`download ${id} never reached ${states.join('/')}`);
}

describe('downloads through the contract', () => {
  it('downloads a repo with progress events and adds the model', async () => {
    const { ws, messages } = await connect();
    try {
      const started = await call(ws, messages, 'startDownload', { reference: 'studio/tiny-sd' });
      expect(started?.ok).toBe(true);
      const entry = started!.value as { id: string; sha: string; state: string; license: string };
      expect(entry.sha).toBe(hub.repos.get('studio/tiny-sd')!.sha);
      expect(entry.license).toBe('openrail');
      const done = await progressUntil(messages, entry.id, ['done', 'failed']);
      expect(done).toMatchObject({ state: 'done', error: null });
      expect(done.bytesDone).toBe(done.bytesTotal);
      const list = (await call(ws, messages, 'listDownloads'))!.value as Array<{
        id: string;
        modelId: string | null;
        state: string;
      }>;
      const row = list.find((d) => d.id === entry.id)!;
      expect(row.state).toBe('done');
      const models = (await call(ws, messages, 'listModels'))!.value as Array<{
        id: string;
        path: string;
        status: string;
      }>;
      const model = models.find((m) => m.id === row.modelId)!;
      expect(model.status).toBe('ok');
      expect(model.path).toBe(path.join(dataDir, 'models', 'studio--tiny-sd'));
      expect(messages.some((m) => m.type === 'event' && m.event === 'modelsChanged')).toBe(true);
    } finally {
      ws.close();
    }
  });

  it('answers a bad reference and a gated repo with their sentences', async () => {
    const { ws, messages } = await connect();
    try {
      const bad = await call(ws, messages, 'startDownload', { reference: 'not a repo' });
      expect(bad).toEqual({
        ok: false,
        error: {
          code: 'invalid-argument',
          message: '"not a repo" is neither a Hub repo id (owner/name) nor a web address.',
        },
      });
      const started = await call(ws, messages, 'startDownload', { reference: 'studio/gated-sd' });
      const id = (started!.value as { id: string }).id;
      const failed = await progressUntil(messages, id, ['failed', 'done']);
      expect(failed.state).toBe('failed');
      expect(failed.error).toMatch(/needs a Hugging Face access token \(it is gated or private\)/);
      const resumed = await call(ws, messages, 'cancelDownload', { id });
      expect((resumed!.value as { state: string }).state).toBe('cancelled');
      expect(fs.existsSync(path.join(dataDir, 'downloads', id))).toBe(false);
    } finally {
      ws.close();
    }
  });

  it('searches the Hub and keeps a token over the socket, never sending the token back', async () => {
    const { ws, messages } = await connect();
    try {
      const found = await call(ws, messages, 'searchHub', { query: 'tiny' });
      expect(found?.ok).toBe(true);
      expect(found!.value).toEqual([
        expect.objectContaining({ id: 'studio/tiny-sd', layout: 'onnx', downloads: 10 }),
      ]);
      const set = await call(ws, messages, 'setHubToken', { token: 'hf_over_the_socket' });
      expect(set).toEqual({
        ok: true,
        value: {
          source: 'memory',
          editable: true,
          note: 'The token is kept only until the server stops; set HF_TOKEN in its environment to keep one.',
        },
      });
      const bad = await call(ws, messages, 'setHubToken', { token: 'hf with spaces' });
      expect(bad).toEqual({
        ok: false,
        error: {
          code: 'invalid-argument',
          message: 'A Hugging Face token is one word of letters and digits (it starts with hf_).',
        },
      });
      expect(JSON.stringify(messages)).not.toContain('hf_over_the_socket');
      expect((await call(ws, messages, 'clearHubToken'))!.value).toMatchObject({ source: 'none' });
    } finally {
      ws.close();
    }
  });
});
