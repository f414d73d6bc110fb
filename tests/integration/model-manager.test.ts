// The model manager against the loopback Hub (tests/fixtures/hub-server.ts), through the
// contract's service object of a real StudioHost (real SQLite, real files): Hub search with
// what loads, a plan before a download, the token (sent to the Hub, never in a log or
// settings.json, never returned), "an update exists" when the repo's main moves and the update
// that switches the model only once verified, and removal to the trash with undo that never
// touches a folder outside the models folder (symlinks included).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { DownloadEntry } from '../../src/shared';
import { StudioHost } from '../../src/main/api';
import type { DesktopIntegration } from '../../src/main/services';
import { type TensorSpec, safetensorsHeader } from '../fixtures/checkpoint';
import { type FakeHub, startFakeHub } from '../fixtures/hub-server';
import { fixtureModel } from '../fixtures/models';

let hub: FakeHub;
let fixtureDir: string;

/** A .safetensors file of zeros with these tensors (F16). */
function safetensors(tensors: Array<[string, number[]]>): Buffer {
  const specs: TensorSpec[] = tensors.map(([name, shape]) => ({ name, dtype: 'F16', shape }));
  const bytes = specs.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1) * 2, 0);
  return Buffer.concat([safetensorsHeader(specs), Buffer.alloc(bytes)]);
}
const addons = {
  // Named like a checkpoint; its header says LoRA.
  'model.safetensors': safetensors([
    ['lora_unet_mid_block_attentions_0_proj_in.lora_down.weight', [4, 8]],
    ['lora_unet_mid_block_attentions_0_proj_in.lora_up.weight', [8, 4]],
  ]),
  'vae-ft.safetensors': safetensors([
    ['encoder.conv_in.weight', [4, 3, 3, 3]],
    ['decoder.conv_out.weight', [3, 4, 3, 3]],
  ]),
  'style.safetensors': safetensors([['emb_params', [2, 768]]]),
  'flux.safetensors': safetensors([['double_blocks.0.img_attn.qkv.weight', [4, 4]]]),
};
const savedEnv = { endpoint: process.env.HF_ENDPOINT, token: process.env.HF_TOKEN };

beforeAll(async () => {
  fixtureDir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  hub = await startFakeHub([
    { id: 'studio/tiny-sd', dir: fixtureDir, license: 'openrail', tags: ['onnx'] },
    { id: 'studio/moving-sd', dir: fixtureDir, license: 'mit', tags: ['onnx'] },
    { id: 'people/breaking-sd', dir: fixtureDir },
    { id: 'studio/gated-sd', dir: fixtureDir, gated: true, tags: ['onnx'] },
    {
      id: 'studio/one-checkpoint',
      files: { 'model.safetensors': Buffer.alloc(4096, 1), 'README.md': Buffer.from('hi') },
      tags: ['onnx'],
    },
    { id: 'other/tiny-sd-torch', files: { 'unet/model.bin': Buffer.alloc(100) } },
    { id: 'people/addons', files: addons },
  ]);
  process.env.HF_ENDPOINT = hub.url;
  delete process.env.HF_TOKEN;
});
afterAll(async () => {
  await hub?.close();
  if (savedEnv.endpoint === undefined) delete process.env.HF_ENDPOINT;
  else process.env.HF_ENDPOINT = savedEnv.endpoint;
  if (savedEnv.token !== undefined) process.env.HF_TOKEN = savedEnv.token;
});

interface Opened {
  host: StudioHost;
  dataDir: string;
  logs: string[];
}
const opened: Opened[] = [];
afterEach(async () => {
  for (const o of opened.splice(0)) {
    await o.host.close();
    fs.rmSync(o.dataDir, { recursive: true, force: true });
  }
  hub.faults = {};
  hub.requests.length = 0;
});

async function open(desktop: DesktopIntegration | null = null, dataDir?: string): Promise<Opened> {
  const dir = dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'ls-mm-'));
  const logs: string[] = [];
  const host = new StudioHost({
    shell: desktop ? 'desktop' : 'headless',
    dataDir: dir,
    version: '9.9.9',
    desktop,
    log: (line) => logs.push(line),
  });
  await host.library.ready;
  host.downloads.start();
  const o = { host, dataDir: dir, logs };
  opened.push(o);
  return o;
}

async function download(o: Opened, reference: string): Promise<DownloadEntry> {
  const entry = await o.host.service.startDownload({ reference });
  const row = await o.host.downloads.manager.wait(entry.id);
  expect(row.error_message).toBeNull();
  expect(row.state).toBe('done');
  return (await o.host.service.listDownloads(undefined)).find((d) => d.id === entry.id)!;
}

describe('Hub search and the plan before a download', () => {
  it('finds repos by name tagged onnx, most downloaded first, and says which load as they are', async () => {
    const { host } = await open();
    const hits = await host.service.searchHub({ query: 'studio/', onnxOnly: true, limit: 30 });
    expect(hits.map((h) => h.id).sort()).toEqual([
      'studio/gated-sd',
      'studio/moving-sd',
      'studio/one-checkpoint',
      'studio/tiny-sd',
    ]);
    const tiny = hits.find((h) => h.id === 'studio/tiny-sd')!;
    expect(tiny).toEqual({
      id: 'studio/tiny-sd',
      downloads: 10,
      likes: 1,
      lastModified: '2026-01-01T00:00:00.000Z',
      layout: 'onnx',
      checkpoints: [],
    });
    const url = `${hub.url}/studio/one-checkpoint/resolve/main/model.safetensors`;
    expect(hits.find((h) => h.id === 'studio/one-checkpoint')).toMatchObject({
      layout: 'checkpoint',
      checkpoints: [{ file: 'model.safetensors', url }],
    });
    // Its URL plans as a Hub file: pinned, with the size the Hub publishes.
    const plan = await host.service.planDownload({ reference: url });
    expect(plan).toMatchObject({ kind: 'url', bytesTotal: 4096, name: 'model.safetensors' });
    const search = hub.requests.find((r) => r.url.startsWith('/api/models?'))!;
    const params = new URL(search.url, hub.url).searchParams;
    expect(params.getAll('filter')).toEqual(['onnx']);
    expect(params.get('sort')).toBe('downloads');
    expect(params.get('full')).toBe('true');
    // Without the tag filter, repos without it are found too; they load as nothing known.
    const all = await host.service.searchHub({ query: 'tiny-sd', onnxOnly: false, limit: 30 });
    expect(all.find((h) => h.id === 'other/tiny-sd-torch')?.layout).toBe('unknown');
  });

  it('says a search that failed in a sentence', async () => {
    const { host } = await open();
    hub.faults.status = { match: /^\/api\/models$/, status: 503, times: 10 };
    await expect(host.service.searchHub({ query: 'x', onnxOnly: true, limit: 5 })).rejects.toThrow(
      /^127\.0\.0\.1:\d+ failed to send the Hub search \(HTTP 503\); try again later\.$/,
    );
  });

  it('plans a repo: its files, total size and licence, pinned to the commit, queueing nothing', async () => {
    const { host } = await open();
    const plan = await host.service.planDownload({ reference: 'studio/tiny-sd' });
    expect(plan.sha).toBe(hub.repos.get('studio/tiny-sd')!.sha);
    expect(plan.license).toBe('openrail');
    const files = [...hub.repos.get('studio/tiny-sd')!.files];
    expect(plan.files.map((f) => f.path).sort()).toEqual(files.map(([p]) => p).sort());
    expect(plan.bytesTotal).toBe(files.reduce((n, [, b]) => n + b.length, 0));
    expect(await host.service.listDownloads(undefined)).toEqual([]);
  });
});

describe('the Hub token', () => {
  const TOKEN = () => hub.token;
  const encryptor = {
    available: () => true,
    encrypt: (s: string) => Buffer.from(Buffer.from(s).map((b) => b ^ 0x33)),
    decrypt: (b: Buffer) => Buffer.from(b.map((x) => x ^ 0x33)).toString(),
  };
  const desktop = (): DesktopIntegration => ({
    trash: async (f) => fs.rmSync(f, { recursive: true, force: true }),
    reveal: () => {},
    secrets: encryptor,
  });

  it('is sent to the Hub for a gated repo, reported only as set, and never in a log or settings.json', async () => {
    const o = await open(desktop());
    const { host, dataDir, logs } = o;
    expect(await host.service.getHubToken(undefined)).toEqual({
      source: 'none',
      editable: true,
      note: null,
    });
    const status = await host.service.setHubToken({ token: TOKEN() });
    expect(status).toEqual({ source: 'stored', editable: true, note: null });
    expect(JSON.stringify(status)).not.toContain(TOKEN());
    await host.service.updateSettings({ theme: 'dark' });
    await download(o, 'studio/gated-sd');
    const resolves = hub.requests.filter((r) => r.host === 'hub' && r.url.includes('/resolve/'));
    expect(resolves.length).toBeGreaterThan(0);
    for (const r of resolves) expect(r.authorization).toBe(`Bearer ${TOKEN()}`);
    // Never to the CDN, another host.
    for (const r of hub.requests.filter((x) => x.host === 'cdn'))
      expect(r.authorization).toBeNull();
    // A failure's message names no token either.
    hub.faults.status = { match: /resolve/, status: 403, times: 100 };
    const refused = await host.service.startDownload({ reference: 'studio/tiny-sd' });
    expect((await host.downloads.manager.wait(refused.id)).error_message).toMatch(
      /refused access to .* \(HTTP 403\); check that the access token in Settings \(or HF_TOKEN\) may read it\.$/,
    );
    const settings = fs.readFileSync(path.join(dataDir, 'settings.json'), 'utf8');
    expect(settings).not.toContain(TOKEN());
    expect(logs.join('\n')).not.toContain(TOKEN());
    expect(JSON.stringify(await host.service.listDownloads(undefined))).not.toContain(TOKEN());
    const bin = fs.readFileSync(path.join(dataDir, 'hub-token.bin'));
    expect(bin.toString('latin1')).not.toContain(TOKEN());
    await host.close();
    opened.splice(opened.indexOf(o), 1);

    // The next session reads it back, and clearing it leaves the gated repo refused.
    const again = await open(desktop(), dataDir);
    expect((await again.host.service.getHubToken(undefined)).source).toBe('stored');
    expect((await again.host.service.clearHubToken(undefined)).source).toBe('none');
    expect(fs.existsSync(path.join(dataDir, 'hub-token.bin'))).toBe(false);
    hub.faults = {};
    const gated = await again.host.service.startDownload({ reference: 'studio/gated-sd' });
    const failed = await again.host.downloads.manager.wait(gated.id);
    expect(failed.state).toBe('failed');
    expect(failed.error_message).toMatch(/add one in Settings/);
  });

  it('headless: HF_TOKEN is the token, from the environment and not editable', async () => {
    process.env.HF_TOKEN = 'hf_from_env';
    try {
      const { host } = await open();
      expect((await host.service.getHubToken(undefined)).source).toBe('environment');
      await expect(host.service.setHubToken({ token: 'hf_x' })).rejects.toThrow(/HF_TOKEN/);
    } finally {
      delete process.env.HF_TOKEN;
    }
  });
});

describe('updates of downloaded models', () => {
  const S2 = 'b'.repeat(40);
  const S3 = 'c'.repeat(40);

  it("says an update exists when the repo's main moved (asked at most daily unless forced), and the update switches the model once verified", async () => {
    const o = await open();
    const { host, dataDir } = o;
    const first = await download(o, 'studio/moving-sd');
    const S1 = first.sha!;
    const modelId = first.modelId!;
    const oldFolder = path.join(dataDir, 'models', 'studio--moving-sd');
    const revisionAsks = () =>
      hub.requests.filter((r) => r.url.startsWith('/api/models/studio/moving-sd/revision/main'))
        .length;

    expect(await host.service.checkModelUpdates({ force: false })).toEqual([
      expect.objectContaining({
        modelId,
        source: 'studio/moving-sd',
        sha: S1,
        latestSha: S1,
        updateAvailable: false,
        error: null,
      }),
    ]);
    hub.commit('studio/moving-sd', { 'NOTES.txt': Buffer.from('second commit\n') }, S2);
    const asked = revisionAsks();
    // Cached for a day: not asked again, so not seen yet.
    expect((await host.service.checkModelUpdates({ force: false }))[0].updateAvailable).toBe(false);
    expect(revisionAsks()).toBe(asked);
    // A day later (the cache says so) it is asked again.
    const cacheFile = path.join(dataDir, 'model-updates.json');
    const cache = JSON.parse(fs.readFileSync(cacheFile, 'utf8'));
    cache['studio/moving-sd'].checkedAt -= 24 * 3600_000;
    fs.writeFileSync(cacheFile, JSON.stringify(cache));
    const seen = await host.service.checkModelUpdates({ force: false });
    expect(revisionAsks()).toBe(asked + 1);
    expect(seen[0]).toMatchObject({ latestSha: S2, updateAvailable: true });
    expect((await host.service.checkModelUpdates({ force: true }))[0].updateAvailable).toBe(true);
    expect(revisionAsks()).toBe(asked + 2);

    // An update whose bytes are wrong fails; the model keeps its folder.
    hub.commit('studio/moving-sd', { 'NOTES.txt': Buffer.from('third commit\n') }, S3);
    hub.faults.wrongBytes = { file: 'text_encoder/model.onnx', times: 100 };
    const bad = await host.service.updateModel({ modelId });
    const badRow = await host.downloads.manager.wait(bad.id);
    expect(badRow.state).toBe('failed');
    expect(badRow.error_message).toMatch(/text_encoder\/model\.onnx/);
    let model = (await host.service.listModels(undefined)).find((m) => m.id === modelId)!;
    expect(model.path).toBe(oldFolder);
    expect(fs.existsSync(path.join(oldFolder, 'NOTES.txt'))).toBe(false);
    await host.service.cancelDownload({ id: bad.id });

    // A good one: downloaded beside the old folder, verified, then the model points at it.
    hub.faults = {};
    const good = await host.service.updateModel({ modelId });
    expect(good.sha).toBe(S3);
    const goodRow = await host.downloads.manager.wait(good.id);
    expect(goodRow.error_message).toBeNull();
    expect(goodRow.model_id).toBe(modelId);
    model = (await host.service.listModels(undefined)).find((m) => m.id === modelId)!;
    expect(model.status).toBe('ok');
    expect(model.path).not.toBe(oldFolder);
    expect(path.dirname(model.path)).toBe(path.join(dataDir, 'models'));
    expect(fs.readFileSync(path.join(model.path, 'NOTES.txt'), 'utf8')).toBe('third commit\n');
    expect(JSON.parse(fs.readFileSync(path.join(model.path, '.download.json'), 'utf8')).sha).toBe(
      S3,
    );
    // The old folder went to the app's trash.
    expect(fs.existsSync(oldFolder)).toBe(false);
    const trash = fs.readdirSync(path.join(dataDir, 'trash'));
    expect(
      trash.some((d) => fs.existsSync(path.join(dataDir, 'trash', d, 'studio--moving-sd'))),
    ).toBe(true);
    expect((await host.service.checkModelUpdates({ force: true }))[0]).toMatchObject({
      sha: S3,
      updateAvailable: false,
    });
    await expect(host.service.updateModel({ modelId })).rejects.toThrow(
      'studio/moving-sd has no newer commit on main.',
    );
  });

  it('an update whose folder does not load leaves the model on its old folder, trashes the new one and says so in one sentence', async () => {
    const o = await open();
    const { host, dataDir } = o;
    const first = await download(o, 'people/breaking-sd');
    const modelId = first.modelId!;
    const oldFolder = path.join(dataDir, 'models', 'people--breaking-sd');
    // The next commit's UNet is not an ONNX graph: its bytes verify (the Hub publishes their
    // hash) but the folder does not load.
    const S4 = 'd'.repeat(40);
    hub.commit('people/breaking-sd', { 'unet/model.onnx': Buffer.from('not an onnx graph') }, S4);
    const update = await host.service.updateModel({ modelId });
    expect(update.sha).toBe(S4);
    const row = await host.downloads.manager.wait(update.id);
    expect(row.state).toBe('failed');
    expect(row.error_message).toMatch(
      /^The update of people--breaking-sd \(commit ddddddd\) does not load, so the model stays as it was and the downloaded folder went to the trash: unet\/model\.onnx is not an ONNX model [^.]*\.$/,
    );
    // The model is still the old folder, usable; nothing else is left in models/.
    const model = (await host.service.listModels(undefined)).find((m) => m.id === modelId)!;
    expect(model).toMatchObject({ path: oldFolder, status: 'ok', error: null });
    expect(fs.readdirSync(path.join(dataDir, 'models'))).toEqual(['people--breaking-sd']);
    expect(JSON.parse(fs.readFileSync(path.join(oldFolder, '.download.json'), 'utf8')).sha).toBe(
      first.sha,
    );
    // The new folder is in the app's trash, whole.
    const trashed = fs
      .readdirSync(path.join(dataDir, 'trash'))
      .map((d) => path.join(dataDir, 'trash', d, 'people--breaking-sd-2'))
      .filter((d) => fs.existsSync(d));
    expect(trashed).toHaveLength(1);
    expect(fs.readFileSync(path.join(trashed[0]!, 'unet', 'model.onnx'), 'utf8')).toBe(
      'not an onnx graph',
    );
    // The update is still offered, and a retry of the failed download says why it cannot go on.
    expect((await host.service.checkModelUpdates({ force: true }))[0]).toMatchObject({
      modelId,
      updateAvailable: true,
    });
    await host.service.resumeDownload({ id: update.id });
    const retried = await host.downloads.manager.wait(update.id);
    expect(retried.state).toBe('failed');
    expect(retried.error_message).toBe(
      'people--breaking-sd was already handed on by an earlier try; download it again to fetch it anew.',
    );
    expect((await host.service.listModels(undefined)).map((m) => m.path)).toEqual([oldFolder]);
  });
});

describe('removing a model to the trash', () => {
  function copyFixture(to: string): string {
    fs.cpSync(fixtureDir, to, { recursive: true });
    return to;
  }

  it('moves a downloaded folder to the app trash, and undo brings back the folder and the model by its id', async () => {
    const o = await open();
    const { host, dataDir } = o;
    const entry = await download(o, 'studio/tiny-sd');
    const folder = path.join(dataDir, 'models', 'studio--tiny-sd');
    const result = await host.service.trashModel({ id: entry.modelId! });
    expect(result.trashedTo).toBe('app-trash');
    expect(fs.existsSync(folder)).toBe(false);
    expect((await host.service.listModels(undefined)).some((m) => m.id === entry.modelId)).toBe(
      false,
    );
    const trashed = path.join(dataDir, 'trash', `models-${result.undoToken}`, 'studio--tiny-sd');
    expect(fs.existsSync(path.join(trashed, 'unet', 'model.onnx'))).toBe(true);

    const back = await host.service.undoTrashModel({ token: result.undoToken });
    expect(back).toMatchObject({ id: entry.modelId, path: folder, status: 'ok' });
    expect(fs.existsSync(path.join(folder, 'unet', 'model.onnx'))).toBe(true);
    expect(fs.existsSync(trashed)).toBe(false);
    expect((await host.service.listDownloads(undefined))[0].modelId).toBe(entry.modelId);
    await expect(host.service.undoTrashModel({ token: result.undoToken })).rejects.toThrow(
      'That removal can no longer be undone (undo lasts until the app is closed).',
    );
  });

  it('never moves a folder outside the models folder: one added from elsewhere, or a symlink into models/', async () => {
    const { host, dataDir } = await open();
    const outside = copyFixture(path.join(dataDir, 'elsewhere'));
    const added = await host.service.addModel({ path: outside });
    const r1 = await host.service.trashModel({ id: added.id });
    expect(r1.trashedTo).toBeNull();
    expect(fs.existsSync(path.join(outside, 'unet', 'model.onnx'))).toBe(true);

    // models/linked -> ../elsewhere: the link is in models/, what it names is not.
    fs.mkdirSync(path.join(dataDir, 'models'), { recursive: true });
    const link = path.join(dataDir, 'models', 'linked');
    fs.symlinkSync(outside, link, 'dir');
    const viaLink = await host.service.addModel({ path: link });
    const r2 = await host.service.trashModel({ id: viaLink.id });
    expect(r2.trashedTo).toBeNull();
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.existsSync(path.join(outside, 'unet', 'model.onnx'))).toBe(true);

    // The models folder itself a symlink to elsewhere: what is inside it is still inside it.
    const realModels = path.join(dataDir, 'real-models');
    fs.rmSync(link);
    fs.renameSync(path.join(dataDir, 'models'), realModels);
    fs.symlinkSync(realModels, path.join(dataDir, 'models'), 'dir');
    const inner = copyFixture(path.join(realModels, 'inner'));
    const innerModel = await host.service.addModel({ path: path.join(dataDir, 'models', 'inner') });
    expect((await host.service.trashModel({ id: innerModel.id })).trashedTo).toBe('app-trash');
    expect(fs.existsSync(inner)).toBe(false);

    // An id the library does not know is refused in a sentence.
    await expect(host.service.trashModel({ id: 'nope' })).rejects.toThrow(
      'That model is not in the library.',
    );
  });

  it('desktop: removals not undone go to the OS trash when the app closes', async () => {
    const trashed: string[] = [];
    const o = await open({
      trash: async (f) => {
        trashed.push(f);
        fs.rmSync(f, { recursive: true, force: true });
      },
      reveal: () => {},
    });
    const entry = await download(o, 'studio/tiny-sd');
    const result = await o.host.service.trashModel({ id: entry.modelId! });
    expect(result.trashedTo).toBe('os-trash');
    expect(trashed).toEqual([]);
    await o.host.close();
    opened.splice(opened.indexOf(o), 1);
    expect(trashed).toEqual([
      path.join(o.dataDir, 'trash', `models-${result.undoToken}`, 'studio--tiny-sd'),
    ]);
    expect(fs.existsSync(path.join(o.dataDir, 'trash', `models-${result.undoToken}`))).toBe(false);
    fs.rmSync(o.dataDir, { recursive: true, force: true });
  });
});

describe('single files by URL, handed to their folders by what their header says', () => {
  it('puts a LoRA, a VAE and an embedding in the folders Settings names, verified, and refuses a file the studio cannot use in a sentence', async () => {
    const o = await open();
    const { host, dataDir } = o;
    const loraDir = path.join(dataDir, 'my-loras');
    const vaeDir = path.join(dataDir, 'my-vaes');
    fs.mkdirSync(loraDir);
    fs.mkdirSync(vaeDir);
    await host.service.updateSettings({ loraDir, vaeDir });
    const url = (file: string) => `${hub.url}/people/addons/resolve/main/${file}`;

    const lora = await download(o, url('model.safetensors'));
    expect(lora.modelId).toBeNull();
    const loraFile = path.join(loraDir, 'model.safetensors');
    expect(fs.readFileSync(loraFile).equals(addons['model.safetensors'])).toBe(true);
    const vae = await download(o, url('vae-ft.safetensors'));
    expect(vae.modelId).toBeNull();
    expect(fs.existsSync(path.join(vaeDir, 'vae-ft.safetensors'))).toBe(true);
    // The embeddings folder is the default one (none set): <data>/embeddings.
    await download(o, url('style.safetensors'));
    expect(fs.existsSync(path.join(dataDir, 'embeddings', 'style.safetensors'))).toBe(true);
    // Nothing was left in the data folder's files/ or given to the checkpoint import.
    expect(fs.readdirSync(path.join(dataDir, 'files'))).toEqual([]);
    expect(await host.service.listModels(undefined)).toEqual([]);
    // The studio's LoRA list sees it.
    const networks = await host.service.listNetworks({ refresh: true });
    expect(networks.loras.map((l) => l.name)).toContain('model');

    // A second LoRA of the same name keeps both.
    const again = await host.service.startDownload({ reference: url('model.safetensors') });
    await host.downloads.manager.wait(again.id);
    expect(fs.readdirSync(loraDir).sort()).toEqual(['model-2.safetensors', 'model.safetensors']);

    const flux = await host.service.startDownload({ reference: url('flux.safetensors') });
    const failed = await host.downloads.manager.wait(flux.id);
    expect(failed.state).toBe('failed');
    const kept = path.join(dataDir, 'files', 'flux.safetensors');
    expect(failed.error_message).toBe(
      `flux.safetensors is a Flux model, not a checkpoint, LoRA, VAE, embedding or ControlNet, so the studio cannot use it. It was kept as ${kept}.`,
    );
    expect(fs.existsSync(kept)).toBe(true);
  });
});
