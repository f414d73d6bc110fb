import { expect, screenshotPath, test } from './fixtures';
import { fillForm, generate, startWithImage, view } from './helpers';

// Compare without knowing Ctrl+click: a visible "Compare with…", a slider view, and settings
// groups shown field by field.

test('compare two images from the details, side by side and with a slider', async ({
  page,
  studio,
}) => {
  const first = await startWithImage(page, studio, { prompt: 'a harbour at noon', seed: 1 });
  await fillForm(page, { prompt: 'a harbour at night', seed: 2 });
  await page.getByLabel('Hires fix (second pass at a larger size)').check();
  const second = await generate(page, 2);

  await view(page, 'Gallery');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${first}"]`).click();
  await page.getByRole('button', { name: 'Compare with…' }).click();
  await expect(page.getByTestId('compare-pick')).toContainText('Pick the image to compare');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${second}"]`).click();
  const compare = page.getByTestId('compare');
  await expect(compare).toBeVisible();
  await expect(page.getByTestId('compare-pick')).toHaveCount(0);

  // The upscale group is shown field by field, not as JSON.
  const table = compare.getByRole('table');
  await expect(table.getByRole('row', { name: /^upscale\.factor/ })).toContainText('—');
  await expect(table.getByRole('row', { name: /^prompt/ })).toContainText('a harbour at night');
  expect((await table.textContent())!).not.toContain('{');

  await compare.getByRole('radio', { name: 'Slider' }).click();
  const slider = compare.getByLabel('Slider position (A on the left, B on the right)');
  await slider.fill('30');
  await expect(page.getByTestId('compare-b')).toHaveAttribute(
    'style',
    /inset\(0(px)? 0(px)? 0(px)? 30%\)/,
  );
  await page.screenshot({ path: screenshotPath('compare-slider') });
  await compare.getByRole('radio', { name: 'Side by side' }).click();
  await expect(page.getByTestId('compare-slider')).toHaveCount(0);
  await page.keyboard.press('Escape');
  await expect(compare).toHaveCount(0);
});
