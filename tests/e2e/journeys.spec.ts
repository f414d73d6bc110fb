import {
  type StudioServer,
  addFixtureModel,
  addSlowModel,
  callApi,
  expect,
  imagePixels,
  screenshotPath,
  test,
} from './fixtures';
import {
  changeAroundMask,
  fillForm,
  generate,
  maskAlpha,
  openStudio,
  setNumber,
  setSeed,
  view,
  startWithImage,
} from './helpers';

// A person's journeys through the studio, against the real headless server and engine with
// fixture models. The known-answer model makes 128x128 images of flat colour quadrants in about
// a second; each journey leaves a screenshot under test-results/screenshots/.

const size = 128;

async function gallery(studio: StudioServer, text?: string) {
  return callApi<{
    total: number;
    items: {
      imageId: string;
      url: string;
      seed: number;
      prompt: string;
      favorite: boolean;
      rating: number;
      tags: string[];
    }[];
  }>(studio, 'searchGallery', text ? { text } : {});
}

test.describe('journeys', () => {
  test('generate an image and find it in the gallery', async ({ page, studio, consoleErrors }) => {
    await addFixtureModel(studio);
    await openStudio(page, studio);
    await fillForm(page, {
      prompt: 'a lighthouse on a cliff at dusk, (dramatic sky:1.3)',
      seed: 7,
    });
    await expect(page.getByTestId('prompt-tokens')).toContainText('/75');
    const imageId = await generate(page, 1);
    await expect(page.getByTestId('last-seed')).toHaveText('Last seed: 7');
    await page.screenshot({ path: screenshotPath('journey-generate') });

    await view(page, 'Gallery');
    const items = page.getByTestId('gallery-item');
    await expect(items).toHaveCount(1);
    await expect(items.first()).toHaveAttribute('data-image-id', imageId);
    const thumb = items.first().locator('img');
    await expect
      .poll(() => thumb.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth))
      .toBeGreaterThan(0);
    await items.first().click();
    await expect(page.getByTestId('detail-prompt')).toContainText('a lighthouse on a cliff');
    await expect(page.getByTestId('detail-seed')).toHaveText('7');
    await page.screenshot({ path: screenshotPath('journey-gallery') });
    await page.setViewportSize({ width: 1920, height: 1080 });
    await page.screenshot({ path: screenshotPath('journey-gallery-1920') });
    expect(consoleErrors).toEqual([]);
  });

  test('paint a mask with the mouse and inpaint: only the masked area changes', async ({
    page,
    studio,
  }) => {
    const beforeId = await startWithImage(page, studio, { prompt: 'a quiet harbour', seed: 3 });

    await page.getByRole('radio', { name: 'Inpaint' }).click();
    // Inpaint just the painted area at the model's size (the known-answer model would otherwise
    // be pinned to the original by the unmasked pixels), with a crop hugging the mask.
    await page.getByLabel('Only the masked area, at full resolution').check();
    await setNumber(page.getByLabel('Padding around the mask (px)'), 0);
    await setNumber(page.getByLabel('Brush size'), 20);
    const box = (await page.getByTestId('canvas-image').boundingBox())!;
    const at = (fx: number, fy: number) =>
      [box.x + box.width * fx, box.y + box.height * fy] as const;
    await page.mouse.move(...at(0.12, 0.15));
    await page.mouse.down();
    for (const [fx, fy] of [
      [0.3, 0.15],
      [0.42, 0.2],
      [0.42, 0.35],
      [0.2, 0.38],
      [0.15, 0.28],
    ] as const)
      await page.mouse.move(...at(fx, fy), { steps: 8 });
    await page.mouse.up();
    // The mask as painted, read back from the mask layer (alpha = repaint).
    const mask = await maskAlpha(page);
    expect(mask.width).toBe(size);
    expect(mask.alpha.filter((a) => a === 255).length).toBeGreaterThan(200);
    // Shown in another colour (rose is hard to see on red), the mask itself stays as painted.
    await page.getByLabel('Mask colour').selectOption('green');
    expect((await maskAlpha(page)).alpha).toEqual(mask.alpha);
    const shown = await page.getByTestId('mask-layer').evaluate((c: HTMLCanvasElement) => {
      const data = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      const i = Array.from({ length: c.width * c.height }, (_, k) => k).find(
        (k) => data[k * 4 + 3] === 255,
      )!;
      return Array.from(data.slice(i * 4, i * 4 + 3));
    });
    expect(shown).toEqual([0, 200, 83]);
    await page.screenshot({ path: screenshotPath('journey-inpaint-mask') });

    await setSeed(page, 11);
    await setNumber(page.getByLabel('Strength', { exact: true }), 1);
    const afterId = await generate(page, 2);
    expect(afterId).not.toBe(beforeId);
    await page.screenshot({ path: screenshotPath('journey-inpaint') });

    const before = await imagePixels(page, `/media/images/${beforeId}`);
    const after = await imagePixels(page, `/media/images/${afterId}`);
    expect([after.width, after.height]).toEqual([size, size]);
    // Far from the paint (feather 4 px plus the brush's soft edge) nothing changed; inside, a lot.
    const change = changeAroundMask(before, after, mask, 10);
    expect(change.outside).toBeGreaterThan(size * size * 0.5);
    expect(change.outsideChanged).toBe(0);
    expect(change.insideMeanDiff).toBeGreaterThan(20);
  });

  test('upscale an image with the two-pass upscaler', async ({ page, studio }) => {
    const sourceId = await startWithImage(page, studio, { prompt: 'a mountain village', seed: 5 });

    await page.getByRole('radio', { name: 'Upscale' }).click();
    await expect(page.getByRole('radio', { name: 'Two-pass' })).toHaveAttribute(
      'aria-checked',
      'true',
    );
    await setNumber(page.getByLabel('Scale', { exact: true }), 2);
    await setNumber(page.getByLabel('Tile size (px, 0 = automatic)'), 128);
    await expect(page.getByTestId('upscale-caption')).toContainText(`${size * 2} × ${size * 2}`);
    await page.screenshot({ path: screenshotPath('journey-upscale-setup') });
    const upscaledId = await generate(page, 2);
    expect(upscaledId).not.toBe(sourceId);
    const upscaled = await imagePixels(page, `/media/images/${upscaledId}`);
    expect([upscaled.width, upscaled.height]).toEqual([size * 2, size * 2]);
    await page.getByRole('button', { name: 'Fit to screen' }).click();
    await page.screenshot({ path: screenshotPath('journey-upscale') });
  });

  test('search the gallery by a word of the prompt (dark theme)', async ({ page, studio }) => {
    await callApi(studio, 'updateSettings', { theme: 'dark' });
    await addFixtureModel(studio);
    await openStudio(page, studio);
    await fillForm(page, { prompt: 'a red fox in the snow', seed: 1 });
    await generate(page, 1);
    await fillForm(page, { prompt: 'a blue whale in the deep sea', seed: 2 });
    await generate(page, 2);
    await page.screenshot({ path: screenshotPath('journey-generate-dark') });

    await view(page, 'Gallery');
    await expect(page.getByTestId('gallery-item')).toHaveCount(2);
    await page.getByLabel('Search the gallery').fill('whale');
    await expect(page.getByTestId('gallery-item')).toHaveCount(1);
    await expect(page.getByTestId('gallery-count')).toHaveText('1 image');
    await page.getByTestId('gallery-item').first().click();
    await expect(page.getByTestId('detail-prompt')).toHaveText('a blue whale in the deep sea');
    await page.screenshot({ path: screenshotPath('journey-search-dark') });
    await page.getByLabel('Search the gallery').fill('fox');
    await expect(page.getByTestId('gallery-item')).toHaveCount(1);
    await page.getByLabel('Search the gallery').fill('');
    await expect(page.getByTestId('gallery-item')).toHaveCount(2);
  });

  test('reuse a seed and get the same image', async ({ page, studio }) => {
    await addFixtureModel(studio);
    await openStudio(page, studio);
    // A random seed first, as a person would.
    await fillForm(page, { prompt: 'an orchard in spring' });
    const firstId = await generate(page, 1);
    const firstSeed = Number(
      (await page.getByTestId('last-seed').textContent())!.replace(/\D+/g, ''),
    );
    await page.getByRole('button', { name: 'Roll a new seed' }).click();
    await generate(page, 2);

    await view(page, 'Gallery');
    await page.locator(`[data-testid="gallery-item"][data-image-id="${firstId}"]`).click();
    await expect(page.getByTestId('detail-seed')).toHaveText(String(firstSeed));
    await page.getByRole('button', { name: 'Reuse seed' }).click();
    await expect(page.getByLabel('Seed', { exact: true })).toHaveValue(String(firstSeed));
    const thirdId = await generate(page, 3);
    await page.screenshot({ path: screenshotPath('journey-reuse-seed') });

    const a = await imagePixels(page, `/media/images/${firstId}`);
    const b = await imagePixels(page, `/media/images/${thirdId}`);
    expect(b.data).toEqual(a.data);
    const page1 = await gallery(studio);
    expect(page1.items.filter((i) => i.seed === firstSeed)).toHaveLength(2);
  });

  test('delete an image and undo it', async ({ page, studio }) => {
    await addFixtureModel(studio);
    await openStudio(page, studio);
    await fillForm(page, { prompt: 'a paper boat', seed: 21 });
    await generate(page, 1);
    await fillForm(page, { prompt: 'a paper crane', seed: 22 });
    const craneId = await generate(page, 2);

    await view(page, 'Gallery');
    await expect(page.getByTestId('gallery-item')).toHaveCount(2);
    await page.locator(`[data-testid="gallery-item"][data-image-id="${craneId}"]`).click();
    await page.getByTestId('image-detail').getByRole('button', { name: 'Delete' }).click();
    await expect(page.getByTestId('gallery-item')).toHaveCount(1);
    await expect(page.getByTestId('gallery-count')).toHaveText('1 image');
    const notice = page.getByTestId('notice').filter({ hasText: 'Deleted 1 image' });
    await expect(notice).toBeVisible();
    await page.screenshot({ path: screenshotPath('journey-delete') });
    expect((await gallery(studio)).total).toBe(1);

    await notice.getByRole('button', { name: 'Undo' }).click();
    await expect(page.getByTestId('gallery-item')).toHaveCount(2);
    await expect(
      page.locator(`[data-testid="gallery-item"][data-image-id="${craneId}"]`),
    ).toBeVisible();
    expect((await gallery(studio)).total).toBe(2);
    await page.screenshot({ path: screenshotPath('journey-delete-undone') });
  });

  test('cancel a long generation', async ({ page, studio }) => {
    const slow = await addSlowModel(studio);
    await openStudio(page, studio);
    await page.getByLabel('Model', { exact: true }).selectOption(slow.id);
    await fillForm(page, {
      prompt: 'a long exposure of city lights',
      seed: 9,
      steps: 200,
      width: 256,
      height: 256,
    });
    await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
    const bar = page.getByRole('progressbar', { name: 'Generation progress' });
    await expect(bar).toBeVisible({ timeout: 30_000 });
    await expect
      .poll(async () => Number(await bar.getAttribute('aria-valuenow')), { timeout: 60_000 })
      .toBeGreaterThan(0);
    await page.screenshot({ path: screenshotPath('journey-cancel-running') });
    await page.getByTestId('progress').getByRole('button', { name: 'Cancel' }).click();
    await expect(page.locator('[data-testid="job"][data-state="cancelled"]')).toHaveCount(1, {
      timeout: 30_000,
    });
    await expect(bar).toBeHidden();
    await expect(page.getByTestId('progress')).toContainText('Ready.');
    expect((await gallery(studio)).total).toBe(0);
    await page.screenshot({ path: screenshotPath('journey-cancel') });
  });

  test('compare two images, rate and tag; outpaint edges; models and settings', async ({
    page,
    studio,
  }) => {
    const a = await startWithImage(page, studio, { prompt: 'a cabin in the woods', seed: 1 });
    await setNumber(page.getByLabel('Guidance', { exact: true }), 9);
    await setSeed(page, 2);
    const b = await generate(page, 2);

    // Outpaint: drag the right edge of the canvas outwards.
    await page.getByRole('radio', { name: 'Outpaint' }).click();
    const right = page.getByRole('slider', { name: 'Extend right' });
    const edge = (await right.boundingBox())!;
    await page.mouse.move(edge.x + edge.width / 2, edge.y + edge.height / 2);
    await page.mouse.down();
    await page.mouse.move(edge.x + 120, edge.y + edge.height / 2, { steps: 6 });
    await page.mouse.up();
    const extended = Number(await page.getByLabel('Right', { exact: true }).inputValue());
    expect(extended).toBeGreaterThan(0);
    expect(extended % 8).toBe(0);
    await page.screenshot({ path: screenshotPath('journey-outpaint-edges') });

    await view(page, 'Gallery');
    await page.locator(`[data-testid="gallery-item"][data-image-id="${a}"]`).click();
    await page
      .locator(`[data-testid="gallery-item"][data-image-id="${b}"]`)
      .click({ modifiers: ['Control'] });
    await page
      .getByRole('toolbar', { name: 'Selection' })
      .getByRole('button', { name: 'Compare' })
      .click();
    const compare = page.getByTestId('compare');
    await expect(compare).toContainText('guidance');
    await expect(compare).toContainText('seed');
    await page.screenshot({ path: screenshotPath('journey-compare') });
    await compare.getByRole('button', { name: 'Close' }).click();

    await page.locator(`[data-testid="gallery-item"][data-image-id="${a}"]`).click();
    const detail = page.getByTestId('image-detail');
    await detail.getByRole('button', { name: 'Add to favourites' }).click();
    await detail.getByTitle('4 stars').click();
    await expect(detail.getByRole('radio', { name: '4 stars' })).toBeChecked();
    await detail.getByLabel('Tags (comma-separated)').fill('cabin, keeper');
    await detail.getByLabel('Tags (comma-separated)').press('Enter');
    await expect(detail.getByRole('button', { name: 'Remove from favourites' })).toBeVisible();
    await expect
      .poll(async () => (await gallery(studio)).items.find((i) => i.imageId === a))
      .toMatchObject({ favorite: true, rating: 4, tags: ['cabin', 'keeper'] });

    await page.setViewportSize({ width: 1920, height: 1080 });
    await view(page, 'Models');
    await expect(page.getByTestId('models-table')).toContainText('e2e-known-answer');
    await page.screenshot({ path: screenshotPath('journey-models-1920') });
    await view(page, 'Settings');
    await page.getByLabel('Theme').selectOption('dark');
    await page.screenshot({ path: screenshotPath('journey-settings-dark-1920') });
    await view(page, 'Generate');
    await page.screenshot({ path: screenshotPath('journey-generate-dark-1920') });
  });
});
