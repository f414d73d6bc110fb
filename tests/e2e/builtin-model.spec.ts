import fs from 'node:fs';
import path from 'node:path';
import { measure } from '../../tools/model/measure';
import { expect, imagePixels, screenshotPath, startStudioServer, test } from './fixtures';

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

test('on first start the built-in model is chosen and draws what the prompt asks', async ({
  page,
}) => {
  const server = await startStudioServer(undefined, { builtInModels: true });
  try {
    await page.goto(server.studioUrl);
    await expect(page.getByTestId('connection')).toHaveText('Connected');
    const picker = page.getByLabel('Model', { exact: true });
    await expect(picker.locator('option:checked')).toContainText(/latent.shapes/i);
    const setNumber = async (label: string, value: number) => {
      const field = page.getByLabel(label, { exact: true });
      await field.fill(String(value));
      await field.press('Tab');
    };
    await setNumber('Steps', 20);
    await setNumber('Guidance', 5);
    await page.getByLabel('Random seed').uncheck();
    for (const [i, p] of prompts.entries()) {
      await page.getByLabel('Prompt', { exact: true }).fill(p.prompt);
      await setNumber('Seed', p.seed);
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
  } finally {
    await server.stop();
  }
});

test.beforeAll(() => {
  const card = path.resolve(
    import.meta.dirname,
    '../../resources/models/latent-shapes/model_index.json',
  );
  if (!fs.existsSync(card))
    throw new Error(
      'resources/models/latent-shapes is missing: the built-in model must ship with the app.',
    );
});
