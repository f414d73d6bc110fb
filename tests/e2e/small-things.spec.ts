import { expect, test } from './fixtures';
import { fillForm, generate, setNumber, startWithImage, view } from './helpers';

// Small things a person trips over: counts shown as counts, an upscale's card with its result
// size, the Models table, relative paths, whole thumbnails.

test('details, queue cards and thumbnails say what is true', async ({ page, studio }) => {
  const first = await startWithImage(page, studio, { prompt: 'a pier', seed: 6 });
  // An upscale's finished card shows the size it made, not its source's.
  await page.getByRole('radio', { name: 'Upscale', exact: true }).click();
  await setNumber(page.getByLabel('Scale', { exact: true }), 2);
  await generate(page, 2);
  const cards = page.locator('[data-testid="job"][data-state="done"]');
  await expect(cards.first()).toContainText('Upscale · 256×256');
  await expect(cards.last()).toContainText('Text · 128×128');

  // A wide image: its thumbnail is shown whole.
  await page.getByRole('radio', { name: 'Text', exact: true }).click();
  await fillForm(page, { prompt: 'a wide pier', seed: 6, width: 192, height: 64 });
  await generate(page, 3);

  await view(page, 'Gallery');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${first}"]`).click();
  const timings = page.getByTestId('detail-timings');
  await expect(timings).toContainText(/session runs \d+( ·|$)/);
  await expect(timings).not.toContainText('sessionRuns');
  const thumb = page.getByTestId('gallery-item').first().locator('img');
  expect(await thumb.evaluate((img) => getComputedStyle(img).objectFit)).toBe('contain');
});

test('Models: a relative path is refused in words before it reaches the host; cells keep one line', async ({
  page,
  studio,
}) => {
  await startWithImage(page, studio, { prompt: 'a pier', seed: 6 });
  await view(page, 'Models');
  const pathField = page.getByLabel('Add a model folder (diffusers ONNX or Optimum layout)');
  await pathField.fill('models/my-model');
  await page.getByRole('button', { name: 'Add model' }).click();
  await expect(page.getByRole('alert')).toHaveText(
    'Enter the folder’s full path (starting with / or a drive letter such as C:\\).',
  );
  await expect(pathField).toHaveValue('models/my-model');
  await expect(page.getByTestId('notice')).toHaveCount(0);

  const table = page.getByTestId('models-table');
  await expect(table.getByRole('columnheader', { name: 'Images on disk' })).toBeVisible();
  const native = table.getByRole('cell', { name: '512 × 512' });
  expect(await native.evaluate((td) => getComputedStyle(td).whiteSpace)).toBe('nowrap');
});
