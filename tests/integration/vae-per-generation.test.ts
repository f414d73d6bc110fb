// Replacement VAEs chosen per generation (issue 11 item 4): a VAE-only file converted on its own
// and handed to the engine as `vaeDir` decodes exactly as the model converted with that VAE
// built in (same seed, same pixels), without reloading the model; a VAE whose latents do not
// fit the model gets one sentence; through the host, the queue converts it once and the PNG and
// the history carry A1111's `VAE hash:` and `VAE:`; an imported A1111 PNG naming a VAE gets it
// back when the VAE folder has the file and says which file is missing otherwise.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine } from '../../src/engine';
import { type ConvertProgress, convertCheckpoint } from '../../src/engine/convert/convert';
import { convertVae } from '../../src/engine/convert/convert-vae';
import { convertVaeInWorker } from '../../src/engine/convert/in-worker';
import type { StudioHost } from '../../src/main/api';
import { ensureVaeConverted } from '../../src/main/models/checkpoint-cache';
import {
  encodePngWithMetadata,
  readGenerationMetadata,
  addPngTextChunks,
} from '../../src/main/library/png-metadata';
import { GenerationSettings, type GenerationInput, type JobProgress } from '../../src/shared';
import sharp from 'sharp';
import { writeVaeFile } from '../fixtures/vae-file';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { bundleEntry } from './bundle';
import { openCpuHost, runJob } from './host-helpers';
import { tempDir } from './library-helpers';

let dir: string;
let vaeFile: string;
let vaeSha: string;
let misfitFile: string;
/** The checkpoint converted with its own VAE, and with the replacement built in. */
let own: string;
let baked: string;
let engine: DiffusionEngine;

beforeAll(async () => {
  dir = tempDir('ls-vae-gen-');
  const checkpoint = await smallCheckpoint(dir, 'sd1');
  vaeFile = path.join(dir, 'vae-ft-test.safetensors');
  // The checkpoint's VAE, changed, so that a different decode is visible in the pixels; and one
  // of 8-channel latents, which fits no SD model.
  await writeVaeFile(checkpoint.file, vaeFile, 'changed');
  vaeSha = createHash('sha256').update(fs.readFileSync(vaeFile)).digest('hex');
  misfitFile = path.join(dir, 'wide-latents.safetensors');
  await writeVaeFile(checkpoint.file, misfitFile, 'wide');
  own = path.join(dir, 'own');
  baked = path.join(dir, 'baked');
  const options = { vocabularyFile: VOCABULARY, architecture: checkpoint.arch };
  await convertCheckpoint(checkpoint.file, own, { ...options, precision: 'fp32' });
  await convertCheckpoint(checkpoint.file, baked, { ...options, precision: 'fp32', vae: vaeFile });
  engine = new DiffusionEngine({ provider: 'cpu', threads: 1, previewEvery: 0 });
}, 120_000);
afterAll(async () => {
  await engine?.release();
  fs.rmSync(dir, { recursive: true, force: true });
});

const settings = GenerationSettings.parse({
  model: 'converted',
  prompt: 'a red house on a hill',
  seed: 11,
  sampler: 'euler',
  steps: 2,
  guidance: 5,
  width: 64,
  height: 64,
});

async function pixels(modelDir: string, vaeDir?: string, over: Partial<GenerationInput> = {}) {
  const result = await engine.generate({
    modelDir,
    settings: { ...settings, ...over } as GenerationSettings,
    ...(vaeDir ? { vaeDir } : {}),
  });
  return Buffer.from(result.images[0]!.image.data);
}

describe('a replacement VAE per generation in the engine', () => {
  it('decodes as the model with that VAE built in, and switching it keeps the model loaded', async () => {
    const vae = await ensureVaeConverted(vaeFile, {
      dataDir: path.join(dir, 'data'),
      precision: 'fp32',
    });
    const bakedImage = await pixels(baked);
    const ownImage = await pixels(own);
    const unet = (await (await engine.load(own)).session('unet')).session;
    const withVae = await pixels(own, vae.dir);
    // Same seed, same UNet and text encoder: only the decode differs, and it is the baked one's.
    expect(withVae.equals(ownImage)).toBe(false);
    expect(withVae.equals(bakedImage)).toBe(true);
    // Back on the model: its own VAE again, and the model was not reloaded for either switch.
    expect((await pixels(own)).equals(ownImage)).toBe(true);
    expect((await pixels(own, vae.dir)).equals(withVae)).toBe(true);
    expect((await (await engine.load(own)).session('unet')).session).toBe(unet);
    // Image-to-image encodes with the replacement's encoder too (as the baked model does).
    const init = { width: 64, height: 64, channels: 3 as const, data: new Uint8Array(withVae) };
    const img2img = { mode: 'img2img', strength: 0.5 } as const;
    const fromOwn = await engine.generate({
      modelDir: own,
      vaeDir: vae.dir,
      settings: { ...settings, ...img2img, initImage: 'x.png' },
      initImage: init,
    });
    const fromBaked = await engine.generate({
      modelDir: baked,
      settings: { ...settings, ...img2img, initImage: 'x.png' },
      initImage: init,
    });
    expect(Buffer.from(fromOwn.images[0]!.image.data)).toEqual(
      Buffer.from(fromBaked.images[0]!.image.data),
    );
  });

  it('says in one sentence when the VAE does not fit the model, and generates on after', async () => {
    const misfit = await ensureVaeConverted(misfitFile, {
      dataDir: path.join(dir, 'data'),
      precision: 'fp32',
    });
    await expect(pixels(own, misfit.dir)).rejects.toMatchObject({
      code: 'model-unsupported',
      message:
        'The VAE wide-latents.safetensors works on 8-channel latents but own makes 4-channel latents, so it does not fit this model.',
    });
    expect((await pixels(own)).length).toBeGreaterThan(0);
    await expect(pixels(own, path.join(dir, 'nowhere'))).rejects.toThrow(
      `The VAE folder ${path.join(dir, 'nowhere')} does not exist.`,
    );
  });
});

describe('converting a VAE in a worker thread', () => {
  it('writes what convertVae writes, with progress, and a cancel leaves nothing', async () => {
    const workerPath = await bundleEntry('src/engine/worker.ts', 'vae-convert-worker');
    const here = path.join(dir, 'vae-here');
    await convertVae(vaeFile, here, { precision: 'fp32' });
    const there = path.join(dir, 'vae-there');
    const progress: ConvertProgress[] = [];
    const result = await convertVaeInWorker(workerPath, vaeFile, there, {
      precision: 'fp32',
      onProgress: (p) => progress.push(p),
    });
    expect(result).toMatchObject({ dir: there, source: 'vae-ft-test.safetensors' });
    for (const f of ['vae_encoder/model.onnx_data', 'vae_decoder/model.onnx_data', 'vae.json'])
      expect(fs.readFileSync(path.join(there, f)).equals(fs.readFileSync(path.join(here, f)))).toBe(
        true,
      );
    expect(progress.map((p) => p.phase)).toContain('vae_decoder');
    expect(progress.at(-1)).toMatchObject({ tensorsDone: progress.at(-1)!.tensorsTotal });
    const controller = new AbortController();
    const cancelled = convertVaeInWorker(workerPath, vaeFile, path.join(dir, 'vae-cancelled'), {
      signal: controller.signal,
      onProgress: () => controller.abort(),
    });
    await expect(cancelled).rejects.toMatchObject({ code: 'cancelled' });
    expect(fs.readdirSync(dir).filter((e) => e.includes('vae-cancelled'))).toEqual([]);
  });
});

describe('a replacement VAE through the host', () => {
  let host: StudioHost;
  let modelId: string;
  const dataDir = () => path.join(dir, 'host');

  beforeAll(async () => {
    host = await openCpuHost(dataDir(), 'vae-engine-worker');
    modelId = (await host.service.addModel({ path: own })).id;
  }, 120_000);
  afterAll(async () => {
    await host?.close();
  });

  const run = (over: Partial<GenerationInput>) =>
    runJob(host, GenerationSettings.parse({ ...settings, model: modelId, ...over }));

  it('lists the VAE folder, and a job with a VAE from it records VAE and VAE hash', async () => {
    const folder = path.join(dataDir(), 'vae');
    expect(await host.service.listVaes(undefined)).toEqual({ folder, files: [] });
    fs.mkdirSync(folder, { recursive: true });
    fs.copyFileSync(vaeFile, path.join(folder, 'vae-ft-test.safetensors'));
    fs.writeFileSync(path.join(folder, 'notes.txt'), 'not a VAE');
    expect(await host.service.listVaes(undefined)).toEqual({
      folder,
      files: [{ name: 'vae-ft-test.safetensors', bytes: fs.statSync(vaeFile).size }],
    });

    const progress: JobProgress[] = [];
    const stop = host.events.subscribe((name, payload) => {
      if (name === 'jobProgress') progress.push(payload as JobProgress);
    });
    const job = await run({ vae: 'vae-ft-test.safetensors' });
    stop();
    expect(job).toMatchObject({ state: 'done', error: null });
    // Hashing and converting the VAE show as the loading stage, counted (the start has step 0).
    const loading = progress.filter((p) => p.stage === 'loading');
    expect(loading.some((p) => p.step > 0 && p.step <= p.total)).toBe(true);
    expect(progress.findLastIndex((p) => p.stage === 'loading')).toBeLessThan(
      progress.findIndex((p) => p.stage === 'denoise'),
    );
    const gen = await host.service.getGeneration({ id: job.generationId! });
    expect(gen.settings.vae).toBe('vae-ft-test.safetensors');
    const fields = `VAE hash: ${vaeSha.slice(0, 10)}, VAE: vae-ft-test.safetensors`;
    expect(gen.parametersText).toContain(fields);
    const { file } = host.library.resolveImage(gen.images[0]!.imageId);
    const meta = readGenerationMetadata(fs.readFileSync(file));
    expect(meta.settings.vae).toBe('vae-ft-test.safetensors');
    expect(meta.raw).toMatchObject({
      VAE: 'vae-ft-test.safetensors',
      'VAE hash': vaeSha.slice(0, 10),
    });
    // The worker decoded with it: the same seed without it gives other pixels.
    const plain = await run({});
    const pixelsOf = async (id: string) => {
      const gen = await host.service.getGeneration({ id });
      return sharp(host.library.resolveImage(gen.images[0]!.imageId).file).raw().toBuffer();
    };
    expect(plain.state).toBe('done');
    expect((await pixelsOf(plain.generationId!)).equals(await pixelsOf(job.generationId!))).toBe(
      false,
    );
    expect(
      (await host.service.getGeneration({ id: plain.generationId! })).parametersText,
    ).not.toContain('VAE');
    // Converted once into the data folder's cache, under the file's sha256.
    expect(fs.readdirSync(path.join(dataDir(), 'converted'))).toContain(
      `vae-${vaeSha.slice(0, 16)}-fp16`,
    );

    // A VAE folder that is not there is refused when set, and the setting is kept.
    const gone = path.join(dataDir(), 'no-such-folder');
    expect(() => host.service.updateSettings({ vaeDir: gone })).toThrow(
      `The VAE folder ${gone} does not exist: create it first, or choose another.`,
    );
    expect(host.settings.get().vaeDir).toBeNull();
    // A name the folder does not have is refused when queued, in one sentence.
    await expect(
      host.service.enqueue({
        settings: GenerationSettings.parse({
          ...settings,
          model: modelId,
          vae: 'gone.safetensors',
        }),
      }),
    ).rejects.toThrow(
      `The VAE "gone.safetensors" is not in the VAE folder ${folder}: put the file there or choose another VAE.`,
    );
  });

  it('an imported A1111 PNG naming a VAE gets it back, or says which file is missing', async () => {
    const png = await encodePngWithMetadata(new Uint8Array(8 * 8 * 3), 8, 8, 3);
    const a1111 = (vae: string) =>
      addPngTextChunks(png, [
        {
          keyword: 'parameters',
          text: `a red house\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, VAE hash: ${vaeSha.slice(0, 10)}, VAE: ${vae}`,
        },
      ]);
    const upload = (data: Uint8Array) =>
      host.service.uploadImage({ data: Buffer.from(data).toString('base64'), purpose: 'import' });
    const found = await upload(a1111('vae-ft-test.safetensors'));
    expect(found.metadata).toMatchObject({
      source: 'a1111',
      settings: { vae: 'vae-ft-test.safetensors', seed: 5 },
    });
    expect(found.metadata?.notes).toBeUndefined();
    const missing = await upload(a1111('vae-ft-mse-840000-ema-pruned.ckpt'));
    expect(missing.metadata?.settings.vae).toBeNull();
    expect(missing.metadata?.notes).toEqual([
      `The image was made with the VAE vae-ft-mse-840000-ema-pruned.ckpt, which is not in the VAE folder ${path.join(dataDir(), 'vae')}; put it there to use it (the model's own VAE is chosen).`,
    ]);
  });
});

describe('npm run generate -- --vae FILE', () => {
  it('uses a VAE file with a model folder and writes VAE hash and VAE into the PNG', async () => {
    const cli = await bundleEntry('src/main/cli.ts', 'vae-cli');
    const run = (args: string[]) =>
      spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
    const common = ['--model', own, '--prompt', 'a red house on a hill', '--seed', '11'];
    const more = ['--steps', '2', '--sampler', 'euler', '--cfg', '5', '--width', '64'];
    const rest = [...more, '--height', '64', '--provider', 'cpu', '--threads', '1', '--quiet'];
    const dataDir = path.join(dir, 'cli-data');
    const out = path.join(dir, 'cli-vae.png');
    const r = run([...common, ...rest, '--vae', vaeFile, '--data-dir', dataDir, '--out', out]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const meta = readGenerationMetadata(fs.readFileSync(out));
    expect(meta.settings.vae).toBe(vaeFile);
    expect(meta.raw).toMatchObject({
      VAE: 'vae-ft-test.safetensors',
      'VAE hash': vaeSha.slice(0, 10),
    });
    expect(fs.readdirSync(path.join(dataDir, 'converted'))).toEqual([
      `vae-${vaeSha.slice(0, 16)}-fp16`,
    ]);
    const plainOut = path.join(dir, 'cli-plain.png');
    expect(run([...common, ...rest, '--out', plainOut]).status).toBe(0);
    const decoded = (f: string) => sharp(f).raw().toBuffer();
    expect((await decoded(out)).equals(await decoded(plainOut))).toBe(false);

    const bad = run([...common, ...rest, '--vae', misfitFile, '--data-dir', dataDir, '--out', out]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toContain(
      'The VAE wide-latents.safetensors works on 8-channel latents but own makes 4-channel latents, so it does not fit this model.',
    );
    const missing = run([
      ...common,
      ...rest,
      '--vae',
      path.join(dir, 'no.safetensors'),
      '--out',
      out,
    ]);
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toContain(`--vae: ${path.join(dir, 'no.safetensors')} does not exist.`);
  });
});
