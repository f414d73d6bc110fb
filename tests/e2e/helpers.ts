import type { Locator, Page } from '@playwright/test';
import { type StudioServer, addFixtureModel, callApi, expect } from './fixtures';

// What a person does in the studio, shared by the journey specs.

export async function openStudio(page: Page, studio: StudioServer): Promise<void> {
  await page.goto(studio.studioUrl);
  await expect(page.getByTestId('connection')).toHaveText('Connected');
}

export function view(
  page: Page,
  name: 'Generate' | 'Gallery' | 'Models' | 'Settings',
): Promise<void> {
  return page
    .getByRole('navigation', { name: 'Views' })
    .getByRole('button', { name, exact: true })
    .click();
}

/** Number inputs commit on change (blur), as a person tabbing through the form does. */
export async function setNumber(field: Locator, value: number): Promise<void> {
  await field.fill(String(value));
  await field.press('Tab');
}

export async function setSeed(page: Page, seed: number): Promise<void> {
  await page.getByLabel('Random seed').uncheck();
  await setNumber(page.getByLabel('Seed', { exact: true }), seed);
}

export async function fillForm(
  page: Page,
  options: { prompt: string; seed?: number; steps?: number; width?: number; height?: number },
  size = 128,
): Promise<void> {
  await page.getByLabel('Prompt', { exact: true }).fill(options.prompt);
  await setNumber(page.getByLabel('Width', { exact: true }), options.width ?? size);
  await setNumber(page.getByLabel('Height', { exact: true }), options.height ?? size);
  await setNumber(page.getByLabel('Steps', { exact: true }), options.steps ?? 6);
  if (options.seed !== undefined) await setSeed(page, options.seed);
}

export const doneJobs = (page: Page) => page.locator('[data-testid="job"][data-state="done"]');

/** Waits until the canvas shows a loaded image; returns its image id. */
export async function canvasImageId(page: Page): Promise<string> {
  const image = page.getByTestId('canvas-image');
  await expect(image).toBeVisible();
  await expect
    .poll(() => image.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth))
    .toBeGreaterThan(0);
  return (await image.getAttribute('data-image-id'))!;
}

/** Generates (Ctrl+Enter in the prompt) and waits until `done` jobs have finished in all. */
export async function generate(page: Page, done: number): Promise<string> {
  const image = page.getByTestId('canvas-image');
  const before = (await image.count()) ? await image.getAttribute('data-image-id') : null;
  await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
  await expect(doneJobs(page)).toHaveCount(done, { timeout: 90_000 });
  // The canvas switches to the new image once the job's generation has been read back.
  await expect.poll(() => image.getAttribute('data-image-id')).not.toBe(before);
  return canvasImageId(page);
}

/**
 * Where many journeys begin: the fixture model added, the studio open, one image generated
 * from `options` (see fillForm); returns its image id.
 */
export async function startWithImage(
  page: Page,
  studio: StudioServer,
  options: Parameters<typeof fillForm>[1],
): Promise<string> {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await fillForm(page, options);
  return generate(page, 1);
}

export interface GalleryRow {
  imageId: string;
  generationId: string;
  url: string;
  width: number;
  height: number;
  mode: string;
  seed: number;
  steps: number;
  guidance: number;
  sampler: string;
  prompt: string;
  negativePrompt: string;
  modelName: string;
}

export async function galleryRows(studio: StudioServer, text?: string): Promise<GalleryRow[]> {
  const page = await callApi<{ items: GalleryRow[] }>(
    studio,
    'searchGallery',
    text ? { text } : {},
  );
  return page.items;
}

/** Mask layer alpha (repaint where > 0), read back from the canvas the studio paints on. */
export async function maskAlpha(page: Page): Promise<{ width: number; alpha: number[] }> {
  return page.getByTestId('mask-layer').evaluate((c: HTMLCanvasElement) => {
    const data = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
    return {
      width: c.width,
      alpha: Array.from({ length: c.width * c.height }, (_, i) => data[i * 4 + 3]),
    };
  });
}

/**
 * Compares a source and an edited image of the same size around a mask: how many pixels far
 * from the mask (more than `margin` px) changed by more than 6 levels, and the mean change of
 * the fully masked pixels.
 */
export function changeAroundMask(
  before: { data: number[] },
  after: { data: number[] },
  mask: { width: number; alpha: number[] },
  margin: number,
): { outside: number; outsideChanged: number; inside: number; insideMeanDiff: number } {
  const size = mask.width;
  const height = mask.alpha.length / size;
  const near = new Uint8Array(size * height);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < size; x++) {
      if (!mask.alpha[y * size + x]) continue;
      for (let dy = -margin; dy <= margin; dy++)
        for (let dx = -margin; dx <= margin; dx++) {
          const yy = y + dy;
          const xx = x + dx;
          if (yy >= 0 && yy < height && xx >= 0 && xx < size) near[yy * size + xx] = 1;
        }
    }
  let outside = 0;
  let outsideChanged = 0;
  let inside = 0;
  let insideDiff = 0;
  for (let i = 0; i < size * height; i++) {
    const diff = Math.max(
      ...[0, 1, 2].map((c) => Math.abs(before.data[i * 4 + c] - after.data[i * 4 + c])),
    );
    if (!near[i]) {
      outside++;
      if (diff > 6) outsideChanged++;
    } else if (mask.alpha[i] === 255) {
      inside++;
      insideDiff += diff;
    }
  }
  return { outside, outsideChanged, inside, insideMeanDiff: inside ? insideDiff / inside : 0 };
}
