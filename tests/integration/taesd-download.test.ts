// Getting the TAESD decoders through the model manager (issue 17 item 5): Settings' "Download
// the missing decoders" (downloadPreviewDecoders) fetches madebyollin's taesd_decoder and
// taesdxl_decoder .safetensors from the loopback Hub (here the small fixture decoder) and puts
// them in models/taesd under the names the studio looks for, not into files/ or the model list;
// what is already there is not fetched again.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StudioHost } from '../../src/main/api';
import { previewDecoderFiles } from '../../src/shared';
import type { FakeHub } from '../fixtures/hub-server';
import { writeTaesdFile } from '../fixtures/taesd-file';
import { type HubHost, openHubHost } from './host-helpers';

let hub: FakeHub;
let dataDir: string;
let host: StudioHost;
let opened: HubHost;
let decoder: Buffer;

beforeAll(async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-taesd-file-'));
  const file = path.join(tmp, 'fixture-decoder.safetensors');
  await writeTaesdFile(file);
  decoder = fs.readFileSync(file);
  fs.rmSync(tmp, { recursive: true, force: true });
  opened = await openHubHost(
    previewDecoderFiles.map((f) => ({
      id: f.repo,
      files: {
        [f.file]: decoder,
        'diffusion_pytorch_model.safetensors': Buffer.from('not fetched'),
      },
    })),
    'ls-taesd-dl-',
  );
  ({ hub, host, dataDir } = opened);
});
afterAll(() => opened?.close());

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
