import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { safetensorsHeader, writeLoraFile } from '../fixtures/checkpoint';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import type { JSHandle, Page } from '@playwright/test';
import { callApi, expect, screenshotPath, test } from './fixtures';
import { fillForm, galleryRows, generate, openStudio, view } from './helpers';

// Models -> Import checkpoint, through the real headless server: a checkpoint whose conversion
// is in the data folder's cache is imported and appears in the models table with its source
// and A1111 hash; a LoRA is refused with a sentence; a long import shows its progress and is
// cancelled from the UI, leaving no model behind. Below: the file dropped or chosen, uploaded
// from a browser or named by path in the desktop app.

test('import a checkpoint, see it in the models table; a LoRA is refused', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const { work, file, name, sha256 } = await cachedCheckpoint(studio.dataDir);

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

// Bringing the file itself (issue 11, item 5). In the browser studio the file is dropped on the
// page (or chosen) and uploaded to the headless server, with its progress shown; in the desktop
// app a drop or the file picker gives a path (the bridge is given what the OS would give, as in
// model-picker.spec.ts; Electron itself cannot run here).

/**
 * A real checkpoint converted into the studio's cache, as a first import would (the small
 * configuration needs its architecture given, which an import cannot do).
 */
async function cachedCheckpoint(
  dataDir: string,
): Promise<{ work: string; file: string; name: string; sha256: string }> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-e2e-upload-'));
  const { file, arch } = await smallCheckpoint(work, 'sd1');
  const sha256 = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
  const name = path.basename(file, '.safetensors');
  await convertCheckpoint(
    file,
    path.join(dataDir, 'converted', `${sha256.slice(0, 16)}-fp16`, name),
    { vocabularyFile: VOCABULARY, architecture: arch, sha256 },
  );
  return { work, file, name, sha256 };
}

/** A DataTransfer in the page holding the file at `file` (read by the browser, not copied). */
async function dataTransferOf(page: Page, file: string): Promise<JSHandle<DataTransfer>> {
  await page.evaluate(() => {
    const input = document.createElement('input');
    input.type = 'file';
    input.id = 'e2e-drag-source';
    input.hidden = true;
    document.body.append(input);
  });
  await page.setInputFiles('#e2e-drag-source', file);
  return page.evaluateHandle(() => {
    const input = document.querySelector<HTMLInputElement>('#e2e-drag-source')!;
    const dt = new DataTransfer();
    dt.items.add(input.files![0]!);
    input.remove();
    return dt;
  });
}

/** Uploads crawl at `bytesPerSecond` (Chromium's own network throttling), so progress shows. */
async function throttleUploads(page: Page, bytesPerSecond: number): Promise<void> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: -1,
    uploadThroughput: bytesPerSecond,
  });
}

/** Files under the data folder's checkpoints/ (uploads kept, and any partial one). */
function uploadedFiles(dataDir: string): string[] {
  const dir = path.join(dataDir, 'checkpoints');
  if (!fs.existsSync(dir)) return [];
  return (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) =>
    fs.statSync(path.join(dir, f)).isFile(),
  );
}

test('in the browser: drop a checkpoint on the page, watch it upload, generate with it', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const { work, file, name, sha256 } = await cachedCheckpoint(studio.dataDir);
  await openStudio(page, studio);
  await throttleUploads(page, 4_000_000);

  // Something that is not a checkpoint gets a sentence, and nothing is sent.
  const notes = path.join(work, 'notes.txt');
  fs.writeFileSync(notes, 'not a model');
  const form = page.getByRole('form', { name: 'Import checkpoint' });
  await page
    .locator('main')
    .dispatchEvent('drop', { dataTransfer: await dataTransferOf(page, notes) });
  await expect(form.getByRole('alert')).toHaveText(
    'notes.txt is not a checkpoint file (.safetensors, .ckpt, .pt, .pth, .bin).',
  );

  // Dragged over the Generate view: the overlay says what a drop does; dropped: the form is
  // filled with the file, which goes to the server on Import.
  await view(page, 'Generate');
  const dataTransfer = await dataTransferOf(page, file);
  await page.locator('main').dispatchEvent('dragenter', { dataTransfer });
  await expect(page.getByTestId('drop-overlay')).toContainText('Drop a checkpoint');
  await page.locator('main').dispatchEvent('drop', { dataTransfer });
  await expect(page.getByTestId('drop-overlay')).toHaveCount(0);
  await expect(form).toBeVisible();
  await expect(form.getByTestId('checkpoint-upload')).toContainText(path.basename(file));
  await form.getByRole('button', { name: 'Import' }).click();
  await expect(form.getByTestId('import-progress')).toContainText(
    new RegExp(`Uploading ${path.basename(file).replace('.', '\\.')}: \\d+%, \\d+ MB/s`),
  );
  await page.screenshot({ path: screenshotPath('upload-checkpoint'), fullPage: true });

  const row = page.getByTestId('models-table').getByRole('row').filter({ hasText: name });
  await expect(row).toContainText(`Model hash ${sha256.slice(0, 10)}`, { timeout: 60_000 });
  await expect(row).toContainText('Ready');
  await expect(form.getByTestId('import-progress')).toHaveCount(0);
  await expect(form.getByTestId('checkpoint-upload')).toHaveCount(0);
  // The server kept exactly the file that was sent, under its own name.
  expect(uploadedFiles(studio.dataDir)).toEqual([
    path.join(sha256.slice(0, 16), path.basename(file)),
  ]);

  // And it makes images.
  const models = await callApi<{ id: string; name: string }[]>(studio, 'listModels');
  const entry = models.find((m) => m.name === name)!;
  await view(page, 'Generate');
  await page.getByLabel('Model', { exact: true }).selectOption(entry.id);
  await fillForm(page, { prompt: 'a lighthouse at dusk', seed: 3, steps: 2 }, 64);
  await generate(page, 1);
  expect((await galleryRows(studio))[0]).toMatchObject({ modelName: name });
  expect(consoleErrors).toEqual([]);
  fs.rmSync(work, { recursive: true, force: true });
});

test('in the browser: cancelling an upload keeps nothing on the server', async ({
  page,
  studio,
}) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-e2e-upload-'));
  const { file } = await smallCheckpoint(work, 'sd1');
  await openStudio(page, studio);
  await throttleUploads(page, 500_000);
  await view(page, 'Models');
  const form = page.getByRole('form', { name: 'Import checkpoint' });
  // Choose file… opens the browser's file chooser.
  const chooser = page.waitForEvent('filechooser');
  await form.getByRole('button', { name: 'Choose file…' }).first().click();
  await (await chooser).setFiles(file);
  await form.getByRole('button', { name: 'Import' }).click();
  await expect(form.getByTestId('import-progress')).toContainText(/Uploading .*: \d+%/);
  // The server has started writing the partial file before Cancel.
  await expect.poll(() => uploadedFiles(studio.dataDir).length).toBe(1);
  await form.getByRole('button', { name: 'Cancel' }).click();
  await expect(form.getByRole('alert')).toHaveText(
    `The upload of ${path.basename(file)} was cancelled.`,
  );
  await expect.poll(() => uploadedFiles(studio.dataDir)).toEqual([]);
  expect(await callApi<unknown[]>(studio, 'listModels')).toHaveLength(0);
  fs.rmSync(work, { recursive: true, force: true });
});

test('in the desktop app: a dropped checkpoint and the file picker fill the form by path', async ({
  page,
  studio,
}) => {
  const { work, file, name } = await cachedCheckpoint(studio.dataDir);
  const vae = path.join(work, 'vae-ft-mse.safetensors');
  await page.addInitScript(
    ({ dropped, picked }) => {
      (window as unknown as { studioDesktop: unknown }).studioDesktop = {
        pickModelFolder: async () => null,
        pickCheckpointFile: async (kind: string) => (kind === 'vae' ? picked : null),
        pathForFile: (f: File) => (f.name.endsWith('.safetensors') ? dropped : ''),
      };
    },
    { dropped: file, picked: vae },
  );
  await openStudio(page, studio);
  const dataTransfer = await dataTransferOf(page, file);
  await page.locator('main').dispatchEvent('drop', { dataTransfer });
  const form = page.getByRole('form', { name: 'Import checkpoint' });
  await expect(form.getByRole('textbox', { name: 'Checkpoint file' })).toHaveValue(file);
  // Nothing is uploaded in the desktop app: the host reads the file where it is.
  await expect(form.getByTestId('checkpoint-upload')).toHaveCount(0);
  await form.getByRole('button', { name: 'Choose file…' }).nth(1).click();
  await expect(form.getByRole('textbox', { name: 'Replacement VAE (optional)' })).toHaveValue(vae);
  await form.getByRole('textbox', { name: 'Replacement VAE (optional)' }).fill('');
  await form.getByRole('button', { name: 'Import' }).click();
  const row = page.getByTestId('models-table').getByRole('row').filter({ hasText: name });
  await expect(row).toContainText('Ready');
  expect(uploadedFiles(studio.dataDir)).toEqual([]);
  fs.rmSync(work, { recursive: true, force: true });
});
