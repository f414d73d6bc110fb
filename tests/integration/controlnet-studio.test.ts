// ControlNet from the studio (issue 19): through the host's queue, a unit whose ControlNet is a
// file of the ControlNet folder and whose control image is an upload guides the generation (the
// converted cache seeded as the CLI test does: the small fixture needs its architecture given);
// weight 0 gives the plain generation bit for bit; the history keeps the unit (reuse makes the
// same picture) and the PNG A1111's `ControlNet 0`; an A1111 PNG with ControlNet fields restores
// what it can and says what is missing; bad units are refused in one sentence; the preview of a
// control image comes over the loopback server, and hostile input there gets a sentence.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { convertControlNet } from '../../src/engine/convert/convert-controlnet';
import type { ControlNetArchitecture } from '../../src/engine/convert/types';
import { StudioHost } from '../../src/main/api';
import {
  addPngTextChunks,
  encodePngWithMetadata,
  readGenerationMetadata,
} from '../../src/main/library/png-metadata';
import { type RunningServer, startServer } from '../../src/main/server/server';
import {
  type GenerationInput,
  GenerationSettings,
  type Job,
  type JobProgress,
} from '../../src/shared';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { bundleEntry } from './bundle';
import { tempDir } from './library-helpers';

const REF = path.join(import.meta.dirname, '..', 'fixtures', 'reference');
const sha = (file: string): string =>
  createHash('sha256').update(fs.readFileSync(file)).digest('hex');

let dir: string;
let host: StudioHost;
let modelId: string;
let plainModelId: string;
let cnSha: string;
let square: string;
let disc: string;
let checkpoint: Awaited<ReturnType<typeof smallCheckpoint>>;
const folder = () => path.join(dir, 'data', 'models', 'controlnet');

/** A white square or disc on black, 64 x 64, as a PNG (what canny or a line drawing gives). */
async function shapePng(kind: 'square' | 'disc', value = 255): Promise<Buffer> {
  const px = Buffer.alloc(64 * 64 * 3);
  for (let y = 0; y < 64; y++)
    for (let x = 0; x < 64; x++) {
      const inside =
        kind === 'square'
          ? x >= 16 && x < 48 && y >= 16 && y < 48
          : (x - 32) ** 2 + (y - 32) ** 2 < 14 ** 2;
      if (inside) px.fill(value, (y * 64 + x) * 3, (y * 64 + x) * 3 + 3);
    }
  return sharp(px, { raw: { width: 64, height: 64, channels: 3 } })
    .png()
    .toBuffer();
}

const upload = async (png: Buffer, purpose: 'init' | 'import' = 'init') =>
  host.service.uploadImage({ data: png.toString('base64'), purpose });

beforeAll(async () => {
  dir = tempDir('ls-cn-studio-');
  const dataDir = path.join(dir, 'data');
  checkpoint = await smallCheckpoint(dir, 'sd1');
  const { file, arch } = checkpoint;
  const opts = { vocabularyFile: VOCABULARY, architecture: arch, precision: 'fp32' as const };
  await convertCheckpoint(file, path.join(dir, 'sd1-control'), { ...opts, controlResiduals: true });
  await convertCheckpoint(file, path.join(dir, 'sd1-plain'), opts);
  // The ControlNet folder holds the file; its conversion is seeded where the cache looks for it.
  fs.mkdirSync(folder(), { recursive: true });
  const cnFile = path.join(folder(), 'control_canny.safetensors');
  fs.copyFileSync(path.join(REF, 'controlnet-sd1.safetensors'), cnFile);
  cnSha = sha(cnFile);
  const cnArch = JSON.parse(
    fs.readFileSync(path.join(REF, 'controlnet-sd1.json'), 'utf8'),
  ) as ControlNetArchitecture;
  await convertControlNet(
    cnFile,
    path.join(dataDir, 'converted', `controlnet-${cnSha.slice(0, 16)}-fp16`, 'control_canny'),
    { architecture: cnArch, sha256: cnSha },
  );
  const workerPath = await bundleEntry('src/engine/worker.ts', 'cn-studio-worker');
  host = new StudioHost({
    shell: 'headless',
    dataDir,
    version: '0.0.0-test',
    workerPath,
    resourcesDir: path.join(import.meta.dirname, '..', '..', 'resources'),
    log: () => undefined,
  });
  await host.library.ready;
  host.service.updateSettings({ threads: 1, executionProvider: 'cpu' });
  modelId = (await host.service.addModel({ path: path.join(dir, 'sd1-control') })).id;
  plainModelId = (await host.service.addModel({ path: path.join(dir, 'sd1-plain') })).id;
  square = (await upload(await shapePng('square'))).imageId;
  disc = (await upload(await shapePng('disc'))).imageId;
}, 180_000);
afterAll(async () => {
  await host?.close();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const base = {
  prompt: 'a red house on a hill',
  seed: 5,
  sampler: 'euler',
  steps: 3,
  guidance: 5,
  width: 64,
  height: 64,
} as const;
const unit = (over: Record<string, unknown> = {}) => ({
  model: 'control_canny.safetensors',
  image: square,
  preprocessor: 'canny' as const,
  ...over,
});

async function run(over: Partial<GenerationInput>): Promise<Job> {
  const before = new Set(host.jobs.state().jobs.map((j) => j.id));
  const q = await host.service.enqueue({
    settings: GenerationSettings.parse({ ...base, model: modelId, ...over }),
  });
  const id = q.jobs.find((j) => !before.has(j.id))!.id;
  const end = Date.now() + 150_000;
  for (;;) {
    const job = host.jobs.state().jobs.find((j) => j.id === id)!;
    if (['done', 'failed', 'cancelled'].includes(job.state)) return job;
    if (Date.now() > end) throw new Error('the job did not finish');
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function pixelsOf(job: Job): Promise<Buffer> {
  expect(job).toMatchObject({ state: 'done', error: null });
  const gen = await host.service.getGeneration({ id: job.generationId! });
  return sharp(host.library.resolveImage(gen.images[0]!.imageId).file).raw().toBuffer();
}

const meanDiff = (a: Buffer, b: Buffer) => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += Math.abs(a[i] - b[i]);
  return d / a.length;
};

describe('ControlNet units through the queue', () => {
  it('lists the ControlNet folder', async () => {
    fs.writeFileSync(path.join(folder(), 'readme.txt'), 'not a ControlNet');
    expect(await host.service.listControlNets(undefined)).toEqual({
      folder: folder(),
      files: [
        {
          name: 'control_canny.safetensors',
          bytes: fs.statSync(path.join(folder(), 'control_canny.safetensors')).size,
        },
      ],
    });
  });

  it('guides the picture, records the unit, and weight 0 is the plain generation bit for bit', async () => {
    const progress: JobProgress[] = [];
    const stop = host.events.subscribe((name, payload) => {
      if (name === 'jobProgress') progress.push(payload as JobProgress);
    });
    const guided = await run({ controlnets: [unit()] });
    stop();
    const plain = await pixelsOf(await run({}));
    const off = await pixelsOf(await run({ controlnets: [unit({ weight: 0 })] }));
    const guidedPixels = await pixelsOf(guided);
    expect(off.equals(plain)).toBe(true);
    expect(meanDiff(guidedPixels, plain)).toBeGreaterThan(1);
    // Another control image gives another picture.
    const byDisc = await pixelsOf(await run({ controlnets: [unit({ image: disc })] }));
    expect(meanDiff(byDisc, guidedPixels)).toBeGreaterThan(0.5);
    expect(progress.findIndex((p) => p.stage === 'denoise')).toBeGreaterThan(0);

    // The history keeps the unit with its control image; the PNG carries A1111's field.
    const gen = await host.service.getGeneration({ id: guided.generationId! });
    expect(gen.settings.controlnets).toEqual([
      {
        model: 'control_canny.safetensors',
        image: square,
        preprocessor: 'canny',
        lowThreshold: 100,
        highThreshold: 200,
        weight: 1,
        start: 0,
        end: 1,
        guess: false,
      },
    ]);
    const field = `ControlNet 0: "Module: canny, Model: control_canny [${cnSha.slice(0, 8)}], Weight: 1, Resize Mode: Just Resize, Threshold A: 100, Threshold B: 200, Guidance Start: 0, Guidance End: 1, Control Mode: Balanced"`;
    expect(gen.parametersText).toContain(field);
    const png = fs.readFileSync(host.library.resolveImage(gen.images[0]!.imageId).file);
    expect(readGenerationMetadata(png).settings.controlnets).toEqual(gen.settings.controlnets);
    // Reuse: the stored settings queued again make the same picture, the control image included.
    const again = await run({ ...gen.settings, model: modelId });
    expect((await pixelsOf(again)).equals(guidedPixels)).toBe(true);
  }, 300_000);

  it('a checkpoint imported with ControlNet support is a model units can guide', async () => {
    const { file, arch } = checkpoint;
    const fileSha = sha(file);
    const name = path.basename(file, '.safetensors');
    // Seeded where the import looks for its residual UNet (the small config cannot be detected).
    await convertCheckpoint(
      file,
      path.join(dir, 'data', 'converted', `${fileSha.slice(0, 16)}-fp16-cn`, name),
      { vocabularyFile: VOCABULARY, architecture: arch, sha256: fileSha, controlResiduals: true },
    );
    const entry = await host.service.importCheckpoint({ path: file, controlnet: true });
    expect(entry.path).toContain(`${fileSha.slice(0, 16)}-fp16-cn`);
    const job = await run({ model: entry.id, controlnets: [unit()] });
    expect(job).toMatchObject({ state: 'done', error: null });
  }, 120_000);

  it('refuses units it cannot run, in one sentence, and a broken image fails the job', async () => {
    const enqueue = (over: Partial<GenerationInput>) =>
      host.service.enqueue({
        settings: GenerationSettings.parse({ ...base, model: modelId, ...over }),
      });
    await expect(enqueue({ controlnets: [unit({ model: 'gone.safetensors' })] })).rejects.toThrow(
      `The ControlNet "gone.safetensors" is not in the ControlNet folder ${folder()}: put the file there or choose another ControlNet.`,
    );
    await expect(enqueue({ controlnets: [unit({ image: 'x'.repeat(26) })] })).rejects.toThrow(
      /^The control image of ControlNet unit 1 "x+" is not in the library/,
    );
    await expect(
      enqueue({
        mode: 'outpaint',
        initImage: square,
        outpaint: { left: 64, top: 0, right: 0, bottom: 0 },
        controlnets: [unit()],
      }),
    ).rejects.toThrow(
      'ControlNet does not work with outpainting yet: outpaint without the units, then inpaint or generate with them.',
    );
    // A model whose UNet takes no residuals: the engine's sentence, the job failed, nothing lost.
    const plain = await run({ model: plainModelId, controlnets: [unit()] });
    expect(plain.state).toBe('failed');
    expect(plain.error?.message).toMatch(/takes no ControlNet residuals/);
    // A control image whose file was damaged after it was stored.
    const other = await sharp(await shapePng('square'))
      .png({ compressionLevel: 0 })
      .toBuffer();
    const broken = (await upload(other)).imageId;
    fs.writeFileSync(host.library.resolveImage(broken).file, Buffer.from('not a png at all'));
    const job = await run({ controlnets: [unit({ image: broken })] });
    expect(job.state).toBe('failed');
    expect(job.error?.message).toMatch(/^The control image could not be read \(/);
    // The queue goes on.
    expect((await run({})).state).toBe('done');
  }, 300_000);

  it('an imported A1111 PNG restores its units without their images and names what is missing', async () => {
    const png = await encodePngWithMetadata(new Uint8Array(8 * 8 * 3), 8, 8, 3);
    const text = [
      'a red house',
      'Steps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, ' +
        'ControlNet 0: "Module: canny, Model: control_canny [abcd1234], Weight: 0.6, Resize Mode: Crop and Resize, Low Vram: False, Threshold A: 64, Threshold B: 128, Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: False, Control Mode: ControlNet is more important", ' +
        'ControlNet 1: "Module: depth_midas, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 1, Guidance Start: 0, Guidance End: 1, Control Mode: Balanced"',
    ].join('\n');
    const found = await upload(
      Buffer.from(addPngTextChunks(png, [{ keyword: 'parameters', text }])),
      'import',
    );
    expect(found.metadata?.controlnets).toEqual([
      {
        model: 'control_canny.safetensors',
        preprocessor: 'canny',
        lowThreshold: 64,
        highThreshold: 128,
        weight: 0.6,
        start: 0.1,
        end: 0.9,
        guess: true,
      },
      { model: null, weight: 1, start: 0, end: 1, guess: false },
    ]);
    expect(found.metadata?.notes).toEqual([
      'ControlNet unit 1 needs its control image again: A1111 does not store it in the image.',
      'ControlNet unit 2 used the depth_midas preprocessor, which this studio does not have: give it an already preprocessed control image.',
      `ControlNet unit 2 used the model control_v11f1p_sd15_depth, which is not in the ControlNet folder ${folder()}; put it there to use it.`,
      'ControlNet unit 2 needs its control image again: A1111 does not store it in the image.',
    ]);
  });
});

describe('the control preview over the loopback server', () => {
  let server: RunningServer;
  beforeAll(async () => {
    const rendererDir = path.join(dir, 'renderer');
    fs.mkdirSync(rendererDir, { recursive: true });
    fs.writeFileSync(path.join(rendererDir, 'index.html'), '<!doctype html><title>t</title>');
    server = await startServer({ host, port: 0, rendererDir });
  });
  afterAll(async () => {
    await server?.close();
  });

  const call = async (input: unknown) => {
    const res = await fetch(`${server.url}/api/call/previewControlImage`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${server.token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ input }),
    });
    return (await res.json()) as {
      ok: boolean;
      value?: { dataUrl: string; width: number; height: number };
      error?: { code: string; message: string };
    };
  };
  const decode = async (dataUrl: string) => {
    const { data, info } = await sharp(Buffer.from(dataUrl.split(',')[1]!, 'base64'))
      .raw()
      .toBuffer({ resolveWithObject: true });
    return { data, info };
  };

  it('returns the canny edges at the output size, or the image itself with none', async () => {
    const edges = await call({ image: square, preprocessor: 'canny', width: 128, height: 96 });
    expect(edges.ok).toBe(true);
    expect(edges.value).toMatchObject({ width: 128, height: 96 });
    const { data, info } = await decode(edges.value!.dataUrl);
    expect([info.width, info.height]).toEqual([128, 96]);
    const at = (x: number, y: number) => data[(y * info.width + x) * info.channels];
    // Only 0 and 255; the square's left edge (x = 32 at 2x) is an edge, its middle and the
    // background are not.
    expect(new Set(data)).toEqual(new Set([0, 255]));
    expect([31, 32].some((x) => at(x, 48) === 255)).toBe(true);
    expect(at(64, 48)).toBe(0);
    expect(at(4, 4)).toBe(0);
    // A grey square's step (100: an L1 Sobel magnitude of 400) is an edge under the default
    // thresholds, and none above it.
    const grey = (await upload(await shapePng('square', 100))).imageId;
    const edgesAt = async (low: number, high: number) => {
      const r = await call({
        image: grey,
        preprocessor: 'canny',
        lowThreshold: low,
        highThreshold: high,
        width: 64,
        height: 64,
      });
      return (await decode(r.value!.dataUrl)).data.filter((v) => v === 255).length;
    };
    expect(await edgesAt(100, 200)).toBeGreaterThan(100);
    expect(await edgesAt(500, 900)).toBe(0);
    const same = await call({ image: square, preprocessor: 'none', width: 64, height: 64 });
    const raw = await decode(same.value!.dataUrl);
    expect(
      raw.data.equals(
        await sharp(await shapePng('square'))
          .raw()
          .toBuffer(),
      ),
    ).toBe(true);
  });

  it('answers hostile input with a sentence', async () => {
    expect(
      await call({ image: 'x'.repeat(26), preprocessor: 'canny', width: 64, height: 64 }),
    ).toMatchObject({
      ok: false,
      error: {
        code: 'not-found',
        message:
          'The control image is not in the library (deleted, or never uploaded): add it again.',
      },
    });
    const big = await call({ image: square, preprocessor: 'canny', width: 100_000, height: 64 });
    expect(big).toMatchObject({ ok: false, error: { code: 'invalid-argument' } });
    const path_ = await call({ image: '/etc/passwd', preprocessor: 'none', width: 64, height: 64 });
    expect(path_).toMatchObject({ ok: false, error: { code: 'invalid-argument' } });
    const order = await call({
      image: square,
      preprocessor: 'canny',
      lowThreshold: 200,
      highThreshold: 100,
      width: 64,
      height: 64,
    });
    expect(order.error?.message).toMatch(/the low threshold must not exceed the high one/);
  });
});
