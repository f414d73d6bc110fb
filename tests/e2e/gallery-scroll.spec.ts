import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import sharp from 'sharp';
import type { Page } from '@playwright/test';
import { type StudioServer, expect, startStudioServer, test as base } from './fixtures';
import { openStudio, view } from './helpers';

// A gallery of a few thousand images scrolled in the real studio: the grid recycles a fixed
// pool of cells (grid-slots.ts), so these check that recycling never shows a wrong image or
// loses the keyboard's place, and that it does recycle.

const count = 3000;

/**
 * A library of `count` generations with real files (one small PNG hard-linked under each row's
 * own name), written with SQL into the schema the server made on its first start: as fast as
 * the bench's, and far faster than generating them.
 */
async function seedLibrary(dir: string): Promise<void> {
  const first = await startStudioServer(dir);
  await first.stop();
  const png = await sharp({
    create: { width: 64, height: 64, channels: 3, background: { r: 90, g: 120, b: 160 } },
  })
    .png()
    .toBuffer();
  fs.mkdirSync(path.join(dir, 'images', 'e2e'), { recursive: true });
  const sample = path.join(dir, 'sample.png');
  fs.writeFileSync(sample, png);
  const db = new Database(path.join(dir, 'library.sqlite'));
  try {
    const start = Date.now() - count * 60_000;
    db.transaction(() => {
      const promptId = db
        .prepare(`INSERT INTO prompts (text, negative) VALUES ('a lighthouse at dusk', '')`)
        .run().lastInsertRowid;
      const generation = db.prepare(
        `INSERT INTO generations (id, settings, prompt_id, model_name, seed, sampler, mode, steps,
           guidance, width, height, variant_key, created_at)
         VALUES (?, ?, ?, 'fixture', ?, 'euler', 'txt2img', 20, 7, 64, 64, 'v', ?)`,
      );
      const image = db.prepare(
        `INSERT INTO images (id, generation_id, file, sha256, width, height, bytes, seed,
           batch_index, prompt_id, sampler, mode, variant_key, created_at)
         VALUES (?, ?, ?, ?, 64, 64, ?, ?, 0, ?, 'euler', 'txt2img', 'v', ?)`,
      );
      for (let i = 0; i < count; i++) {
        const id = `e2e-${String(i).padStart(5, '0')}`;
        const file = `images/e2e/${id}.png`;
        fs.linkSync(sample, path.join(dir, file));
        const settings = JSON.stringify({
          model: 'fixture',
          prompt: 'a lighthouse at dusk',
          seed: i,
        });
        generation.run(`g-${id}`, settings, promptId, i, start + i * 60_000);
        image.run(id, `g-${id}`, file, '0'.repeat(64), png.length, i, promptId, start + i * 60_000);
      }
    })();
  } finally {
    db.close();
  }
}

const test = base.extend<{ studio: StudioServer }>({
  // eslint-disable-next-line no-empty-pattern
  studio: async ({}, use) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-e2e-scroll-'));
    await seedLibrary(dir);
    const server = await startStudioServer(dir);
    await use(server);
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  },
});

/** The seed each shown cell stands for (its label ends "seed N"), by its grid index. */
async function shownSeeds(page: Page): Promise<Map<number, number>> {
  const cells = await page
    .getByTestId('gallery-item')
    .evaluateAll((els) =>
      els.map((el) => [
        Number(el.getAttribute('data-index')),
        el.getAttribute('aria-label') ?? '',
        el.querySelector('img')?.getAttribute('src') ?? '',
        el.getAttribute('data-image-id') ?? '',
      ]),
    );
  const out = new Map<number, number>();
  for (const [index, label, src, imageId] of cells as Array<[number, string, string, string]>) {
    // The picture is the cell's own image, never the one the recycled cell showed before.
    expect(src).toBe(`/media/thumbs/${imageId}`);
    out.set(index, Number(/seed (\d+)/.exec(label)?.[1]));
  }
  return out;
}

test('a long gallery scrolls through recycled cells that always show their own image', async ({
  page,
  studio,
}) => {
  await openStudio(page, studio);
  await view(page, 'Gallery');
  const viewport = page.locator('.viewport');
  await expect(page.getByTestId('gallery-item').first()).toBeVisible();
  // Newest first: index i is the generation with seed count - 1 - i.
  const check = async () => {
    const seeds = await shownSeeds(page);
    expect(seeds.size).toBeGreaterThan(10);
    for (const [index, seed] of seeds) expect(seed).toBe(count - 1 - index);
  };
  await check();

  // Mark every cell element, scroll by rows, and count cells that are not the marked ones.
  const rowHeight = await page.evaluate(() => {
    const cells = [...document.querySelectorAll<HTMLElement>('[data-testid="gallery-item"]')];
    for (const c of cells) (c as HTMLElement & { marked?: boolean }).marked = true;
    const tops = [...new Set(cells.map((c) => Math.round(c.getBoundingClientRect().top)))].sort(
      (a, b) => a - b,
    );
    return tops[1] - tops[0];
  });
  const cellsBefore = await page.getByTestId('gallery-item').count();
  for (let step = 1; step <= 12; step++) {
    await viewport.evaluate((v, by) => (v.scrollTop += by), Math.round(rowHeight * 0.75));
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));
  }
  await expect
    .poll(() =>
      page.evaluate(
        () =>
          [...document.querySelectorAll('[data-testid="gallery-item"]')].filter(
            (c) => !(c as HTMLElement & { marked?: boolean }).marked,
          ).length,
      ),
    )
    .toBe(0);
  expect(await page.getByTestId('gallery-item').count()).toBe(cellsBefore);
  await check();

  // A jump deep into the gallery (new pages fetched) and back fills every cell correctly.
  await viewport.evaluate((v) => (v.scrollTop = v.scrollHeight * 0.6));
  await expect(page.locator('.cell.placeholder')).toHaveCount(0);
  await check();
  await viewport.evaluate((v) => (v.scrollTop = v.scrollHeight));
  await expect(
    page.locator(`[data-testid="gallery-item"][data-index="${count - 1}"]`),
  ).toBeVisible();
  await check();
});

test('the keyboard walks a long gallery and the focus follows the right cell', async ({
  page,
  studio,
}) => {
  await openStudio(page, studio);
  await view(page, 'Gallery');
  const items = page.getByTestId('gallery-item');
  await items.first().click();
  const focused = page.locator('[data-testid="gallery-item"]:focus');
  for (let i = 0; i < 6; i++) await page.keyboard.press('PageDown');
  await expect(focused).toHaveCount(1);
  const index = Number(await focused.getAttribute('data-index'));
  expect(index).toBeGreaterThan(20);
  await expect(focused).toHaveAttribute('aria-label', new RegExp(`seed ${count - 1 - index}$`));
  await page.keyboard.press('ArrowRight');
  await expect(focused).toHaveAttribute('data-index', String(index + 1));

  // Scrolled away with the wheel: the recycled cell that had the focus shows another image now,
  // so the focus moves to the list and the next key goes on from the focused image.
  await page.locator('.viewport').evaluate((v) => (v.scrollTop += 4000));
  await expect(focused).toHaveCount(0);
  await page.keyboard.press('ArrowRight');
  await expect(focused).toHaveAttribute('data-index', String(index + 2));

  await page.keyboard.press('End');
  await expect(focused).toHaveAttribute('data-index', String(count - 1));
  await expect(focused).toHaveAttribute('aria-label', /seed 0$/);
  await page.keyboard.press('Home');
  await expect(focused).toHaveAttribute('data-index', '0');
});
