// Model downloads against a Hugging Face Hub on loopback (tests/fixtures/hub-server.ts) that
// serves a fixture model folder, with faults injected: cut connections, wrong bytes, a server
// that ignores Range, stalls, slow bodies, 401/403/404/429, a hostile file name, a restart. The
// downloaded model is then loaded and generates its known answer.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine } from '../../src/engine';
import { GenerationSettings } from '../../src/shared';
import { HubClient } from '../../src/main/downloads/hub';
import {
  type DownloadManagerOptions,
  type DownloadProgress,
  DownloadManager,
} from '../../src/main/downloads/manager';
import type { Library } from '../../src/main/library/service';
import { type FakeHub, readTree, startFakeHub } from '../fixtures/hub-server';
import { type FixtureInfo, fixtureModel, loadFixtureInfo } from '../fixtures/models';
import { expectKnown } from './known-answer';
import { openLibrary, tempDir } from './library-helpers';

let hub: FakeHub;
let fixtureDir: string;
let info: FixtureInfo;
const TEXT_ENCODER = 'text_encoder/model.onnx';

beforeAll(async () => {
  fixtureDir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  info = await loadFixtureInfo(fixtureDir);
  hub = await startFakeHub([
    { id: 'studio/tiny-sd', dir: fixtureDir, license: 'openrail', tags: ['onnx', 'text-to-image'] },
    { id: 'studio/gated-sd', dir: fixtureDir, gated: true },
    {
      id: 'evil/escape',
      files: { 'model_index.json': Buffer.from('{}'), '../../escape.onnx': Buffer.alloc(2048, 7) },
    },
    { id: 'studio/torch-only', files: { 'model.safetensors': Buffer.alloc(4096, 1) } },
  ]);
});
afterAll(async () => {
  await hub?.close();
});

interface Setup {
  dataDir: string;
  library: Library;
  manager: DownloadManager;
  progress: DownloadProgress[];
  logs: string[];
}
const open: Setup[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) {
    await s.manager.close();
    s.library.close();
    fs.rmSync(s.dataDir, { recursive: true, force: true });
  }
  hub.faults = {};
  hub.requests.length = 0;
  hub.bytesServed = 0;
});

async function setup(
  options: { token?: string | null; dataDir?: string; manager?: DownloadManagerOptions } = {},
): Promise<Setup> {
  const dataDir = options.dataDir ?? tempDir('ls-dl-');
  const { library, context } = await openLibrary(dataDir);
  const progress: DownloadProgress[] = [];
  const manager = new DownloadManager(
    library.database,
    {
      dataDir,
      hub: () =>
        new HubClient(
          { endpoint: hub.url, token: options.token ?? null },
          { backoffMs: 5, retries: 3 },
        ),
      addModel: async (folder) => (await library.addModel(folder)).id,
      importFile: async (file) => ({ modelId: null, path: file }),
      onProgress: (p) => progress.push(p),
      log: (line) => context.logs.push(line),
    },
    { stallMs: 1000, backoffMs: 5, retries: 3, progressIntervalMs: 0, ...options.manager },
  );
  manager.start();
  const s = { dataDir, library, manager, progress, logs: context.logs };
  open.push(s);
  return s;
}

const filesOf = readTree;

/** The downloaded folder holds exactly the fixture's files, byte for byte. */
function expectSameFiles(dir: string): void {
  const got = filesOf(dir);
  got.delete('.download.json');
  const want = filesOf(fixtureDir);
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  for (const [k, v] of want) expect(got.get(k)!.equals(v), k).toBe(true);
}

function modelsDirEntries(dataDir: string): string[] {
  const dir = path.join(dataDir, 'models');
  return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
}

const sha = (): string => hub.repos.get('studio/tiny-sd')!.sha;
const textEncoderSize = (): number => fs.statSync(path.join(fixtureDir, TEXT_ENCODER)).size;

describe('downloading a model from the Hub', () => {
  it('pins every file to the commit, verifies it, registers the model, and it generates its known answer', async () => {
    const s = await setup({ token: hub.token });
    const row = await s.manager.add('studio/tiny-sd');
    expect(row.sha).toBe(sha());
    expect(row.license).toBe('openrail');
    const done = await s.manager.wait(row.id);
    expect(done.error_message).toBeNull();
    expect(done.state).toBe('done');
    expect(done.result_path).toBe(path.join(s.dataDir, 'models', 'studio--tiny-sd'));
    expectSameFiles(done.result_path!);
    expect(
      JSON.parse(fs.readFileSync(path.join(done.result_path!, '.download.json'), 'utf8')),
    ).toMatchObject({
      source: 'studio/tiny-sd',
      sha: sha(),
    });
    // Nothing left in the work folder.
    expect(fs.existsSync(path.join(s.dataDir, 'downloads', row.id))).toBe(false);

    const resolves = hub.requests.filter((r) => r.url.includes('/resolve/'));
    expect(resolves.length).toBeGreaterThan(5);
    for (const r of resolves) expect(r.url).toContain(`/resolve/${sha()}/`);
    // The token goes to the Hub, never to the CDN host it redirects to.
    expect(resolves.every((r) => r.authorization === `Bearer ${hub.token}`)).toBe(true);
    const cdn = hub.requests.filter((r) => r.host === 'cdn');
    expect(cdn.length).toBeGreaterThan(0);
    expect(cdn.every((r) => r.authorization === null)).toBe(true);

    const models = s.library.models.listModels();
    const model = models.find((m) => m.id === done.model_id)!;
    expect(model.status).toBe('ok');

    const last = s.progress.at(-1)!;
    expect(last.state).toBe('done');
    expect(last.bytesDone).toBe(last.bytesTotal);
    expect(last.filesDone).toBe(last.filesTotal);
    expect(last.bytesTotal).toBe(
      [...filesOf(fixtureDir).values()].reduce((n, b) => n + b.length, 0),
    );

    const engine = new DiffusionEngine({ provider: 'cpu', previewEvery: 0 });
    try {
      const result = await engine.generate({
        settings: GenerationSettings.parse({
          model: done.result_path,
          prompt: 'a known answer',
          seed: 3,
          sampler: 'euler',
          steps: 12,
          guidance: 1,
          width: info.latentSize * info.vaeFactor,
          height: info.latentSize * info.vaeFactor,
        }),
        modelDir: done.result_path!,
      });
      expectKnown(info, result.images[0].image, 6, 'downloaded model');
    } finally {
      await engine.release();
    }
  });

  it('resumes a file whose connection was cut, with Range pinned by If-Range, and sends each byte about once', async () => {
    const s = await setup();
    hub.faults.cut = { file: TEXT_ENCODER, afterBytes: 100_000, times: 2 };
    const row = await s.manager.add('studio/tiny-sd');
    const done = await s.manager.wait(row.id);
    expect(done.state).toBe('done');
    expectSameFiles(done.result_path!);
    const te = hub.requests.filter((r) => r.host === 'cdn' && r.url.includes('text_encoder'));
    expect(te.map((r) => r.range)).toEqual([null, 'bytes=100000-', 'bytes=200000-']);
    expect(te[1].ifRange).toMatch(/^"[0-9a-f]{64}"$/);
    expect(te.map((r) => r.status)).toEqual([200, 206, 206]);
    const total = [...filesOf(fixtureDir).values()].reduce((n, b) => n + b.length, 0);
    expect(hub.bytesServed).toBe(total);
  });

  it('restarts a file cleanly when the server ignores Range', async () => {
    const s = await setup();
    hub.faults.cut = { file: TEXT_ENCODER, afterBytes: 100_000, times: 1 };
    hub.faults.ignoreRange = true;
    const done = await s.manager.wait((await s.manager.add('studio/tiny-sd')).id);
    expect(done.state).toBe('done');
    expectSameFiles(done.result_path!);
    const te = hub.requests.filter((r) => r.host === 'cdn' && r.url.includes('text_encoder'));
    expect(te.map((r) => [r.range, r.status])).toEqual([
      [null, 200],
      ['bytes=100000-', 200],
    ]);
    // Progress went back when the file restarted, and never past the total.
    expect(s.progress.every((p) => p.bytesTotal === null || p.bytesDone <= p.bytesTotal)).toBe(
      true,
    );
  });

  it('fetches a file again when its bytes were wrong once, and keeps nothing when they are wrong twice', async () => {
    const s = await setup();
    hub.faults.wrongBytes = { file: TEXT_ENCODER, times: 1 };
    const ok = await s.manager.wait((await s.manager.add('studio/tiny-sd')).id);
    expect(ok.state).toBe('done');
    expectSameFiles(ok.result_path!);

    const t = await setup();
    hub.faults.wrongBytes = { file: TEXT_ENCODER, times: 2 };
    const bad = await t.manager.wait((await t.manager.add('studio/tiny-sd')).id);
    expect(bad.state).toBe('failed');
    expect(bad.error_message).toBe(
      `${TEXT_ENCODER} of studio/tiny-sd came down damaged twice (its SHA-256 is not the one published); nothing of it was kept, try again later.`,
    );
    // No model folder, no library entry, no partial of the bad file.
    expect(modelsDirEntries(t.dataDir)).toEqual([]);
    expect(t.library.models.listModels().filter((m) => !m.builtIn)).toEqual([]);
    expect(
      fs.existsSync(path.join(t.dataDir, 'downloads', bad.id, 'partial', `${TEXT_ENCODER}.part`)),
    ).toBe(false);
  });

  it('drops a stalled body and resumes it; slow bodies finish with a rate and an ETA on the way', async () => {
    const s = await setup({ manager: { stallMs: 300 } });
    hub.faults.stall = { file: TEXT_ENCODER, afterBytes: 50_000, times: 1 };
    hub.faults.slow = { chunk: 32 * 1024, delayMs: 15 };
    const done = await s.manager.wait((await s.manager.add('studio/tiny-sd')).id);
    expect(done.state).toBe('done');
    expectSameFiles(done.result_path!);
    const te = hub.requests.filter((r) => r.host === 'cdn' && r.url.includes('text_encoder'));
    expect(te[1].range).toBe('bytes=50000-');
    const running = s.progress.filter((p) => p.state === 'running');
    expect(running.some((p) => p.bytesPerSecond > 0 && p.etaSeconds !== null)).toBe(true);
  });

  it('retries HTTP 429 after the Retry-After wait, and words one that asks too long', async () => {
    const s = await setup();
    hub.faults.status = { match: /\/resolve\//, status: 429, times: 2, retryAfter: '0' };
    const done = await s.manager.wait((await s.manager.add('studio/tiny-sd')).id);
    expect(done.state).toBe('done');
    expect(hub.requests.filter((r) => r.status === 429)).toHaveLength(2);

    hub.faults.status = { match: /\/revision\//, status: 429, times: 1, retryAfter: '3600' };
    await expect(s.manager.add('studio/tiny-sd', { revision: sha() })).rejects.toThrow(
      'The server asked to wait 60 minutes before fetching studio/tiny-sd again (HTTP 429); try again later.',
    );
  });

  it('says a gated model needs a token, that a wrong token was refused, and downloads it with the right one', async () => {
    const none = await setup();
    const r1 = await none.manager.wait((await none.manager.add('studio/gated-sd')).id);
    expect(r1.state).toBe('failed');
    expect(r1.error_code).toBe('unauthorized');
    expect(r1.error_message).toMatch(
      /of studio\/gated-sd needs a Hugging Face access token \(it is gated or private\); add one in Settings, or set HF_TOKEN\.$/,
    );
    expect(modelsDirEntries(none.dataDir)).toEqual([]);

    const wrong = await setup({ token: 'hf_wrong' });
    const r2 = await wrong.manager.wait((await wrong.manager.add('studio/gated-sd')).id);
    expect(r2.error_code).toBe('forbidden');
    expect(r2.error_message).toMatch(
      /is gated: accept its conditions on its Hub page while signed in/,
    );

    const right = await setup({ token: hub.token });
    const r3 = await right.manager.wait((await right.manager.add('studio/gated-sd')).id);
    expect(r3.state).toBe('done');
  });

  it('says which repo or revision does not exist, and that a repo without ONNX files has nothing to load', async () => {
    const s = await setup();
    await expect(s.manager.add('studio/no-such-model')).rejects.toThrow(
      'studio/no-such-model was not found on the Hub; check its name (a private repo also needs an access token).',
    );
    await expect(s.manager.add('studio/tiny-sd', { revision: 'v9' })).rejects.toThrow(
      'That revision of studio/tiny-sd does not exist on the Hub.',
    );
    await expect(s.manager.add('studio/torch-only')).rejects.toThrow(
      'studio/torch-only holds no ONNX model; download its checkpoint file by its URL instead, and it is converted.',
    );
    await expect(s.manager.add('not a repo')).rejects.toThrow(
      '"not a repo" is neither a Hub repo id (owner/name) nor a web address.',
    );
    expect(s.manager.list()).toEqual([]);
  });

  it('refuses a repo that names a file outside the model folder, writing nothing', async () => {
    const s = await setup();
    await expect(s.manager.add('evil/escape')).rejects.toThrow(
      'The server named a file "../../escape.onnx", which would reach outside the model folder; nothing was written.',
    );
    expect(fs.existsSync(path.join(s.dataDir, 'escape.onnx'))).toBe(false);
    expect(fs.existsSync(path.join(s.dataDir, 'downloads'))).toBe(false);
    expect(hub.requests.some((r) => r.url.includes('/resolve/'))).toBe(false);
  });

  it('checks the disk has room before starting', async () => {
    const s = await setup({
      manager: { freeBytes: async () => 300 * 1024 * 1024, reserveBytes: 299.9 * 1024 * 1024 },
    });
    await expect(s.manager.add('studio/tiny-sd')).rejects.toThrow(
      /^studio\/tiny-sd needs \d+\.\d kB and the disk has \d+\.\d kB free; free some space first\.$/,
    );
    expect(s.manager.list()).toEqual([]);
  });
});

describe('pause, resume, cancel and restart', () => {
  it('pauses keeping the partial files, and resumes from them', async () => {
    const s = await setup();
    hub.faults.slow = { chunk: 8 * 1024, delayMs: 20 };
    const row = await s.manager.add('studio/tiny-sd');
    await until(() => s.progress.some((p) => p.bytesDone > 60_000));
    s.manager.pause(row.id);
    const paused = await s.manager.wait(row.id);
    expect(paused.state).toBe('paused');
    const partial = path.join(s.dataDir, 'downloads', row.id, 'partial');
    const kept = [...filesOf(partial).values()].reduce((n, b) => n + b.length, 0);
    expect(kept).toBeGreaterThan(0);
    hub.faults.slow = undefined;
    s.manager.resume(row.id);
    const done = await s.manager.wait(row.id);
    expect(done.state).toBe('done');
    expectSameFiles(done.result_path!);
    expect(hub.requests.some((r) => r.range !== null && r.status === 206)).toBe(true);
  });

  it('cancels, removing what was fetched and adding no model', async () => {
    const s = await setup();
    hub.faults.slow = { chunk: 8 * 1024, delayMs: 20 };
    const row = await s.manager.add('studio/tiny-sd');
    await until(() => s.progress.some((p) => p.bytesDone > 30_000));
    await s.manager.cancel(row.id);
    expect(s.manager.store.get(row.id)!.state).toBe('cancelled');
    expect(fs.existsSync(path.join(s.dataDir, 'downloads', row.id))).toBe(false);
    expect(modelsDirEntries(s.dataDir)).toEqual([]);
  });

  it('survives a restart: the queued download resumes from its partial files in a new session', async () => {
    const first = await setup();
    hub.faults.slow = { chunk: 8 * 1024, delayMs: 20 };
    const row = await first.manager.add('studio/tiny-sd');
    await until(() => first.progress.some((p) => p.bytesDone > 100_000));
    await first.manager.close();
    first.library.close();
    open.splice(open.indexOf(first), 1);
    hub.faults.slow = undefined;
    const servedBefore = hub.bytesServed;

    const second = await setup({ dataDir: first.dataDir });
    expect(second.manager.store.get(row.id)!.state).not.toBe('failed');
    const done = await second.manager.wait(row.id);
    expect(done.state).toBe('done');
    expectSameFiles(done.result_path!);
    const total = [...filesOf(fixtureDir).values()].reduce((n, b) => n + b.length, 0);
    // What the first session had fetched was not fetched again (a chunk in flight at most).
    expect(hub.bytesServed).toBeLessThan(total + 8 * 1024 * 4);
    expect(hub.bytesServed - servedBefore).toBeLessThan(total - 50_000);
  });
});

describe('the Hub API', () => {
  it('pages the tree, searches by name and tag, and resolves revisions to the commit', async () => {
    const client = new HubClient({ endpoint: hub.url, token: null });
    const files = await client.files('studio/tiny-sd', sha());
    expect(files.map((f) => f.path).sort()).toEqual([...filesOf(fixtureDir).keys()].sort());
    expect(hub.requests.filter((r) => r.url.includes('/tree/')).length).toBeGreaterThan(2);
    const te = files.find((f) => f.path === TEXT_ENCODER)!;
    expect(te.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(te.size).toBe(textEncoderSize());
    expect(files.find((f) => f.path === 'model_index.json')!.gitOid).toMatch(/^[0-9a-f]{40}$/);
    expect((await client.search({ query: 'tiny', tags: ['onnx'] })).map((r) => r.id)).toEqual([
      'studio/tiny-sd',
    ]);
    expect(await client.search({ query: 'tiny', tags: ['gguf'] })).toEqual([]);
    expect((await client.revision('studio/tiny-sd', 'main')).sha).toBe(sha());
  });
});

async function until(cond: () => boolean, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}
