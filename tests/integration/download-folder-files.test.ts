// Single files a download puts in a Settings folder are listed at once (issue 13's leftover): a
// LoRA and an embedding fetched from the loopback Hub appear in the studio's cached LoRA and
// embedding listing without a refresh, a VAE and a ControlNet in theirs, and each placement goes
// out as a `modelFileAdded` event, which the renderer reloads that picker on.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StudioHost } from '../../src/main/api';
import type { EventPayload } from '../../src/shared';
import { safetensorsHeader } from '../fixtures/checkpoint';
import { writeFixtureLora } from '../fixtures/lora-file';
import type { FakeHub } from '../fixtures/hub-server';
import { type HubHost, openHubHost } from './host-helpers';

let hub: FakeHub;
let dataDir: string;
let host: StudioHost;
let opened: HubHost;
const added: EventPayload<'modelFileAdded'>[] = [];

/** A .safetensors file of zeros with these F16 tensors. */
function zeros(tensors: Array<[string, number[]]>): Buffer {
  const specs = tensors.map(([name, shape]) => ({ name, dtype: 'F16' as const, shape }));
  const bytes = specs.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1) * 2, 0);
  return Buffer.concat([safetensorsHeader(specs), Buffer.alloc(bytes)]);
}

beforeAll(async () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-folder-files-'));
  await writeFixtureLora(path.join(tmp, 'lora.safetensors'), (i) => i / 100);
  const lora = fs.readFileSync(path.join(tmp, 'lora.safetensors'));
  fs.rmSync(tmp, { recursive: true, force: true });
  opened = await openHubHost(
    [
      {
        id: 'people/addons',
        files: {
          'ink.safetensors': lora,
          'style.safetensors': zeros([['emb_params', [2, 768]]]),
          'vae-ft.safetensors': zeros([
            ['encoder.conv_in.weight', [4, 3, 3, 3]],
            ['decoder.conv_out.weight', [3, 4, 3, 3]],
          ]),
          'control_canny.safetensors': zeros([
            ['control_model.input_hint_block.0.weight', [16, 3, 3, 3]],
          ]),
        },
      },
    ],
    'ls-folder-dl-',
  );
  ({ hub, host, dataDir } = opened);
  host.events.subscribe((name, payload) => {
    if (name === 'modelFileAdded') added.push(payload as EventPayload<'modelFileAdded'>);
  });
  host.downloads.start();
});
afterAll(() => opened?.close());

async function download(file: string): Promise<void> {
  const entry = await host.service.startDownload({
    reference: `${hub.url}/people/addons/resolve/main/${file}`,
  });
  const row = await host.downloads.manager.wait(entry.id);
  expect(row.error_message).toBeNull();
  expect(row.state).toBe('done');
}

describe('a file a download puts in its folder', () => {
  it('is in the LoRA and embedding listing at once, without a refresh, and announced', async () => {
    const loraDir = path.join(dataDir, 'my-loras');
    fs.mkdirSync(loraDir);
    await host.service.updateSettings({ loraDir });
    // The listing is scanned now and cached: what the picker shows until something says otherwise.
    expect((await host.service.listNetworks({ refresh: false })).loras).toEqual([]);

    await download('ink.safetensors');
    const loraFile = path.join(loraDir, 'ink.safetensors');
    expect(added).toEqual([{ kind: 'lora', file: loraFile }]);
    const networks = await host.service.listNetworks({ refresh: false });
    expect(networks.loras.map((l) => [l.name, l.file])).toEqual([['ink', loraFile]]);

    await download('style.safetensors');
    const embedding = path.join(dataDir, 'embeddings', 'style.safetensors');
    expect(added.at(-1)).toEqual({ kind: 'embedding', file: embedding });
    expect(
      (await host.service.listNetworks({ refresh: false })).embeddings.map((e) => e.file),
    ).toEqual([embedding]);
  });

  it('is in the VAE and ControlNet lists, and announced', async () => {
    await download('vae-ft.safetensors');
    const vae = path.join(dataDir, 'vae', 'vae-ft.safetensors');
    expect(added.at(-1)).toEqual({ kind: 'vae', file: vae });
    expect((await host.service.listVaes(undefined)).files.map((f) => f.name)).toEqual([
      'vae-ft.safetensors',
    ]);

    // A ControlNet used to be refused ("not a checkpoint, LoRA, VAE or embedding") and kept in
    // files/; it now goes to the ControlNet folder.
    await download('control_canny.safetensors');
    const controlNet = path.join(dataDir, 'models', 'controlnet', 'control_canny.safetensors');
    expect(added.at(-1)).toEqual({ kind: 'controlnet', file: controlNet });
    expect((await host.service.listControlNets(undefined)).files.map((f) => f.name)).toEqual([
      'control_canny.safetensors',
    ]);
    expect(fs.readdirSync(path.join(dataDir, 'files'))).toEqual([]);
    expect(await host.service.listModels(undefined)).toEqual([]);
  });
});
