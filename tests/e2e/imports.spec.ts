import { readFileSync } from 'node:fs';
import type { Page } from '@playwright/test';
import sharp from 'sharp';
import { addPngTextChunks } from '../../src/main/library/png/chunks';
import { addFixtureModel, expect, imagePixels, screenshotPath, test } from './fixtures';
import {
  canvasImageId,
  doneJobs,
  galleryRows,
  generate,
  openStudio,
  setNumber,
  view,
} from './helpers';
import { comfyApiGraph } from '../fixtures/comfyui';
import { A1111_EXIF_DIR, A1111_EXIF_SETTINGS } from '../fixtures/exif';

// Images brought in by dropping or pasting: they are uploaded to the real server and shown from
// its /media URL (so they can be shown again after a reload), and settings found in a PNG's
// metadata (here A1111's `parameters`) can be used in Generate.

const a1111 = [
  'a lighthouse in the fog, (dramatic sky:1.2)',
  'Negative prompt: blurry, text',
  'Steps: 9, Sampler: DPM++ 2M Karras, CFG scale: 5.5, Seed: 4242, Size: 128x96, Model: sd15',
].join('\n');

async function solidImage(
  width: number,
  height: number,
  format: 'png' | 'jpeg',
  rgb: [number, number, number],
): Promise<Buffer> {
  const image = sharp({
    create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } },
  });
  return format === 'png' ? image.png().toBuffer() : image.jpeg({ quality: 95 }).toBuffer();
}

/** A file given to the page as a person's drop on the canvas or paste would give it. */
async function giveFile(
  page: Page,
  how: 'drop' | 'paste',
  bytes: Buffer | Uint8Array,
  name: string,
  type: string,
): Promise<void> {
  const dataTransfer = await page.evaluateHandle(
    ({ base64, name, type }) => {
      const raw = atob(base64);
      const data = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) data[i] = raw.charCodeAt(i);
      const dt = new DataTransfer();
      dt.items.add(new File([data], name, { type }));
      return dt;
    },
    { base64: Buffer.from(bytes).toString('base64'), name, type },
  );
  if (how === 'drop') {
    await page.getByTestId('canvas-stage').dispatchEvent('dragover', { dataTransfer });
    await page.getByTestId('canvas-stage').dispatchEvent('drop', { dataTransfer });
  } else {
    await page.evaluate((dt) => {
      document.body.dispatchEvent(
        new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }),
      );
    }, dataTransfer);
  }
}

test('drop a PNG with A1111 settings, use them, and generate with them', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const model = await addFixtureModel(studio);
  await openStudio(page, studio);
  const png = addPngTextChunks(await solidImage(96, 64, 'png', [30, 90, 200]), [
    { keyword: 'parameters', text: a1111 },
  ]);
  await giveFile(page, 'drop', png, 'lighthouse.png', 'image/png');

  // The upload is on the canvas, served by the host (not a local blob), at its own size.
  const uploadId = await canvasImageId(page);
  const canvasImage = page.getByTestId('canvas-image');
  await expect(canvasImage).toHaveAttribute('src', `/media/uploads/${uploadId}`);
  expect(await canvasImage.evaluate((i: HTMLImageElement) => i.naturalWidth)).toBe(96);
  const shown = await imagePixels(page, `/media/uploads/${uploadId}`);
  expect(shown.data.slice(0, 3)).toEqual([30, 90, 200]);
  await expect(page.getByRole('radio', { name: 'Image', exact: true })).toHaveAttribute(
    'aria-checked',
    'true',
  );

  const found = page.getByTestId('imported-settings');
  await expect(found).toHaveAttribute('data-source', 'a1111');
  await expect(found).toContainText('lighthouse.png');
  await expect(found).toContainText('AUTOMATIC1111');
  await expect(found.getByTestId('imported-prompt')).toHaveText(
    'a lighthouse in the fog, (dramatic sky:1.2)',
  );
  await expect(found.getByTestId('imported-seed')).toHaveText('4242');
  await expect(found.getByTestId('imported-sampler')).toHaveText('DPM++ 2M Karras');
  await expect(found.getByTestId('imported-size')).toHaveText('128 × 96');
  await page.screenshot({ path: screenshotPath('import-a1111-found') });

  await found.getByRole('button', { name: 'Use these settings' }).click();
  await expect(found).toHaveCount(0);
  await expect(page.getByLabel('Prompt', { exact: true })).toHaveValue(
    'a lighthouse in the fog, (dramatic sky:1.2)',
  );
  await expect(page.getByLabel('Negative prompt', { exact: true })).toHaveValue('blurry, text');
  await expect(page.getByLabel('Steps', { exact: true })).toHaveValue('9');
  await expect(page.getByLabel('Guidance', { exact: true })).toHaveValue('5.5');
  await expect(page.getByRole('combobox', { name: /^Sampler/ })).toHaveValue('dpmpp_2m');
  await expect(page.getByRole('combobox', { name: /^Schedule/ })).toHaveValue('karras');
  await expect(page.getByLabel('Random seed')).not.toBeChecked();
  await expect(page.getByLabel('Seed', { exact: true })).toHaveValue('4242');
  await expect(page.getByLabel('Width', { exact: true })).toHaveValue('128');
  await expect(page.getByLabel('Height', { exact: true })).toHaveValue('96');
  // The PNG was the result of a text-to-image run: make it again from the prompt.
  await expect(page.getByRole('radio', { name: 'Text', exact: true })).toHaveAttribute(
    'aria-checked',
    'true',
  );

  await generate(page, 1);
  const [row] = await galleryRows(studio);
  expect(row).toMatchObject({
    mode: 'txt2img',
    prompt: 'a lighthouse in the fog, (dramatic sky:1.2)',
    negativePrompt: 'blurry, text',
    seed: 4242,
    steps: 9,
    guidance: 5.5,
    sampler: 'dpmpp_2m',
    width: 128,
    height: 96,
    modelName: model.name,
  });
  const made = await imagePixels(page, row.url);
  expect([made.width, made.height]).toEqual([128, 96]);

  // DDIM steps on its own timesteps: the schedule shows the default and cannot be changed;
  // back on DPM++ 2M the chosen schedule is still there.
  const sampler = page.getByRole('combobox', { name: /^Sampler/ });
  const schedule = page.getByRole('combobox', { name: /^Schedule/ });
  await sampler.selectOption('ddim');
  await expect(schedule).toBeDisabled();
  await expect(schedule).toHaveValue('default');
  await sampler.selectOption('dpmpp_2m');
  await expect(schedule).toBeEnabled();
  await expect(schedule).toHaveValue('karras');
  expect(consoleErrors).toEqual([]);
});

test('paste a JPEG, run img2img from it, and reuse it after a reload', async ({
  page,
  studio,
  consoleErrors,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await page.getByLabel('Prompt', { exact: true }).fill('a red field');
  // A PNG with settings first, then a pasted JPEG without: the offer goes away with it.
  const png = addPngTextChunks(await solidImage(64, 64, 'png', [0, 0, 0]), [
    { keyword: 'parameters', text: a1111 },
  ]);
  await giveFile(page, 'drop', png, 'settings.png', 'image/png');
  await expect(page.getByTestId('imported-settings')).toBeVisible();
  const jpeg = await solidImage(96, 64, 'jpeg', [220, 40, 40]);
  await giveFile(page, 'paste', jpeg, 'image.jpg', 'image/jpeg');
  await expect(page.getByTestId('imported-settings')).toHaveCount(0);
  await expect(page.getByLabel('Width', { exact: true })).toHaveValue('96');
  const pastedId = await canvasImageId(page);
  await expect(page.getByTestId('canvas-image')).toHaveAttribute(
    'src',
    `/media/uploads/${pastedId}`,
  );
  expect(
    await page.getByTestId('canvas-image').evaluate((i: HTMLImageElement) => i.naturalWidth),
  ).toBe(96);

  // An unreadable file is refused with a sentence, and the canvas keeps its image.
  await giveFile(page, 'paste', Buffer.from('not an image at all'), 'broken.png', 'image/png');
  await expect(page.getByTestId('notice').filter({ hasText: 'could not be read' })).toBeVisible();
  expect(await canvasImageId(page)).toBe(pastedId);

  await page.getByLabel('Random seed').uncheck();
  await setNumber(page.getByLabel('Seed', { exact: true }), 8);
  await setNumber(page.getByLabel('Steps', { exact: true }), 6);
  const resultId = await generate(page, 1);
  const [row] = await galleryRows(studio);
  expect(row).toMatchObject({ imageId: resultId, mode: 'img2img', width: 96, height: 64 });
  await expect(doneJobs(page)).toHaveCount(1);

  // Reload: the gallery's "reuse all settings" puts the pasted upload back on the canvas.
  await page.reload();
  await expect(page.getByTestId('connection')).toHaveText('Connected');
  await view(page, 'Gallery');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${resultId}"]`).click();
  await page.getByRole('button', { name: 'Reuse all settings' }).click();
  expect(await canvasImageId(page)).toBe(pastedId);
  await expect(page.getByTestId('canvas-image')).toHaveAttribute(
    'src',
    `/media/uploads/${pastedId}`,
  );
  const restored = await imagePixels(page, `/media/uploads/${pastedId}`);
  expect([restored.width, restored.height]).toEqual([96, 64]);
  expect(Math.abs(restored.data[0] - 220)).toBeLessThan(8);
  await page.screenshot({ path: screenshotPath('import-paste-reused') });
  expect(consoleErrors).toEqual([]);
});

test('open a ComfyUI PNG with the file picker and use its settings', async ({ page, studio }) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  // The API-format graph ComfyUI's SaveImage writes in the `prompt` text chunk.
  const graph = comfyApiGraph({ positive: 'a tidal pool', checkpoint: 'v1-5.safetensors' });
  const png = addPngTextChunks(await solidImage(48, 32, 'png', [10, 120, 60]), [
    { keyword: 'prompt', text: JSON.stringify(graph) },
  ]);
  await page.getByLabel('Open an image file').setInputFiles({
    name: 'ComfyUI_00001_.png',
    mimeType: 'image/png',
    buffer: Buffer.from(png),
  });
  const found = page.getByTestId('imported-settings');
  await expect(found).toHaveAttribute('data-source', 'comfyui');
  await expect(found).toContainText('ComfyUI_00001_.png');
  await expect(found.getByTestId('imported-prompt')).toHaveText('a tidal pool');
  expect(await canvasImageId(page)).toMatch(/^[A-Za-z0-9_-]+$/);
  await found.getByRole('button', { name: 'Use these settings' }).click();
  await expect(page.getByLabel('Prompt', { exact: true })).toHaveValue('a tidal pool');
  await expect(page.getByLabel('Negative prompt', { exact: true })).toHaveValue('bad hands');
  await expect(page.getByLabel('Seed', { exact: true })).toHaveValue('8566257');
  await expect(page.getByLabel('Steps', { exact: true })).toHaveValue('20');
  await expect(page.getByLabel('Guidance', { exact: true })).toHaveValue('8');
  await expect(page.getByRole('combobox', { name: /^Sampler/ })).toHaveValue('dpmpp_2m');
  await expect(page.getByRole('combobox', { name: /^Schedule/ })).toHaveValue('karras');
  await expect(page.getByLabel('Width', { exact: true })).toHaveValue('768');
  await expect(page.getByLabel('Height', { exact: true })).toHaveValue('512');
});

test('drop a WebP and a JPEG that AUTOMATIC1111 wrote, and use their settings', async ({
  page,
  studio,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  // Written as A1111 writes them: the infotext in EXIF UserComment, UTF-16 (piexif).
  for (const [file, type] of [
    ['a1111.webp', 'image/webp'],
    ['a1111.jpg', 'image/jpeg'],
  ] as const) {
    await giveFile(page, 'drop', readFileSync(new URL(file, A1111_EXIF_DIR)), file, type);
    const found = page.getByTestId('imported-settings');
    await expect(found).toHaveAttribute('data-source', 'a1111');
    await expect(found).toContainText(file);
    await expect(found.getByTestId('imported-prompt')).toHaveText(A1111_EXIF_SETTINGS.prompt);
    await found.getByRole('button', { name: 'Use these settings' }).click();
    await expect(page.getByLabel('Prompt', { exact: true })).toHaveValue(
      A1111_EXIF_SETTINGS.prompt,
    );
    await expect(page.getByLabel('Negative prompt', { exact: true })).toHaveValue('blurry, lowres');
    await expect(page.getByLabel('Seed', { exact: true })).toHaveValue('1234567');
    await expect(page.getByLabel('Steps', { exact: true })).toHaveValue('24');
    await expect(page.getByLabel('Guidance', { exact: true })).toHaveValue('6.5');
    await expect(page.getByRole('combobox', { name: /^Sampler/ })).toHaveValue('euler_a');
    await expect(page.getByLabel('Width', { exact: true })).toHaveValue('512');
    await expect(page.getByLabel('Height', { exact: true })).toHaveValue('768');
    // Reset the form so that the second file has to fill it again.
    await page.getByLabel('Prompt', { exact: true }).fill('');
    await setNumber(page.getByLabel('Steps', { exact: true }), 5);
  }
});
