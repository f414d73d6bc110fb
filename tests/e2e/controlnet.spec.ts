import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { convertControlNet } from '../../src/engine/convert/convert-controlnet';
import type { ControlNetArchitecture } from '../../src/engine/convert/types';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { callApi, expect, imagePixels, screenshotPath, test } from './fixtures';
import { fillForm, generate, openStudio, view } from './helpers';

// ControlNet in the studio (issue 19): a unit added in the Generate form with a ControlNet of
// the ControlNet folder and an uploaded control image, its canny preview shown beside it, the
// generation recorded with the unit, "Reuse all settings" bringing the unit back (its image
// too), which makes the same picture again, and a reload keeping it.

const REF = path.join(import.meta.dirname, '..', 'fixtures', 'reference');

test('add a ControlNet unit, see its preview, generate, and reuse it', async ({
  page,
  studio,
  consoleErrors,
}) => {
  // A model whose UNet takes ControlNet residuals, and the fixture ControlNet in the folder
  // (its conversion seeded in the cache: the small configuration needs its architecture given).
  const { file, arch } = await smallCheckpoint(studio.dataDir, 'sd1');
  const modelDir = path.join(studio.dataDir, 'sd1-control');
  await convertCheckpoint(file, modelDir, {
    vocabularyFile: VOCABULARY,
    architecture: arch,
    precision: 'fp32',
    controlResiduals: true,
  });
  const folder = path.join(studio.dataDir, 'models', 'controlnet');
  fs.mkdirSync(folder, { recursive: true });
  const cnFile = path.join(folder, 'control_canny.safetensors');
  fs.copyFileSync(path.join(REF, 'controlnet-sd1.safetensors'), cnFile);
  const sha = createHash('sha256').update(fs.readFileSync(cnFile)).digest('hex');
  const cnArch = JSON.parse(
    fs.readFileSync(path.join(REF, 'controlnet-sd1.json'), 'utf8'),
  ) as ControlNetArchitecture;
  await convertControlNet(
    cnFile,
    path.join(studio.dataDir, 'converted', `controlnet-${sha.slice(0, 16)}-fp16`, 'cn'),
    { architecture: cnArch, sha256: sha },
  );
  await callApi(studio, 'addModel', { path: modelDir });
  const px = Buffer.alloc(64 * 64 * 3);
  for (let y = 16; y < 48; y++) px.fill(255, (y * 64 + 16) * 3, (y * 64 + 48) * 3);
  const square = await sharp(px, { raw: { width: 64, height: 64, channels: 3 } })
    .png()
    .toBuffer();

  await openStudio(page, studio);
  await fillForm(page, { prompt: 'a red house', seed: 5, steps: 3 }, 64);
  const section = page.getByTestId('controlnet-section');
  await section.getByRole('button', { name: 'Add unit' }).click();
  const unit = page.getByTestId('controlnet-unit');
  await expect(unit).toHaveCount(1);
  await expect(unit.getByLabel('Model')).toHaveValue('control_canny.safetensors');
  // Without a control image Generate says what is missing.
  await expect(page.getByTestId('generate-blocker')).toHaveText(
    'Give ControlNet unit 1 a control image.',
  );
  await unit.getByLabel('Upload a control image for unit 1').setInputFiles({
    name: 'square.png',
    mimeType: 'image/png',
    buffer: square,
  });
  // The canny preview: the square's outline, white on black.
  const preview = unit.getByTestId('controlnet-preview');
  await expect(preview).toHaveAttribute('src', /^data:image\/png;base64,/);
  const edges = await imagePixels(page, (await preview.getAttribute('src'))!);
  expect([edges.width, edges.height]).toEqual([64, 64]);
  const at = (x: number, y: number) => edges.data[(y * 64 + x) * 4];
  expect([15, 16].some((x) => at(x, 32) === 255)).toBe(true);
  expect(at(32, 32)).toBe(0);
  await page.screenshot({ path: screenshotPath('controlnet-unit') });

  const guidedId = await generate(page, 1);
  const detail = await callApi<{
    generationId: string;
    settings: { controlnets: { model: string; preprocessor: string }[] };
    parametersText: string;
  }>(studio, 'getGeneration', {
    id: (await callApi<{ generationId: string }>(studio, 'getImage', { id: guidedId }))
      .generationId,
  });
  expect(detail.settings.controlnets).toMatchObject([
    { model: 'control_canny.safetensors', preprocessor: 'canny', weight: 1 },
  ]);
  expect(detail.parametersText).toContain(
    `ControlNet 0: "Module: canny, Model: control_canny [${sha.slice(0, 8)}]`,
  );

  // Without the unit the same seed makes another picture.
  await unit.getByRole('button', { name: 'Remove ControlNet unit 1' }).click();
  await expect(unit).toHaveCount(0);
  const plainId = await generate(page, 2);
  const guided = await imagePixels(page, `/media/images/${guidedId}`);
  const plain = await imagePixels(page, `/media/images/${plainId}`);
  expect(guided.data).not.toEqual(plain.data);

  // Reuse from the gallery: the unit comes back with its image and preview, and makes the same
  // picture again.
  await view(page, 'Gallery');
  await page.locator(`[data-testid="gallery-item"][data-image-id="${guidedId}"]`).click();
  await expect(page.getByTestId('detail-controlnet')).toContainText('control_canny.safetensors');
  await page.getByRole('button', { name: 'Reuse all settings' }).click();
  await expect(unit).toHaveCount(1);
  await expect(unit.getByLabel('Model')).toHaveValue('control_canny.safetensors');
  await expect(unit.getByTestId('controlnet-preview')).toHaveAttribute('src', /^data:image\/png/);
  const againId = await generate(page, 3);
  const again = await imagePixels(page, `/media/images/${againId}`);
  expect(again.data).toEqual(guided.data);

  // The unit is part of the work in progress: a reload brings it back with its preview.
  const savedUnits = () =>
    page.evaluate(
      () =>
        (
          JSON.parse(localStorage.getItem('latent-studio:workspace') ?? '{}') as {
            controlnets?: unknown[];
          }
        ).controlnets?.length ?? 0,
    );
  await expect.poll(savedUnits).toBe(1);
  await page.reload();
  await expect(page.getByTestId('connection')).toHaveText('Connected');
  await expect(unit).toHaveCount(1);
  await expect(unit.getByTestId('controlnet-preview')).toHaveAttribute('src', /^data:image\/png/);
  expect(consoleErrors).toEqual([]);
});
