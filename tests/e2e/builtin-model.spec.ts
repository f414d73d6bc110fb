import fs from 'node:fs';
import path from 'node:path';
import { measure } from '../../tools/model/measure';
import type { Page } from '@playwright/test';
import { expect, imagePixels, screenshotPath, startStudioServer, test } from './fixtures';
import { generate, setNumber, view } from './helpers';

// The first start: nothing added by hand. The studio must offer the model that ships in
// resources/models and make what the prompt asks for (colour and shape, measured from pixels).

const prompts = [
  {
    prompt: 'a large red circle in the center on a blue background',
    color: 'red',
    shape: 'circle',
    seed: 11,
  },
  {
    prompt: 'a large yellow square on the left on a black background',
    color: 'yellow',
    shape: 'square',
    seed: 12,
  },
  {
    prompt: 'a large green triangle in the center on a white background',
    color: 'green',
    shape: 'triangle',
    seed: 13,
  },
];

/** The studio as a new install opens it: an empty data folder, the real resources. */
async function firstStart(page: Page, run: () => Promise<void>): Promise<void> {
  const server = await startStudioServer(undefined, { builtInModels: true });
  try {
    await page.goto(server.studioUrl);
    await expect(page.getByTestId('connection')).toHaveText('Connected');
    await run();
  } finally {
    await server.stop();
  }
}

test('on first start the built-in model is chosen and draws what the prompt asks', async ({
  page,
}) => {
  await firstStart(page, async () => {
    const picker = page.getByLabel('Model', { exact: true });
    await expect(picker.locator('option:checked')).toContainText(/latent.shapes/i);
    const number = (label: string) => page.getByLabel(label, { exact: true });
    // The settings its card recommends come with it, and an example prompt shows what it knows.
    await expect(number('Steps')).toHaveValue('20');
    await expect(number('Guidance')).toHaveValue('5');
    await expect(page.getByRole('combobox', { name: /^Sampler/ })).toHaveValue('euler_a');
    await expect(number('Prompt')).toHaveAttribute(
      'placeholder',
      'What to make, for example: a small red circle in the top left on a blue background',
    );
    await page.getByLabel('Random seed').uncheck();
    for (const [i, p] of prompts.entries()) {
      await page.getByLabel('Prompt', { exact: true }).fill(p.prompt);
      await setNumber(number('Seed'), p.seed);
      await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
      await expect(page.locator('[data-testid="job"][data-state="done"]')).toHaveCount(i + 1, {
        timeout: 60_000,
      });
      const image = page.getByTestId('canvas-image');
      await expect
        .poll(() => image.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth))
        .toBeGreaterThan(0);
      const id = await image.getAttribute('data-image-id');
      const pixels = await imagePixels(page, `/media/images/${id}`);
      const m = measure({ ...pixels, channels: 4 });
      expect({ color: m.color, shape: m.shape }, p.prompt).toEqual({
        color: p.color,
        shape: p.shape,
      });
    }
    await page.screenshot({ path: screenshotPath('builtin-model-first-start') });
    // The Models view says what the built-in models are and how they were made.
    await view(page, 'Models');
    await expect(page.getByText(/trained from scratch by the Latent Studio project/)).toBeVisible();
    await expect(page.getByText(/inpainting variant of Latent Shapes/)).toBeVisible();
    await expect(page.getByText('Built in', { exact: true })).toHaveCount(2);
    await page.screenshot({ path: screenshotPath('builtin-model-models-view') });
  });
});

test('paint over the object and the built-in inpainting model repaints it as asked', async ({
  page,
}) => {
  await firstStart(page, async () => {
    // Text-to-image is the default; the inpainting model is listed beside it.
    const picker = page.getByLabel('Model', { exact: true });
    await expect(picker.locator('option:checked')).not.toContainText(/inpainting/i);
    await expect(picker.locator('option', { hasText: /inpainting/i })).toHaveCount(1);
    await page.getByLabel('Random seed').uncheck();
    await setNumber(page.getByLabel('Seed', { exact: true }), 11);
    const prompt = page.getByLabel('Prompt', { exact: true });
    await prompt.fill('a large red circle in the center on a blue background');
    const source = await generate(page, 1);
    const before = await imagePixels(page, `/media/images/${source}`);
    expect(measure({ ...before, channels: 4 })).toMatchObject({ color: 'red', shape: 'circle' });

    // Inpaint mode suggests the inpainting model; take it.
    await page.getByRole('radio', { name: 'Inpaint' }).click();
    await page.getByRole('button', { name: 'Use it' }).click();
    await expect(picker.locator('option:checked')).toContainText(/inpainting/i);
    await expect(page.getByRole('button', { name: 'Use it' })).toHaveCount(0);

    // Paint over the middle of the picture (the circle is about 36 of 64 px wide).
    await setNumber(page.getByLabel('Brush size'), 16);
    const box = (await page.getByTestId('canvas-image').boundingBox())!;
    const at = (fx: number, fy: number) =>
      [box.x + box.width * fx, box.y + box.height * fy] as const;
    for (const fy of [0.22, 0.36, 0.5, 0.64, 0.78]) {
      await page.mouse.move(...at(0.2, fy));
      await page.mouse.down();
      await page.mouse.move(...at(0.8, fy), { steps: 10 });
      await page.mouse.up();
    }
    await setNumber(page.getByLabel('Strength', { exact: true }), 1);
    await prompt.fill('a large yellow star in the center on a blue background');
    const repainted = await generate(page, 2);
    const after = await imagePixels(page, `/media/images/${repainted}`);
    expect([after.width, after.height]).toEqual([64, 64]);
    const m = measure({ ...after, channels: 4 });
    expect({ color: m.color, shape: m.shape, background: m.background }).toEqual({
      color: 'yellow',
      shape: 'star',
      background: 'blue',
    });
    await page.screenshot({ path: screenshotPath('builtin-model-inpaint') });
  });
});

test.beforeAll(() => {
  for (const name of ['latent-shapes', 'latent-shapes-inpainting']) {
    const card = path.resolve(
      import.meta.dirname,
      `../../resources/models/${name}/model_index.json`,
    );
    if (!fs.existsSync(card))
      throw new Error(
        `resources/models/${name} is missing: the built-in models must ship with the app.`,
      );
  }
});
