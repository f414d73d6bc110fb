import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { smallCheckpoint } from '../fixtures/small-checkpoint';
import { writeVaeFile } from '../fixtures/vae-file';
import { addFixtureModel, callApi, expect, imagePixels, screenshotPath, test } from './fixtures';
import { fillForm, generate, openStudio, view } from './helpers';

// A replacement VAE chosen per generation (issue 11 item 4): the VAE folder set in Settings, the
// VAE picked in the Generate form, the picture decoded by it and recorded with A1111's `VAE hash`
// and `VAE`, and "Reuse all settings" choosing it again.

test('choose a replacement VAE in the form; it is recorded, and reuse chooses it again', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const folder = path.join(studio.dataDir, 'my-vaes');
  fs.mkdirSync(folder, { recursive: true });
  const { file } = await smallCheckpoint(studio.dataDir, 'sd1');
  const name = 'vae-ft-test.safetensors';
  await writeVaeFile(file, path.join(folder, name), 'changed');
  const sha = createHash('sha256')
    .update(fs.readFileSync(path.join(folder, name)))
    .digest('hex');

  await addFixtureModel(studio);
  await openStudio(page, studio);
  await view(page, 'Settings');
  await page.getByTestId('vae-folder').fill(folder);
  await page.getByRole('button', { name: 'Save VAE folder' }).click();
  await expect(page.getByTestId('vae-count')).toHaveText(`1 VAE file in ${folder}`);

  await view(page, 'Generate');
  await fillForm(page, { prompt: 'a red house', seed: 5 });
  const vae = page.getByLabel('VAE', { exact: true });
  await expect(vae).toHaveValue('');
  const plainId = await generate(page, 1);
  await vae.selectOption(name);
  const vaeId = await generate(page, 2);

  // Same seed, another decoder: other pixels.
  const plain = await imagePixels(page, `/media/images/${plainId}`);
  const decoded = await imagePixels(page, `/media/images/${vaeId}`);
  expect(decoded.data).not.toEqual(plain.data);
  const detail = await callApi<{ settings: { vae: string | null }; parametersText: string }>(
    studio,
    'getGeneration',
    { id: vaeId },
  );
  expect(detail.settings.vae).toBe(name);
  expect(detail.parametersText).toContain(`VAE hash: ${sha.slice(0, 10)}, VAE: ${name}`);

  // Back to the model's own, then reuse the VAE generation from the gallery.
  await vae.selectOption('');
  await view(page, 'Gallery');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${vaeId}"]`).click();
  await page.getByRole('button', { name: 'Reuse all settings' }).click();
  await expect(page.getByLabel('VAE', { exact: true })).toHaveValue(name);
  await page.screenshot({ path: screenshotPath('vae-chosen') });
  expect(consoleErrors).toEqual([]);
});
