// Getting the TAESD decoders through the model manager (issue 17 item 5): Settings' "Download
// the missing decoders" (downloadPreviewDecoders) fetches madebyollin's taesd_decoder and
// taesdxl_decoder .safetensors from the loopback Hub (here the small fixture decoder) and puts
// them in models/taesd under the names the studio looks for, not into files/ or the model list;
// what is already there is not fetched again.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { previewDecoderFiles } from '../../src/shared';
import { type FakeHub, startFakeHub } from '../fixtures/hub-server';
import { writeTaesdFile } from '../fixtures/taesd-file';

let hub: FakeHub;
let dataDir: string;
let host: StudioHost;
let decoder: Buffer;
const savedEnv = { endpoint: process.env.HF_ENDPOINT, token: process.env.HF_TOKEN };

beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-taesd-dl-'));
  const file = path.join(dataDir, 'fixture-decoder.safetensors');
  await writeTaesdFile(file);
  decoder = fs.readFileSync(file);
  fs.rmSync(file);
  hub = await startFakeHub(
    previewDecoderFiles.map((f) => ({
      id: f.repo,
      files: {
        [f.file]: decoder,
        'diffusion_pytorch_model.safetensors': Buffer.from('not fetched'),
      },
    })),
  );
  process.env.HF_ENDPOINT = hub.url;
  delete process.env.HF_TOKEN;
  host = new StudioHost({ shell: 'headless', dataDir, version: '0.0.0-test', log: () => {} });
  await host.library.ready;
});
afterAll(async () => {
  await host?.close();
  await hub?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
  process.env.HF_ENDPOINT = savedEnv.endpoint;
  if (savedEnv.token !== undefined) process.env.HF_TOKEN = savedEnv.token;
  if (savedEnv.endpoint === undefined) delete process.env.HF_ENDPOINT;
});

describe('downloading the TAESD decoders', () => {
  it('puts the missing decoders in models/taesd, and only those', async () => {
    const folder = path.join(dataDir, 'models', 'taesd');
    const before = await host.service.getPreviewDecoders(undefined);
    expect(before).toEqual([
      { variant: 'taesd', file: path.join(folder, 'taesd_decoder.safetensors'), present: false },
      {
        variant: 'taesdxl',
        file: path.join(folder, 'taesdxl_decoder.safetensors'),
        present: false,
      },
    ]);
    // One decoder is there already (as a .pth): only the other is fetched.
    fs.mkdirSync(folder, { recursive: true });
    fs.writeFileSync(path.join(folder, 'taesd_decoder.pth'), 'already here');
    const entries = await host.service.downloadPreviewDecoders(undefined);
    expect(entries.map((e) => e.source)).toEqual([
      'madebyollin/taesdxl/taesdxl_decoder.safetensors',
    ]);
    const done = await host.downloads.manager.wait(entries[0]!.id);
    expect(done.error_message).toBeNull();
    expect(done.state).toBe('done');
    const target = path.join(folder, 'taesdxl_decoder.safetensors');
    expect(done.result_path).toBe(target);
    expect(fs.readFileSync(target).equals(decoder)).toBe(true);
    expect((await host.service.getPreviewDecoders(undefined)).every((s) => s.present)).toBe(true);
    // Not imported as a model, not left in files/, nothing else of the repos fetched.
    expect(await host.service.listModels(undefined)).toEqual([]);
    expect(fs.existsSync(path.join(dataDir, 'files'))).toBe(false);
    expect(hub.requests.some((r) => r.url.includes('diffusion_pytorch_model'))).toBe(false);
    expect(hub.requests.some((r) => r.url.includes('taesd/resolve'))).toBe(false);
    // Nothing missing: nothing queued.
    expect(await host.service.downloadPreviewDecoders(undefined)).toEqual([]);
  });
});
