// The watermark through the real host: a generation saved by the queue (real engine worker,
// SQLite, image store) carries the mark, its history row and PNG text say so, the setting turns
// it off, "Check watermark" reads it; and `npm run watermark -- --check` on files.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StudioHost } from '../../src/main/api';
import { readGenerationMetadata } from '../../src/main/library/png-metadata';
import { GenerationSettings, type GenerationInput } from '../../src/shared';
import { fixtureModel } from '../fixtures/models';
import { bundleEntry } from './bundle';

let workerPath: string;
let cli: string;
let modelDir: string;
let tmp: string;
const fixtures = path.join(__dirname, '..', 'fixtures', 'watermark');

beforeAll(async () => {
  workerPath = await bundleEntry('src/engine/worker.ts', 'watermark-engine-worker');
  cli = await bundleEntry('src/main/watermark-cli.ts', 'watermark-cli');
  modelDir = await fixtureModel('worker-tiny', {});
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-watermark-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function generate(host: StudioHost, model: string): Promise<string> {
  const settings = GenerationSettings.parse({
    model,
    prompt: 'a lighthouse',
    seed: 3,
    sampler: 'euler',
    steps: 2,
    width: 256,
    height: 256,
  } as GenerationInput);
  const before = new Set(host.jobs.state().jobs.map((j) => j.id));
  const q = await host.service.enqueue({ settings });
  const id = q.jobs.find((j) => !before.has(j.id))!.id;
  for (const end = Date.now() + 90_000; Date.now() < end;) {
    const job = host.jobs.state().jobs.find((j) => j.id === id)!;
    if (job.state === 'done') return job.generationId!;
    if (job.state === 'failed' || job.state === 'cancelled')
      throw new Error(`job ${job.state}: ${JSON.stringify(job.error)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('timed out waiting for the job');
}

describe('watermark on save', () => {
  it('marks saved generations by default, records it, and the setting turns it off', async () => {
    const host = new StudioHost({
      shell: 'headless',
      dataDir: path.join(tmp, 'data'),
      version: '0.0.0-test',
      workerPath,
      log: () => undefined,
    });
    try {
      await host.library.ready;
      expect(host.service.getSettings(undefined)).toMatchObject({ watermark: true });
      host.service.updateSettings({ threads: 1, executionProvider: 'cpu' });
      const model = (await host.service.addModel({ path: modelDir })).id;

      const marked = await host.service.getGeneration({ id: await generate(host, model) });
      expect(marked.watermark).toBe('StableDiffusionV1');
      const imageId = marked.images[0]!.imageId;
      const check = await host.service.checkWatermark({ imageId });
      expect(check).toMatchObject({ found: true, message: 'StableDiffusionV1', totalBits: 136 });
      expect(check.matchingBits).toBeGreaterThanOrEqual(130);
      const file = host.library.resolveImage(imageId).file;
      expect(readGenerationMetadata(fs.readFileSync(file)).raw).toMatchObject({
        Watermark: 'StableDiffusionV1',
      });

      host.service.updateSettings({ watermark: false });
      const plain = await host.service.getGeneration({ id: await generate(host, model) });
      expect(plain.watermark).toBeNull();
      const plainId = plain.images[0]!.imageId;
      expect(await host.service.checkWatermark({ imageId: plainId })).toMatchObject({
        found: false,
        message: null,
      });
      const plainFile = host.library.resolveImage(plainId).file;
      expect(readGenerationMetadata(fs.readFileSync(plainFile)).raw.Watermark).toBeUndefined();
      // Same seed and settings: the only difference between the two images is the mark.
      const a = await sharp(file).raw().toBuffer();
      const b = await sharp(plainFile).raw().toBuffer();
      expect(a.equals(b)).toBe(false);

      await expect(host.service.checkWatermark({ imageId: 'nope-not-an-id' })).rejects.toThrow(
        'That image is not in the library any more',
      );
    } finally {
      await host.close();
    }
  });
});

describe('npm run watermark -- --check', () => {
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 60_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('names the mark of each file, or says there is none', () => {
    const ours = path.join(fixtures, 'ours-sdxl-512x384.png');
    const theirs = path.join(fixtures, 'lib-sd1-256.png');
    const none = path.join(fixtures, 'source-256.png');
    const r = run(['--check', ours, '--check', theirs, '--check', none]);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toContain('Watermarked: “0xB3EC907BB19E”');
    expect(lines[1]).toContain('Watermarked: “StableDiffusionV1”');
    expect(lines[2]).toMatch(
      /: No watermark: the best match, \d+ of (48|136) bits, is what an unmarked image gives by chance\.$/,
    );
    const json = run(['--check', ours, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ found: true, matchingBits: 48, totalBits: 48 });
  });

  it('says in one sentence why a file cannot be read, and goes on', async () => {
    const text = path.join(tmp, 'notes.png');
    fs.writeFileSync(text, 'not an image');
    const small = path.join(tmp, 'small.png');
    await sharp({ create: { width: 64, height: 64, channels: 3, background: '#808080' } })
      .png()
      .toFile(small);
    const r = run([
      '--check',
      text,
      '--check',
      small,
      '--check',
      path.join(fixtures, 'ours-sd1-256.png'),
    ]);
    expect(r.code).toBe(1);
    const errors = r.stderr.trim().split('\n');
    expect(errors[0]).toMatch(
      /^latent-studio watermark: "notes.png" could not be read as an image/,
    );
    expect(errors[1]).toBe(
      'latent-studio watermark: "small.png" is 64x64; a watermark can only be read from 256x256 pixels or more.',
    );
    expect(r.stdout).toContain('Watermarked: “StableDiffusionV1”');
    expect(run([]).code).toBe(2);
  });
});
