import { fixtureModel } from '../fixtures/models';
import { expect, test } from './fixtures';
import { openStudio, view } from './helpers';

// Models in the desktop app: the OS folder picker and dropped folders, through the page's side
// of the preload's DesktopBridge (window.studioDesktop). Electron itself cannot run here; the
// bridge is given the answers the OS would give (the folder a person picks or drops), and the
// rest is the real studio and host. tests/electron/desktop.spec.ts drives the real preload.

test('in the browser: the path field, and a dropped folder explains what to do', async ({
  page,
  studio,
}) => {
  await openStudio(page, studio);
  await view(page, 'Models');
  await expect(page.getByRole('button', { name: 'Choose folder…' })).toHaveCount(0);
  await expect(page.getByText('In the desktop app you can also choose the folder')).toBeVisible();
  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File(['{}'], 'model_index.json'));
    return dt;
  });
  await page.getByTestId('model-drop').dispatchEvent('drop', { dataTransfer });
  await expect(page.getByRole('alert')).toHaveText(
    'A browser does not tell the studio where a dropped folder is: type or paste its full path.',
  );
});

test('in the desktop app: Choose folder… and a dropped folder add the model', async ({
  page,
  studio,
}) => {
  const dir = await fixtureModel('e2e-known-answer', { unet: 'known-answer', knownLatents: 8 });
  const second = await fixtureModel('e2e-slow', { unet: 'tiny' });
  await page.addInitScript(
    ({ picked, dropped }) => {
      (window as unknown as { studioDesktop: unknown }).studioDesktop = {
        pickModelFolder: async () => picked,
        pathForFile: (file: File) => (file.name === 'e2e-slow' ? dropped : ''),
      };
    },
    { picked: dir, dropped: second },
  );
  await openStudio(page, studio);
  await view(page, 'Models');
  await page.getByRole('button', { name: 'Choose folder…' }).click();
  const table = page.getByTestId('models-table');
  await expect(table.getByRole('row', { name: /e2e-known-answer/ })).toBeVisible();

  const dataTransfer = await page.evaluateHandle(() => {
    const dt = new DataTransfer();
    dt.items.add(new File([], 'e2e-slow'));
    return dt;
  });
  await page.getByTestId('model-drop').dispatchEvent('drop', { dataTransfer });
  await expect(table.getByRole('row', { name: /e2e-slow/ })).toBeVisible();
});
