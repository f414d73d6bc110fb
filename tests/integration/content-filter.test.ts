// The content filter through the real host (issue 18 item 2): with Settings' filter on and the
// small-config safety checker fixture (tools/convert-reference/make_safety.py) as its model,
// each generated image is checked after decoding by the engine worker (the host makes no ONNX
// session), and its PNG and the history record the verdict and scores; off (the default)
// records nothing; on without its file, enqueue refuses with a sentence.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import * as ort from 'onnxruntime-node';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { StudioHost } from '../../src/main/api';
import { readGenerationMetadata } from '../../src/main/library/png-metadata';
import { GalleryQuery, GenerationSettings, type GenerationInput } from '../../src/shared';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';
import { fixtureThresholds, writeCheckerWithThresholds } from '../fixtures/safety-checker';
import { openCpuHost, runJob } from './host-helpers';

const CHECKER = path.join(__dirname, '../fixtures/reference/safety-checker.safetensors');
afterEach(() => vi.restoreAllMocks());
let ka: FixtureInfo;
let tmp: string;

beforeAll(async () => {
  ka = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-filter-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function openHost(dataDir: string): Promise<{ host: StudioHost; model: string }> {
  const host = await openCpuHost(dataDir, 'content-filter-engine-worker');
  const model = (await host.service.addModel({ path: ka.dir })).id;
  return { host, model };
}

const input = (model: string): { settings: GenerationSettings } => ({
  settings: GenerationSettings.parse({
    prompt: 'a red house',
    seed: 3,
    // Previews come every 4 steps; the one at step 4 is sent while steps 5-8 run (the last
    // step's may still be encoding when the job moves on to saving).
    steps: 8,
    width: 64,
    height: 64,
    batchSize: 2,
    model,
  } as GenerationInput),
});

async function generate(host: StudioHost, model: string, steps?: number) {
  const { settings } = input(model);
  const job = await runJob(host, steps ? { ...settings, steps } : settings);
  expect(job.error).toBeNull();
  const gen = await host.service.getGeneration({ id: job.generationId! });
  return Object.assign(
    gen.images.map(
      (i) => readGenerationMetadata(fs.readFileSync(host.library.resolveImage(i.imageId).file)).raw,
    ),
    { gen },
  );
}

/** The live previews the host sends out (jobProgress events that carry one). */
function previewsOf(host: StudioHost): string[] {
  const seen: string[] = [];
  host.events.subscribe((event, payload) => {
    const preview =
      event === 'jobProgress' ? (payload as { preview: string | null }).preview : null;
    if (preview) seen.push(preview);
  });
  return seen;
}

describe('content filter through the host', () => {
  it('is off by default: nothing is checked or recorded', async () => {
    const { host, model } = await openHost(path.join(tmp, 'off'));
    const previews = previewsOf(host);
    try {
      expect((await host.service.getSettings(undefined)).contentFilter).toBe(false);
      // Enough steps that the first preview's PNG is encoded before the job saves: 8 steps of
      // this tiny UNet could end first on a quiet machine, and a preview is never sent after.
      const raws = await generate(host, model, 100);
      // Off, the live preview shows the picture forming.
      expect(previews.length).toBeGreaterThan(0);
      for (const raw of raws) expect(raw['Content filter']).toBeUndefined();
      expect(raws.gen.contentFilter).toEqual({});
      for (const item of raws.gen.images) expect(item.contentFilter).toBe('unchecked');
    } finally {
      await host.close();
    }
  });

  it('on: each image carries its verdict and the 3 + 17 scores; the checker is converted once', async () => {
    const dataDir = path.join(tmp, 'on');
    const { host, model } = await openHost(dataDir);
    const previews = previewsOf(host);
    try {
      host.service.updateSettings({ contentFilter: true, contentFilterModel: CHECKER });
      const raws = await generate(host, model);
      // On, no preview leaves the engine: it would show an image before it was checked.
      expect(previews).toEqual([]);
      expect(raws).toHaveLength(2);
      for (const raw of raws) {
        expect(raw['Content filter']).toMatch(/^(passed|flagged \(concepts [\d ]+\))$/);
        const scores = JSON.parse(raw['Content filter scores']) as {
          special: number[];
          concepts: number[];
        };
        expect(scores.special).toHaveLength(3);
        expect(scores.concepts).toHaveLength(17);
      }
      await generate(host, model);
      const slots = fs.readdirSync(path.join(dataDir, 'converted'));
      expect(slots.filter((s) => s.startsWith('safety-'))).toHaveLength(1);
    } finally {
      await host.close();
    }
  });

  it('records a flagged image flagged with its scores and a clean one clean; the host makes no ONNX session', async () => {
    const created = vi.spyOn(ort.InferenceSession, 'create');
    const ids = { flagged: '', clean: '' };
    let k = 0;
    const dataDir = path.join(tmp, 'thresholds');
    const { host, model } = await openHost(dataDir);
    try {
      // First with the fixture's thresholds: the scores give each image's cosines back.
      host.service.updateSettings({ contentFilter: true, contentFilterModel: CHECKER });
      const first = (await generate(host, model)).gen;
      const [a, b] = first.images.map((i) => first.contentFilter[i.imageId]);
      expect(a && b).toBeTruthy();
      const own = fixtureThresholds();
      const cosines = (v: typeof a) => {
        const adjustment = v.specialScores.some((s) => s > 0) ? 0.01 : 0;
        return v.conceptScores.map((s, k) => s + own.concepts[k] - adjustment);
      };
      const [ca, cb] = [cosines(a), cosines(b)];
      // The concept that tells the two images apart most; its threshold halfway between them.
      for (let j = 1; j < ca.length; j++)
        if (Math.abs(ca[j] - cb[j]) > Math.abs(ca[k] - cb[k])) k = j;
      expect(Math.abs(ca[k] - cb[k])).toBeGreaterThan(0.004);
      const concepts = own.concepts.map(() => 2);
      concepts[k] = (ca[k] + cb[k]) / 2;
      const tuned = writeCheckerWithThresholds(path.join(tmp, 'tuned-checker.safetensors'), {
        concepts,
        special: [2, 2, 2],
      });
      host.service.updateSettings({ contentFilterModel: tuned });
      const raws = await generate(host, model);
      const gen = raws.gen;
      const flaggedIndex = ca[k] > cb[k] ? 0 : 1;
      const flagged = gen.images[flaggedIndex];
      const clean = gen.images[1 - flaggedIndex];
      ids.flagged = flagged.imageId;
      ids.clean = clean.imageId;
      // The history: the gallery item's state, the detail's verdict and scores, the filter.
      expect(flagged.contentFilter).toBe('flagged');
      expect(clean.contentFilter).toBe('clean');
      expect(gen.contentFilter[flagged.imageId]).toMatchObject({ flagged: true, badConcepts: [k] });
      expect(gen.contentFilter[flagged.imageId].conceptScores[k]).toBeGreaterThan(0);
      expect(gen.contentFilter[clean.imageId]).toMatchObject({ flagged: false, badConcepts: [] });
      expect(gen.contentFilter[clean.imageId].conceptScores).toHaveLength(17);
      // The PNG says the same (A1111 text and our JSON).
      expect(raws[flaggedIndex]['Content filter']).toBe(`flagged (concepts ${k})`);
      expect(raws[1 - flaggedIndex]['Content filter']).toBe('passed');
      // The "flagged" filter: this one and those the fixture's own thresholds flagged, newest first.
      const expected = [...gen.images, ...first.images]
        .filter((i) => i.contentFilter === 'flagged')
        .map((i) => i.imageId);
      expect(expected).toContain(flagged.imageId);
      const page = await host.service.searchGallery(GalleryQuery.parse({ flagged: true }));
      expect(page.items.map((i) => i.imageId)).toEqual(expected);
      expect(page.total).toBe(expected.length);
      // Earlier images the filter passed are 'clean'; none was 'unchecked'.
      const all = await host.service.searchGallery(GalleryQuery.parse({}));
      expect(all.items.every((i) => i.contentFilter !== 'unchecked')).toBe(true);
      // Checked and converted off the host's thread: no ONNX session was made here.
      expect(created).not.toHaveBeenCalled();
    } finally {
      await host.close();
    }
    // A crash that lost the rows but kept the files: the reconciler rebuilds them from the PNGs,
    // and the flagged image is flagged (blurred) again, with its scores.
    const db = new Database(path.join(dataDir, 'library.sqlite'));
    db.prepare('DELETE FROM generations').run();
    db.close();
    const again = await openHost(dataDir);
    try {
      const items = (await again.host.service.searchGallery(GalleryQuery.parse({}))).items;
      const byId = new Map(items.map((i) => [i.imageId, i.contentFilter]));
      expect(byId.get(ids.flagged)).toBe('flagged');
      expect(byId.get(ids.clean)).toBe('clean');
      const detail = await again.host.service.getGeneration({ id: ids.flagged });
      expect(detail.contentFilter[ids.flagged]).toMatchObject({ flagged: true, badConcepts: [k] });
      expect(detail.contentFilter[ids.flagged].conceptScores).toHaveLength(17);
    } finally {
      await again.host.close();
    }
  });

  it('on without its model file: enqueue refuses with a sentence and makes nothing', async () => {
    const dataDir = path.join(tmp, 'missing');
    const { host, model } = await openHost(dataDir);
    try {
      host.service.updateSettings({ contentFilter: true });
      await expect(host.service.enqueue(input(model))).rejects.toThrow(
        /^The content filter is on but its model .*model\.safetensors is missing; download it or choose the safety checker's model\.safetensors in Settings/,
      );
      expect(host.jobs.state().jobs).toHaveLength(0);
    } finally {
      await host.close();
    }
  });
});
