import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type FakeHub, startFakeHub } from '../fixtures/hub-server';
import { writeFixtureLora } from '../fixtures/lora-file';
import { fixtureModel } from '../fixtures/models';
import { callApi, expect, screenshotPath, test } from './fixtures';
import { fillForm, galleryRows, generate, openStudio, view } from './helpers';

// Models -> Download models, through the real headless server against a Hugging Face Hub on
// loopback (tests/fixtures/hub-server.ts) that serves a fixture model under the catalogue's
// SD 1.5 repo id: pick it in the catalogue, watch its progress, see it verified and added,
// generate with it. A reference that is neither a repo id nor a URL gets its sentence. A LoRA
// downloaded by URL is in the open LoRA picker as soon as it lands in its folder.

const repo = 'onnx-community/stable-diffusion-v1-5-ONNX';
const found = 'people/searchable-sd-onnx';
let hub: FakeHub;

test.beforeAll(async () => {
  const dir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-lora-file-'));
  await writeFixtureLora(path.join(tmp, 'ink.safetensors'), (i) => i / 100);
  const lora = fs.readFileSync(path.join(tmp, 'ink.safetensors'));
  fs.rmSync(tmp, { recursive: true, force: true });
  hub = await startFakeHub([
    { id: 'people/lora-files', files: { 'ink.safetensors': lora } },
    { id: repo, dir, license: 'creativeml-openrail-m' },
    { id: found, dir, license: 'mit', tags: ['onnx', 'text-to-image'] },
    {
      id: 'people/searchable-checkpoint',
      files: { 'model.safetensors': Buffer.alloc(4096, 1) },
      tags: ['onnx'],
    },
  ]);
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

test('search the Hub, see the plan, download; an update badge when its main moves, and Update switches to it', async ({
  page,
  studio,
  consoleErrors,
}) => {
  await openStudio(page, studio);
  await view(page, 'Models');
  await page.getByTestId('hub-search').fill('searchable');
  const results = page.getByTestId('hub-results');
  const hit = results.getByRole('listitem').filter({ hasText: found });
  await expect(hit).toContainText('10 downloads · 1 likes · updated 2026-01-01');
  await expect(hit).toContainText('ONNX, loads as it is');
  const other = results.getByRole('listitem').filter({ hasText: 'people/searchable-checkpoint' });
  await expect(other).toContainText('single checkpoint files');
  await expect(other.getByRole('button', { name: /model\.safetensors/ })).toBeVisible();
  // The search was debounced: one request for the whole word, with the onnx tag, by downloads.
  const searches = hub.requests.filter((r) => r.url.startsWith('/api/models?'));
  expect(searches).toHaveLength(1);
  expect(searches[0].url).toContain('search=searchable');
  expect(searches[0].url).toContain('filter=onnx');

  await hit.getByRole('button', { name: `Choose ${found}` }).click();
  const plan = page.getByTestId('download-plan');
  const sha1 = hub.repos.get(found)!.sha;
  await expect(plan).toContainText(`@${sha1.slice(0, 10)}`);
  await expect(plan).toContainText(/\d+ files, \d+ KB · licence: mit/);
  await plan.getByRole('button', { name: `Download ${found}` }).click();
  const item = page.getByTestId('downloads').getByRole('listitem').filter({ hasText: found });
  await expect(item.getByTestId('download-status')).toHaveText('Downloaded and verified', {
    timeout: 60_000,
  });
  const row = page.getByTestId('models-table').getByRole('row', { name: /searchable-sd-onnx/ });
  await expect(row).toContainText('Ready');
  await expect(row.getByTestId('model-update')).toHaveCount(0);

  // Main moves; asked now (not waiting a day), the model has an update.
  const sha2 = 'e'.repeat(40);
  hub.commit(found, { 'NOTES.txt': Buffer.from('a newer commit\n') }, sha2);
  await page.getByRole('button', { name: 'Check for updates' }).click();
  await expect(row.getByTestId('model-update')).toContainText('Update available');
  await page.screenshot({ path: screenshotPath('model-update'), fullPage: true });
  const before = (
    await callApi<{ id: string; name: string; path: string }[]>(studio, 'listModels')
  ).find((m) => m.name.includes('searchable-sd-onnx'))!;
  await row.getByRole('button', { name: /^Update / }).click();
  await expect(row.getByTestId('model-update')).toHaveCount(0, { timeout: 60_000 });
  const after = (
    await callApi<{ id: string; path: string; status: string }[]>(studio, 'listModels')
  ).find((m) => m.id === before.id)!;
  expect(after.status).toBe('ok');
  expect(after.path).not.toBe(before.path);
  await expect(row.getByTestId('model-source')).toHaveText(`Downloaded from ${found}@${sha2}`);

  // Remove it to the trash, and undo.
  await row.getByRole('button', { name: /^Remove / }).click();
  await expect(row).toHaveCount(0);
  await page.getByRole('button', { name: 'Undo' }).click();
  await expect(
    page.getByTestId('models-table').getByRole('row', { name: /searchable-sd-onnx/ }),
  ).toContainText('Ready');
  expect(consoleErrors).toEqual([]);
});

test('a LoRA downloaded by URL shows in the open LoRA picker without Refresh', async ({
  page,
  studio,
  consoleErrors,
}) => {
  await openStudio(page, studio);
  await page.getByRole('button', { name: /LoRA & embeddings/ }).click();
  await expect(page.getByText(/^No LoRA files in /)).toBeVisible();
  // Started over the API (the Models view's form is the journeys above): what matters is that
  // the picker, already open with its listing, learns of the file.
  await callApi(studio, 'startDownload', {
    reference: `${hub.url}/people/lora-files/resolve/main/ink.safetensors`,
  });
  const cards = page.getByTestId('network-card');
  await expect(cards).toHaveCount(1, { timeout: 30_000 });
  await expect(cards.nth(0)).toHaveAttribute('data-name', 'ink');
  expect(fs.existsSync(path.join(studio.dataDir, 'models', 'Lora', 'ink.safetensors'))).toBe(true);
  expect(consoleErrors).toEqual([]);
});

test('the Hugging Face token in Settings: set for the session headless, never shown again, cleared', async ({
  page,
  studio,
}) => {
  await openStudio(page, studio);
  await view(page, 'Settings');
  const status = page.getByTestId('settings-hub-token-status');
  await expect(status).toHaveText(
    'No token is set: gated and private models cannot be downloaded. The token is kept only until the server stops; set HF_TOKEN in its environment to keep one.',
  );
  const field = page.getByTestId('settings-hub-token');
  await field.fill('hf_e2e_secret');
  await page.getByRole('button', { name: 'Save token' }).click();
  await expect(status).toHaveText(/^A token is set for this session\./);
  await expect(field).toHaveValue('');
  const reported = await callApi<Record<string, unknown>>(studio, 'getHubToken');
  expect(reported.source).toBe('memory');
  expect(JSON.stringify(reported)).not.toContain('hf_e2e_secret');
  await page.getByRole('button', { name: 'Clear token' }).click();
  await expect(status).toHaveText(/^No token is set/);
});

test.describe("a token from huggingface_hub's login", () => {
  const tokenDir = fs.mkdtempSync(path.join(os.tmpdir(), 'e2e-hf-token-'));
  const tokenFile = path.join(tokenDir, 'token');
  // The server is started for each test with this process's environment.
  test.beforeAll(() => {
    fs.writeFileSync(tokenFile, 'hf_from_login\n');
    process.env.HF_TOKEN_PATH = tokenFile;
  });
  test.afterAll(() => {
    delete process.env.HF_TOKEN_PATH;
    fs.rmSync(tokenDir, { recursive: true, force: true });
  });

  test('Settings says it comes from the login; a saved token takes its place until cleared', async ({
    page,
    studio,
  }) => {
    await openStudio(page, studio);
    await view(page, 'Settings');
    const status = page.getByTestId('settings-hub-token-status');
    await expect(status).toHaveText(
      `A token is set, from huggingface_hub's login. The token comes from huggingface_hub's token file ${tokenFile} (hf auth login); a token saved here takes its place.`,
    );
    // The studio never writes that file, so there is nothing to clear.
    await expect(page.getByRole('button', { name: 'Clear token' })).toHaveCount(0);
    await page.getByTestId('settings-hub-token').fill('hf_e2e_other');
    await page.getByRole('button', { name: 'Save token' }).click();
    await expect(status).toHaveText(/^A token is set for this session\./);
    await page.getByRole('button', { name: 'Clear token' }).click();
    await expect(status).toHaveText(/^A token is set, from huggingface_hub's login\./);
    expect(fs.readFileSync(tokenFile, 'utf8')).toBe('hf_from_login\n');
  });
});
