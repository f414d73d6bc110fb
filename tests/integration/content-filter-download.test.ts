// Getting the content filter's checker through the model manager (issue 18 item 2): Settings'
// "Download the checker" (downloadContentFilterModel) fetches the catalogue's
// CompVis/stable-diffusion-safety-checker model.safetensors from the loopback Hub (here the
// small-config fixture checker) and puts it where the filter looks (DEFAULT_CHECKER), not into
// files/ or the model list; a checker path that is no .safetensors file is refused at once.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StudioHost } from '../../src/main/api';
import { ContentFilter, DEFAULT_CHECKER } from '../../src/main/jobs/content-filter';
import { safetyCheckerFile } from '../../src/shared';
import type { FakeHub } from '../fixtures/hub-server';
import { FIXTURE_CHECKER } from '../fixtures/safety-checker';
import { type HubHost, openHubHost } from './host-helpers';

let hub: FakeHub;
let dataDir: string;
let host: StudioHost;
let opened: HubHost;

beforeAll(async () => {
  opened = await openHubHost(
    [
      {
        id: safetyCheckerFile.repo,
        files: {
          [safetyCheckerFile.file]: fs.readFileSync(FIXTURE_CHECKER),
          'config.json': Buffer.from('{"_class_name": "StableDiffusionSafetyChecker"}'),
          'pytorch_model.bin': Buffer.from('not fetched'),
        },
      },
    ],
    'ls-filter-dl-',
  );
  ({ hub, host, dataDir } = opened);
});
afterAll(() => opened?.close());

describe('downloading the content filter checker', () => {
  it('puts the catalogue file where the filter looks, and only that file', async () => {
    const target = path.join(dataDir, DEFAULT_CHECKER);
    expect(await host.service.getContentFilterStatus(undefined)).toEqual({
      file: target,
      isDefault: true,
      present: false,
    });
    const entry = await host.service.downloadContentFilterModel(undefined);
    expect(entry.source).toBe(`${safetyCheckerFile.repo}/${safetyCheckerFile.file}`);
    expect(entry.sha).toMatch(/^[0-9a-f]{40}$/);
    const done = await host.downloads.manager.wait(entry.id);
    expect(done.error_message).toBeNull();
    expect(done.state).toBe('done');
    expect(done.result_path).toBe(target);
    expect(fs.readFileSync(target).equals(fs.readFileSync(FIXTURE_CHECKER))).toBe(true);
    expect((await host.service.getContentFilterStatus(undefined)).present).toBe(true);
    // Not imported as a model, not left in files/, and nothing else of the repo fetched.
    expect(await host.service.listModels(undefined)).toEqual([]);
    expect(fs.existsSync(path.join(dataDir, 'files'))).toBe(false);
    expect(hub.requests.some((r) => r.url.includes('pytorch_model.bin'))).toBe(false);
    // With the filter on, a job now passes the enqueue check that refused it before.
    const filter = new ContentFilter(dataDir);
    await expect(
      filter.validate({ ...host.settings.get(), contentFilter: true }),
    ).resolves.toBeUndefined();
  });

  it('refuses a checker path that is not a .safetensors file, with a sentence', () => {
    const other = path.join(dataDir, 'checker.ckpt');
    fs.writeFileSync(other, 'x');
    expect(() => host.service.updateSettings({ contentFilterModel: other })).toThrow(
      /^checker\.ckpt is not a \.safetensors file; the content filter takes the safety checker's model\.safetensors/,
    );
    expect(() =>
      host.service.updateSettings({ contentFilterModel: path.join(dataDir, 'none.safetensors') }),
    ).toThrow(/^There is no file at .*none\.safetensors; choose the safety checker's/);
    expect(host.settings.get().contentFilterModel).toBeNull();
  });
});
