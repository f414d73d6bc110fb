// The LoRA/embedding listing cache of NetworkService: a file placed in a folder while a scan is
// running (a download finishing, issue 13) must be listed by the next listing, not lost to the
// cached answer of the scan that read the folder before the file arrived.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { NetworkService } from '../../src/main/adapters/service';
import { writeFixtureLora } from '../fixtures/lora-file';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-network-listing-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

it('a file placed during a running scan is listed by the next listing', async () => {
  const loraDir = path.join(tmp, 'loras');
  await writeFixtureLora(path.join(loraDir, 'first.safetensors'), (i) => i / 100);
  const service = new NetworkService(tmp, () => ({ loraDir, embeddingsDir: '' }));

  // Hold the scan after it has read the folder: it looks up known hashes file by file.
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  let folderRead!: () => void;
  const reading = new Promise<void>((resolve) => (folderRead = resolve));
  const known = service.hashes.known.bind(service.hashes);
  service.hashes.known = async (...args) => {
    folderRead();
    await held;
    return known(...args);
  };

  const running = service.list(false);
  await reading;
  await writeFixtureLora(path.join(loraDir, 'downloaded.safetensors'), (i) => i / 50);
  service.settingsChanged(); // what the download service's forgetListing does
  release();
  expect((await running).loras.map((f) => f.name)).toEqual(['first']);

  const after = await service.list(false);
  expect(after.loras.map((f) => f.name).sort()).toEqual(['downloaded', 'first']);
});

it('a listing without changes answers from the cache', async () => {
  const loraDir = path.join(tmp, 'loras');
  await writeFixtureLora(path.join(loraDir, 'a.safetensors'), (i) => i / 100);
  const service = new NetworkService(tmp, () => ({ loraDir, embeddingsDir: '' }));
  expect((await service.list(false)).loras).toHaveLength(1);
  await writeFixtureLora(path.join(loraDir, 'b.safetensors'), (i) => i / 100);
  expect((await service.list(false)).loras).toHaveLength(1);
  expect((await service.list(true)).loras).toHaveLength(2);
});
