import { expect, test } from './fixtures';
import { maskAlpha, setNumber, startWithImage } from './helpers';

// Work survives a reload (and a restart of the app, which reloads the same page): the prompt,
// the settings, the canvas image and the painted mask come back.

test('prompt, settings, canvas and mask come back after a reload', async ({ page, studio }) => {
  const imageId = await startWithImage(page, studio, {
    prompt: 'a lantern in the fog',
    seed: 77,
    steps: 9,
  });
  await page.getByRole('radio', { name: 'Inpaint', exact: true }).click();
  await page.getByLabel('Negative prompt', { exact: true }).fill('blurry');
  await setNumber(page.getByLabel('Feather (px)'), 12);
  await setNumber(page.getByLabel('Strength', { exact: true }), 0.6);
  await setNumber(page.getByLabel('Brush size'), 30);
  const box = (await page.getByTestId('canvas-image').boundingBox())!;
  await page.mouse.move(box.x + box.width * 0.2, box.y + box.height * 0.3);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.6, { steps: 10 });
  await page.mouse.up();
  const mask = await maskAlpha(page);
  expect(mask.alpha.filter((a) => a > 0).length).toBeGreaterThan(500);
  // Saved a moment after the last change (mask included).
  await expect
    .poll(() =>
      page.evaluate(() => {
        const saved = JSON.parse(localStorage.getItem('latent-studio:workspace') ?? '{}');
        return saved.mask ? saved.form.negativePrompt : null;
      }),
    )
    .toBe('blurry');

  await page.reload();
  await expect(page.getByTestId('connection')).toHaveText('Connected');
  await expect(page.getByRole('radio', { name: 'Inpaint', exact: true })).toHaveAttribute(
    'aria-checked',
    'true',
  );
  await expect(page.getByLabel('Prompt', { exact: true })).toHaveValue('a lantern in the fog');
  await expect(page.getByLabel('Negative prompt', { exact: true })).toHaveValue('blurry');
  await expect(page.getByLabel('Seed', { exact: true })).toHaveValue('77');
  await expect(page.getByLabel('Steps', { exact: true })).toHaveValue('9');
  await expect(page.getByLabel('Width', { exact: true })).toHaveValue('128');
  await expect(page.getByLabel('Feather (px)')).toHaveValue('12');
  await expect(page.getByLabel('Strength', { exact: true })).toHaveValue('0.6');
  await expect(page.getByTestId('canvas-image')).toHaveAttribute('data-image-id', imageId);
  await expect.poll(async () => (await maskAlpha(page)).alpha).toEqual(mask.alpha);
});
