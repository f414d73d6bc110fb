// Upscaling (issue #4): the two-pass hires fix, the x4 upscaler, tiled diffusion, tiled VAE
// decoding and the memory plan, on fixture models whose answers are known:
// - the known-answer UNet (exact denoiser of a few latents x_k) must land hires passes on the
//   x_k the base pass found, and the x4 upscaler on one of its x_k at 4x the size;
// - the fixture VAE is an exact local patch codec, so tiled decoding must equal untiled;
// - for tiled diffusion, a local known-answer UNet built here (the exact denoiser of a prior
//   where every latent pixel independently takes one of a few palette colours, optionally
//   computed on a box-blurred x_t with zero padding, so tile edges see padding as real UNets
//   do): with no blur tiled must equal untiled; with blur, feathered overlaps must show no
//   seams while tiles without overlap do.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine, EngineError, TorchGenerator } from '../../src/engine';
import type { GenerateProgress, GenerateResult, PixelImage } from '../../src/engine';
import { imageToTensor } from '../../src/engine/image';
import { type DiffusionHooks, runDiffusion } from '../../src/engine/pipelines/generate';
import { planMemory, unetCallBytes } from '../../src/engine/pipelines/memory';
import { emptyTimings } from '../../src/engine/pipelines/stats';
import { TextConditioner } from '../../src/engine/pipelines/text';
import {
  type TileGrid,
  decodeLatents,
  encodeImageTensor,
  planTiles,
  tiledPredict,
} from '../../src/engine/pipelines/tiling';
import { alphasCumprod, parseSchedulerConfig } from '../../src/engine/schedulers';
import { GenerationSettings, type GenerationInput } from '../../src/shared/generation';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';
import { GraphBuilder } from '../fixtures/onnx-builder';
import { bundleEntry } from './bundle';
import { classify, diff, expectedImage, knownImage, same, spyOnSession } from './known-answer';

// ---------------------------------------------------------------------------------------------
// Helpers

let engine: DiffusionEngine;
let ka: FixtureInfo;
let x4: FixtureInfo;
let tmp: string;

beforeAll(async () => {
  engine = new DiffusionEngine({ previewEvery: 0 });
  ka = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
  x4 = await fixtureModelInfo('x4-ka', { family: 'x4', unet: 'known-answer' });
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-upscale-'));
});
afterAll(async () => {
  await engine.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function settings(over: Partial<GenerationInput> = {}): GenerationSettings {
  return GenerationSettings.parse({
    model: 'fixture',
    prompt: 'a red house on a hill',
    seed: 1,
    sampler: 'euler',
    steps: 12,
    guidance: 7,
    width: 64,
    height: 64,
    ...over,
  });
}

function gen(
  dir: string,
  over: Partial<GenerationInput>,
  extra: {
    initImage?: PixelImage;
    onProgress?: (p: GenerateProgress) => void;
    e?: DiffusionEngine;
  } = {},
): Promise<GenerateResult> {
  return (extra.e ?? engine).generate(
    { modelDir: dir, settings: settings(over), initImage: extra.initImage ?? null },
    { onProgress: extra.onProgress },
  );
}

// ---------------------------------------------------------------------------------------------
// Two-pass hires

describe('hires fix (two passes)', () => {
  it.each(['latent', 'lanczos'] as const)(
    '%s: base 64x64 -> 128x128 lands on the x_k the base pass found; low-res preview first; same seed, same pixels',
    async (upscaler) => {
      const events: GenerateProgress[] = [];
      const unet = await spyOnSession(engine, ka.dir, 'unet');
      let r: GenerateResult;
      try {
        r = await gen(
          ka.dir,
          {
            seed: 5,
            upscale: { method: 'hires', factor: 2, upscaler, hiresSteps: 10, hiresStrength: 0.5 },
          },
          { onProgress: (p) => events.push(p) },
        );
        // Base pass at 8x8 latents, then the hires pass at 16x16: 12 + int(10 * 0.5) calls.
        const dims = unet.calls.map((c) => c.feeds.sample.dims.join('x'));
        expect(dims.filter((d) => d === '2x4x8x8')).toHaveLength(12);
        expect(dims.filter((d) => d === '2x4x16x16')).toHaveLength(5);
        expect(dims.indexOf('2x4x16x16')).toBe(12);
      } finally {
        unet.restore();
      }
      const out = r.images[0].image;
      expect([out.width, out.height]).toEqual([128, 128]);
      const hi = classify(ka, out);
      expect(hi.max, JSON.stringify(hi)).toBeLessThanOrEqual(8);

      // The decoded base image comes as a preview before any hires step, and it shows the same x_k.
      const previewAt = events.findIndex((p) => p.preview && p.preview.width === 64);
      expect(previewAt).toBeGreaterThanOrEqual(0);
      const preview = events[previewAt].preview!;
      expect(preview.height).toBe(64);
      expect(classify(ka, preview).k).toBe(hi.k);
      expect(classify(ka, preview).max).toBeLessThanOrEqual(6);
      const firstHires = events.findIndex((p) => p.stage === 'denoise' && p.step > 12);
      expect(firstHires).toBeGreaterThan(previewAt);
      expect(events.at(-1)!.total).toBe(17);

      const again = await gen(ka.dir, {
        seed: 5,
        upscale: { method: 'hires', factor: 2, upscaler, hiresSteps: 10, hiresStrength: 0.5 },
      });
      expect(same(out, again.images[0].image)).toBe(true);
    },
  );

  it('factor 1.5 rounds to multiples of 8; batches keep seed + i', async () => {
    const r = await gen(ka.dir, {
      seed: 40,
      width: 64,
      height: 96,
      batchSize: 2,
      seedMode: 'per-image',
      upscale: { method: 'hires', factor: 1.5, hiresSteps: 4, hiresStrength: 0.5 },
    });
    expect(r.images.map((g) => [g.image.width, g.image.height])).toEqual([
      [96, 144],
      [96, 144],
    ]);
    expect(r.images.map((g) => g.seed)).toEqual([40, 41]);
    // Image 1 of the batch is the image a batch of one with seed 41 gives.
    const single = await gen(ka.dir, {
      seed: 41,
      width: 64,
      height: 96,
      upscale: { method: 'hires', factor: 1.5, hiresSteps: 4, hiresStrength: 0.5 },
    });
    expect(same(single.images[0].image, r.images[1].image)).toBe(true);
  });

  it("mode 'upscale' with hires enlarges the input image and keeps what it shows", async () => {
    const init = knownImage(ka, 2, 64, 64);
    const r = await gen(
      ka.dir,
      {
        mode: 'upscale',
        initImage: 'input.png',
        upscale: { method: 'hires', factor: 2, hiresSteps: 8, hiresStrength: 0.3 },
      },
      { initImage: init },
    );
    const out = r.images[0].image;
    expect([out.width, out.height]).toEqual([128, 128]);
    const c = classify(ka, out);
    expect(c.k).toBe(2);
    expect(c.max).toBeLessThanOrEqual(8);
  });

  it("mode 'upscale' with hires takes a 9-channel model as it takes a 4-channel one", async () => {
    // The known-answer UNet reads only the latent channels: the 9-channel model, given
    // everything masked, must land on the 4-channel model's image exactly.
    const ka9 = await fixtureModelInfo('ka-inpaint-up', {
      unet: 'known-answer',
      family: 'inpaint',
    });
    const init = knownImage(ka, 1, 64, 64);
    const over: Partial<GenerationInput> = {
      mode: 'upscale',
      initImage: 'input.png',
      upscale: { method: 'hires', factor: 2, hiresSteps: 6, hiresStrength: 0.4 },
    };
    const nine = await gen(ka9.dir, over, { initImage: init });
    const four = await gen(ka.dir, over, { initImage: init });
    expect(same(nine.images[0].image, four.images[0].image)).toBe(true);

    // Tiled too: each tile's UNet call gets its own crop of the mask channels.
    const tiled = { ...over, upscale: { ...over.upscale!, tile: 64 } };
    const unet = await spyOnSession(engine, ka9.dir, 'unet');
    try {
      const nineTiled = await gen(ka9.dir, tiled, { initImage: init });
      expect(unet.calls.every((c) => c.feeds.sample.dims.join('x') === '2x9x8x8')).toBe(true);
      const fourTiled = await gen(ka.dir, tiled, { initImage: init });
      expect(same(nineTiled.images[0].image, fourTiled.images[0].image)).toBe(true);
    } finally {
      unet.restore();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// x4 upscaler

describe('x4 upscaler', () => {
  it('4x output, 7-channel UNet input with the noised low-res image, class_labels = noise level', async () => {
    const low = knownImage(x4, 1, 16, 16);
    const unet = await spyOnSession(engine, x4.dir, 'unet');
    let r: GenerateResult;
    try {
      r = await engine.generate(
        {
          modelDir: ka.dir, // the base model; x4 runs on upscale.model
          settings: settings({
            mode: 'upscale',
            sampler: 'euler',
            steps: 10,
            seed: 9,
            initImage: 'low.png',
            upscale: { method: 'x4', noiseLevel: 30, model: x4.dir },
          }),
          initImage: low,
        },
        {},
      );
    } finally {
      unet.restore();
    }
    expect(r.family).toBe('x4-upscaler');
    const out = r.images[0].image;
    expect([out.width, out.height]).toEqual([64, 64]);
    // The known-answer x4 UNet lands on one of its x_k, decoded 4x by vae/.
    const c = classify(x4, out);
    expect(c.max, JSON.stringify(c)).toBeLessThanOrEqual(8);

    expect(unet.calls).toHaveLength(10);
    const first = unet.calls[0].feeds;
    expect(first.sample.dims).toEqual([2, 7, 16, 16]);
    expect(first.class_labels.dims).toEqual([2]);
    expect(first.class_labels.data).toEqual([30, 30]);
    // Channels 4..6: sqrt(abar) * low + sqrt(1 - abar) * eps, eps the generator's first draw.
    const abar = alphasCumprod(
      parseSchedulerConfig(
        JSON.parse(
          fs.readFileSync(path.join(x4.dir, 'low_res_scheduler/scheduler_config.json'), 'utf8'),
        ),
      ),
    )[30];
    const g = new TorchGenerator(9);
    const eps = g.randn([1, 3, 16, 16]);
    const lowT = imageToTensor(low).data;
    const want = lowT.map((v, i) => Math.sqrt(abar) * v + Math.sqrt(1 - abar) * eps[i]);
    const plane = 256;
    for (const row of [0, 1]) {
      const got = (first.sample.data as Float32Array).subarray(
        (row * 7 + 4) * plane,
        (row * 7 + 7) * plane,
      );
      expect(diff(got, want).max).toBeLessThan(1e-5);
    }
    // ...and the latents are its second draw times init_noise_sigma, scaled back by c_in: the
    // first 4 channels equal randn * init_noise_sigma / sqrt(1 + sigma_0^2) = randn (leading
    // spacing: init_noise_sigma = sqrt(sigma_0^2 + 1)).
    const noise = g.randn([1, 4, 16, 16]);
    const got = (first.sample.data as Float32Array).subarray(0, 4 * plane);
    expect(diff(got, noise).max).toBeLessThan(1e-4);
  });

  it('odd sizes are padded and cropped back: 20x12 -> 80x48; noise_level above max_noise_level is refused', async () => {
    const low: PixelImage = {
      width: 20,
      height: 12,
      channels: 3,
      data: new Uint8Array(20 * 12 * 3).fill(128),
    };
    const r = await engine.generate({
      modelDir: x4.dir,
      settings: settings({
        mode: 'upscale',
        steps: 3,
        guidance: 1,
        initImage: 'low.png',
        upscale: { method: 'x4', model: x4.dir },
      }),
      initImage: low,
    });
    expect([r.images[0].image.width, r.images[0].image.height]).toEqual([80, 48]);

    const capped = path.join(tmp, 'x4-capped');
    fs.cpSync(x4.dir, capped, { recursive: true });
    const indexFile = path.join(capped, 'model_index.json');
    const index = JSON.parse(fs.readFileSync(indexFile, 'utf8'));
    fs.writeFileSync(indexFile, JSON.stringify({ ...index, max_noise_level: 100 }));
    const err = await engine
      .generate({
        modelDir: capped,
        settings: settings({
          mode: 'upscale',
          steps: 2,
          initImage: 'low.png',
          upscale: { method: 'x4', noiseLevel: 200, model: capped },
        }),
        initImage: low,
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('bad-input');
    expect((err as EngineError).message).toMatch(/max_noise_level of 100/);
  });
});

// ---------------------------------------------------------------------------------------------
// Tiled VAE

describe('tiled VAE', () => {
  it('tiled decode equals untiled (the fixture VAE is local), for the 8x and the x4 decoder', async () => {
    for (const info of [ka, x4]) {
      const model = await engine.load(info.dir);
      const decoder = await model.session(model.decoderName);
      const h = 24;
      const w = 40;
      const latents = new TorchGenerator(3).randn([2, 4, h, w]).map((v) => v * 0.5);
      const ctx = { timings: emptyTimings() };
      const f = model.family.vaeScalingFactor;
      const whole = await decodeLatents(ctx, decoder, latents, 1, h, w, f, null);
      const grid = planTiles(h, w, 16, 4);
      expect(grid.tiles.length).toBe(6);
      const tiled = await decodeLatents(ctx, decoder, latents, 1, h, w, f, grid);
      expect([tiled.width, tiled.height]).toEqual([w * info.vaeFactor, h * info.vaeFactor]);
      expect(diff(tiled.data, whole.data).max).toBeLessThanOrEqual(1);
      expect(diff(tiled.data, whole.data).mean).toBeLessThan(0.01);
    }
  });

  it('tiled encode equals untiled', async () => {
    const model = await engine.load(ka.dir);
    const encoder = await model.session('vae_encoder');
    const H = 192;
    const W = 128;
    const img = new TorchGenerator(4).randn([3, H, W]).map((v) => Math.tanh(v));
    const ctx = { timings: emptyTimings() };
    const f = model.family.vaeScalingFactor;
    const whole = await encodeImageTensor(ctx, encoder, img, H, W, 8, f, null);
    const tiled = await encodeImageTensor(
      ctx,
      encoder,
      img,
      H,
      W,
      8,
      f,
      planTiles(H / 8, W / 8, 8, 2),
    );
    expect(diff(tiled, whole).max).toBeLessThan(1e-5);
  });
});

// ---------------------------------------------------------------------------------------------
// Tiled diffusion with a local known-answer UNet

const PALETTE = [
  [0.8, -0.8, -0.8],
  [-0.8, 0.8, -0.8],
  [-0.8, -0.8, 0.8],
  [0.8, 0.8, 0.8],
];

/**
 * The exact denoiser for latents whose every pixel is, independently, one of the palette colours
 * c_k (scaled as the fixture VAE encodes them), evaluated on x_t box-blurred over `blur` x `blur`
 * (zero padding) when blur > 1: per pixel, x0 = sum_k softmax_k((sa <xb, c_k> - sa^2 |c_k|^2 / 2)
 * / (1 - abar)) c_k, eps = (x_t - sa x0) / sqrt(1 - abar).
 */
function buildLocalUNet(
  file: string,
  abar: Float32Array,
  ctx: number,
  blur: number,
  scale: number,
) {
  const g = new GraphBuilder('unet');
  const K = PALETTE.length;
  const sample = g.input('sample', 'float32', ['batch', 'channels', 'height', 'width']);
  const ts = g.input('timestep', 'float32', ['batch']);
  g.input('encoder_hidden_states', 'float32', ['batch', 'sequence', ctx]);
  const colors = PALETTE.map((c) => [...c.map((v) => v * scale), 0]);
  const wDot = new Float32Array(K * 4);
  const wOut = new Float32Array(4 * K);
  const norms = new Float32Array(K);
  colors.forEach((c, k) =>
    c.forEach((v, ch) => {
      wDot[k * 4 + ch] = v;
      wOut[ch * K + k] = v;
      norms[k] += v * v;
    }),
  );
  const sqrtAbar = Float32Array.from(abar, Math.sqrt);
  const t = g.op('Cast', [g.op('Round', [g.op('Clip', [ts, g.f32(0), g.f32(999)])])], { to: 7 });
  const col = (v: string) => g.op('Reshape', [v, g.i64([-1, 1, 1, 1])]);
  const sa = col(
    g.op('Gather', [g.tensor('sqrt_abar', 'float32', [1000], sqrtAbar), t], { axis: 0 }),
  );
  const ab = g.op('Mul', [sa, sa]);
  const var1 = g.op('Sub', [g.f32(1), ab]);
  const xb =
    blur > 1
      ? g.op('AveragePool', [sample], {
          kernel_shape: [blur, blur],
          pads: Array(4).fill((blur - 1) / 2),
          count_include_pad: 1,
        })
      : sample;
  const dots = g.op('Conv', [xb, g.tensor('w_dot', 'float32', [K, 4, 1, 1], wDot)], {
    kernel_shape: [1, 1],
  });
  const logits = g.op('Div', [
    g.op('Sub', [
      g.op('Mul', [sa, dots]),
      g.op('Mul', [
        g.op('Mul', [ab, g.f32(0.5)]),
        g.tensor('norms', 'float32', [1, K, 1, 1], norms),
      ]),
    ]),
    var1,
  ]);
  const w = g.op('Softmax', [logits], { axis: 1 });
  const x0 = g.op('Conv', [w, g.tensor('w_out', 'float32', [4, K, 1, 1], wOut)], {
    kernel_shape: [1, 1],
  });
  const eps = g.op('Div', [g.op('Sub', [sample, g.op('Mul', [sa, x0])]), g.op('Sqrt', [var1])]);
  g.output(eps, 'out_sample', 'float32', ['batch', 4, 'height', 'width']);
  g.save(file);
}

async function localModel(blur: number): Promise<string> {
  const base = await fixtureModelInfo('sd15-tiny', {});
  const dir = path.join(tmp, `local-${blur}`);
  if (!fs.existsSync(dir)) {
    fs.cpSync(base.dir, dir, { recursive: true });
    fs.rmSync(path.join(dir, 'unet'), { recursive: true, force: true });
    buildLocalUNet(
      path.join(dir, 'unet', 'model.onnx'),
      base.alphasCumprod,
      base.ctx,
      blur,
      base.vaeScale * 8,
    );
  }
  return dir;
}

/** Runs txt2img directly, with the UNet tiled over `grid` when given. */
async function sampleTiled(dir: string, s: GenerationSettings, grid: TileGrid | null) {
  const model = await engine.load(dir);
  const ctx = { model, text: new TextConditioner(model), timings: emptyTimings(), previewEvery: 0 };
  let tileCalls = 0;
  const hooks: DiffusionHooks = grid
    ? {
        wrapPredict: (_full, at) =>
          tiledPredict(grid, s.batchSize, 4, (t) => {
            const p = at(t);
            return (x, ts, info) => {
              tileCalls++;
              return p(x, ts, info);
            };
          }),
      }
    : {};
  const [out] = await runDiffusion(ctx, s, null, hooks);
  return { image: out.image, tileCalls };
}

/** Mean |difference| between neighbouring pixel columns/rows at tile edges vs everywhere else. */
function seamMetric(img: PixelImage, grid: TileGrid, f: number) {
  const edgesX = new Set<number>();
  const edgesY = new Set<number>();
  for (const t of grid.tiles) {
    if (t.x > 0) edgesX.add(t.x * f);
    if (t.x + t.w < grid.w) edgesX.add((t.x + t.w) * f);
    if (t.y > 0) edgesY.add(t.y * f);
    if (t.y + t.h < grid.h) edgesY.add((t.y + t.h) * f);
  }
  const { width: W, height: H, data } = img;
  const px = (x: number, y: number, c: number) => data[(y * W + x) * 3 + c];
  // Boundary b lies between pixel b-1 and b. Patch borders of the fixture VAE sit every f
  // pixels, so compare latent-pixel borders with latent-pixel borders only.
  let seam = 0;
  let seamN = 0;
  let interior = 0;
  let interiorN = 0;
  for (let b = f; b < W; b += f) {
    let s = 0;
    for (let y = 0; y < H; y++)
      for (let c = 0; c < 3; c++) s += Math.abs(px(b, y, c) - px(b - 1, y, c));
    if (edgesX.has(b)) {
      seam += s;
      seamN += H * 3;
    } else {
      interior += s;
      interiorN += H * 3;
    }
  }
  for (let b = f; b < H; b += f) {
    let s = 0;
    for (let x = 0; x < W; x++)
      for (let c = 0; c < 3; c++) s += Math.abs(px(x, b, c) - px(x, b - 1, c));
    if (edgesY.has(b)) {
      seam += s;
      seamN += W * 3;
    } else {
      interior += s;
      interiorN += W * 3;
    }
  }
  return { seam: seam / seamN, interior: interior / interiorN };
}

describe('tiled diffusion (MultiDiffusion with feathered overlaps)', () => {
  it('with a per-pixel known-answer UNet, tiled equals untiled and every pixel is a palette colour', async () => {
    const dir = await localModel(1);
    const s = settings({ width: 256, height: 192, sampler: 'euler_a', steps: 10, seed: 3 });
    const grid = planTiles(24, 32, 16, 4);
    const whole = await sampleTiled(dir, s, null);
    const tiled = await sampleTiled(dir, s, grid);
    expect(tiled.tileCalls).toBe(10 * grid.tiles.length);
    expect(diff(tiled.image.data, whole.image.data).max).toBeLessThanOrEqual(1);
    // A correct sampler lands every pixel on one of the colours (8-bit: 0.8 -> 230, -0.8 -> 25).
    const levels = new Set(tiled.image.data);
    for (const v of levels) expect([25, 26, 229, 230]).toContain(v);
  });

  it('with a blurring (non-local) known-answer UNet: no seams with overlaps, seams without', async () => {
    const dir = await localModel(3);
    const s = settings({ width: 512, height: 384, sampler: 'euler', steps: 12, seed: 11 });
    // 16-latent tiles with the plan's overlap (tile / 4), and the same tiles butted together.
    const overlapped = planTiles(48, 64, 16, 4);
    const butted = planTiles(48, 64, 16, 0);
    expect(overlapped.tiles).toHaveLength(20);
    const whole = await sampleTiled(dir, s, null);
    const tiled = await sampleTiled(dir, s, overlapped);
    const naive = await sampleTiled(dir, s, butted);
    const ratio = (img: PixelImage, grid: TileGrid) => {
      const m = seamMetric(img, grid, 8);
      return m.seam / m.interior;
    };
    // The untiled image measured along the same lines: how much lines vary by chance.
    const chance = ratio(whole.image, overlapped);
    const rTiled = ratio(tiled.image, overlapped);
    const rNaive = ratio(naive.image, butted);
    expect(rTiled, `tiled ${rTiled}, untiled ${chance}`).toBeLessThanOrEqual(
      Math.max(1.25, chance + 0.15),
    );
    // The metric sees seams where there are some: tiles without overlap see zero padding.
    expect(rNaive).toBeGreaterThan(2.5);
    // And the tiled image is the untiled one up to a few pixels near tile edges.
    expect(diff(tiled.image.data, whole.image.data).mean).toBeLessThan(1);
  });
});

// ---------------------------------------------------------------------------------------------
// Memory plan

describe('memory plan', () => {
  it('picks tiling itself for a large size under a small budget, and the run completes', async () => {
    const small = new DiffusionEngine({ previewEvery: 0, memoryBudgetMb: 48 });
    try {
      const model = await small.load(ka.dir);
      // The untiled hires UNet call at 512x512 (64x64 latents, CFG rows 2) would not fit.
      expect(unetCallBytes(model, 2, 64, 64)).toBeGreaterThan(48 * 1024 * 1024);
      const plan = planMemory(model, {
        rows: 2,
        batch: 1,
        h: 64,
        w: 64,
        tilePx: 0,
        budgetBytes: 48 * 1024 * 1024,
      });
      expect(plan.unetGrid).not.toBeNull();
      expect(plan.unetTileBytes).toBeLessThanOrEqual(48 * 1024 * 1024);
      const unet = await spyOnSession(small, ka.dir, 'unet');
      let r: GenerateResult;
      try {
        r = await small.generate({
          modelDir: ka.dir,
          settings: settings({
            width: 256,
            height: 256,
            steps: 4,
            upscale: { method: 'hires', factor: 2, hiresSteps: 4, hiresStrength: 0.5 },
          }),
        });
      } finally {
        unet.restore();
      }
      expect([r.images[0].image.width, r.images[0].image.height]).toEqual([512, 512]);
      const hiresCalls = unet.calls.filter((c) => c.feeds.sample.dims[2] !== 32);
      const tileSide = plan.unetGrid!.tiles[0].h;
      expect(hiresCalls.length).toBe(2 * plan.unetGrid!.tiles.length);
      for (const c of hiresCalls) expect(c.feeds.sample.dims).toEqual([2, 4, tileSide, tileSide]);
    } finally {
      await small.release();
    }
  });

  it('an explicit tile size is used; a size that cannot fit even in tiles is refused before any work', async () => {
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    try {
      await gen(ka.dir, {
        steps: 3,
        upscale: { method: 'hires', factor: 2, hiresSteps: 4, hiresStrength: 0.5, tile: 64 },
      });
      // 64 px tiles = 8 latents with 2 of overlap over the 16x16 hires latent: 3 x 3 tiles, each
      // hires step (int(4 * 0.5) = 2) runs all 9; the 3 base steps run whole at 8x8.
      const tiles = planTiles(16, 16, 8, 2).tiles.length;
      expect(tiles).toBe(9);
      expect(unet.calls.map((c) => c.feeds.sample.dims.join('x'))).toEqual(
        Array(3 + 2 * tiles).fill('2x4x8x8'),
      );
      unet.calls.length = 0;

      const tiny = new DiffusionEngine({ previewEvery: 0, memoryBudgetMb: 1 });
      const tinyUnet = await spyOnSession(tiny, ka.dir, 'unet');
      try {
        const err = await tiny
          .generate({
            modelDir: ka.dir,
            settings: settings({
              width: 1024,
              height: 1024,
              upscale: { method: 'hires', factor: 4, hiresSteps: 4 },
            }),
          })
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(EngineError);
        expect((err as EngineError).code).toBe('out-of-memory');
        expect((err as EngineError).message).toMatch(/4096x4096.*memory budget/);
        expect(tinyUnet.calls).toHaveLength(0);
      } finally {
        tinyUnet.restore();
        await tiny.release();
      }
    } finally {
      unet.restore();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// CLI

describe('CLI flags', () => {
  let cli: string;
  beforeAll(async () => {
    cli = await bundleEntry('src/main/cli.ts', 'cli');
  });
  const run = (args: string[]) => {
    const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  it('--upscale/--hires-*, --tile; --upscaler x4 --upscaler-model --noise-level --init', async () => {
    const hires = path.join(tmp, 'hires.png');
    const common = ['--prompt', 'a house', '--seed', '3', '--steps', '6', '--quiet'];
    const size = ['--width', '64', '--height', '64'];
    let r = run([
      '--model',
      ka.dir,
      ...common,
      ...size,
      '--upscale',
      '2',
      '--hires-steps',
      '6',
      '--hires-strength',
      '0.5',
      '--hires-upscaler',
      'lanczos',
      '--tile',
      '64',
      '--out',
      hires,
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const meta = await sharp(hires).metadata();
    expect([meta.width, meta.height]).toEqual([128, 128]);

    const low = path.join(tmp, 'low.png');
    await sharp(Buffer.from(expectedImage(x4, 0, 16, 16)), {
      raw: { width: 16, height: 16, channels: 3 },
    })
      .png()
      .toFile(low);
    const up = path.join(tmp, 'x4.png');
    r = run([
      ...common,
      '--upscaler',
      'x4',
      '--upscaler-model',
      x4.dir,
      '--noise-level',
      '40',
      '--init',
      low,
      '--out',
      up,
    ]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const m4 = await sharp(up).metadata();
    expect([m4.width, m4.height]).toEqual([64, 64]);

    r = run(['--model', ka.dir, ...common, '--noise-level', '40', '--out', up]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--noise-level needs --upscale or --upscaler/);
    r = run(['--model', ka.dir, ...common, '--upscale', '9', '--out', up]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--upscale: /);
  });
});
