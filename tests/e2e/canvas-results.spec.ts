import { addSlowModel, callApi, expect, screenshotPath, test } from './fixtures';
import { doneJobs, generate, openStudio, setNumber, startWithImage } from './helpers';

// What the canvas shows around a generation: the picture forming, large, from the first steps;
// an inpainting result without the paint over it.

test('an inpainting result shows without the mask over it; a toggle brings the mask back', async ({
  page,
  studio,
}) => {
  await startWithImage(page, studio, { prompt: 'a red barn', seed: 3 });
  await page.getByRole('radio', { name: 'Inpaint', exact: true }).click();
  await setNumber(page.getByLabel('Brush size'), 40);
  const box = (await page.getByTestId('canvas-image').boundingBox())!;
  await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
  const maskHost = page.getByTestId('mask-host');
  const toggle = page.getByRole('button', { name: 'Show mask' });
  await expect(maskHost).toBeVisible();
  await expect(toggle).toHaveAttribute('aria-pressed', 'true');

  await generate(page, 2);
  await expect(maskHost).toBeHidden();
  await expect(toggle).toHaveAttribute('aria-pressed', 'false');
  await page.screenshot({ path: screenshotPath('inpaint-result-unmasked') });
  await toggle.click();
  await expect(maskHost).toBeVisible();
  await toggle.click();
  await expect(maskHost).toBeHidden();
  // Painting again shows the mask again.
  await page.mouse.click(box.x + box.width / 4, box.y + box.height / 4);
  await expect(maskHost).toBeVisible();
});

test('the live preview fills the canvas from the first steps', async ({ page, studio }) => {
  const model = await addSlowModel(studio);
  await openStudio(page, studio);
  // Record the step of the first preview the page shows, and its size, as it appears.
  await page.evaluate(() => {
    const w = window as unknown as { firstPreview: { step: number; height: number } | null };
    w.firstPreview = null;
    new MutationObserver(() => {
      const img = document.querySelector<HTMLImageElement>('[data-testid="live-preview"]');
      if (img && !w.firstPreview)
        w.firstPreview = {
          step: Number(img.dataset.step),
          height: img.getBoundingClientRect().height,
        };
    }).observe(document.body, { childList: true, subtree: true });
  });
  await callApi(studio, 'enqueue', {
    settings: { model: model.id, prompt: 'a forest', seed: 2, steps: 120, width: 128, height: 128 },
  });
  const preview = page.getByTestId('live-preview');
  await expect(preview).toBeVisible({ timeout: 60_000 });
  await page.screenshot({ path: screenshotPath('live-preview') });
  const stage = (await page.getByTestId('canvas-stage').boundingBox())!;
  await expect(doneJobs(page)).toHaveCount(1, { timeout: 90_000 });
  await expect(preview).toHaveCount(0);
  const first = await page.evaluate(
    () => (window as unknown as { firstPreview: { step: number; height: number } }).firstPreview,
  );
  expect(first.step).toBeLessThanOrEqual(2);
  expect(first.height).toBeGreaterThan(stage.height * 0.6);
});
