import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { writeFixtureLora } from '../fixtures/lora-file';
import { addFixtureModel, callApi, expect, screenshotPath, test } from './fixtures';
import { doneJobs, fillForm, openStudio, view } from './helpers';

// A person's LoRA journey: files in the default folders of the data folder (as A1111 keeps
// them, with a preview image beside one), picked from the list beside the prompt, the weight
// set with the slider, generated, and found again by the gallery's LoRA filter.

/** 3 vectors 32 wide: fits the fixture model's text encoder (tiny-ti.pt is an SD 1.x one, 768). */
const TI_PT = path.join(import.meta.dirname, '../fixtures/reference/embeddings/tiny-ti-32.pt');

/**
 * A LoRA whose text-encoder pair fits the fixture model (32 wide) and whose UNet tensor matches
 * nothing there (the known-answer UNet has no weights): the studio says so.
 */
/** The fixture LoRA, every element seed / 10. */
const writeLora = (file: string, seed: number) => writeFixtureLora(file, () => seed / 10);

test('pick a LoRA and an embedding beside the prompt, set the weight, generate, filter the gallery by it', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const loras = path.join(studio.dataDir, 'models', 'Lora');
  await writeLora(path.join(loras, 'film_grain.safetensors'), 1);
  await writeLora(path.join(loras, 'styles', 'ink.safetensors'), 2);
  fs.writeFileSync(
    path.join(loras, 'film_grain.preview.png'),
    await sharp({
      create: { width: 64, height: 64, channels: 3, background: { r: 220, g: 120, b: 20 } },
    })
      .png()
      .toBuffer(),
  );
  fs.mkdirSync(path.join(studio.dataDir, 'embeddings'));
  fs.copyFileSync(TI_PT, path.join(studio.dataDir, 'embeddings', 'tiny-ti.pt'));

  const model = await addFixtureModel(studio);
  await openStudio(page, studio);
  // A first image without a LoRA, which the filter must leave out.
  await fillForm(page, { prompt: 'a plain lighthouse', seed: 3 }, 64);
  await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
  await expect(doneJobs(page)).toHaveCount(1, { timeout: 90_000 });

  const prompt = page.getByLabel('Prompt', { exact: true });
  await prompt.fill('a lighthouse');
  await prompt.press('End');
  await page.getByRole('button', { name: /LoRA & embeddings/ }).click();
  const cards = page.getByTestId('network-card');
  await expect(cards).toHaveCount(2);
  await expect(cards.nth(0)).toHaveAttribute('data-name', 'film_grain');
  await expect(cards.nth(1)).toHaveAttribute('data-name', 'styles/ink');
  // The preview beside the file is shown on its card.
  await expect(cards.nth(0).locator('img')).toHaveAttribute('src', /^data:image\/webp;base64,/);

  await cards.nth(0).click();
  await expect(prompt).toHaveValue('a lighthouse <lora:film_grain:1>');
  // The caret is in the new tag: its weight slider shows, and moving it rewrites the tag.
  const weight = page.getByTestId('lora-weight').getByRole('slider');
  await expect(weight).toHaveValue('1');
  await weight.fill('0.65');
  await expect(prompt).toHaveValue('a lighthouse <lora:film_grain:0.65>');

  // The embedding tab inserts the embedding's name; the field lists both with their token cost.
  await page.getByRole('button', { name: 'Embeddings', exact: true }).click();
  await prompt.press('End');
  await page.getByTestId('network-card').filter({ hasText: 'tiny-ti' }).click();
  await expect(prompt).toHaveValue('a lighthouse <lora:film_grain:0.65> tiny-ti');
  const listed = page.getByTestId('prompt-network');
  await expect(listed).toHaveCount(2);
  await expect(listed.nth(0)).toContainText('film_grain');
  await expect(listed.nth(0)).toContainText('0 tokens');
  await expect(listed.nth(1)).toContainText('3 tokens');
  await expect(listed.nth(0)).toHaveAttribute('data-missing', 'false');
  // The count leaves the tag out and counts the embedding as its 3 vectors.
  const rest = await callApi<{ total: number }>(studio, 'countTokens', {
    modelId: model.id,
    prompt: 'a lighthouse  ',
  });
  await expect(page.getByTestId('prompt-tokens')).toHaveText(`${rest.total + 3}/75`);
  await page.screenshot({ path: screenshotPath('lora-picker') });

  await prompt.press('Control+Enter');
  await expect(doneJobs(page)).toHaveCount(2, { timeout: 90_000 });
  // The finished job says what of the LoRA matched nothing in this model.
  const unmatched =
    '2 of 4 tensors of LoRA film_grain matched nothing in this model — it may be for another model.';
  await expect(page.getByTestId('notice').filter({ hasText: unmatched })).toBeVisible();
  const page1 = await callApi<{ items: Array<{ generationId: string }> }>(studio, 'searchGallery', {
    lora: 'film_grain',
  });
  expect(page1.items).toHaveLength(1);
  const detail = await callApi<{ parametersText: string }>(studio, 'getGeneration', {
    id: page1.items[0].generationId,
  });
  expect(detail.parametersText).toMatch(/Lora hashes: "film_grain: [0-9a-f]{12}"/);
  expect(detail.parametersText).toMatch(/TI hashes: "tiny-ti: [0-9a-f]{12}"/);

  await view(page, 'Gallery');
  await expect(page.getByTestId('gallery-item')).toHaveCount(2);
  await page.getByRole('button', { name: /^Filters/ }).click();
  await page.getByTestId('gallery-lora-filter').fill('ink');
  await expect(page.getByTestId('gallery-item')).toHaveCount(0);
  await page.getByTestId('gallery-lora-filter').fill('film_grain');
  await expect(page.getByTestId('gallery-item')).toHaveCount(1);
  await expect(page.getByTestId('gallery-count')).toHaveText('1 image');
  // Its details name the LoRA and the embedding with their hashes.
  await page.getByTestId('gallery-item').first().click();
  await expect(page.getByTestId('detail-loras')).toHaveText(/^film_grain \([0-9a-f]{12}\)$/);
  await expect(page.getByTestId('detail-unmatched')).toHaveText(unmatched);
  await expect(page.getByTestId('detail-embeddings')).toHaveText(/^tiny-ti \([0-9a-f]{12}\)$/);

  // The LoRA file goes away; reusing the generation restores the tag and says it is missing.
  fs.rmSync(path.join(loras, 'film_grain.safetensors'));
  await page.getByRole('button', { name: 'Reuse all settings' }).click();
  await expect(prompt).toHaveValue('a lighthouse <lora:film_grain:0.65> tiny-ti');
  await expect(
    page.getByTestId('notice').filter({ hasText: 'Not in your folders: LoRA "film_grain"' }),
  ).toBeVisible();
  await expect(page.getByTestId('prompt-network').first()).toHaveAttribute('data-missing', 'true');
  await expect(page.getByTestId('prompt-network').first()).toContainText('not in the folder');
  expect(consoleErrors).toEqual([]);
});
