// The txt2img / img2img pipeline on the known-answer fixture (TESTING.md): a correct sampler
// from torch.randn noise must land on one of the stored latents x_k, and the fixture VAE decodes
// x_k to four flat-coloured quadrants, so every assertion here is about the pixels themselves.
// UNet and text-encoder calls are observed with spies on the real ONNX Runtime sessions.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipTokenizer, DiffusionEngine, EngineError, TorchGenerator } from '../../src/engine';
import type { GenerateProgress, GenerateResult, PixelImage } from '../../src/engine';
import { guidanceEmbedding } from '../../src/engine/pipelines/generate';
import {
  GenerationSettings,
  type GenerationInput,
  samplerNames,
} from '../../src/shared/generation';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';
import { classify, diff, expectKnown, expectedImage, same, spyOnSession } from './known-answer';

const here = path.dirname(fileURLToPath(import.meta.url));

// ---------------------------------------------------------------------------------------------
// Helpers

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

function pixelAt(img: PixelImage, x: number, y: number): number[] {
  const o = (y * img.width + x) * img.channels;
  return Array.from(img.data.subarray(o, o + 3));
}

// ---------------------------------------------------------------------------------------------

let ka: FixtureInfo;
let lcm: FixtureInfo;
let engine: DiffusionEngine;

beforeAll(async () => {
  ka = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
  lcm = await fixtureModelInfo('ka-lcm', { family: 'lcm', unet: 'known-answer' });
  engine = new DiffusionEngine({ previewEvery: 0 });
});

afterAll(async () => {
  await engine.release();
});

async function gen(
  info: FixtureInfo,
  over: Partial<GenerationInput> = {},
  extra: {
    initImage?: PixelImage;
    signal?: AbortSignal;
    onProgress?: (p: GenerateProgress) => void;
    e?: DiffusionEngine;
  } = {},
): Promise<GenerateResult> {
  return (extra.e ?? engine).generate(
    { modelDir: info.dir, settings: settings(over), initImage: extra.initImage ?? null },
    { signal: extra.signal, onProgress: extra.onProgress },
  );
}

describe('txt2img on the known-answer model lands on a stored latent', () => {
  it.each(samplerNames.map((s) => [s]))(
    '%s: six seeds each decode to an x_k, the first UNet input is torch.randn, seeds pick different x_k',
    async (sampler) => {
      const info = sampler === 'lcm' ? lcm : ka;
      const steps = sampler === 'lcm' ? 4 : 20;
      const unet = await spyOnSession(engine, info.dir, 'unet');
      try {
        const r = await gen(info, {
          sampler,
          steps,
          seed: 100,
          batchSize: 6,
          seedMode: 'per-image',
        });
        expect(r.images).toHaveLength(6);
        // DDIM (set_alpha_to_one false) stops at abar_0, sigma ~0.03: a little noise is left.
        const tol = sampler === 'ddim' ? 14 : 6;
        const ks = r.images.map((g, i) => {
          expect(g.seed).toBe(100 + i);
          expect([g.image.width, g.image.height]).toEqual([64, 64]);
          return expectKnown(info, g.image, tol, `${sampler} seed ${100 + i}`);
        });
        expect(new Set(ks).size, `${sampler}: ${ks.join(',')}`).toBeGreaterThan(1);
        // The first UNet call sees randn(seed + i) exactly: x = noise * init_noise_sigma, then
        // scale_model_input divides by the same sqrt(sigma_0^2 + 1).
        const first = unet.calls[0].feeds.sample;
        const rows = sampler === 'lcm' ? 6 : 12; // CFG doubles the batch, LCM embeds guidance
        expect(first.dims).toEqual([rows, 4, 8, 8]);
        for (let i = 0; i < rows; i++) {
          const want = new TorchGenerator(100 + (i % 6)).randn([1, 4, 8, 8]);
          const got = (first.data as Float32Array).subarray(i * 256, (i + 1) * 256);
          expect(diff(got, want).max).toBeLessThan(1e-5);
        }
      } finally {
        unet.restore();
      }
    },
  );

  it('seed parity: the starting noise for seed 1234 [1,4,8,8] is the recorded torch.randn vector', async () => {
    const ref = JSON.parse(
      readFileSync(path.join(here, '../fixtures/reference/torch-randn-vectors.json'), 'utf8'),
    ) as { cases: { seed: number; shape: number[]; values: number[] }[] };
    const want = ref.cases.find((c) => c.seed === 1234 && c.shape.join() === '1,4,8,8')!.values;
    expect(want).toHaveLength(256);
    const runs = [
      { sampler: 'euler', schedule: 'default' },
      { sampler: 'ddim', schedule: 'default' },
      { sampler: 'dpmpp_2m', schedule: 'karras' },
    ] as const;
    for (const { sampler, schedule } of runs) {
      const unet = await spyOnSession(engine, ka.dir, 'unet');
      try {
        await gen(ka, { sampler, schedule, seed: 1234, steps: 3, guidance: 1 });
        const got = unet.calls[0].feeds.sample;
        expect(got.dims).toEqual([1, 4, 8, 8]);
        expect(diff(got.data, want).max, sampler).toBeLessThan(2e-6);
      } finally {
        unet.restore();
      }
    }
  });

  it('same seed and settings give bit-identical pixels; another seed gives another image', async () => {
    const s = { sampler: 'euler_a' as const, seed: 4242, steps: 15 };
    const a = await gen(ka, s);
    const b = await gen(ka, s);
    expect(same(a.images[0].image, b.images[0].image)).toBe(true);
    // Also across engines (fresh sessions, fresh prompt cache).
    const other = new DiffusionEngine({ previewEvery: 0 });
    try {
      const c = await gen(ka, s, { e: other });
      expect(same(a.images[0].image, c.images[0].image)).toBe(true);
    } finally {
      await other.release();
    }
    const seeds = await gen(ka, { ...s, seed: 4243, batchSize: 4, seedMode: 'per-image' });
    expect(seeds.images.some((g) => !same(g.image, a.images[0].image))).toBe(true);
  });
});

describe('batches and seeds', () => {
  it("'batch' mode: one noise draw for the whole batch; image 0 is the single-image run", async () => {
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    let r: GenerateResult;
    try {
      r = await gen(ka, { seed: 77, batchSize: 3, seedMode: 'batch', guidance: 1 });
      const first = unet.calls[0].feeds.sample;
      expect(first.dims).toEqual([3, 4, 8, 8]);
      const draw = new TorchGenerator(77).randn([3, 4, 8, 8]);
      expect(diff(first.data, draw).max).toBeLessThan(1e-5);
      // ...which is not three per-seed draws.
      expect(
        diff(first.data.slice(256, 512) as Float32Array, new TorchGenerator(78).randn([1, 4, 8, 8]))
          .max,
      ).toBeGreaterThan(0.5);
    } finally {
      unet.restore();
    }
    expect(r.images.map((g) => [g.seed, g.batchIndex])).toEqual([
      [77, 0],
      [77, 1],
      [77, 2],
    ]);
    for (const g of r.images) expectKnown(ka, g.image);
    // The first slice of randn([3,4,8,8]) is randn([1,4,8,8]) (256 is a multiple of 16).
    const single = await gen(ka, { seed: 77, guidance: 1 });
    expect(same(r.images[0].image, single.images[0].image)).toBe(true);
  });

  it("'per-image' mode: image i is exactly the batch-of-one run with seed + i, ancestral noise included", async () => {
    for (const sampler of ['euler', 'euler_a'] as const) {
      const r = await gen(ka, { sampler, seed: 500, batchSize: 3, seedMode: 'per-image' });
      for (let i = 0; i < 3; i++) {
        expect(r.images[i]).toMatchObject({ seed: 500 + i, batchIndex: 0 });
        const single = await gen(ka, { sampler, seed: 500 + i });
        expect(same(r.images[i].image, single.images[0].image), `${sampler} image ${i}`).toBe(true);
      }
    }
  });

  it('batchCount 2 x batchSize 2 gives 4 images with the documented seeds', async () => {
    const perImage = await gen(ka, {
      seed: 10,
      batchSize: 2,
      batchCount: 2,
      seedMode: 'per-image',
    });
    expect(perImage.images.map((g) => [g.seed, g.batchIndex])).toEqual([
      [10, 0],
      [11, 0],
      [12, 0],
      [13, 0],
    ]);
    const batch = await gen(ka, { seed: 10, batchSize: 2, batchCount: 2, seedMode: 'batch' });
    expect(batch.images.map((g) => [g.seed, g.batchIndex])).toEqual([
      [10, 0],
      [10, 1],
      [12, 0],
      [12, 1],
    ]);
    for (const g of [...perImage.images, ...batch.images]) expectKnown(ka, g.image);
    // Each reported seed reproduces its image.
    const s12 = await gen(ka, { seed: 12 });
    expect(same(batch.images[2].image, s12.images[0].image)).toBe(true);
    expect(same(perImage.images[2].image, s12.images[0].image)).toBe(true);
    const s13 = await gen(ka, { seed: 13 });
    expect(same(perImage.images[3].image, s13.images[0].image)).toBe(true);
  });
  it('seeds: torch uses the low 32 bits; the largest seeds work until the batch would overflow', async () => {
    const a = await gen(ka, { seed: 5, sampler: 'euler_a' });
    const b = await gen(ka, { seed: 2 ** 32 + 5, sampler: 'euler_a' });
    expect(same(a.images[0].image, b.images[0].image)).toBe(true);
    expect(b.images[0].seed).toBe(2 ** 32 + 5);
    const max = Number.MAX_SAFE_INTEGER;
    const top = await gen(ka, { seed: max - 1, batchSize: 2, seedMode: 'per-image' });
    expect(top.images.map((g) => g.seed)).toEqual([max - 1, max]);
    for (const g of top.images) expectKnown(ka, g.image);
    const err = await gen(ka, { seed: max, batchSize: 2, seedMode: 'per-image' }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ code: 'bad-input' });
    expect((err as Error).message).toMatch(/seed/i);
  });
});

describe('classifier-free guidance and text conditioning', () => {
  it('guidance <= 1: one UNet call of B rows per step; guidance > 1: one call of 2B rows per step', async () => {
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    try {
      for (const [guidance, rows] of [
        [1, 2],
        [0, 2],
        [7.5, 4],
      ] as const) {
        unet.reset();
        const r = await gen(ka, { guidance, batchSize: 2, steps: 9, prompt: 'guidance test' });
        expect(unet.calls, `guidance ${guidance}`).toHaveLength(9);
        for (const c of unet.calls) {
          expect(c.feeds.sample.dims).toEqual([rows, 4, 8, 8]);
          expect(c.feeds.encoder_hidden_states.dims).toEqual([rows, 77, 32]);
          expect(c.feeds.timestep.dims).toEqual([rows]);
        }
        for (const g of r.images) expectKnown(ka, g.image);
      }
      // The CFG batch is [uncond; cond]: rows 0..B-1 the negative prompt, B..2B-1 the prompt.
      unet.reset();
      await gen(ka, {
        guidance: 5,
        batchSize: 2,
        steps: 2,
        prompt: 'a cat',
        negativePrompt: 'blurry',
      });
      const ehs = unet.calls[0].feeds.encoder_hidden_states.data as Float32Array;
      const row = (r: number) => ehs.subarray(r * 77 * 32, (r + 1) * 77 * 32);
      unet.reset();
      await gen(ka, { guidance: 1, steps: 1, prompt: 'blurry' });
      const negative = Float32Array.from(unet.calls[0].feeds.encoder_hidden_states.data);
      unet.reset();
      await gen(ka, { guidance: 1, steps: 1, prompt: 'a cat' });
      const positive = Float32Array.from(unet.calls[0].feeds.encoder_hidden_states.data);
      expect(diff(row(0), negative).max).toBe(0);
      expect(diff(row(1), negative).max).toBe(0);
      expect(diff(row(2), positive).max).toBe(0);
      expect(diff(row(3), positive).max).toBe(0);
      expect(diff(positive, negative).max).toBeGreaterThan(1e-3);
    } finally {
      unet.restore();
    }
  });

  it('LCM: guidance is embedded (timestep_cond), never a second UNet batch', async () => {
    const unet = await spyOnSession(engine, lcm.dir, 'unet');
    try {
      const r = await gen(lcm, { sampler: 'lcm', guidance: 8, steps: 4 });
      expect(unet.calls).toHaveLength(4);
      const c = unet.calls[0].feeds;
      expect(c.sample.dims).toEqual([1, 4, 8, 8]);
      expect(c.timestep_cond.dims).toEqual([1, 256]);
      expect(diff(c.timestep_cond.data, guidanceEmbedding(7, 256)).max).toBeLessThan(1e-6);
      expectKnown(lcm, r.images[0].image);
    } finally {
      unet.restore();
    }
  });

  it('prompt embeddings are cached: the second run with the same prompts runs no text encoder', async () => {
    const text = await spyOnSession(engine, ka.dir, 'text_encoder');
    try {
      const s = { prompt: 'a lighthouse at dusk, cache test', negativePrompt: 'fog', steps: 5 };
      const first = await gen(ka, s);
      expect(text.calls.length).toBeGreaterThanOrEqual(2); // prompt and negative (and '')
      text.reset();
      const second = await gen(ka, s);
      expect(text.calls).toHaveLength(0);
      // Exactly: 5 UNet calls and one decode, nothing else.
      expect(second.timings.sessionRuns).toBe(6);
      expect(first.timings.sessionRuns).toBeGreaterThan(6);
      expect(same(first.images[0].image, second.images[0].image)).toBe(true);
      // A new prompt encodes again (just that prompt).
      await gen(ka, { ...s, prompt: 'a lighthouse at noon' });
      expect(text.calls).toHaveLength(1);
    } finally {
      text.restore();
    }
  });

  it('long prompts: > 75 tokens and BREAK give 2 chunks (seq 154), the negative prompt is padded with the empty prompt', async () => {
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    const text = await spyOnSession(engine, ka.dir, 'text_encoder');
    try {
      // Just over 75 tokens, as the model's own tokenizer counts them.
      const tokenizer = await ClipTokenizer.fromFolder(path.join(ka.dir, 'tokenizer'));
      const words: string[] = [];
      while (tokenizer.countTokens(words.join(' ')) <= 75) words.push('cat');
      const long = words.join(' ');
      expect(tokenizer.chunkTokenCounts(long)).toHaveLength(2);
      const broken = 'a cat sitting BREAK on a red mat';
      for (const prompt of [long, broken]) {
        unet.reset();
        text.reset();
        const r = await gen(ka, { prompt, negativePrompt: 'ugly', steps: 3 });
        expect(unet.calls[0].feeds.encoder_hidden_states.dims, prompt).toEqual([2, 154, 32]);
        // Each chunk is its own [1, 77] encoder call.
        for (const c of text.calls) expect(c.feeds.input_ids.dims).toEqual([1, 77]);
        expectKnown(ka, r.images[0].image);
      }
      // The negative prompt's second chunk is the empty prompt's encoding.
      const ehs = unet.calls[0].feeds.encoder_hidden_states.data as Float32Array;
      unet.reset();
      await gen(ka, { prompt: '', guidance: 1, steps: 1 });
      const empty = unet.calls[0].feeds.encoder_hidden_states.data as Float32Array;
      const per = 77 * 32;
      expect(diff(ehs.subarray(per, 2 * per), empty).max).toBe(0);
      expect(diff(ehs.subarray(0, per), empty).max).toBeGreaterThan(1e-3); // 'ugly' itself
      // 3 chunks with guidance <= 1.
      unet.reset();
      await gen(ka, { prompt: 'one BREAK two BREAK three', guidance: 1, steps: 1 });
      expect(unet.calls[0].feeds.encoder_hidden_states.dims).toEqual([1, 231, 32]);
    } finally {
      unet.restore();
      text.restore();
    }
  });
});

describe('img2img', () => {
  const A = 2;
  let input: PixelImage;
  beforeAll(() => {
    input = { width: 64, height: 64, channels: 3, data: expectedImage(ka, A, 64, 64) };
  });

  it('low strength keeps the input (its own x_k for every seed); strength 1 is a full generation', async () => {
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    try {
      for (const strength of [0.2, 0.3]) {
        unet.reset();
        const r = await gen(
          ka,
          { mode: 'img2img', strength, steps: 20, seed: 100, batchSize: 6, seedMode: 'per-image' },
          { initImage: input },
        );
        // diffusers: init_timestep = floor(N * strength) steps are run.
        expect(unet.calls).toHaveLength(Math.floor(20 * strength));
        for (const g of r.images) {
          expect(diff(g.image.data, input.data).mean).toBeLessThan(2);
          expect(classify(ka, g.image).k).toBe(A);
        }
      }
      unet.reset();
      const full = await gen(
        ka,
        { mode: 'img2img', strength: 1, steps: 20, seed: 100, batchSize: 6, seedMode: 'per-image' },
        { initImage: input },
      );
      expect(unet.calls).toHaveLength(20);
      const ks = full.images.map((g) => expectKnown(ka, g.image));
      expect(
        ks.some((k) => k !== A),
        ks.join(','),
      ).toBe(true);
    } finally {
      unet.restore();
    }
  });

  it('is deterministic, resizes an init image of another size, accepts RGBA', async () => {
    const s = { mode: 'img2img' as const, strength: 0.5, sampler: 'euler_a' as const, seed: 9 };
    const a = await gen(ka, s, { initImage: input });
    const b = await gen(ka, s, { initImage: input });
    expect(same(a.images[0].image, b.images[0].image)).toBe(true);
    expect(classify(ka, a.images[0].image).k).toBe(A);
    // 96x80 of the same picture, RGBA: resized to 64x64 first.
    const big = expectedImage(ka, A, 96, 80);
    const rgba = new Uint8Array(96 * 80 * 4);
    for (let p = 0; p < 96 * 80; p++) {
      rgba.set(big.subarray(p * 3, p * 3 + 3), p * 4);
      rgba[p * 4 + 3] = 255;
    }
    const c = await gen(ka, s, {
      initImage: { width: 96, height: 80, channels: 4, data: rgba },
    });
    expect([c.images[0].image.width, c.images[0].image.height]).toEqual([64, 64]);
    expect(diff(c.images[0].image.data, input.data).mean).toBeLessThan(3);
    expect(classify(ka, c.images[0].image).k).toBe(A);
  });

  it('without an init image it fails with bad-input', async () => {
    const err = await gen(ka, { mode: 'img2img', strength: 0.5 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineError);
    expect(err).toMatchObject({ code: 'bad-input' });
    expect((err as Error).message).toMatch(/input image/i);
    // Strength 0 (or so low that no step is left) is refused, not silently ignored.
    const none = await gen(
      ka,
      { mode: 'img2img', strength: 0.04, steps: 20 },
      {
        initImage: { width: 64, height: 64, channels: 3, data: expectedImage(ka, 0, 64, 64) },
      },
    ).catch((e: unknown) => e);
    expect(none).toMatchObject({ code: 'bad-input' });
    expect((none as Error).message).toMatch(/strength/i);
  });
});

describe('progress and cancellation', () => {
  it('reports text, every denoise step in order with an ETA, previews every N steps, then decode', async () => {
    const e = new DiffusionEngine({ previewEvery: 4 });
    try {
      const events: GenerateProgress[] = [];
      const r = await gen(
        ka,
        { steps: 10, batchCount: 2, seed: 3 },
        { e, onProgress: (p) => events.push(p) },
      );
      for (const batch of [0, 1]) {
        const denoise = events.filter((p) => p.stage === 'denoise' && p.batch === batch);
        expect(denoise.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        for (const p of denoise) {
          expect(p.total).toBe(10);
          expect(p.batchCount).toBe(2);
          expect(p.etaMs).not.toBeNull();
          expect(p.etaMs!).toBeGreaterThanOrEqual(0);
        }
        expect(denoise.filter((p) => p.preview).map((p) => p.step)).toEqual([4, 8, 10]);
        for (const p of denoise.filter((q) => q.preview)) {
          expect(p.preview).toMatchObject({ width: 8, height: 8, channels: 3 });
          expect(p.preview!.data).toHaveLength(8 * 8 * 3);
        }
      }
      // Stages in order; the ETA reaches 0 at the very last step.
      const stages = events.map((p) => `${p.batch}:${p.stage}`);
      expect(stages[0]).toBe('0:text');
      expect(stages.indexOf('0:decode')).toBeGreaterThan(stages.lastIndexOf('0:denoise'));
      expect(stages.indexOf('1:denoise')).toBeGreaterThan(stages.indexOf('0:decode'));
      expect(stages[stages.length - 1]).toBe('1:decode');
      const last = events.filter((p) => p.stage === 'denoise').at(-1)!;
      expect(last.etaMs).toBe(0);
      // The last preview shows the image's quadrant structure: each quadrant of the 8x8
      // preview is flat, and not all four quadrants are the same colour.
      const preview = events.filter((p) => p.preview && p.batch === 0).at(-1)!.preview!;
      const quads = [
        [1, 1],
        [6, 1],
        [1, 6],
        [6, 6],
      ].map(([x, y]) => pixelAt(preview, x, y));
      for (const [q, [x0, y0]] of [
        [0, 0],
        [4, 0],
        [0, 4],
        [4, 4],
      ].entries())
        for (let y = y0; y < y0 + 4; y++)
          for (let x = x0; x < x0 + 4; x++)
            expect(diff(pixelAt(preview, x, y), quads[q]).max).toBeLessThanOrEqual(2);
      expect(new Set(quads.map((q) => q.join())).size).toBeGreaterThan(1);
      expect(r.images).toHaveLength(2);
    } finally {
      await e.release();
    }
  });

  it("aborting mid-run rejects with EngineError 'cancelled' and no UNet call follows", async () => {
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    try {
      for (const sampler of ['euler', 'heun', 'ddim'] as const) {
        unet.reset();
        const controller = new AbortController();
        let callsAtAbort = -1;
        const err = await gen(
          ka,
          { sampler, steps: 12, prompt: `cancel ${sampler}` },
          {
            signal: controller.signal,
            onProgress: (p) => {
              if (p.stage === 'denoise' && p.step === 3) {
                callsAtAbort = unet.calls.length;
                controller.abort();
              }
            },
          },
        ).catch((e: unknown) => e);
        expect(err, sampler).toBeInstanceOf(EngineError);
        expect((err as EngineError).code).toBe('cancelled');
        expect(callsAtAbort).toBeGreaterThan(0);
        expect(unet.calls.length, sampler).toBe(callsAtAbort);
      }
      // Already aborted: nothing runs at all.
      unet.reset();
      const controller = new AbortController();
      controller.abort();
      const err = await gen(ka, {}, { signal: controller.signal }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'cancelled' });
      expect(unet.calls).toHaveLength(0);
      // The engine is fine afterwards.
      const r = await gen(ka, { seed: 5 });
      expectKnown(ka, r.images[0].image);
    } finally {
      unet.restore();
    }
  });
});
