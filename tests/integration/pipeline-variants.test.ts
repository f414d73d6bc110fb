// The pipeline across the export forms real models come in (fp16, optimum's int64 ids and
// timesteps, rank-0 timesteps, external weights, v-prediction, LCM, SDXL), across sizes, and
// under bad input. Known-answer fixtures: the same noise through the same exact denoiser must
// land on the same stored latent x_k whatever the export form.

import { existsSync } from 'node:fs';
import { cp, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DiffusionEngine, EngineError } from '../../src/engine';
import type { GenerateResult, PixelImage } from '../../src/engine';
import { GenerationSettings, type GenerationInput } from '../../src/shared/generation';
import {
  type FixtureInfo,
  type FixtureSpec,
  fixtureModel,
  fixtureModelInfo,
} from '../fixtures/models';
import { diff, expectKnown, expectedImage } from './known-answer';

function settings(over: Partial<GenerationInput> = {}): GenerationSettings {
  return GenerationSettings.parse({
    model: 'fixture',
    prompt: 'a red house on a hill',
    seed: 1,
    sampler: 'euler',
    steps: 20,
    guidance: 7,
    width: 64,
    height: 64,
    ...over,
  });
}

interface Feeds {
  [name: string]: { dims: number[]; data: number[] };
}

/** Records the feeds of every run of a component's ORT session (calling through). */
async function spyOn(engine: DiffusionEngine, dir: string, component: 'unet') {
  const model = await engine.load(dir);
  const session = (await model.session(component)).session;
  const calls: Feeds[] = [];
  const original = session.run.bind(session) as (...args: unknown[]) => Promise<unknown>;
  const spy = vi.spyOn(session, 'run').mockImplementation((async (...args: unknown[]) => {
    const rec: Feeds = {};
    for (const [name, t] of Object.entries(args[0] as Record<string, ort.Tensor>))
      rec[name] = {
        dims: [...t.dims],
        data: t.type === 'float16' ? [] : Array.from(t.data as ArrayLike<number | bigint>, Number),
      };
    calls.push(rec);
    return original(...args);
  }) as never);
  return { calls, restore: () => spy.mockRestore() };
}

async function expectEngineError(
  p: Promise<unknown>,
  code: string,
  message?: RegExp,
): Promise<EngineError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, `expected EngineError ${code}`).toBeInstanceOf(EngineError);
  const e = err as EngineError;
  expect(e.code, e.message).toBe(code);
  if (message) expect(e.message).toMatch(message);
  // One sentence a person can act on: no stack, no native log lines.
  expect(e.message).not.toMatch(/\n|\s at |onnxruntime_src/);
  return e;
}

let engine: DiffusionEngine;
let ka: FixtureInfo;
beforeAll(async () => {
  engine = new DiffusionEngine({ previewEvery: 0 });
  ka = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
});
afterAll(async () => {
  await engine.release();
});

function gen(
  dir: string,
  over: Partial<GenerationInput> = {},
  initImage: PixelImage | null = null,
): Promise<GenerateResult> {
  return engine.generate({ modelDir: dir, settings: settings(over), initImage });
}

describe('export variants land on the same x_k as the reference export', () => {
  const variants: [string, FixtureSpec, string][] = [
    ['ka-sd15-float16', { unet: 'known-answer', dtype: 'float16' }, 'fp16 I/O'],
    [
      'ka-sd15-optimum',
      { unet: 'known-answer', layout: 'optimum', timestep: 'int64' },
      'optimum: int64 ids, int64 timestep',
    ],
    [
      'ka-sd15-scalar',
      { unet: 'known-answer', layout: 'optimum', timestep: 'scalar' },
      'rank-0 float timestep',
    ],
    ['ka-sd15-ext', { unet: 'known-answer', externalWeights: true }, 'unet/weights.pb'],
    [
      'ka-sd15-ext-optimum',
      { unet: 'known-answer', layout: 'optimum', externalWeights: true },
      'unet/model.onnx_data',
    ],
    ['ka-sd21v-x', { unet: 'known-answer', family: 'sd21v' }, 'sd21v, v-prediction'],
  ];

  const reference = new Map<string, { k: number; image: PixelImage }[]>();
  const runs = [
    { sampler: 'euler', seed: 1 },
    { sampler: 'heun', schedule: 'karras', seed: 2 }, // fractional timesteps
    { sampler: 'euler_a', seed: 3 },
  ] as const;

  beforeAll(async () => {
    for (const r of runs) {
      const out = await gen(ka.dir, { ...r, batchSize: 2, seedMode: 'per-image' });
      reference.set(
        r.sampler,
        out.images.map((g) => ({ k: expectKnown(ka, g.image), image: g.image })),
      );
    }
    // The runs must not all pick the same x_k, or "same k" would prove little.
    const ks = [...reference.values()].flat().map((x) => x.k);
    expect(new Set(ks).size).toBeGreaterThan(1);
  });

  it.each(variants)('%s (%s)', async (name, spec, what) => {
    const info = await fixtureModelInfo(name, spec);
    if (spec.externalWeights)
      expect(
        existsSync(
          path.join(info.dir, 'unet', spec.layout === 'optimum' ? 'model.onnx_data' : 'weights.pb'),
        ),
      ).toBe(true);
    for (const r of runs) {
      const out = await gen(info.dir, { ...r, batchSize: 2, seedMode: 'per-image' });
      if (spec.family === 'sd21v') expect(out.family).toBe('sd2-v');
      out.images.forEach((g, i) => {
        const want = reference.get(r.sampler)![i];
        const k = expectKnown(
          info,
          g.image,
          spec.dtype === 'float16' ? 8 : 6,
          `${what} ${r.sampler}`,
        );
        expect(k, `${what} ${r.sampler} image ${i}`).toBe(want.k);
        expect(diff(g.image.data, want.image.data).max).toBeLessThanOrEqual(
          spec.dtype === 'float16' ? 8 : 4,
        );
      });
    }
  });

  it('optimum >= 1.23 VAE (latent_parameters): img2img at low strength keeps its input', async () => {
    const info = await fixtureModelInfo('ka-latent-params', {
      unet: 'known-answer',
      vaeLatentParameters: true,
    });
    const input: PixelImage = {
      width: 64,
      height: 64,
      channels: 3,
      data: expectedImage(info, 3, 64, 64),
    };
    const out = await gen(
      info.dir,
      { mode: 'img2img', strength: 0.3, batchSize: 3, seedMode: 'per-image' },
      input,
    );
    for (const g of out.images) {
      expect(expectKnown(info, g.image)).toBe(3);
      expect(diff(g.image.data, input.data).mean).toBeLessThan(2);
    }
  });
});

describe('families', () => {
  it('LCM runs at 1-4 steps on its own timesteps, and lands on an x_k from 2 steps on', async () => {
    const info = await fixtureModelInfo('ka-lcm', { family: 'lcm', unet: 'known-answer' });
    const unet = await spyOn(engine, info.dir, 'unet');
    try {
      const expectedTimesteps: Record<number, number[]> = {
        1: [999],
        2: [999, 499],
        3: [999, 679, 339],
        4: [999, 759, 499, 259],
      };
      for (const steps of [1, 2, 3, 4]) {
        unet.calls.length = 0;
        const out = await gen(info.dir, { sampler: 'lcm', steps, guidance: 8, seed: 11 });
        expect(out.family).toBe('lcm');
        expect(unet.calls.map((c) => c.timestep.data[0])).toEqual(expectedTimesteps[steps]);
        const img = out.images[0].image;
        expect([img.width, img.height]).toEqual([64, 64]);
        if (steps >= 2) expectKnown(info, img, 6, `lcm ${steps} steps`);
      }
    } finally {
      unet.restore();
    }
  });

  it('SDXL: two encoders, zero uncond for an empty negative, text_embeds and time_ids, right size', async () => {
    const dir = await fixtureModel('sdxl', {
      family: 'sdxl',
      layout: 'optimum',
      externalWeights: true,
    });
    const unet = await spyOn(engine, dir, 'unet');
    try {
      const out = await gen(dir, {
        width: 64,
        height: 128,
        steps: 3,
        guidance: 5,
        sampler: 'euler_a',
      });
      expect(out.family).toMatch(/^sdxl/);
      const img = out.images[0].image;
      expect([img.width, img.height, img.channels]).toEqual([64, 128, 3]);
      expect(unet.calls).toHaveLength(3);
      const c = unet.calls[0];
      expect(c.sample.dims).toEqual([2, 4, 16, 8]);
      const [rows, seq, ctx] = c.encoder_hidden_states.dims;
      expect([rows, seq]).toEqual([2, 77]);
      expect(ctx).toBe(96); // 32 + 64: both encoders' penultimate states side by side
      const per = seq * ctx;
      const ehs = c.encoder_hidden_states.data;
      // force_zeros_for_empty_prompt: the uncond half is all zeros, the cond half is not.
      expect(ehs.slice(0, per).every((v) => v === 0)).toBe(true);
      expect(ehs.slice(per).some((v) => v !== 0)).toBe(true);
      const pooled = c.text_embeds;
      expect(pooled.dims).toEqual([2, 64]);
      expect(pooled.data.slice(0, 64).every((v) => v === 0)).toBe(true);
      expect(pooled.data.slice(64).some((v) => v !== 0)).toBe(true);
      // [orig h, orig w, crop top, crop left, target h, target w]
      expect(c.time_ids.dims).toEqual([2, 6]);
      expect(c.time_ids.data).toEqual([128, 64, 0, 0, 128, 64, 128, 64, 0, 0, 128, 64]);
      // A two-chunk prompt: the empty negative is zeros over both chunks (seq 154).
      unet.calls.length = 0;
      await gen(dir, { prompt: 'a cat BREAK a dog', steps: 1, guidance: 5 });
      const long = unet.calls[0].encoder_hidden_states;
      expect(long.dims).toEqual([2, 154, 96]);
      expect(long.data.slice(0, 154 * 96).every((v) => v === 0)).toBe(true);
      expect(long.data.slice(154 * 96).some((v) => v !== 0)).toBe(true);
    } finally {
      unet.restore();
    }
  });
});

describe('sizes', () => {
  it('any multiple of 8 from 64 up: 72x104 and 128x64 decode to the resized x_k', async () => {
    for (const [width, height] of [
      [72, 104],
      [128, 64],
    ]) {
      const out = await gen(ka.dir, {
        width,
        height,
        batchSize: 2,
        seed: 40,
        seedMode: 'per-image',
      });
      for (const g of out.images) {
        expect([g.image.width, g.image.height]).toEqual([width, height]);
        expectKnown(ka, g.image, 6, `${width}x${height}`);
      }
    }
  });

  it('refuses sizes that are not multiples of 8 (or below 64) with a clear bad-input', async () => {
    const bad = (over: Record<string, unknown>) =>
      engine.generate({
        modelDir: ka.dir,
        settings: { ...settings(), ...over } as GenerationSettings,
      });
    await expectEngineError(bad({ width: 100 }), 'bad-input', /width.*multiple of 8/i);
    await expectEngineError(bad({ height: 65 }), 'bad-input', /height.*multiple of 8/i);
    await expectEngineError(bad({ width: 40, height: 72 }), 'bad-input', /width.*at least 64/i);
    await expectEngineError(bad({ sampler: 'plms' }), 'bad-input', /sampler/i);
  });
});

describe('bad input and broken models', () => {
  let tmp: string;
  beforeAll(async () => {
    tmp = await mkdtemp(path.join(os.tmpdir(), 'pipeline-variants-'));
  });
  afterAll(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('the x4 upscaler used for txt2img: model-unsupported', async () => {
    const x4 = await fixtureModel('x4', { family: 'x4' });
    await expectEngineError(gen(x4), 'model-unsupported', /upscale/i);
  });

  it('a 9-channel inpainting model runs txt2img and img2img with everything masked', async () => {
    // The known-answer UNet reads only the 4 latent channels, so with the mask and masked-image
    // channels filled in (a mask of ones, an empty image's latents) the 9-channel model lands on
    // exactly the image the 4-channel one does. What the channels hold is checked on a real
    // model in builtin-model.test.ts.
    const inpaint = await fixtureModelInfo('ka-inpaint-x', {
      unet: 'known-answer',
      family: 'inpaint',
    });
    const nine = await gen(inpaint.dir, { seed: 5 });
    const four = await gen(ka.dir, { seed: 5 });
    expect(nine.family).toBe('inpaint');
    expect(
      Buffer.from(nine.images[0].image.data).equals(Buffer.from(four.images[0].image.data)),
    ).toBe(true);
    const init = four.images[0].image;
    const nineI2i = await gen(
      inpaint.dir,
      { mode: 'img2img', strength: 0.5, initImage: 'x.png', seed: 6 },
      init,
    );
    const fourI2i = await gen(
      ka.dir,
      { mode: 'img2img', strength: 0.5, initImage: 'x.png', seed: 6 },
      init,
    );
    expect(
      Buffer.from(nineI2i.images[0].image.data).equals(Buffer.from(fourI2i.images[0].image.data)),
    ).toBe(true);
  });

  it('corrupt folders give their EngineError naming the file; the engine keeps working', async () => {
    const copy = async (name: string, src = ka.dir) => {
      const dir = path.join(tmp, name);
      await cp(src, dir, { recursive: true });
      return dir;
    };
    // Not ONNX at all.
    const garbage = await copy('garbage-unet');
    await writeFile(
      path.join(garbage, 'unet', 'model.onnx'),
      'this is not a protobuf\n'.repeat(50),
    );
    const e1 = await expectEngineError(gen(garbage), 'model-corrupt', /unet\/model\.onnx/);
    expect(e1.file).toBe('unet/model.onnx');
    // A text encoder truncated in half: found at the first prompt encoding.
    const half = await copy('half-text-encoder');
    const te = path.join(half, 'text_encoder', 'model.onnx');
    await truncate(te, Math.floor((await readFile(te)).length / 2));
    await expectEngineError(gen(half), 'model-corrupt', /text_encoder\/model\.onnx/);
    // External weights cut short.
    const ext = await fixtureModelInfo('ka-sd15-ext', {
      unet: 'known-answer',
      externalWeights: true,
    });
    const cut = await copy('cut-weights', ext.dir);
    const weights = path.join(cut, 'unet', 'weights.pb');
    await truncate(weights, Math.floor((await readFile(weights)).length / 3));
    await expectEngineError(gen(cut), 'model-corrupt', /unet/);
    // No unet folder.
    const missing = await copy('no-unet');
    await rm(path.join(missing, 'unet'), { recursive: true });
    await expectEngineError(gen(missing), 'model-missing-file', /unet/);
    // Broken scheduler config.
    const sched = await copy('bad-scheduler');
    await writeFile(path.join(sched, 'scheduler', 'scheduler_config.json'), '{"beta_start": ');
    await expectEngineError(gen(sched), 'model-corrupt', /scheduler_config\.json/);
    // After all that, a good model still generates.
    const ok = await gen(ka.dir, { seed: 8 });
    expectKnown(ka, ok.images[0].image);
  });

  it('a 20,000-character prompt works (many chunks); one more character is refused', async () => {
    const unit = 'a red house on a hill, (blue sky:1.2), ';
    const prompt = unit.repeat(Math.ceil(20_000 / unit.length)).slice(0, 20_000);
    expect(prompt).toHaveLength(20_000);
    const unet = await spyOn(engine, ka.dir, 'unet');
    try {
      const out = await gen(ka.dir, { prompt, negativePrompt: 'blurry', steps: 4 });
      expectKnown(ka, out.images[0].image);
      const [rows, seq] = unet.calls[0].encoder_hidden_states.dims;
      expect(rows).toBe(2);
      expect(seq % 77).toBe(0);
      expect(seq / 77).toBeGreaterThan(20);
    } finally {
      unet.restore();
    }
    await expectEngineError(
      engine.generate({
        modelDir: ka.dir,
        settings: { ...settings(), prompt: prompt + 'x' },
      }),
      'bad-input',
      /prompt/,
    );
  });
});
