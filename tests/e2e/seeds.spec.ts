import type { Page } from '@playwright/test';
import { type StudioServer, addFixtureModel, callApi, expect, imagePixels, test } from './fixtures';
import { doneJobs, fillForm, openStudio, setNumber, view } from './helpers';

// Seeds a person can trust: what the field shows is what runs, and every image of a batch
// names the seed (and place) that makes it again, in both ways a batch can draw its noise.

interface Item {
  imageId: string;
  generationId: string;
  seed: number;
  batchIndex: number;
}

async function generationImages(studio: StudioServer, generationId: string): Promise<Item[]> {
  const detail = await callApi<{ images: Item[] }>(studio, 'getGeneration', { id: generationId });
  return detail.images;
}

async function latestGeneration(studio: StudioServer): Promise<string> {
  const page = await callApi<{ items: Item[] }>(studio, 'searchGallery', {});
  return page.items[0].generationId;
}

async function pixels(page: Page, imageId: string): Promise<number[]> {
  return (await imagePixels(page, `/media/images/${imageId}`)).data;
}

async function batchForm(page: Page, size: number, count: number): Promise<void> {
  await setNumber(page.getByLabel('Batch size'), size);
  await setNumber(page.getByLabel('Batch count'), count);
}

test('a seed typed into the field runs when Ctrl+Enter comes while the field has focus', async ({
  page,
  studio,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await fillForm(page, { prompt: 'a quiet pond', seed: 5 });
  const seedField = page.getByLabel('Seed', { exact: true });
  await seedField.fill('4242');
  // No Tab: the shortcut comes straight from the field.
  await seedField.press('Control+Enter');
  await expect(doneJobs(page)).toHaveCount(1, { timeout: 90_000 });
  await expect(page.getByTestId('last-seed')).toHaveText('Last seed: 4242');
  const images = await generationImages(studio, await latestGeneration(studio));
  expect(images.map((i) => i.seed)).toEqual([4242]);
});

test('one noise draw per batch: each image shows its seed and place, and Reuse seed makes that image', async ({
  page,
  studio,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await fillForm(page, { prompt: 'a field of poppies', seed: 1000 });
  await batchForm(page, 2, 2);
  await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
  await expect(doneJobs(page)).toHaveCount(1, { timeout: 90_000 });

  // The strip in the order the images were made, each with its seed and place in its batch.
  const strip = page.getByTestId('result');
  await expect(strip).toHaveCount(4);
  const shown = await strip.evaluateAll((els) =>
    els.map((e) => `${e.getAttribute('data-seed')}/${e.getAttribute('data-batch-index')}`),
  );
  expect(shown).toEqual(['1000/0', '1000/1', '1002/0', '1002/1']);
  await expect(strip.nth(1)).toHaveAttribute('title', 'seed 1000, image 2 of its batch');

  const made = await generationImages(studio, await latestGeneration(studio));
  const second = made.find((i) => i.seed === 1000 && i.batchIndex === 1)!;
  const first = made.find((i) => i.seed === 1000 && i.batchIndex === 0)!;
  // The two images of one draw differ (so making the first would not pass for the second).
  expect(await pixels(page, second.imageId)).not.toEqual(await pixels(page, first.imageId));

  await view(page, 'Gallery');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${second.imageId}"]`).click();
  await expect(page.getByTestId('detail-seed')).toHaveText('1000');
  await expect(page.getByTestId('detail-batch-index')).toHaveText('image 2 of 2');
  await page.getByRole('button', { name: 'Reuse seed' }).click();
  await expect(page.getByLabel('Seed', { exact: true })).toHaveValue('1000');
  await expect(page.getByLabel('Batch size')).toHaveValue('2');
  await expect(page.getByLabel('Batch count')).toHaveValue('1');
  await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
  await expect(doneJobs(page)).toHaveCount(2, { timeout: 90_000 });
  const again = await generationImages(studio, await latestGeneration(studio));
  const remade = again.find((i) => i.batchIndex === 1)!;
  expect(remade.seed).toBe(1000);
  expect(await pixels(page, remade.imageId)).toEqual(await pixels(page, second.imageId));
});

test('seed + 1 per image: each image shows its own seed, and Reuse seed makes that image', async ({
  page,
  studio,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await fillForm(page, { prompt: 'a field of poppies', seed: 500 });
  await batchForm(page, 2, 2);
  await page.getByLabel('Seeds in a batch').selectOption('per-image');
  await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
  await expect(doneJobs(page)).toHaveCount(1, { timeout: 90_000 });
  const strip = page.getByTestId('result');
  await expect(strip).toHaveCount(4);
  expect(await strip.evaluateAll((els) => els.map((e) => e.getAttribute('data-seed')))).toEqual([
    '500',
    '501',
    '502',
    '503',
  ]);

  const made = await generationImages(studio, await latestGeneration(studio));
  const target = made.find((i) => i.seed === 501)!;
  expect(await pixels(page, target.imageId)).not.toEqual(
    await pixels(page, made.find((i) => i.seed === 500)!.imageId),
  );
  await view(page, 'Gallery');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${target.imageId}"]`).click();
  await expect(page.getByTestId('detail-seed')).toHaveText('501');
  await page.getByRole('button', { name: 'Reuse seed' }).click();
  await expect(page.getByLabel('Seed', { exact: true })).toHaveValue('501');
  await batchForm(page, 1, 1);
  await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
  await expect(doneJobs(page)).toHaveCount(2, { timeout: 90_000 });
  const again = await generationImages(studio, await latestGeneration(studio));
  expect(again.map((i) => i.seed)).toEqual([501]);
  expect(await pixels(page, again[0].imageId)).toEqual(await pixels(page, target.imageId));
});
