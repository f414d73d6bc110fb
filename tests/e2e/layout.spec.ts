import type { Locator, Page } from '@playwright/test';
import { addFixtureModel, callApi, expect, screenshotPath, test } from './fixtures';
import {
  doneJobs,
  fillForm,
  generate,
  openStudio,
  setNumber,
  startWithImage,
  view,
} from './helpers';

// Where the eye is: each mode's own controls without scrolling at 1280x800, a canvas that keeps
// the whole picture in view as panels come and go, and a queue whose buttons stay put. Leaves
// the screenshots of every mode at 1280x800 and 1920x1080, light and dark.

/** Whether the element lies wholly inside the visible part of `within` (no scrolling). */
async function shownWithin(element: Locator, within: Locator): Promise<boolean> {
  const a = await element.boundingBox();
  const b = await within.boundingBox();
  if (!a || !b) return false;
  return a.y >= b.y - 1 && a.y + a.height <= b.y + b.height + 1 && a.x >= b.x - 1;
}

const modeControls: Record<string, string[]> = {
  Text: ['Prompt', 'Model'],
  Image: ['Strength'],
  Inpaint: ['Strength', 'Feather (px)', 'Repaint everything but the mask'],
  Outpaint: ['Strength', 'Left', 'Bottom', 'Feather (px)'],
  Upscale: ['Scale', 'Second-pass steps', 'Tile size (px, 0 = automatic)'],
};

async function expectWholeImageOnStage(page: Page): Promise<void> {
  const stage = (await page.getByTestId('canvas-stage').boundingBox())!;
  const image = (await page.getByTestId('canvas-image').boundingBox())!;
  expect(image.y).toBeGreaterThanOrEqual(stage.y - 1);
  expect(image.y + image.height).toBeLessThanOrEqual(stage.y + stage.height + 1);
  expect(image.x).toBeGreaterThanOrEqual(stage.x - 1);
  expect(image.x + image.width).toBeLessThanOrEqual(stage.x + stage.width + 1);
}

test("every mode's own controls are in view at 1280x800; screenshots of every mode", async ({
  page,
  studio,
  consoleErrors,
}) => {
  await startWithImage(page, studio, { prompt: 'a windmill by a canal', seed: 4 });
  const controls = page.getByRole('complementary', { name: 'Generation settings' });
  for (const theme of ['light', 'dark'] as const) {
    await callApi(studio, 'updateSettings', { theme });
    await expect(page.locator('html')).toHaveAttribute('data-theme', theme);
    for (const [viewport, suffix] of [
      [{ width: 1280, height: 800 }, ''],
      [{ width: 1920, height: 1080 }, '-1920'],
    ] as const) {
      await page.setViewportSize(viewport);
      for (const [mode, labels] of Object.entries(modeControls)) {
        await page.getByRole('radio', { name: mode, exact: true }).click();
        for (const label of labels) {
          const field = controls.getByLabel(label, { exact: true });
          expect(await shownWithin(field, controls), `${mode}: ${label} at ${viewport.width}`).toBe(
            true,
          );
        }
        await expect(
          controls.getByRole('button', { name: 'Generate', exact: true }),
        ).toBeInViewport();
        await expectWholeImageOnStage(page);
        await page.screenshot({
          path: screenshotPath(`mode-${mode.toLowerCase()}-${theme}${suffix}`),
        });
      }
      for (const name of ['Gallery', 'Models', 'Settings'] as const) {
        await view(page, name);
        await page.screenshot({
          path: screenshotPath(`view-${name.toLowerCase()}-${theme}${suffix}`),
        });
      }
      await view(page, 'Generate');
    }
  }
  expect(consoleErrors).toEqual([]);
});

test('the canvas refits when the result strip appears, so the picture is never cut off', async ({
  page,
  studio,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await fillForm(page, { prompt: 'a tall tower', seed: 9 }, 256);
  await generate(page, 1);
  await expectWholeImageOnStage(page);
  await setNumber(page.getByLabel('Batch size'), 2);
  await generate(page, 2);
  await expect(page.getByRole('group', { name: 'Images of the last generation' })).toBeVisible();
  await expectWholeImageOnStage(page);
  await page.getByRole('radio', { name: 'Inpaint', exact: true }).click();
  await expectWholeImageOnStage(page);
});

test('the queue keeps its buttons in view, takes little room when empty, and clears finished jobs', async ({
  page,
  studio,
}) => {
  const model = await addFixtureModel(studio);
  await openStudio(page, studio);
  const queueColumn = page.getByRole('complementary', { name: 'Queue' });
  expect((await queueColumn.boundingBox())!.width).toBeLessThanOrEqual(200);

  for (let i = 0; i < 14; i++)
    await callApi(studio, 'enqueue', {
      settings: { model: model.id, prompt: `job ${i}`, seed: i, steps: 2, width: 64, height: 64 },
    });
  await expect(doneJobs(page)).toHaveCount(14, { timeout: 90_000 });
  expect((await queueColumn.boundingBox())!.width).toBeGreaterThan(200);

  // Scroll the list to its end: the header's buttons stay where they were.
  const pause = queueColumn.getByRole('button', { name: 'Pause' });
  const before = (await pause.boundingBox())!;
  await queueColumn.getByText('job 0', { exact: true }).scrollIntoViewIfNeeded();
  await expect(queueColumn.getByText('job 0', { exact: true })).toBeInViewport();
  expect((await pause.boundingBox())!.y).toBe(before.y);
  await expect(pause).toBeInViewport();

  await queueColumn.getByRole('button', { name: 'Clear finished' }).click();
  await expect(doneJobs(page)).toHaveCount(0);
  await expect(queueColumn.getByText('Nothing waiting.')).toBeVisible();
  // Cleared stays cleared after a reload; the gallery keeps the images.
  await page.reload();
  await expect(page.getByTestId('connection')).toHaveText('Connected');
  await expect(queueColumn.getByText('Nothing waiting.')).toBeVisible();
  await expect(doneJobs(page)).toHaveCount(0);
  const gallery = await callApi<{ total: number }>(studio, 'searchGallery', {});
  expect(gallery.total).toBe(14);
});
