import { expect, imagePixels, screenshotPath, test } from './fixtures';
import {
  canvasImageId,
  changeAroundMask,
  generate,
  maskAlpha,
  setNumber,
  setSeed,
  startWithImage,
  view,
} from './helpers';

// Painting an inpainting mask without a pointer: the canvas takes focus, arrow keys move a
// visible brush, P paints while moving, Enter/Space stamp, X erases, [ ] size the brush; a live
// line says where the brush is and how much the mask covers. Then the inpaint runs on the real
// engine and only the painted area changes; reusing the result from the gallery after a reload
// brings back its source image and its painted mask.

const size = 128;

test('paint a mask with the keyboard only and inpaint it; reuse restores image and mask', async ({
  page,
  studio,
  consoleErrors,
}) => {
  const beforeId = await startWithImage(page, studio, { prompt: 'a quiet harbour', seed: 3 });

  await page.getByRole('radio', { name: 'Inpaint' }).click();
  await page.getByLabel('Only the masked area, at full resolution').check();
  await setNumber(page.getByLabel('Padding around the mask (px)'), 0);
  await setNumber(page.getByLabel('Brush size'), 20);

  // The keys are documented in the toolbar.
  await page.getByTestId('canvas-keys').locator('summary').click();
  await expect(page.getByRole('note', { name: 'Canvas keys' })).toContainText('paint while moving');
  await page.getByTestId('canvas-keys').locator('summary').click();

  // Tab from the toolbar's last button into the canvas: a visible focus ring, no brush yet.
  await page.getByRole('button', { name: 'Open image…' }).focus();
  await page.keyboard.press('Tab');
  const stage = page.getByTestId('canvas-stage');
  await expect(stage).toBeFocused();
  await expect(stage).toHaveAttribute('role', 'application');
  expect(await stage.evaluate((el) => getComputedStyle(el).outlineStyle)).toBe('solid');
  await expect(page.getByTestId('keyboard-brush')).toHaveCount(0);
  const status = page.locator('#brush-status');
  await expect(status).toHaveAttribute('aria-live', 'polite');
  await expect(status).toHaveText('Mask covers 0% of the image.');

  // [ and ] size the brush.
  await page.keyboard.press(']');
  await expect(page.getByLabel('Brush size')).toHaveValue('25');
  await page.keyboard.press('[');
  await expect(page.getByLabel('Brush size')).toHaveValue('20');

  // The first arrow shows the brush at the centre; steps are 2 px, 16 px with Shift (128 px).
  await page.keyboard.press('ArrowLeft');
  await expect(page.getByTestId('keyboard-brush')).toBeVisible();
  await expect(status).toHaveText('Brush at 62, 64, 20 px. Mask covers 0% of the image.');
  await page.keyboard.press('ArrowRight');
  for (let i = 0; i < 3; i++) await page.keyboard.press('Shift+ArrowLeft');
  for (let i = 0; i < 3; i++) await page.keyboard.press('Shift+ArrowUp');
  await expect(status).toContainText('Brush at 16, 16, 20 px.');
  // The brush ring sits over that image pixel on screen.
  const img = (await page.getByTestId('canvas-image').boundingBox())!;
  const ring = (await page.getByTestId('keyboard-brush').boundingBox())!;
  expect(Math.abs(ring.x + ring.width / 2 - (img.x + (16.5 / size) * img.width))).toBeLessThan(2);
  expect(Math.abs(ring.y + ring.height / 2 - (img.y + (16.5 / size) * img.height))).toBeLessThan(2);

  // P: pen down, move right 32 and down 16, P: lift. One stroke.
  await page.keyboard.press('p');
  await expect(status).toContainText('painting');
  await page.keyboard.press('Shift+ArrowRight');
  await page.keyboard.press('Shift+ArrowRight');
  await page.keyboard.press('Shift+ArrowDown');
  await page.keyboard.press('p');
  await expect(status).not.toContainText('painting');
  // Away from the stroke, one stamp with Enter and one with Space (all in the top-left quarter,
  // so that "only the masked area" crops to one flat quadrant of the known-answer image).
  await page.keyboard.press('Shift+ArrowLeft');
  await page.keyboard.press('Shift+ArrowLeft');
  await page.keyboard.press('Shift+ArrowDown');
  await page.keyboard.press('ArrowDown');
  await expect(status).toContainText('Brush at 16, 50');
  await page.keyboard.press('Enter');
  await page.keyboard.press('Shift+ArrowRight');
  await page.keyboard.press('Shift+ArrowRight');
  await page.keyboard.press(' ');
  await expect(status).toContainText('Brush at 48, 50');

  const at = (m: { width: number; alpha: number[] }, x: number, y: number) =>
    m.alpha[y * m.width + x];
  let mask = await maskAlpha(page);
  expect(mask.width).toBe(size);
  expect(at(mask, 16, 16)).toBe(255); // stroke start
  expect(at(mask, 32, 16)).toBe(255); // along the stroke
  expect(at(mask, 48, 24)).toBe(255); // its turn downwards
  expect(at(mask, 16, 50)).toBe(255); // the Enter stamp
  expect(at(mask, 48, 50)).toBe(255); // the Space stamp
  expect(at(mask, 32, 50)).toBe(0); // stamps are not strokes
  expect(at(mask, 16, 33)).toBe(0);
  expect(at(mask, 100, 100)).toBe(0);
  // The live line's coverage is the mask's mean opacity.
  const coverage = mask.alpha.reduce((a, b) => a + b, 0) / (255 * size * size);
  const shown = Number(/Mask covers ([\d.]+)%/.exec((await status.textContent())!)![1]);
  expect(Math.abs(shown - coverage * 100)).toBeLessThanOrEqual(0.51);
  expect(shown).toBeGreaterThan(3);

  // X: eraser; Enter erases a dab; Ctrl+Z takes it back; X: brush again.
  await page.keyboard.press('x');
  await expect(status).toContainText('Eraser at 48, 50');
  await expect(page.getByRole('button', { name: 'Eraser (E)' })).toHaveAttribute(
    'aria-pressed',
    'true',
  );
  await page.keyboard.press('Enter');
  expect(at(await maskAlpha(page), 48, 50)).toBe(0);
  await page.keyboard.press('Control+z');
  expect(at(await maskAlpha(page), 48, 50)).toBe(255);
  await page.keyboard.press('x');
  await expect(status).toContainText('Brush at 48, 50');
  await page.screenshot({ path: screenshotPath('keyboard-mask') });
  await page.keyboard.press('Escape');
  await expect(page.getByTestId('keyboard-brush')).toHaveCount(0);

  mask = await maskAlpha(page);
  await setSeed(page, 11);
  await setNumber(page.getByLabel('Strength', { exact: true }), 1);
  const afterId = await generate(page, 2);
  expect(afterId).not.toBe(beforeId);
  const before = await imagePixels(page, `/media/images/${beforeId}`);
  const after = await imagePixels(page, `/media/images/${afterId}`);
  expect([after.width, after.height]).toEqual([size, size]);
  const change = changeAroundMask(before, after, mask, 10);
  expect(change.outside).toBeGreaterThan(size * size * 0.4);
  expect(change.outsideChanged).toBe(0);
  expect(change.insideMeanDiff).toBeGreaterThan(20);

  // After a reload: reuse the inpainting from the gallery; its source and its mask come back.
  await page.reload();
  await expect(page.getByTestId('connection')).toHaveText('Connected');
  await view(page, 'Gallery');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${afterId}"]`).click();
  await page.getByRole('button', { name: 'Reuse all settings' }).click();
  await expect(page.getByRole('radio', { name: 'Inpaint' })).toHaveAttribute(
    'aria-checked',
    'true',
  );
  expect(await canvasImageId(page)).toBe(beforeId);
  await expect(page.locator('#brush-status')).toContainText(/Mask covers [1-9]/);
  const restored = await maskAlpha(page);
  expect(restored.width).toBe(size);
  let worst = 0;
  for (let i = 0; i < mask.alpha.length; i++)
    worst = Math.max(worst, Math.abs(mask.alpha[i] - restored.alpha[i]));
  expect(worst).toBeLessThanOrEqual(1);
  await page.screenshot({ path: screenshotPath('keyboard-mask-reused') });
  expect(consoleErrors).toEqual([]);
});
