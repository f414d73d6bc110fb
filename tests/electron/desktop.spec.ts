import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  type ElectronApplication,
  type Page,
  _electron as electron,
  expect,
  test,
} from '@playwright/test';
import { fixtureModel } from '../fixtures/models';

const repoRoot = path.resolve(import.meta.dirname, '..', '..');
let app: ElectronApplication;
let page: Page;
let dataDir: string;

test.beforeAll(async () => {
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-electron-'));
  app = await electron.launch({
    args: [path.join(repoRoot, 'out/main/electron.mjs'), '--no-sandbox'],
    env: { ...process.env, LATENT_STUDIO_DATA_DIR: dataDir },
  });
  page = await app.firstWindow();
});
test.afterAll(async () => {
  await app?.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

test('the studio loads from studio://app and talks to main over IPC', async () => {
  expect(page.url()).toBe('studio://app/index.html');
  await expect(page.getByTestId('connection')).toHaveText('Connected');
  await expect(page.getByText('Desktop ·')).toBeVisible();
  await page.screenshot({
    path: path.join(repoRoot, 'test-results/screenshots/desktop-shell.png'),
  });
});

test('the page has no Node, no ipcRenderer, only window.studio with call/subscribe', async () => {
  const probe = await page.evaluate(() => ({
    require: typeof (globalThis as { require?: unknown }).require,
    process: typeof (globalThis as { process?: unknown }).process,
    studio: Object.keys((window as unknown as { studio: object }).studio).sort(),
    desktop: Object.keys((window as unknown as { studioDesktop: object }).studioDesktop).sort(),
  }));
  expect(probe).toEqual({
    require: 'undefined',
    process: 'undefined',
    studio: ['call', 'subscribe'],
    desktop: ['pathForFile', 'pickCheckpointFile', 'pickModelFolder'],
  });
});

test('the renderer runs sandboxed with context isolation', async () => {
  const prefs = await app.evaluate(({ BrowserWindow }) => {
    const w = BrowserWindow.getAllWindows()[0];
    // Present since Electron 18 but missing from electron.d.ts.
    const contents = w.webContents as unknown as {
      getLastWebPreferences(): Record<string, unknown> | null;
    };
    const p = contents.getLastWebPreferences();
    return {
      contextIsolation: p?.contextIsolation,
      sandbox: p?.sandbox,
      nodeIntegration: p?.nodeIntegration,
    };
  });
  expect(prefs).toEqual({ contextIsolation: true, sandbox: true, nodeIntegration: false });
});

test('invalid payloads are refused with a clear error; navigation and popups are blocked', async () => {
  const result = await page.evaluate(() =>
    (
      window as unknown as { studio: { call(m: string, i: unknown): Promise<unknown> } }
    ).studio.call('updateSettings', { threads: 'x' }),
  );
  expect(result).toMatchObject({ ok: false, error: { code: 'invalid-argument' } });
  await page.evaluate(() => window.open('https://example.com'));
  expect(app.windows()).toHaveLength(1);
  await page.evaluate(() => (window.location.href = 'https://example.com'));
  await page.waitForTimeout(300);
  expect(page.url()).toBe('studio://app/index.html');
});

test('a CSP is applied to app content', async () => {
  const blocked = await page.evaluate(() => {
    try {
      new Function('return 1')();
      return false;
    } catch {
      return true;
    }
  });
  expect(blocked).toBe(true);
});

test('Models: Choose folder… opens the native picker and adds the folder chosen', async () => {
  const dir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  // The OS dialog cannot be clicked by a test: main's dialog answers as a person picking `dir`.
  await app.evaluate(({ dialog }, picked) => {
    dialog.showOpenDialog = (async () => ({ canceled: false, filePaths: [picked] })) as never;
  }, dir);
  await page
    .getByRole('navigation', { name: 'Views' })
    .getByRole('button', { name: 'Models', exact: true })
    .click();
  await page.getByRole('button', { name: 'Choose folder…' }).click();
  await expect(
    page.getByTestId('models-table').getByRole('row', { name: /e2e-known-answer/ }),
  ).toBeVisible();
});

test('Import checkpoint: Choose file… fills the form with the one checkpoint chosen', async () => {
  const file = path.join(dataDir, 'picked.safetensors');
  const answerWith = (filePaths: string[]) =>
    app.evaluate(({ dialog }, paths) => {
      dialog.showOpenDialog = (async () => ({ canceled: false, filePaths: paths })) as never;
    }, filePaths);
  const pick = (kind: unknown) =>
    page.evaluate(
      (k) =>
        (
          window as unknown as { studioDesktop: { pickCheckpointFile(k: unknown): unknown } }
        ).studioDesktop.pickCheckpointFile(k),
      kind,
    );
  await answerWith([file]);
  await page
    .getByRole('navigation', { name: 'Views' })
    .getByRole('button', { name: 'Models', exact: true })
    .click();
  const form = page.getByRole('form', { name: 'Import checkpoint' });
  await form.getByRole('button', { name: 'Choose file…' }).first().click();
  await expect(form.getByRole('textbox', { name: 'Checkpoint file' })).toHaveValue(file);
  // Main hands back only one absolute checkpoint path, whatever the dialog returned.
  await answerWith(['/etc/passwd']);
  expect(await pick('checkpoint')).toBeNull();
  await answerWith([file, file]);
  expect(await pick('vae')).toBeNull();
  await answerWith([file]);
  expect(await pick('vae')).toBe(file);
});

test('the window does not navigate to a file (as a drop outside the studio’s handlers would)', async () => {
  await page.evaluate(() => (window.location.href = 'file:///etc/passwd'));
  await page.waitForTimeout(300);
  expect(page.url()).toMatch(/^studio:\/\/app\/index\.html/);
});
