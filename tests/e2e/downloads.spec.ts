import { type FakeHub, startFakeHub } from '../fixtures/hub-server';
import { fixtureModel } from '../fixtures/models';
import { callApi, expect, screenshotPath, test } from './fixtures';
import { fillForm, galleryRows, generate, openStudio, view } from './helpers';

// Models -> Download models, through the real headless server against a Hugging Face Hub on
// loopback (tests/fixtures/hub-server.ts) that serves a fixture model under the catalogue's
// SD 1.5 repo id: pick it in the catalogue, watch its progress, see it verified and added,
// generate with it. A reference that is neither a repo id nor a URL gets its sentence.

const repo = 'onnx-community/stable-diffusion-v1-5-ONNX';
let hub: FakeHub;

test.beforeAll(async () => {
  const dir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  hub = await startFakeHub([{ id: repo, dir, license: 'creativeml-openrail-m' }]);
  // The studio server is started for each test with this process's environment.
  process.env.HF_ENDPOINT = hub.url;
});
test.afterAll(async () => {
  delete process.env.HF_ENDPOINT;
  await hub?.close();
});

test('download a model from the catalogue, watch its progress, generate with it', async ({
  page,
  studio,
  consoleErrors,
}) => {
  // Slow enough to see it running (about 370 KB at 40 KB per 50 ms).
  hub.faults.slow = { chunk: 8 * 1024, delayMs: 50 };
  await openStudio(page, studio);
  await view(page, 'Models');
  const catalogue = page.getByRole('list', { name: 'Catalogue' });
  await catalogue.getByRole('button', { name: 'Download Stable Diffusion 1.5' }).click();

  const item = page.getByTestId('downloads').getByRole('listitem').filter({ hasText: repo });
  await expect(item).toContainText(`@${hub.repos.get(repo)!.sha.slice(0, 10)}`);
  await expect(item.getByTestId('download-status')).toHaveText(/KB of \d+ KB/);
  await expect(item.getByRole('progressbar')).toBeVisible();
  await expect(
    catalogue.getByRole('button', { name: 'Download Stable Diffusion 1.5' }),
  ).toBeDisabled();
  await page.screenshot({ path: screenshotPath('download-progress'), fullPage: true });
  hub.faults.slow = undefined;

  await expect(item.getByTestId('download-status')).toHaveText('Downloaded and verified', {
    timeout: 60_000,
  });
  const row = page
    .getByTestId('models-table')
    .getByRole('row', { name: /stable-diffusion-v1-5-ONNX/ });
  await expect(row).toContainText('Ready');
  await expect(row.getByTestId('model-source')).toHaveText(
    `Downloaded from ${repo}@${hub.repos.get(repo)!.sha}`,
  );
  const models = await callApi<{ id: string; name: string; path: string }[]>(studio, 'listModels');
  const model = models.find((m) => m.name.includes('stable-diffusion-v1-5-ONNX'))!;
  expect(model.path).toBe(`${studio.dataDir}/models/onnx-community--stable-diffusion-v1-5-ONNX`);

  await view(page, 'Generate');
  await page.getByLabel('Model', { exact: true }).selectOption(model.id);
  await fillForm(page, { prompt: 'a downloaded lighthouse', seed: 2 });
  await generate(page, 1);
  expect((await galleryRows(studio))[0]).toMatchObject({ modelName: model.name });
  expect(consoleErrors).toEqual([]);
});

test('a reference that is not a repo or URL is refused with a sentence', async ({
  page,
  studio,
}) => {
  await openStudio(page, studio);
  await view(page, 'Models');
  const form = page.getByRole('form', { name: 'Download a model' });
  await form.getByLabel('Repo id or URL').fill('stable diffusion');
  await form.getByRole('button', { name: 'Download' }).click();
  await expect(page.getByRole('alert').filter({ hasText: 'neither' })).toHaveText(
    '"stable diffusion" is neither a Hub repo id (owner/name) nor a web address.',
  );
  expect(await callApi<unknown[]>(studio, 'listDownloads')).toEqual([]);
});
