import AxeBuilder from '@axe-core/playwright';
import type { Page } from '@playwright/test';
import { callApi, expect, test } from './fixtures';
import { startWithImage, view } from './helpers';

// Every view of the studio, light and dark, checked with axe-core against WCAG 2.1 A and AA:
// names for every control, contrast, landmarks, ARIA used as specified. Serious and critical
// findings fail; the rest are printed.

/** Serious and critical findings at this point, one line each (details of the first nodes). */
async function audit(page: Page, where: string): Promise<string[]> {
  const result = await new AxeBuilder({ page })
    .withTags(['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'])
    .analyze();
  const lines = result.violations.map(
    (v) =>
      `${where}: ${v.impact} ${v.id}: ${v.help} (${v.nodes.length}): ${v.nodes
        .slice(0, 3)
        .map((n) => n.target.join(' '))
        .join(' | ')}`,
  );
  const severe = (i: number) => ['serious', 'critical'].includes(result.violations[i].impact ?? '');
  const minor = lines.filter((_, i) => !severe(i));
  if (minor.length) console.log(minor.join('\n'));
  return lines.filter((_, i) => severe(i));
}

for (const theme of ['light', 'dark'] as const) {
  test(`every view passes axe (WCAG 2.1 AA), ${theme} theme`, async ({ page, studio }) => {
    await callApi(studio, 'updateSettings', { theme });
    await startWithImage(page, studio, { prompt: 'a quiet harbour', seed: 3 });
    const found = await audit(page, `Generate (text), ${theme}`);
    for (const mode of ['Inpaint', 'Outpaint', 'Upscale']) {
      await page.getByRole('radio', { name: mode }).click();
      found.push(...(await audit(page, `Generate (${mode}), ${theme}`)));
    }
    await view(page, 'Gallery');
    await expect(page.getByTestId('gallery-count')).toContainText('1 image');
    found.push(...(await audit(page, `Gallery, ${theme}`)));
    await page.getByTestId('gallery-item').first().click();
    found.push(...(await audit(page, `Gallery detail, ${theme}`)));
    await view(page, 'Models');
    found.push(...(await audit(page, `Models, ${theme}`)));
    await view(page, 'Settings');
    found.push(...(await audit(page, `Settings, ${theme}`)));
    expect(found, 'serious or critical accessibility problems').toEqual([]);
  });
}
