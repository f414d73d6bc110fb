import { addFixtureModel, addSlowModel, callApi, expect, test } from './fixtures';
import { doneJobs, fillForm, openStudio, view } from './helpers';

// Errors in one place and in a person's words, limits shown before Generate, notices that go
// away; and a pause that says what it does.

test('a too-long prompt is shown before Generate, and Generate says why it waits', async ({
  page,
  studio,
}) => {
  await addFixtureModel(studio);
  await openStudio(page, studio);
  await fillForm(page, { prompt: 'a cat', seed: 1 });
  await expect(page.getByTestId('prompt-tokens')).toContainText('/75');
  const long = 'a very long prompt, '.repeat(1005);
  await page.getByLabel('Prompt', { exact: true }).fill(long);
  // The counter becomes a character count against the limit instead of vanishing.
  await expect(page.getByTestId('prompt-limit')).toHaveText('20,100 / 20,000 characters');
  const blocker = page.getByTestId('generate-blocker');
  await expect(blocker).toHaveText('The prompt is 20,100 characters long; shorten it to 20,000.');
  await page.getByLabel('Prompt', { exact: true }).press('Control+Enter');
  await page.getByRole('button', { name: 'Generate', exact: true }).last().click();
  await expect(blocker).toHaveClass(/nudged/);
  // Nothing queued, no notice on top of the studio, and the prompt is still there.
  await expect(page.getByTestId('notice')).toHaveCount(0);
  await expect(page.locator('[data-testid="job"]')).toHaveCount(0);
  await expect(page.getByLabel('Prompt', { exact: true })).toHaveValue(long);

  await page.getByLabel('Prompt', { exact: true }).fill('a cat');
  await expect(blocker).toHaveCount(0);
  await expect(page.getByTestId('prompt-tokens')).toContainText('/75');
});

test('model errors say their lead-in once; notices never pile up and go away by themselves', async ({
  page,
  studio,
}) => {
  await openStudio(page, studio);
  await view(page, 'Models');
  const pathField = page.getByLabel('Add a model folder (diffusers ONNX or Optimum layout)');
  for (const dir of ['/nonexistent/a', '/nonexistent/b', '/nonexistent/c', '/nonexistent/d']) {
    await pathField.fill(dir);
    await page.getByRole('button', { name: 'Add model' }).click();
    await expect(page.getByTestId('notice').filter({ hasText: dir })).toBeVisible();
  }
  const notices = page.getByTestId('notice');
  await expect(notices).toHaveCount(3);
  const texts = await notices.allTextContents();
  for (const text of texts) {
    expect(text).toMatch(/^Could not add the model: /);
    expect(text).not.toMatch(/could not be used/i);
  }
  // The path field keeps what was typed, to fix it.
  await expect(pathField).toHaveValue('/nonexistent/d');
  await expect(notices).toHaveCount(0, { timeout: 20_000 });
});

test('pause holds the waiting jobs and says the running one finishes', async ({ page, studio }) => {
  const model = await addSlowModel(studio);
  await openStudio(page, studio);
  const settings = (prompt: string, steps = 60, size = 128) => ({
    model: model.id,
    prompt,
    seed: 1,
    steps,
    width: size,
    height: size,
  });
  // Long enough to be still running when Pause is clicked even on a quiet, fast machine (400
  // steps at 128x128 had finished first on CI): the most steps, 4x the pixels. It is cancelled,
  // not waited for.
  const first = await callApi<{ jobs: { id: string }[] }>(studio, 'enqueue', {
    settings: settings('first', 500, 256),
  });
  const queue = page.getByRole('complementary', { name: 'Queue' });
  await expect(queue.locator('[data-testid="job"][data-state="running"]')).toHaveCount(1);
  await expect(queue.getByRole('button', { name: 'Pause' })).toHaveAttribute(
    'title',
    'Hold the waiting jobs; a running job finishes first',
  );
  await queue.getByRole('button', { name: 'Pause' }).click();
  await expect(page.getByTestId('queue-paused')).toHaveText(
    'Paused: the running job finishes, the waiting ones wait.',
  );
  // Queued while paused (and while the first runs): it waits.
  await callApi(studio, 'enqueue', { settings: settings('second') });
  // Once the running job has ended (cancelled here), the pause holds the waiting one.
  await callApi(studio, 'cancelJob', { id: first.jobs[0]!.id });
  await expect(queue.locator('[data-testid="job"][data-state="cancelled"]')).toHaveCount(1, {
    timeout: 90_000,
  });
  await expect(page.getByTestId('queue-paused')).toHaveText(
    'Paused: waiting jobs start when you resume.',
  );
  await expect(queue.locator('[data-testid="job"][data-state="queued"]')).toHaveCount(1);
  await queue.getByRole('button', { name: 'Resume' }).click();
  await expect(doneJobs(page)).toHaveCount(1, { timeout: 90_000 });
  await expect(page.getByTestId('queue-paused')).toHaveCount(0);
});
