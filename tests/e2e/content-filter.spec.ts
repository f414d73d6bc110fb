import fs from 'node:fs';
import path from 'node:path';
import type { Locator } from '@playwright/test';
import { writeCheckerWithThresholds } from '../fixtures/safety-checker';
import { addFixtureModel, callApi, expect, screenshotPath, test } from './fixtures';
import { fillForm, generate, openStudio, view } from './helpers';

// The content filter in the studio (issue 18 item 2): turned on in Settings with a checker file
// (the small-config fixture checker, one concept's threshold set below any cosine so every image
// is flagged), a generated image shows blurred on the canvas, in the gallery grid and in its
// details until Reveal (by keyboard) shows it, for this session only.

const blurOf = (image: Locator) => image.evaluate((img) => getComputedStyle(img).filter);

test('turn the filter on in Settings; a flagged image is blurred in canvas and gallery until revealed', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const concepts = Array.from({ length: 17 }, () => 2);
  concepts[4] = -2;
  const checker = writeCheckerWithThresholds(path.join(studio.dataDir, 'checker.safetensors'), {
    concepts,
    special: [2, 2, 2],
  });
  await addFixtureModel(studio);
  await openStudio(page, studio);

  await view(page, 'Settings');
  const section = page.getByTestId('content-filter-settings');
  await expect(section.getByTestId('content-filter-toggle')).not.toBeChecked();
  await expect(section.getByTestId('content-filter-status')).toContainText(
    'The checker is missing from',
  );
  // A wrong file is refused with a sentence and nothing is saved.
  const field = section.getByTestId('content-filter-model');
  await field.fill(path.join(studio.dataDir, 'nothing-here.safetensors'));
  await section.getByRole('button', { name: 'Use this file' }).click();
  await expect(page.getByText(/There is no file at .*nothing-here\.safetensors/)).toBeVisible();
  await field.fill(checker);
  await section.getByRole('button', { name: 'Use this file' }).click();
  await expect(section.getByTestId('content-filter-status')).toHaveText(
    `Checker found: ${checker}`,
  );
  await section.getByTestId('content-filter-toggle').check();
  await expect
    .poll(
      async () => (await callApi<{ contentFilter: boolean }>(studio, 'getSettings')).contentFilter,
    )
    .toBe(true);

  await view(page, 'Generate');
  await fillForm(page, { prompt: 'a red house', seed: 5 });
  const imageId = await generate(page, 1);
  const detail = await callApi<{ contentFilter: Record<string, { flagged: boolean }> }>(
    studio,
    'getGeneration',
    { id: imageId },
  );
  expect(detail.contentFilter[imageId]?.flagged).toBe(true);

  // The canvas: blurred, with its Reveal.
  const canvasImage = page.getByTestId('canvas-image');
  await expect(canvasImage).toHaveAttribute('data-blurred', 'true');
  expect(await blurOf(canvasImage)).toContain('blur(');
  await expect(page.getByTestId('canvas-flagged').getByTestId('reveal-image')).toBeVisible();
  // With the filter on, no live preview showed the image before it was checked.
  await expect(page.getByTestId('live-preview')).toHaveCount(0);

  // The gallery: the thumbnail and the details are blurred; the details do not link the file.
  await view(page, 'Gallery');
  const thumb = page.locator(`[data-testid="gallery-item"][data-image-id="${imageId}"] img`);
  await expect(thumb).toHaveAttribute('data-flagged', 'true');
  expect(await blurOf(thumb)).toContain('blur(');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${imageId}"]`).click();
  const full = page.getByTestId('detail-image');
  await expect(full).toHaveAttribute('data-blurred', 'true');
  expect(await blurOf(full)).toContain('blur(');
  await expect(page.getByRole('link', { name: 'Open the full image' })).toHaveCount(0);
  await expect(page.getByTestId('detail-content-filter')).toContainText('flagged (concepts 4)');
  await page.screenshot({ path: screenshotPath('content-filter-blurred') });

  // Reveal, by keyboard: the details, the thumbnail and the canvas show it.
  const reveal = page.getByTestId('image-detail').getByTestId('reveal-image');
  await reveal.focus();
  await page.keyboard.press('Enter');
  await expect(full).not.toHaveAttribute('data-blurred', 'true');
  expect(await blurOf(full)).toBe('none');
  expect(await blurOf(thumb)).toBe('none');
  await expect(page.getByRole('link', { name: 'Open the full image' })).toBeVisible();
  await view(page, 'Generate');
  await expect(canvasImage).not.toHaveAttribute('data-blurred', 'true');
  expect(await blurOf(canvasImage)).toBe('none');
  // Blur again on the canvas; a reload (a new session) blurs it again too.
  await page.getByTestId('canvas-flagged').getByTestId('hide-image').click();
  await expect(canvasImage).toHaveAttribute('data-blurred', 'true');
  await page.getByTestId('canvas-flagged').getByTestId('reveal-image').click();
  await page.reload();
  await view(page, 'Gallery');
  await expect(thumb).toHaveAttribute('data-flagged', 'true');
  expect(await blurOf(thumb)).toContain('blur(');

  // The gallery's "Flagged" filter finds it.
  await page.getByRole('button', { name: /^Filters/ }).click();
  await page.getByTestId('gallery-flagged-filter').check();
  await expect(page.getByTestId('gallery-item')).toHaveCount(1);
  expect(fs.existsSync(checker)).toBe(true);
  expect(consoleErrors).toEqual([]);
});
