import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { safetensorsHeader, writeLoraFile } from '../fixtures/checkpoint';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { callApi, expect, screenshotPath, test } from './fixtures';
import { openStudio, view } from './helpers';

// Models -> Import checkpoint, through the real headless server: a checkpoint whose conversion
// is in the data folder's cache is imported and appears in the models table with its source
// and A1111 hash; a LoRA is refused with a sentence; a long import shows its progress and is
// cancelled from the UI, leaving no model behind.

test('import a checkpoint, see it in the models table; a LoRA is refused', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-e2e-import-'));
  const { file, arch } = await smallCheckpoint(work, 'sd1');
  const sha256 = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  const name = path.basename(file, '.safetensors');
  // What a first import converts (the small configuration needs its architecture given).
  await convertCheckpoint(
    file,
    path.join(studio.dataDir, 'converted', `${sha256.slice(0, 16)}-fp16`, name),
    { vocabularyFile: VOCABULARY, architecture: arch, sha256 },
  );

  await openStudio(page, studio);
  await view(page, 'Models');
  const form = page.getByRole('form', { name: 'Import checkpoint' });
  await form.getByLabel('Checkpoint file').fill(file);
  await form.getByRole('button', { name: 'Import' }).click();
  const row = page.getByTestId('models-table').getByRole('row').filter({ hasText: name });
  await expect(row).toContainText(`Converted from ${path.basename(file)} by Latent Studio`);
  await expect(row).toContainText(`Model hash ${sha256.slice(0, 10)}`);
  await expect(row).toContainText('Ready');
  await expect(form.getByLabel('Checkpoint file')).toHaveValue('');
  await page.screenshot({ path: screenshotPath('import-checkpoint'), fullPage: true });

  const lora = path.join(work, 'detail-tweaker.safetensors');
  await writeLoraFile(lora);
  await form.getByLabel('Checkpoint file').fill(lora);
  await form.getByRole('button', { name: 'Import' }).click();
  await expect(form.getByRole('alert')).toHaveText(
    /^detail-tweaker\.safetensors is a LoRA .*, not a Stable Diffusion 1\.x, 2\.x or SDXL checkpoint that can be converted\.$/,
  );
  expect(consoleErrors).toEqual([]);
  fs.rmSync(work, { recursive: true, force: true });
});

test('a long import shows progress and can be cancelled', async ({ page, studio }) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-e2e-import-'));
  // 8 GB, sparse: hashing it takes long enough to press Cancel.
  const big = path.join(work, 'huge.safetensors');
  const header = safetensorsHeader([{ name: 'w', dtype: 'F16', shape: [2 ** 32] }]);
  const handle = await open(big, 'w');
  await handle.write(header);
  await handle.truncate(header.length + 2 ** 33);
  await handle.close();
  const before = await callApi<unknown[]>(studio, 'listModels');

  await openStudio(page, studio);
  await view(page, 'Models');
  const form = page.getByRole('form', { name: 'Import checkpoint' });
  await form.getByLabel('Checkpoint file').fill(big);
  await form.getByRole('button', { name: 'Import' }).click();
  await expect(form.getByTestId('import-progress')).toContainText(/Checking the file… \d+%/);
  await form.getByRole('button', { name: 'Cancel' }).click();
  await expect(form.getByRole('alert')).toHaveText('The import of huge.safetensors was cancelled.');
  await expect(form.getByTestId('import-progress')).toHaveCount(0);
  expect(await callApi<unknown[]>(studio, 'listModels')).toHaveLength(before.length);
  fs.rmSync(work, { recursive: true, force: true });
});
