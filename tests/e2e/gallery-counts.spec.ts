import path from 'node:path';
import Database from 'better-sqlite3';
import { expect, test } from './fixtures';
import { openStudio, view } from './helpers';

// The gallery's count says what the host knows: an exact total ("620 images"), an estimate for a
// search with more matches than its first page ("about 600 images"), exact again for one tag.

/**
 * `harbours` images of "a harbour at dawn" (every other one tagged "boats") and, spread among
 * them, `meadows` of "a quiet meadow": rows written straight into the served library (the
 * triggers index them as a save would; the gallery reads rows, not files).
 */
function fillRows(dataDir: string, harbours: number, meadows: number): void {
  const db = new Database(path.join(dataDir, 'library.sqlite'));
  db.pragma('busy_timeout = 5000');
  const prompt = db.prepare('INSERT INTO prompts (text, negative) VALUES (?, ?) RETURNING id');
  const generation = db.prepare(
    `INSERT INTO generations (id, settings, prompt_id, model_name, seed, sampler, mode, steps,
       guidance, width, height, variant_key, created_at)
     VALUES (?, '{}', ?, 'm', ?, 'euler', 'txt2img', 20, 7, 64, 64, ?, ?)`,
  );
  const image = db.prepare(
    `INSERT INTO images (id, generation_id, file, sha256, width, height, bytes, seed, prompt_id,
       sampler, mode, variant_key, created_at)
     VALUES (?, ?, ?, '', 64, 64, 1, ?, ?, 'euler', 'txt2img', ?, ?)`,
  );
  const tag = db.prepare("INSERT INTO tags (name) VALUES ('boats') RETURNING id");
  const link = db.prepare('INSERT INTO image_tags (image_id, tag_id) VALUES (?, ?)');
  db.transaction(() => {
    const harbour = (prompt.get('a harbour at dawn', '') as { id: number }).id;
    const meadow = (prompt.get('a quiet meadow', '') as { id: number }).id;
    const boats = (tag.get() as { id: number }).id;
    const every = Math.floor(harbours / meadows);
    let h = 0;
    for (let i = 0; i < harbours + meadows; i++) {
      const isMeadow = i % (every + 1) === every && i < (every + 1) * meadows;
      const id = `e2e${String(i).padStart(6, '0')}`;
      const created = 1_700_000_000_000 + i * 60_000;
      generation.run(`g${id}`, isMeadow ? meadow : harbour, i, `k${i}`, created);
      image.run(id, `g${id}`, `images/${id}.png`, i, isMeadow ? meadow : harbour, `k${i}`, created);
      if (!isMeadow && h++ % 2 === 0) link.run(id, boats);
    }
  })();
  db.close();
}

test('the gallery count is exact, "about" for an estimate, and exact for one tag', async ({
  page,
  studio,
}) => {
  fillRows(studio.dataDir, 600, 20);
  await openStudio(page, studio);
  await view(page, 'Gallery');
  const count = page.getByTestId('gallery-count');
  await expect(count).toHaveText('620 images');

  // More harbours than the first page holds: an estimate, said as one.
  await page.getByLabel('Search the gallery').fill('harbour');
  await expect(count).toHaveText(/^about [\d,]+ images$/);
  const about = Number((await count.textContent())!.replace(/\D/g, ''));
  expect(Math.abs(about - 600)).toBeLessThan(60);

  // Fewer than a page: counted.
  await page.getByLabel('Search the gallery').fill('meadow');
  await expect(count).toHaveText('20 images');

  // One tag alone: its kept count, exact however many.
  await page.getByLabel('Search the gallery').fill('');
  await page.getByRole('button', { name: /^Filters/ }).click();
  await page.getByLabel('Tag', { exact: true }).fill('boats');
  await expect(count).toHaveText('300 images');
});
