import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type FakeHub, startFakeHub } from '../fixtures/hub-server';
import { writeTaesdFile } from '../fixtures/taesd-file';
import { addFixtureModel, callApi, expect, imagePixels, test } from './fixtures';
import { fillForm, generate, openStudio, view } from './helpers';

// TAESD (issue 17 item 5): with taesd_decoder in models/taesd, "Fast decode (TAESD)" in the form
// decodes the picture with it (other pixels than the VAE's) and the history says so; Settings'
// "Fast previews (TAESD)" is on by default and stays off once turned off.

test('fast decode with TAESD from the form, and the fast previews setting', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const folder = path.join(studio.dataDir, 'models', 'taesd');
  fs.mkdirSync(folder, { recursive: true });
  await writeTaesdFile(path.join(folder, 'taesd_decoder.safetensors'));
  await addFixtureModel(studio);
  await openStudio(page, studio);

  await view(page, 'Generate');
  await fillForm(page, { prompt: 'a red house', seed: 5 });
  const fast = page.getByLabel('Fast decode (TAESD)');
  await expect(fast).not.toBeChecked();
  const plainId = await generate(page, 1);
  await fast.check();
  const fastId = await generate(page, 2);
  const plain = await imagePixels(page, `/media/images/${plainId}`);
  const decoded = await imagePixels(page, `/media/images/${fastId}`);
  expect(decoded.data).not.toEqual(plain.data);
  const detail = await callApi<{ settings: { fastDecode: boolean }; parametersText: string }>(
    studio,
    'getGeneration',
    { id: fastId },
  );
  expect(detail.settings.fastDecode).toBe(true);
  expect(detail.parametersText).toContain('VAE Decoder: TAESD');

  await view(page, 'Settings');
  // Settings says which decoders models/taesd holds and offers the missing one.
  await expect(page.getByTestId('taesd-status')).toHaveText('taesd: present; taesdxl: missing');
  await expect(page.getByTestId('download-taesd')).toBeVisible();
  const previews = page.getByTestId('settings-taesd-previews');
  await expect(previews).toBeChecked();
  await previews.uncheck();
  await expect
    .poll(
      async () => (await callApi<{ taesdPreviews: boolean }>(studio, 'getSettings')).taesdPreviews,
    )
    .toBe(false);
  await page.reload();
  await view(page, 'Settings');
  await expect(page.getByTestId('settings-taesd-previews')).not.toBeChecked();
  expect(consoleErrors).toEqual([]);
});

test.describe('the missing decoder, downloaded from Settings', () => {
  let hub: FakeHub;
  // The studio server is started for each test with this process's environment.
  test.beforeAll(async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-taesdxl-'));
    await writeTaesdFile(path.join(tmp, 'taesdxl_decoder.safetensors'));
    hub = await startFakeHub([
      {
        id: 'madebyollin/taesdxl',
        files: {
          'taesdxl_decoder.safetensors': fs.readFileSync(
            path.join(tmp, 'taesdxl_decoder.safetensors'),
          ),
        },
      },
    ]);
    fs.rmSync(tmp, { recursive: true, force: true });
    process.env.HF_ENDPOINT = hub.url;
  });
  test.afterAll(async () => {
    delete process.env.HF_ENDPOINT;
    await hub?.close();
  });

  test('Download the missing decoders fetches taesdxl, and Settings then lists it present', async ({
    page,
    studio,
    consoleErrors,
  }) => {
    const folder = path.join(studio.dataDir, 'models', 'taesd');
    fs.mkdirSync(folder, { recursive: true });
    await writeTaesdFile(path.join(folder, 'taesd_decoder.safetensors'));
    await openStudio(page, studio);
    await view(page, 'Settings');
    await expect(page.getByTestId('taesd-status')).toHaveText('taesd: present; taesdxl: missing');
    await page.getByTestId('download-taesd').click();
    await expect(page.getByTestId('taesd-status')).toHaveText('taesd: present; taesdxl: present', {
      timeout: 30_000,
    });
    await expect(page.getByTestId('download-taesd')).toHaveCount(0);
    expect(fs.existsSync(path.join(folder, 'taesdxl_decoder.safetensors'))).toBe(true);
    expect(consoleErrors).toEqual([]);
  });
});
