// LoRA tags and embeddings through the real host (SQLite library, job queue, engine worker on a
// fixture model) and through the real CLI: the files are resolved from the folders of Settings,
// reach the engine's request, and are recorded in the history, the gallery filter and the PNG
// infotext as A1111 writes them; a missing LoRA fails the job with one sentence.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { EngineClient, type GenerateRequest } from '../../src/engine';
import { StudioHost } from '../../src/main/api';
import { migrate, migrations } from '../../src/main/library/migrations';
import {
  addPngTextChunks,
  parseA1111Parameters,
  readGenerationMetadata,
  readPngTextChunks,
} from '../../src/main/library/png-metadata';
import { openDatabase } from '../../src/main/library/db';
import {
  GalleryQuery,
  GenerationSettings,
  type GenerationInput,
  type QueueState,
  unmatchedNetworkNote,
} from '../../src/shared';
import { writeFixtureLora } from '../fixtures/lora-file';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';
import { bundleEntry } from './bundle';
import { until } from './library-helpers';

/** 3 vectors 32 wide: fits the fixture model's text encoder (tiny-ti.pt is an SD 1.x one, 768). */
const TI_PT = path.join(import.meta.dirname, '../fixtures/reference/embeddings/tiny-ti-32.pt');

let workerPath: string;
let cli: string;
let ka: FixtureInfo;
let tmp: string;

beforeAll(async () => {
  workerPath = await bundleEntry('src/engine/worker.ts', 'networks-engine-worker');
  cli = await bundleEntry('src/main/cli.ts', 'networks-cli');
  ka = await fixtureModelInfo('networks-ka', { unet: 'known-answer' });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-networks-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * A tiny kohya-style LoRA; the bytes differ by `seed`, so do the hashes. Its text-encoder pair
 * matches the fixture model, its UNet pair does not (the known-answer UNet has no weights), so
 * 2 of its 4 tensors match nothing; `matching: false` leaves only the UNet pair.
 */
/** The fixture LoRA, elements ((i mod 16) + seed) / 100; `matching: false` matches nothing. */
const writeLora = (file: string, seed: number, matching = true) =>
  writeFixtureLora(file, (i) => ((i % 16) + seed) / 100, { matching });

/** The first 12 hex digits of the sha256 of the bytes after a safetensors header. */
function addnetShort(file: string): string {
  const bytes = fs.readFileSync(file);
  const start = 8 + Number(bytes.readBigUInt64LE(0));
  return createHash('sha256').update(bytes.subarray(start)).digest('hex').slice(0, 12);
}

const wholeShort = (file: string) =>
  createHash('sha256').update(fs.readFileSync(file)).digest('hex').slice(0, 12);

const settings = (over: Partial<GenerationInput>) =>
  GenerationSettings.parse({
    prompt: 'a red house',
    seed: 1,
    sampler: 'euler',
    steps: 4,
    width: 64,
    height: 64,
    ...over,
  } as GenerationInput);

describe('LoRAs and embeddings in the studio host', () => {
  it('resolves tags from the folders, records them, filters by them, and fails on a missing one', async () => {
    const dataDir = path.join(tmp, 'host');
    const loraDir = path.join(tmp, 'host-loras');
    const embeddingsDir = path.join(tmp, 'host-embeddings');
    await writeLora(path.join(loraDir, 'film_grain.safetensors'), 1);
    await writeLora(path.join(loraDir, 'styles', 'ink.safetensors'), 2);
    fs.mkdirSync(embeddingsDir, { recursive: true });
    fs.copyFileSync(TI_PT, path.join(embeddingsDir, 'tiny-ti.pt'));

    // Record each request, then let the real engine worker run it.
    const requests: GenerateRequest[] = [];
    const realGenerate = EngineClient.prototype.generate;
    const recorder = vi.spyOn(EngineClient.prototype, 'generate').mockImplementation(function (
      this: EngineClient,
      request,
      run,
    ) {
      requests.push(structuredClone(request));
      return realGenerate.call(this, request, run);
    });

    const host = new StudioHost({
      shell: 'headless',
      dataDir,
      version: '0.0.0-test',
      workerPath,
      log: () => {},
    });
    try {
      await host.library.ready;
      host.service.updateSettings({ threads: 1, executionProvider: 'cpu', loraDir, embeddingsDir });
      const model = (await host.service.addModel({ path: ka.dir })).id;

      const listed = await host.service.listNetworks({ refresh: false });
      expect(listed.loraDir).toBe(loraDir);
      expect(listed.loras.map((l) => l.relativeName)).toEqual(['film_grain', 'styles/ink']);
      expect(listed.embeddings.map((e) => [e.name, e.vectors])).toEqual([['tiny-ti', 3]]);

      const run = async (over: Partial<GenerationInput>) => {
        const before = new Set(host.jobs.state().jobs.map((j) => j.id));
        const q = await host.service.enqueue({ settings: settings({ model, ...over }) });
        const id = q.jobs.find((j) => !before.has(j.id))!.id;
        return until(`job ${id}`, () => {
          const j = (host.jobs.state() as QueueState).jobs.find((x) => x.id === id)!;
          return ['done', 'failed', 'cancelled'].includes(j.state) && j;
        });
      };

      const job = await run({
        prompt: 'a red house <lora:film_grain:0.8>, tiny-ti',
        negativePrompt: 'blurry <lora:ink:0.5:1.25>',
      });
      expect(job.error).toBeNull();
      expect(job.state).toBe('done');
      // The request the engine got carries the files, weights and embeddings.
      expect(requests).toHaveLength(1);
      expect(requests[0].loras).toEqual([
        {
          path: path.join(loraDir, 'film_grain.safetensors'),
          name: 'film_grain',
          teWeight: 0.8,
          unetWeight: 0.8,
        },
        {
          path: path.join(loraDir, 'styles', 'ink.safetensors'),
          name: 'ink',
          teWeight: 0.5,
          unetWeight: 1.25,
        },
      ]);
      expect(requests[0].embeddings).toEqual([
        { token: 'tiny-ti', path: path.join(embeddingsDir, 'tiny-ti.pt') },
      ]);
      // The prompt keeps its tags (the engine strips them), so reusing it restores them.
      expect(requests[0].settings.prompt).toBe('a red house <lora:film_grain:0.8>, tiny-ti');

      const grain = addnetShort(path.join(loraDir, 'film_grain.safetensors'));
      const ink = addnetShort(path.join(loraDir, 'styles', 'ink.safetensors'));
      const ti = wholeShort(TI_PT);
      const gen = await host.service.getGeneration({ id: job.generationId! });
      // With what each LoRA matched, as the engine reported it.
      expect(gen.networks).toEqual([
        { kind: 'lora', name: 'film_grain', hash: grain, tensors: 4, unmatchedTensors: 2 },
        { kind: 'lora', name: 'ink', hash: ink, tensors: 4, unmatchedTensors: 2 },
        { kind: 'embedding', name: 'tiny-ti', hash: ti },
      ]);
      expect(unmatchedNetworkNote(gen.networks[0]!)).toBe(
        '2 of 4 tensors of LoRA film_grain matched nothing in this model — it may be for another model.',
      );
      expect(unmatchedNetworkNote(gen.networks[2]!)).toBeNull();
      const expectedLine = `Lora hashes: "film_grain: ${grain}, ink: ${ink}", TI hashes: "tiny-ti: ${ti}"`;
      expect(gen.parametersText).toContain(expectedLine);
      const file = host.library.resolveImage(gen.images[0].imageId).file;
      const png = fs.readFileSync(file);
      const parameters = readPngTextChunks(png).find((c) => c.keyword === 'parameters')!.text;
      expect(parameters).toContain(expectedLine);
      expect(parseA1111Parameters(parameters).params['Lora hashes']).toBe(
        `film_grain: ${grain}, ink: ${ink}`,
      );
      expect(readGenerationMetadata(png).settings.prompt).toBe(
        'a red house <lora:film_grain:0.8>, tiny-ti',
      );
      // Listing shows the hashes once the files were used.
      const relisted = await host.service.listNetworks({ refresh: true });
      expect(relisted.loras.map((l) => l.hash)).toEqual([grain, ink]);

      const plain = await run({ prompt: 'a blue house' });
      expect(plain.state).toBe('done');
      expect(requests[1].loras).toBeUndefined();
      expect(requests[1].embeddings).toBeUndefined();

      // The gallery's LoRA filter (any case) finds the first generation only.
      const byLora = await host.service.searchGallery(GalleryQuery.parse({ lora: 'FILM_GRAIN' }));
      expect(byLora.items.map((i) => i.generationId)).toEqual([job.generationId]);
      expect(byLora.total).toBe(1);
      expect((await host.service.searchGallery(GalleryQuery.parse({ lora: 'ink' }))).total).toBe(1);
      expect(
        (await host.service.searchGallery(GalleryQuery.parse({ lora: 'nothing' }))).total,
      ).toBe(0);

      // A missing LoRA fails the job before the engine is asked, naming it and the folder.
      const failed = await run({ prompt: 'x <lora:not_here:1>' });
      expect(failed.state).toBe('failed');
      expect(failed.error?.message).toBe(
        `The LoRA "not_here" is not in the LoRA folder ${loraDir}: add the file there (or fix the tag's name) and try again.`,
      );
      expect(requests).toHaveLength(2);

      // A file added after the last listing is found by the next job.
      await writeLora(path.join(loraDir, 'late.safetensors'), 3);
      expect((await run({ prompt: 'x <lora:late:0.3>' })).state).toBe('done');
      expect(requests[2].loras?.map((l) => l.name)).toEqual(['late']);

      // A LoRA of which nothing matches would change nothing: the job fails before sampling.
      await writeLora(path.join(loraDir, 'elsewhere.safetensors'), 4, false);
      const useless = await run({ prompt: 'x <lora:elsewhere:1>' });
      expect(useless.state).toBe('failed');
      expect(useless.error?.message).toMatch(
        /None of the 2 tensors of the LoRA "elsewhere" matched this model, so it would change nothing/,
      );
      expect(useless.generationId).toBeNull();
    } finally {
      recorder.mockRestore();
      await host.close();
    }
  });

  it('an imported A1111 PNG keeps its tags in the prompt and names its LoRAs and embeddings', async () => {
    const host = new StudioHost({
      shell: 'headless',
      dataDir: path.join(tmp, 'import'),
      version: '0.0.0-test',
      workerPath: null,
      log: () => {},
    });
    try {
      await host.library.ready;
      // A1111 1.6.0's own infotext layout (see tests/unit/networks-resolve.test.ts).
      const text =
        'a beach <lora:concept_sunbathing:0.7>, EasyNegativeV2\nSteps: 40, Sampler: DPM++ 2M Karras, CFG scale: 8, Seed: 1429876294, Size: 512x512, Lora hashes: "concept_sunbathing: 7b93421e39bd", TI hashes: "EasyNegativeV2: 339cc9210f70", Version: 1.6.0';
      const plain = await sharp({
        create: { width: 8, height: 8, channels: 3, background: { r: 1, g: 2, b: 3 } },
      })
        .png()
        .toBuffer();
      const png = addPngTextChunks(new Uint8Array(plain), [{ keyword: 'parameters', text }]);
      const uploaded = await host.service.uploadImage({
        data: Buffer.from(png).toString('base64'),
        purpose: 'import',
      });
      expect(uploaded.metadata?.source).toBe('a1111');
      expect(uploaded.metadata?.settings.prompt).toBe(
        'a beach <lora:concept_sunbathing:0.7>, EasyNegativeV2',
      );
      expect(uploaded.metadata?.networks).toEqual([
        { kind: 'lora', name: 'concept_sunbathing', hash: '7b93421e39bd' },
        { kind: 'embedding', name: 'EasyNegativeV2', hash: '339cc9210f70' },
      ]);
    } finally {
      await host.close();
    }
  });

  it('migration 6 records the LoRAs of generations saved before it from their prompts', () => {
    const db = openDatabase(path.join(tmp, 'old.db'));
    try {
      migrate(
        db,
        migrations.filter((m) => m.version <= 5),
      );
      db.prepare(
        "INSERT INTO prompts (id, text, negative) VALUES (1, 'a <lora:old:0.5> b <hypernet:x:1>', '<lora:neg:1>')",
      ).run();
      db.prepare(
        `INSERT INTO generations (id, settings, prompt_id, model_name, seed, sampler, mode, steps,
           guidance, width, height, variant_key, timings, status, created_at)
         VALUES ('g1', '{}', 1, 'm', 1, 'euler', 'txt2img', 4, 7, 64, 64, 'k', '{}', 'done', 1)`,
      ).run();
      migrate(db, migrations);
      expect(
        db
          .prepare('SELECT generation_id, kind, name, hash FROM generation_networks ORDER BY rowid')
          .all(),
      ).toEqual([
        { generation_id: 'g1', kind: 'lora', name: 'old', hash: null },
        { generation_id: 'g1', kind: 'lora', name: 'neg', hash: null },
      ]);
    } finally {
      db.close();
    }
  });
});

describe('LoRAs and embeddings on the command line', () => {
  function runCli(args: string[], env: Record<string, string> = {}) {
    const r = spawnSync(process.execPath, [cli, ...args], {
      encoding: 'utf8',
      timeout: 120_000,
      env: { ...process.env, ...env },
    });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }
  const base = (out: string) => [
    '--model',
    ka.dir,
    '--seed',
    '3',
    '--steps',
    '4',
    '--width',
    '64',
    '--height',
    '64',
    '--threads',
    '1',
    '--quiet',
    '--out',
    out,
  ];

  it('takes tags from --lora-dir, --lora FILE:WEIGHT and embeddings, and writes their hashes', () => {
    const dataDir = path.join(tmp, 'cli-data');
    const loraDir = path.join(tmp, 'cli-loras');
    const embeddingsDir = path.join(tmp, 'cli-emb');
    const outside = path.join(tmp, 'elsewhere', 'mine.safetensors');
    return (async () => {
      await writeLora(path.join(loraDir, 'film_grain.safetensors'), 4);
      await writeLora(outside, 5);
      fs.mkdirSync(embeddingsDir, { recursive: true });
      fs.copyFileSync(TI_PT, path.join(embeddingsDir, 'tiny-ti.pt'));
      const out = path.join(tmp, 'cli.png');
      const r = runCli([
        ...base(out),
        '--prompt',
        'a house <lora:film_grain:0.7>',
        '--negative',
        'tiny-ti',
        '--lora-dir',
        loraDir,
        '--embeddings-dir',
        embeddingsDir,
        '--lora',
        `${outside}:0.4`,
        '--data-dir',
        dataDir,
      ]);
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      const parameters = readPngTextChunks(fs.readFileSync(out)).find(
        (c) => c.keyword === 'parameters',
      )!.text;
      const parsed = parseA1111Parameters(parameters);
      expect(parsed.prompt).toBe('a house <lora:film_grain:0.7> <lora:mine:0.4>');
      expect(parsed.params['Lora hashes']).toBe(
        `film_grain: ${addnetShort(path.join(loraDir, 'film_grain.safetensors'))}, mine: ${addnetShort(outside)}`,
      );
      expect(parsed.params['TI hashes']).toBe(`tiny-ti: ${wholeShort(TI_PT)}`);
      // The hashes are kept in the data folder for the next run.
      expect(fs.existsSync(path.join(dataDir, 'network-hashes.json'))).toBe(true);

      // Defaults: the studio's folders, from its settings in the data folder.
      fs.writeFileSync(path.join(dataDir, 'settings.json'), JSON.stringify({ loraDir }));
      const again = runCli([
        ...base(path.join(tmp, 'cli2.png')),
        '--prompt',
        '<lora:film_grain>',
        '--data-dir',
        dataDir,
      ]);
      expect(again.stderr).toBe('');
      expect(again.code).toBe(0);
    })();
  });

  it('says which LoRA is missing, and refuses bad --lora values with the usage hint', () => {
    const dataDir = path.join(tmp, 'cli-data-2');
    const missing = runCli([
      ...base(path.join(tmp, 'x.png')),
      '--prompt',
      'a <lora:nowhere:1>',
      '--data-dir',
      dataDir,
    ]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim()).toBe(
      `latent-studio: The LoRA "nowhere" is not in the LoRA folder ${path.join(dataDir, 'models', 'Lora')}: add the file there (or fix the tag's name) and try again.`,
    );
    expect(fs.existsSync(path.join(tmp, 'x.png'))).toBe(false);

    const hyper = runCli([
      ...base(path.join(tmp, 'y.png')),
      '--prompt',
      '<hypernet:a:1>',
      '--data-dir',
      dataDir,
    ]);
    expect(hyper.code).toBe(1);
    expect(hyper.stderr).toContain('asks for a hypernetwork, which Latent Studio does not apply');

    const notLora = path.join(tmp, 'notes.txt');
    fs.writeFileSync(notLora, 'x');
    const bad = runCli([
      ...base(path.join(tmp, 'z.png')),
      '--prompt',
      'a',
      '--lora',
      `${notLora}:1`,
    ]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(
      `--lora: ${notLora} is not a LoRA file (.safetensors, .pt, .ckpt).`,
    );
    expect(bad.stderr).toContain('Run with --help for the options.');

    const noDir = runCli([
      ...base(path.join(tmp, 'w.png')),
      '--prompt',
      'a',
      '--lora-dir',
      path.join(tmp, 'nope'),
    ]);
    expect(noDir.code).toBe(2);
    expect(noDir.stderr).toContain(`--lora-dir: ${path.join(tmp, 'nope')} does not exist.`);
  });
});
