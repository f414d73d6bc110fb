// TAESD used by the engine (issue 17 item 5): with a TAESD decoder (the reference formula's
// weights in taesd.py's naming, converted into the data folder's cache), each live preview is
// the step's predicted image x0 decoded by TAESD at full size, pixel for pixel what the TAESD
// session gives for those latents, not the latent-RGB approximation; without one (or with a
// broken one, or previewDecoder 'latent') the previews are latent-RGB again and nothing fails;
// fast decode replaces the VAE for the final image, and the host records it in the history
// settings and as `VAE Decoder: TAESD` in the infotext.
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine, type GenerateRequest } from '../../src/engine';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { type PixelImage, tensorToImage } from '../../src/engine/image';
import { componentSession } from '../../src/engine/models/load';
import { signatureFromSession } from '../../src/engine/models/signature';
import { type GenerateProgress, runDiffusion } from '../../src/engine/pipelines/generate';
import { emptyTimings } from '../../src/engine/pipelines/stats';
import { TaesdDecoder } from '../../src/engine/pipelines/taesd';
import { TextConditioner } from '../../src/engine/pipelines/text';
import type { StudioHost } from '../../src/main/api';
import { ensureTaesdConverted } from '../../src/main/models/checkpoint-cache';
import { readGenerationMetadata } from '../../src/main/library/png-metadata';
import { GenerationSettings, type GenerationInput, type JobProgress } from '../../src/shared';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { writeTaesdFile } from '../fixtures/taesd-file';
import { openCpuHost, runJob } from './host-helpers';
import { tempDir } from './library-helpers';

let dir: string;
let model: string;
let taesdFile: string;
let taesdDir: string;

beforeAll(async () => {
  dir = tempDir('ls-taesd-engine-');
  const checkpoint = await smallCheckpoint(dir, 'sd1');
  model = path.join(dir, 'model');
  await convertCheckpoint(checkpoint.file, model, {
    vocabularyFile: VOCABULARY,
    architecture: checkpoint.arch,
    precision: 'fp32',
  });
  taesdFile = path.join(dir, 'taesd_decoder.safetensors');
  await writeTaesdFile(taesdFile);
  const first = await ensureTaesdConverted(taesdFile, { dataDir: path.join(dir, 'data') });
  const again = await ensureTaesdConverted(taesdFile, { dataDir: path.join(dir, 'data') });
  expect([first.converted, again.converted, again.dir]).toEqual([true, false, first.dir]);
  taesdDir = first.dir;
}, 180_000);
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

// LCM's last step returns the denoised estimate itself (no noise is added at sigma 0), so the
// final latents are the last step's x0, bit for bit.
const settings = GenerationSettings.parse({
  model: 'm',
  prompt: 'a lighthouse at dusk',
  seed: 5,
  sampler: 'lcm',
  steps: 3,
  guidance: 1,
  width: 64,
  height: 64,
});

/** Decodes [1,4,h,w] latents with the converted TAESD model.onnx in a session of its own. */
async function taesdDecode(latents: Float32Array, h: number, w: number): Promise<PixelImage> {
  const session = await ort.InferenceSession.create(path.join(taesdDir, 'model.onnx'));
  try {
    const out = await session.run({
      latent_sample: new ort.Tensor('float32', latents, [1, 4, h, w]),
    });
    return tensorToImage(out.sample.data as Float32Array, out.sample.dims as number[], 0);
  } finally {
    await session.release();
  }
}

describe('TAESD previews in the engine', () => {
  const engine = new DiffusionEngine({
    provider: 'cpu',
    threads: 1,
    previewEvery: 1,
    // Every preview decoded by TAESD, whatever it costs, so each step can be checked.
    taesdPreviewShare: Number.POSITIVE_INFINITY,
  });
  afterAll(() => engine.release());

  const generate = async (over: Partial<GenerateRequest>, s: Partial<GenerationSettings> = {}) => {
    const previews: PixelImage[] = [];
    const result = await engine.generate(
      { modelDir: model, settings: { ...settings, ...s }, ...over },
      { onProgress: (p) => p.preview && previews.push(p.preview) },
    );
    return { result, previews };
  };

  it("decodes each step's predicted image: the last preview is TAESD's decode of the final latents", async () => {
    const loaded = await engine.load(model);
    const created = await ort.InferenceSession.create(path.join(taesdDir, 'model.onnx'));
    const taesd = new TaesdDecoder(
      componentSession(
        'vae_decoder',
        'taesd/model.onnx',
        created,
        signatureFromSession(created),
        'cpu',
        null,
      ),
      Number.POSITIVE_INFINITY,
    );
    const progress: GenerateProgress[] = [];
    let final: Float32Array | null = null;
    try {
      await runDiffusion(
        {
          model: loaded,
          text: new TextConditioner(loaded, { threads: 1 }),
          timings: emptyTimings(),
          previewEvery: 1,
          taesd,
          onProgress: (p) => progress.push(p),
        },
        settings,
        null,
        { onLatents: (_, latents) => (final = Float32Array.from(latents)) },
      );
    } finally {
      await created.release();
    }
    const previews = progress.filter((p) => p.stage === 'denoise').map((p) => p.preview);
    expect(previews).toHaveLength(3);
    // Full size (the latent-RGB preview is 8x8 here), and each one different as x0 sharpens.
    for (const p of previews) expect([p?.width, p?.height, p?.channels]).toEqual([64, 64, 3]);
    expect(Buffer.from(previews[0]!.data).equals(Buffer.from(previews[1]!.data))).toBe(false);
    const expected = await taesdDecode(final!, 8, 8);
    expect(Buffer.from(previews[2]!.data).equals(Buffer.from(expected.data))).toBe(true);
    expect([taesd.previews, taesd.finalDecodes]).toEqual([3, 0]);
    // And every denoise event came in step order, the decode stage after the last preview.
    const steps = progress.filter((p) => p.stage === 'denoise').map((p) => p.step);
    expect(steps).toEqual([1, 2, 3]);
    expect(progress.at(-1)?.stage).toBe('decode');
  }, 120_000);

  it('falls back to latent-RGB previews without a decoder, with a broken one, or when asked', async () => {
    const plain = await generate({});
    expect(plain.result.taesd).toBeUndefined();
    expect(plain.previews.map((p) => [p.width, p.height])).toEqual([
      [8, 8],
      [8, 8],
      [8, 8],
    ]);
    const asked = await generate({ taesdDir, previewDecoder: 'latent' });
    expect(asked.previews.map((p) => p.width)).toEqual([8, 8, 8]);
    expect(asked.result.taesd).toMatchObject({ previews: 0, fastDecode: false, problem: null });
    const empty = path.join(dir, 'empty-taesd');
    fs.mkdirSync(empty, { recursive: true });
    const broken = await generate({ taesdDir: empty });
    expect(broken.previews.map((p) => p.width)).toEqual([8, 8, 8]);
    expect(broken.result.taesd?.problem).toBe(
      `The TAESD decoder folder ${empty} has no model.onnx.`,
    );
    // The same seed gives the same image whichever preview ran.
    const withTaesd = await generate({ taesdDir });
    expect(withTaesd.previews.map((p) => p.width)).toEqual([64, 64, 64]);
    expect(withTaesd.result.taesd).toMatchObject({ previews: 3, fastDecode: false });
    expect(
      Buffer.from(withTaesd.result.images[0]!.image.data).equals(
        Buffer.from(plain.result.images[0]!.image.data),
      ),
    ).toBe(true);
  }, 120_000);

  it('keeps TAESD previews within their share of the sampling time', async () => {
    const thrifty = new DiffusionEngine({
      provider: 'cpu',
      threads: 1,
      previewEvery: 1,
      taesdPreviewShare: 0,
    });
    try {
      const previews: (PixelImage | null)[] = [];
      const result = await thrifty.generate(
        { modelDir: model, settings, taesdDir },
        { onProgress: (p) => p.stage === 'denoise' && previews.push(p.preview) },
      );
      // Share 0: the first preview only is TAESD's, the others latent-RGB (the picture moves on).
      expect(previews.map((p) => p?.width ?? null)).toEqual([64, 8, 8]);
      expect(result.taesd?.previews).toBe(1);
    } finally {
      await thrifty.release();
    }
  }, 120_000);

  it("fast decode: the final image is TAESD's, not the VAE's, and says so", async () => {
    const vae = await generate({ taesdDir }, { fastDecode: false });
    const fast = await generate({ taesdDir, previewDecoder: 'latent' }, { fastDecode: true });
    expect(fast.result.taesd).toMatchObject({ fastDecode: true, previews: 0 });
    expect(vae.result.taesd?.fastDecode).toBe(false);
    const image = fast.result.images[0]!.image;
    expect([image.width, image.height]).toEqual([64, 64]);
    expect(Buffer.from(image.data).equals(Buffer.from(vae.result.images[0]!.image.data))).toBe(
      false,
    );
    // With TAESD previews on, the last preview is the image fast decode gives (LCM: same x0).
    const both = await generate({ taesdDir }, { fastDecode: true });
    expect(Buffer.from(both.previews.at(-1)!.data).equals(Buffer.from(image.data))).toBe(true);
    // Without a decoder, fast decode cannot happen: the VAE decodes and the result says so.
    const none = await generate({}, { fastDecode: true });
    expect(none.result.taesd).toBeUndefined();
    expect(
      Buffer.from(none.result.images[0]!.image.data).equals(
        Buffer.from(vae.result.images[0]!.image.data),
      ),
    ).toBe(true);
  }, 120_000);
});

describe('TAESD through the host', () => {
  let host: StudioHost;
  let modelId: string;
  const dataDir = () => path.join(dir, 'host');

  beforeAll(async () => {
    host = await openCpuHost(dataDir(), 'taesd-engine-worker');
    modelId = (await host.service.addModel({ path: model })).id;
  }, 120_000);
  afterAll(async () => {
    await host?.close();
  });

  const run = async (over: Partial<GenerationInput>) => {
    const progress: JobProgress[] = [];
    const stop = host.events.subscribe((name, payload) => {
      if (name === 'jobProgress') progress.push(payload as JobProgress);
    });
    try {
      // Enough steps that a preview goes out before the job ends (they are throttled).
      const job = await runJob(
        host,
        GenerationSettings.parse({ ...settings, steps: 12, model: modelId, ...over }),
      );
      const gen = job.generationId
        ? await host.service.getGeneration({ id: job.generationId })
        : null;
      const widths = await Promise.all(
        progress
          .filter((p) => p.preview)
          .map(async (p) => {
            const png = Buffer.from(p.preview!.split(',')[1]!, 'base64');
            return (await sharp(png).metadata()).width;
          }),
      );
      return { job, gen, widths };
    } finally {
      stop();
    }
  };

  it('uses models/taesd for previews and fast decode, and records the fast decode', async () => {
    // No decoder yet: latent-RGB previews, and fast decode falls back to the VAE, unrecorded.
    const before = await run({ fastDecode: true });
    expect(before.job).toMatchObject({ state: 'done', error: null });
    expect(before.widths.length).toBeGreaterThan(0);
    expect(new Set(before.widths)).toEqual(new Set([8]));
    expect(before.gen!.settings.fastDecode).toBe(false);
    expect(before.gen!.parametersText).not.toContain('VAE Decoder');

    fs.mkdirSync(path.join(dataDir(), 'models', 'taesd'), { recursive: true });
    fs.copyFileSync(
      taesdFile,
      path.join(dataDir(), 'models', 'taesd', 'taesd_decoder.safetensors'),
    );
    const fast = await run({ fastDecode: true });
    expect(fast.job).toMatchObject({ state: 'done', error: null });
    // TAESD's full-size previews (within their time share; latent-RGB ones in between).
    expect(fast.widths).toContain(64);
    expect([...new Set(fast.widths)].every((w) => w === 64 || w === 8)).toBe(true);
    expect(fast.gen!.settings.fastDecode).toBe(true);
    expect(fast.gen!.parametersText).toContain('VAE Decoder: TAESD');
    const { file } = host.library.resolveImage(fast.gen!.images[0]!.imageId);
    const meta = readGenerationMetadata(fs.readFileSync(file));
    expect(meta.settings.fastDecode).toBe(true);
    expect(meta.raw).toMatchObject({ 'VAE Decoder': 'TAESD' });
    // Converted once into the cache.
    expect(
      fs.readdirSync(path.join(dataDir(), 'converted')).filter((e) => e.startsWith('taesd-')),
    ).toHaveLength(1);

    // Fast previews off in Settings: latent-RGB previews again; the full VAE without fastDecode.
    host.service.updateSettings({ taesdPreviews: false });
    const off = await run({});
    expect(new Set(off.widths)).toEqual(new Set([8]));
    expect(off.gen!.settings.fastDecode).toBe(false);
    expect(off.gen!.parametersText).not.toContain('VAE Decoder');
  }, 240_000);
});
