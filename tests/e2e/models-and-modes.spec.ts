import { fixtureModel } from '../fixtures/models';
import {
  type StudioServer,
  addFixtureModel,
  callApi,
  expect,
  imagePixels,
  screenshotPath,
  test,
} from './fixtures';
import {
  fillForm,
  galleryRows,
  generate,
  openStudio,
  setNumber,
  view,
  startWithImage,
} from './helpers';

// The Models form (add a folder, see it inspected, refuse a bad one, remove it) and the two
// modes no other journey runs to the end from the UI: outpainting and the x4 upscaler. Each
// run goes through the real server and engine; the results are checked in the library and in
// their pixels.

const size = 128;

const listModels = (studio: StudioServer) =>
  callApi<
    {
      id: string;
      name: string;
      family: string | null;
      status: string;
      nativeWidth: number;
      nativeHeight: number;
    }[]
  >(studio, 'listModels');

test('add a model folder in Models, generate with it, and remove it', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const dir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  await openStudio(page, studio);
  await expect(page.getByTestId('generate-blocker')).toHaveText('Choose a model first.');
  await view(page, 'Models');
  await expect(page.getByText('No model folders have been added yet.')).toBeVisible();

  // A folder that is not a model: refused with a sentence, nothing added.
  const pathField = page.getByLabel('Add a model folder (diffusers ONNX or Optimum layout)');
  await pathField.fill('/nonexistent/not-a-model');
  await page.getByRole('button', { name: 'Add model' }).click();
  await expect(
    page.getByTestId('notice').filter({ hasText: 'Could not add the model' }),
  ).toBeVisible();
  await expect(page.getByTestId('models-table')).toHaveCount(0);
  expect(await listModels(studio)).toEqual([]);

  await pathField.fill(dir);
  await page.getByRole('button', { name: 'Add model' }).click();
  const row = page.getByTestId('models-table').getByRole('row', { name: /e2e-known-answer/ });
  await expect(row).toBeVisible();
  await expect(row).toContainText('SD 1');
  await expect(row).toContainText('Ready');
  await expect(pathField).toHaveValue('');
  const [entry] = await listModels(studio);
  expect(entry).toMatchObject({ family: 'sd1', status: 'ok' });
  await expect(row).toContainText(`${entry.nativeWidth} × ${entry.nativeHeight}`);
  expect(entry.name).toContain('e2e-known-answer');
  await page.screenshot({ path: screenshotPath('models-added') });

  // The added model makes images.
  await view(page, 'Generate');
  await expect(page.getByLabel('Model', { exact: true })).toHaveValue(entry.id);
  await fillForm(page, { prompt: 'a small boat', seed: 4 });
  await generate(page, 1);
  expect((await galleryRows(studio))[0]).toMatchObject({ modelName: entry.name });

  await view(page, 'Models');
  await row.getByRole('button', { name: `Remove ${entry.name}` }).click();
  await expect(row).toHaveCount(0);
  await expect(page.getByText('No model folders have been added yet.')).toBeVisible();
  expect(await listModels(studio)).toEqual([]);
  await view(page, 'Generate');
  await expect(page.getByTestId('generate-blocker')).toHaveText('Choose a model first.');
  expect(consoleErrors).toEqual([]);
});

test('outpaint from the UI: the canvas grows and the original stays', async ({ page, studio }) => {
  const sourceId = await startWithImage(page, studio, { prompt: 'a wide beach', seed: 5 });

  await page.getByRole('radio', { name: 'Outpaint' }).click();
  await setNumber(page.getByLabel('Right', { exact: true }), 64);
  // The bottom edge by keyboard: 4 x 8 px.
  const bottom = page.getByRole('slider', { name: 'Extend bottom' });
  await bottom.focus();
  for (let i = 0; i < 4; i++) await bottom.press('ArrowUp');
  await expect(bottom).toHaveAttribute('aria-valuenow', '32');
  await expect(page.getByLabel('Bottom', { exact: true })).toHaveValue('32');
  // The grown area is refitted into view (no Fit needed).
  const stageBox = (await page.getByTestId('canvas-stage').boundingBox())!;
  const areaBox = (await page.getByTestId('outpaint-area').boundingBox())!;
  expect(areaBox.x).toBeGreaterThanOrEqual(stageBox.x - 1);
  expect(areaBox.y).toBeGreaterThanOrEqual(stageBox.y - 1);
  expect(areaBox.x + areaBox.width).toBeLessThanOrEqual(stageBox.x + stageBox.width + 1);
  expect(areaBox.y + areaBox.height).toBeLessThanOrEqual(stageBox.y + stageBox.height + 1);
  await setNumber(page.getByLabel('Strength', { exact: true }), 1);
  await page.screenshot({ path: screenshotPath('outpaint-setup') });

  const outId = await generate(page, 2);
  expect(outId).not.toBe(sourceId);
  const row = (await galleryRows(studio)).find((r) => r.imageId === outId)!;
  expect(row).toMatchObject({ mode: 'outpaint', width: size + 64, height: size + 32 });
  const source = await imagePixels(page, `/media/images/${sourceId}`);
  const out = await imagePixels(page, `/media/images/${outId}`);
  expect([out.width, out.height]).toEqual([size + 64, size + 32]);
  // The original area, away from the seam, keeps its pixels (the outpaint mask reaches a little
  // into the original and is feathered: the blend fades out within 16 px of the seam).
  const seam = 24;
  let kept = 0;
  let changed = 0;
  for (let y = 0; y < size - seam; y++)
    for (let x = 0; x < size - seam; x++) {
      const s = (y * size + x) * 4;
      const o = (y * out.width + x) * 4;
      const diff = Math.max(
        ...[0, 1, 2].map((c) => Math.abs(source.data[s + c] - out.data[o + c])),
      );
      if (diff > 6) changed++;
      else kept++;
    }
  expect(changed).toBe(0);
  expect(kept).toBe((size - seam) * (size - seam));
  // The new area is filled, not left blank (black, white or transparent).
  const filled = new Set<string>();
  for (let y = 0; y < out.height; y += 8)
    for (let x = size + 8; x < out.width; x += 8) {
      const o = (y * out.width + x) * 4;
      expect(out.data[o + 3]).toBe(255);
      filled.add(out.data.slice(o, o + 3).join(','));
    }
  expect([...filled].some((c) => c !== '0,0,0' && c !== '255,255,255')).toBe(true);
  await page.getByRole('button', { name: 'Fit to screen' }).click();
  await page.screenshot({ path: screenshotPath('outpaint') });
});

test('upscale x4 from the UI with an x4 upscaler model', async ({ page, studio }) => {
  await addFixtureModel(studio);
  const x4Dir = await fixtureModel('e2e-x4', { family: 'x4', unet: 'known-answer' });
  const x4 = await callApi<{ id: string; name: string; family: string }>(studio, 'addModel', {
    path: x4Dir,
  });
  expect(x4.family).toBe('x4-upscaler');
  await openStudio(page, studio);
  await fillForm(page, { prompt: 'a lantern', seed: 2, width: 64, height: 64 });
  const sourceId = await generate(page, 1);

  await page.getByRole('radio', { name: 'Upscale' }).click();
  await page.getByRole('radio', { name: 'x4 upscaler' }).click();
  await expect(page.getByTestId('generate-blocker')).toHaveText('Choose an x4 upscaler model.');
  await page.getByRole('combobox', { name: /^Upscaler model/ }).selectOption(x4.id);
  await expect(page.getByTestId('generate-blocker')).toHaveCount(0);
  await expect(page.getByTestId('upscale-caption')).toContainText('256 × 256');
  await setNumber(page.getByLabel('Steps', { exact: true }), 4);

  const upId = await generate(page, 2);
  expect(upId).not.toBe(sourceId);
  const row = (await galleryRows(studio)).find((r) => r.imageId === upId)!;
  expect(row).toMatchObject({ mode: 'upscale', width: 256, height: 256 });
  const up = await imagePixels(page, `/media/images/${upId}`);
  expect([up.width, up.height]).toEqual([256, 256]);
  const detail = await callApi<{
    settings: { initImage: string; upscale: { method: string; model: string } };
    family: string;
  }>(studio, 'getGeneration', { id: row.generationId });
  expect(detail.settings.initImage).toBe(sourceId);
  expect(detail.settings.upscale).toMatchObject({ method: 'x4', model: x4.id });
  await page.getByRole('button', { name: 'Fit to screen' }).click();
  await page.screenshot({ path: screenshotPath('upscale-x4') });
});
