import fs from 'node:fs';
import { expect, screenshotPath, test } from './fixtures';

const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

test('the served studio talks to main: live version and engine status', async ({
  page,
  studio,
  consoleErrors,
}) => {
  await page.goto(studio.studioUrl);
  await expect(page.getByTestId('connection')).toHaveText('Connected');
  await expect(page.getByTestId('app-version')).toHaveText(`v${pkg.version}`);
  // The engine card lives in the Models view.
  await page
    .getByRole('navigation', { name: 'Views' })
    .getByRole('button', { name: 'Models' })
    .click();
  await expect(page.getByTestId('engine-state')).toHaveText('idle');
  await expect(page.getByTestId('engine-ort')).toHaveText(/^\d+\.\d+\.\d+$/);
  await expect(page.getByTestId('engine-providers')).toContainText('cpu');
  // The token leaves the address bar once read.
  expect(new URL(page.url()).hash).toBe('');
  await page
    .getByRole('navigation', { name: 'Views' })
    .getByRole('button', { name: 'Generate' })
    .click();
  await page.screenshot({ path: screenshotPath('foundation-generate-light') });
  expect(consoleErrors).toEqual([]);
});

test('settings change in main and survive a reload', async ({ page, studio, consoleErrors }) => {
  await page.goto(studio.studioUrl);
  await page.getByRole('button', { name: 'Settings' }).click();
  await page.getByLabel('Theme').selectOption('dark');
  await expect(page.locator('html')).toHaveAttribute('data-theme', 'dark');
  await page.getByLabel('Write generation parameters into PNG files').uncheck();
  await page.reload();
  await page.getByRole('button', { name: 'Settings' }).click();
  await expect(page.locator('html')).toHaveAttribute('data-theme', 'dark');
  await expect(page.getByLabel('Write generation parameters into PNG files')).not.toBeChecked();
  const saved = JSON.parse(fs.readFileSync(`${studio.dataDir}/settings.json`, 'utf8'));
  expect(saved).toMatchObject({ theme: 'dark', embedMetadata: false });
  await page.screenshot({ path: screenshotPath('foundation-settings-dark') });
  expect(consoleErrors).toEqual([]);
});

test('without the token the page says how to get in, and the API refuses', async ({
  page,
  studio,
}) => {
  await page.goto(studio.url);
  await expect(page.getByRole('alert')).toContainText('npm run serve');
  const status = await page.evaluate(
    async () => (await fetch('/api/call/getAppInfo', { method: 'POST' })).status,
  );
  expect(status).toBe(401);
});
