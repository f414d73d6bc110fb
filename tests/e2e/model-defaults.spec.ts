import { addFixtureModel, expect, startStudioServer, test } from './fixtures';
import { openStudio } from './helpers';

// Defaults from the model: sizes around its native size, and a two-pass upscale that keeps the
// picture's shapes.

test('size presets follow the chosen model (a 64x64 model is offered 64-pixel sizes)', async ({
  page,
}) => {
  // The built-in model: 64x64 native, as its card says.
  const server = await startStudioServer(undefined, { builtInModels: true });
  try {
    await openStudio(page, server);
    await expect(page.getByLabel('Width', { exact: true })).toHaveValue('64');
    const size = page.getByRole('combobox', { name: 'Size', exact: true });
    await expect(size).toHaveValue('native');
    const options = await size.locator('option').allTextContents();
    expect(options).toEqual([
      "Model's native (64 × 64)",
      '64 × 96 (2:3)',
      '96 × 64 (3:2)',
      '64 × 88 (3:4)',
      '88 × 64 (4:3)',
      '64 × 112 (9:16)',
      '112 × 64 (16:9)',
      'Custom',
    ]);
    await size.selectOption({ label: '96 × 64 (3:2)' });
    await expect(page.getByLabel('Width', { exact: true })).toHaveValue('96');
    await expect(page.getByLabel('Height', { exact: true })).toHaveValue('64');
  } finally {
    await server.stop();
  }
});

test('an SD 1.x model without a card is offered 512 on the short side', async ({
  page,
  studio,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await expect(page.getByRole('combobox', { name: 'Size', exact: true })).toHaveValue('native');
  const options = await page
    .getByRole('combobox', { name: 'Size', exact: true })
    .locator('option')
    .allTextContents();
  expect(options).toContain('512 × 768 (2:3)');
  expect(options).not.toContain('1024 × 1024 (1:1)');
});

test('the two-pass upscale starts from an enlargement that keeps shapes', async ({
  page,
  studio,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await page.getByLabel('Hires fix (second pass at a larger size)').check();
  await expect(page.getByRole('combobox', { name: 'Enlarge with' })).toHaveValue('lanczos');
  await expect(page.getByLabel('Second-pass strength')).toHaveValue('0.35');
});
