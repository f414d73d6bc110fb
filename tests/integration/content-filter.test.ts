// The content filter through the real host (issue 18 item 2): with Settings' filter on and the
// small-config safety checker fixture (tools/convert-reference/make_safety.py) as its model,
// each generated image is checked after decoding and its PNG records the verdict and scores;
// off (the default) records nothing; on without its file, enqueue refuses with a sentence.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { readGenerationMetadata } from '../../src/main/library/png-metadata';
import { GenerationSettings, type GenerationInput, type QueueState } from '../../src/shared';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';
import { bundleEntry } from './bundle';

const CHECKER = path.join(__dirname, '../fixtures/reference/safety-checker.safetensors');
let workerPath: string;
let ka: FixtureInfo;
let tmp: string;

beforeAll(async () => {
  workerPath = await bundleEntry('src/engine/worker.ts', 'content-filter-engine-worker');
  ka = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-filter-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function openHost(dataDir: string): Promise<{ host: StudioHost; model: string }> {
  const host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: '0.0.0-test',
    workerPath,
    log: () => undefined,
  });
  await host.library.ready;
  host.service.updateSettings({ threads: 1, executionProvider: 'cpu' });
  const model = (await host.service.addModel({ path: ka.dir })).id;
  return { host, model };
}

const input = (model: string): { settings: GenerationSettings } => ({
  settings: GenerationSettings.parse({
    prompt: 'a red house',
    seed: 3,
    steps: 4,
    width: 64,
    height: 64,
    batchSize: 2,
    model,
  } as GenerationInput),
});

async function generate(host: StudioHost, model: string) {
  const before = new Set(host.jobs.state().jobs.map((j) => j.id));
  const q: QueueState = await host.service.enqueue(input(model));
  const id = q.jobs.find((j) => !before.has(j.id))!.id;
  const end = Date.now() + 120_000;
  for (;;) {
    const job = host.jobs.state().jobs.find((j) => j.id === id)!;
    if (['done', 'failed', 'cancelled'].includes(job.state)) {
      expect(job.error).toBeNull();
      const gen = await host.service.getGeneration({ id: job.generationId! });
      return gen.images.map(
        (i) =>
          readGenerationMetadata(fs.readFileSync(host.library.resolveImage(i.imageId).file)).raw,
      );
    }
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('content filter through the host', () => {
  it('is off by default: nothing is checked or recorded', async () => {
    const { host, model } = await openHost(path.join(tmp, 'off'));
    try {
      expect((await host.service.getSettings(undefined)).contentFilter).toBe(false);
      for (const raw of await generate(host, model)) expect(raw['Content filter']).toBeUndefined();
    } finally {
      await host.close();
    }
  });

  it('on: each image carries its verdict and the 3 + 17 scores; the checker is converted once', async () => {
    const dataDir = path.join(tmp, 'on');
    const { host, model } = await openHost(dataDir);
    try {
      host.service.updateSettings({ contentFilter: true, contentFilterModel: CHECKER });
      const raws = await generate(host, model);
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

  it('on without its model file: enqueue refuses with a sentence and makes nothing', async () => {
    const dataDir = path.join(tmp, 'missing');
    const { host, model } = await openHost(dataDir);
    try {
      host.service.updateSettings({ contentFilter: true });
      await expect(host.service.enqueue(input(model))).rejects.toThrow(
        /^The content filter is on but its model .*model\.safetensors is missing; put Stable Diffusion's safety checker/,
      );
      expect(host.jobs.state().jobs).toHaveLength(0);
    } finally {
      await host.close();
    }
  });
});
