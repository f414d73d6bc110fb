// SDXL inpainting models (9-channel UNet with SDXL conditioning, e.g. diffusers/
// stable-diffusion-xl-1.0-inpainting-0.1) on fixture models of that shape: the known-answer one
// (exact denoiser, exact VAE codec at SDXL's scale 0.13025) shows the hole is completed from the
// matching stored latent and the rest is the input bit for bit; a random-weight UNet that really
// consumes text_embeds and time_ids shows the run is deterministic per seed; the UNet's feeds
// show SDXL's conditioning (both encoders, pooled text_embeds from text_encoder_2, 6 time_ids at
// the generated size) beside the mask and masked-image channels; and the CLI inpaints with it.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClipTokenizer, DiffusionEngine, EngineError } from '../../src/engine';
import type { GenerateResult, PixelImage } from '../../src/engine';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { detectFamily, openModelFolder } from '../../src/engine/models';
import { idsToOrt } from '../../src/engine/tensor';
import { familyCapabilities } from '../../src/shared';
import type { GenerationInput } from '../../src/shared/generation';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { bundleEntry } from './bundle';
import { expectKnown, knownImage, same, spyOnSession } from './known-answer';
import {
  type Rect,
  compare,
  inRect,
  inpaintSettings,
  paint,
  rectMask,
  texture,
} from './inpaint-helpers';

let ka: FixtureInfo;
let tiny: FixtureInfo;
let engine: DiffusionEngine;

beforeAll(async () => {
  // optimum's layout (unet/config.json says in_channels 9) and diffusers' (the channel dim is
  // dynamic: the pipeline class in model_index.json says 9 channels).
  ka = await fixtureModelInfo('ka-sdxl-inpaint', {
    family: 'sdxl-inpaint',
    layout: 'optimum',
    unet: 'known-answer',
  });
  tiny = await fixtureModelInfo('tiny-sdxl-inpaint', {
    family: 'sdxl-inpaint',
    externalWeights: true,
  });
  engine = new DiffusionEngine({ previewEvery: 0 });
});
afterAll(async () => {
  await engine.release();
});

const settings = inpaintSettings;

function gen(
  info: FixtureInfo,
  over: Partial<GenerationInput>,
  initImage: PixelImage | null,
  maskImage: PixelImage | null = null,
): Promise<GenerateResult> {
  return engine.generate({ modelDir: info.dir, settings: settings(over), initImage, maskImage });
}

const TL: Rect = { x0: 0, y0: 0, x1: 32, y1: 32 };
const BR: Rect = { x0: 32, y0: 32, x1: 64, y1: 64 };

describe('SDXL inpainting models are recognised', () => {
  it.each([
    ['optimum', () => ka],
    ['diffusers', () => tiny],
  ] as const)(
    '%s layout: family sdxl-inpaint, SDXL scaling, inpaints and generates',
    async (_, info) => {
      const f = detectFamily(await openModelFolder(info().dir));
      expect(f.family).toBe('sdxl-inpaint');
      expect(f.unetInChannels).toBe(9);
      expect(f.sdxlConditioning).toBe(true);
      expect(f.vaeScalingFactor).toBe(0.13025);
      expect(f.vaeForceUpcast).toBe(true);
      expect(f.reasons.join(' | ')).toContain('SDXL inpainting UNet');
      expect(familyCapabilities(f.family)).toEqual({
        generate: true,
        inpaint: true,
        upscale: false,
      });
    },
  );

  it('refuses what it does not run with one sentence: the refiner-style 5 time_ids, a missing time_ids, LCM', async () => {
    const info = await openModelFolder(tiny.dir);
    const unet = info.components.unet!.signature;
    const withInputs = (inputs: typeof unet.inputs) => ({ unet: { ...unet, inputs } });
    const refuse = (sig: ReturnType<typeof withInputs>): EngineError => {
      try {
        detectFamily(info, sig);
      } catch (e) {
        expect(e).toBeInstanceOf(EngineError);
        expect((e as EngineError).message).toMatch(/^[^\n]+\.$/);
        return e as EngineError;
      }
      throw new Error('expected a refusal');
    };
    const five = refuse(
      withInputs(
        unet.inputs.map((i) => (i.name === 'time_ids' ? { ...i, shape: ['batch_size', 5] } : i)),
      ),
    );
    expect(five.code).toBe('model-unsupported');
    expect(five.message).toMatch(/takes 5 time_ids; the SDXL refiner/);
    const noIds = refuse(withInputs(unet.inputs.filter((i) => i.name !== 'time_ids')));
    expect(noIds.code).toBe('model-shape');
    expect(noIds.message).toMatch(/text_embeds but no time_ids; SDXL UNets take both/);
    const lcm = refuse(
      withInputs([
        ...unet.inputs,
        { name: 'timestep_cond', type: 'float32', shape: ['batch_size', 256] },
      ]),
    );
    expect(lcm.code).toBe('model-unsupported');
    expect(lcm.message).toMatch(/LCM-SDXL/);
  });
});

describe('SDXL inpainting completes the hole from the matching stored latent', () => {
  it.each([
    [0, 'original', TL],
    [3, 'edge', BR],
  ] as const)(
    'x_%i with a quadrant painted over (fill %s) comes back as x_k',
    async (k, fill, hole) => {
      const truth = knownImage(ka, k, 64, 64);
      const init = paint(truth, hole, [128, 128, 128]);
      const r = await gen(
        ka,
        { mask: { image: 'm', blur: 0, fill } },
        init,
        rectMask(64, 64, hole),
      );
      expect(r.family).toBe('sdxl-inpaint');
      const out = r.images[0].image;
      expect([out.width, out.height, out.channels]).toEqual([64, 64, 3]);
      const inHole = compare(out, truth, (x, y) => inRect(hole, x, y));
      expect(inHole.max, `k=${k}`).toBeLessThanOrEqual(3);
      expect(compare(out, init, (x, y) => inRect(hole, x, y)).differing).toBe(inHole.count);
      expect(compare(out, init, (x, y) => !inRect(hole, x, y)).max).toBe(0);
    },
  );

  it('text to image (everything masked, as diffusers allows) lands on a stored latent', async () => {
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    let r: GenerateResult;
    try {
      r = await engine.generate({
        modelDir: ka.dir,
        settings: settings({ mode: 'txt2img', initImage: null, mask: null, steps: 16, seed: 9 }),
        initImage: null,
        maskImage: null,
      });
    } finally {
      unet.restore();
    }
    expect(r.family).toBe('sdxl-inpaint');
    expectKnown(ka, r.images[0].image, 6, 'sdxl-inpaint txt2img');
    // The mask covers everything; the masked image is all masked (zeros: mid grey, encoded).
    const f = unet.calls[0].feeds;
    expect(f.sample.dims).toEqual([1, 9, 8, 8]);
    const sample = f.sample.data as Float32Array;
    expect(sample.subarray(4 * 64, 5 * 64).every((v) => v === 1)).toBe(true);
    expect(sample.subarray(5 * 64).every((v) => Math.abs(v) < 1e-6)).toBe(true);
    expect(f.time_ids.data).toEqual(Float32Array.from([64, 64, 0, 0, 64, 64]));
  });
});

describe("the UNet gets SDXL's conditioning beside the mask and the masked image", () => {
  it('sample = [latents | mask | 0.13025 * encode(masked image)], pooled text_embeds of text_encoder_2, time_ids at the generated size', async () => {
    const k = 1;
    // 64 wide, 128 tall: x_k on top, a texture below; the hole is x_k's top-left quadrant.
    const top = knownImage(ka, k, 64, 64);
    const below = texture(64, 64, 4);
    const init = paint(
      {
        width: 64,
        height: 128,
        channels: 3,
        data: Buffer.concat([Buffer.from(top.data), Buffer.from(below.data)]),
      },
      TL,
      [250, 10, 10],
    );
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    try {
      await gen(
        ka,
        { guidance: 5, steps: 3, strength: 1, negativePrompt: '', width: 64, height: 128 },
        init,
        rectMask(64, 128, TL),
      );
    } finally {
      unet.restore();
    }
    expect(unet.calls).toHaveLength(3);
    const f = unet.calls[0].feeds;
    expect(f.sample.dims).toEqual([2, 9, 16, 8]); // [uncond; cond] x (4 + 1 + 4), 128x64 px
    const sample = f.sample.data as Float32Array;
    const plane = 16 * 8;
    const z = ka.knownLatents![k]; // [4, 8, 8], already scaled by 0.13025
    for (let row = 0; row < 2; row++) {
      const base = row * 9 * plane;
      for (let y = 0; y < 8; y++)
        for (let x = 0; x < 8; x++) {
          const hole = x < 4 && y < 4;
          expect(sample[base + 4 * plane + y * 8 + x]).toBe(hole ? 1 : 0);
          for (let c = 0; c < 4; c++) {
            const got = sample[base + (5 + c) * plane + y * 8 + x];
            const want = hole ? 0 : z[c * 64 + y * 8 + x];
            expect(Math.abs(got - want), `row ${row} c ${c} (${x},${y})`).toBeLessThan(0.01);
          }
        }
    }
    // Both encoders' states side by side; the empty negative is zeros (force_zeros_for_empty_prompt).
    const D2 = ka.hiddenSize2!;
    expect(f.encoder_hidden_states.dims).toEqual([2, 77, ka.ctx]);
    const ehs = f.encoder_hidden_states.data as Float32Array;
    expect(ehs.subarray(0, 77 * ka.ctx).every((v) => v === 0)).toBe(true);
    expect(ehs.subarray(77 * ka.ctx).some((v) => v !== 0)).toBe(true);
    // text_embeds: text_encoder_2's pooled, projected output for the prompt; zeros for uncond.
    expect(f.text_embeds.dims).toEqual([2, D2]);
    const pooled = f.text_embeds.data as Float32Array;
    expect(pooled.subarray(0, D2).every((v) => v === 0)).toBe(true);
    const want = await pooledOf(ka, 'fill the hole');
    for (let i = 0; i < D2; i++) expect(pooled[D2 + i]).toBeCloseTo(want[i], 5);
    // diffusers' base inpainting model (requires_aesthetics_score false): original size, crop
    // top-left, target size, all (height, width) of what is generated.
    expect(f.time_ids.dims).toEqual([2, 6]);
    expect(Array.from(f.time_ids.data)).toEqual([128, 64, 0, 0, 128, 64, 128, 64, 0, 0, 128, 64]);
  });

  it('"only masked" generates the crop at the processing size, and time_ids say that size', async () => {
    const init = texture(128, 128, 3);
    const hole: Rect = { x0: 84, y0: 12, x1: 100, y1: 30 };
    const unet = await spyOnSession(engine, ka.dir, 'unet');
    let r: GenerateResult;
    try {
      r = await gen(
        ka,
        { mask: { image: 'm', blur: 2, onlyMasked: true, padding: 8 }, steps: 4 },
        init,
        rectMask(128, 128, hole),
      );
    } finally {
      unet.restore();
    }
    const f = unet.calls[0].feeds;
    expect(f.sample.dims).toEqual([1, 9, 8, 8]);
    expect(Array.from(f.time_ids.data)).toEqual([64, 64, 0, 0, 64, 64]);
    const out = r.images[0].image;
    expect([out.width, out.height]).toEqual([128, 128]);
    // Far from the hole (beyond the blur's reach) the picture is the input.
    const near = (x: number, y: number) => x >= 76 && x < 108 && y >= 4 && y < 38;
    expect(compare(out, init, (x, y) => !near(x, y)).max).toBe(0);
    expect(compare(out, init, (x, y) => inRect(hole, x, y)).differing).toBeGreaterThan(200);
  });
});

/** text_encoder_2's pooled `text_embeds` for a prompt, run directly on the folder's files. */
async function pooledOf(info: FixtureInfo, prompt: string): Promise<Float32Array> {
  const tokenizer = await ClipTokenizer.fromFolder(path.join(info.dir, 'tokenizer_2'));
  const ids = tokenizer.tokenizeWeighted(prompt).chunks[0].ids;
  const session = await ort.InferenceSession.create(
    path.join(info.dir, 'text_encoder_2', 'model.onnx'),
  );
  try {
    const spec = { name: 'input_ids', type: info.inputIds, shape: ['batch', 77] };
    const out = await session.run({ input_ids: idsToOrt(ids, [1, ids.length], spec, 'te2') });
    return Float32Array.from(out.text_embeds.data as Float32Array);
  } finally {
    await session.release();
  }
}

describe('a random-weight SDXL inpainting UNet (text_embeds and time_ids really used)', () => {
  const hole: Rect = { x0: 16, y0: 8, x1: 48, y1: 40 };
  const run = (over: Partial<GenerationInput>) =>
    gen(
      tiny,
      { steps: 4, guidance: 4, sampler: 'euler_a', ...over },
      texture(64, 64, 7),
      rectMask(64, 64, hole),
    );

  it('is deterministic per seed, differs between seeds and prompts, keeps the unmasked area', async () => {
    const a = (await run({ seed: 11 })).images[0].image;
    const b = (await run({ seed: 11 })).images[0].image;
    const c = (await run({ seed: 12 })).images[0].image;
    const d = (await run({ seed: 11, prompt: 'something else entirely' })).images[0].image;
    expect(same(a, b)).toBe(true);
    expect(same(a, c)).toBe(false);
    expect(same(a, d)).toBe(false);
    const init = texture(64, 64, 7);
    for (const img of [a, c, d]) {
      expect(compare(img, init, (x, y) => !inRect(hole, x, y)).max).toBe(0);
      expect(compare(img, init, (x, y) => inRect(hole, x, y)).differing).toBeGreaterThan(500);
    }
  });
});

describe('a converted SDXL inpainting checkpoint (9-channel conv_in, SDXL conditioning)', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-inpaint-sdxl-convert-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('converts into a folder the engine detects as sdxl-inpaint and inpaints with', async () => {
    const { file, arch } = await smallCheckpoint(tmp, 'sdxl', undefined, { inpainting: true });
    const out = path.join(tmp, 'model');
    const result = await convertCheckpoint(file, out, {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      precision: 'fp32',
    });
    expect(result.unusedKeys).toEqual([]);
    const index = JSON.parse(fs.readFileSync(path.join(out, 'model_index.json'), 'utf8'));
    expect(index._class_name).toBe('ORTStableDiffusionXLInpaintPipeline');
    const family = detectFamily(await openModelFolder(out));
    expect(family).toMatchObject({
      family: 'sdxl-inpaint',
      unetInChannels: 9,
      sdxlConditioning: true,
      vaeScalingFactor: 0.13025,
    });
    // The recorded small VAE downsamples 2x, not 8x; the converted UNet and text encoders run
    // here with the fixture's 8x patch codec in its place (the VAE is not what is under test).
    for (const part of ['vae_encoder', 'vae_decoder'])
      fs.copyFileSync(path.join(tiny.dir, part, 'model.onnx'), path.join(out, part, 'model.onnx'));

    const init = texture(64, 64, 9);
    const hole: Rect = { x0: 8, y0: 24, x1: 40, y1: 56 };
    const run = async () =>
      (
        await engine.generate({
          modelDir: out,
          settings: settings({ steps: 2, guidance: 5, seed: 21 }),
          initImage: init,
          maskImage: rectMask(64, 64, hole),
        })
      ).images[0].image;
    const a = await run();
    expect([a.width, a.height, a.channels]).toEqual([64, 64, 3]);
    expect(compare(a, init, (x, y) => !inRect(hole, x, y)).max).toBe(0);
    expect(compare(a, init, (x, y) => inRect(hole, x, y)).differing).toBeGreaterThan(500);
    expect(same(a, await run())).toBe(true);
  });
});

describe('CLI: --model with an SDXL inpainting folder, --init and --mask', () => {
  let tmp: string;
  let cli: string;
  beforeAll(async () => {
    cli = await bundleEntry('src/main/cli.ts', 'cli-inpaint-sdxl');
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-inpaint-sdxl-cli-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('inpaints: the hole is x_k again, every other pixel is the input', async () => {
    const k = 2;
    const truth = knownImage(ka, k, 64, 64);
    const init = paint(truth, BR, [128, 128, 128]);
    const initPng = path.join(tmp, 'init.png');
    const maskPng = path.join(tmp, 'mask.png');
    const outPng = path.join(tmp, 'out.png');
    await sharp(Buffer.from(init.data), { raw: { width: 64, height: 64, channels: 3 } })
      .png()
      .toFile(initPng);
    const mask = rectMask(64, 64, BR);
    await sharp(Buffer.from(mask.data), { raw: { width: 64, height: 64, channels: 1 } })
      .png()
      .toFile(maskPng);
    const r = spawnSync(
      process.execPath,
      [
        cli,
        '--model',
        ka.dir,
        '--prompt',
        'x',
        '--init',
        initPng,
        '--mask',
        maskPng,
        '--mask-blur',
        '0',
        '--steps',
        '12',
        '--seed',
        '4',
        '--out',
        outPng,
        '--quiet',
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const { data, info } = await sharp(outPng).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([64, 64, 3]);
    const out: PixelImage = { width: 64, height: 64, channels: 3, data: new Uint8Array(data) };
    expect(compare(out, truth, (x, y) => inRect(BR, x, y)).max).toBeLessThanOrEqual(3);
    expect(compare(out, init, (x, y) => !inRect(BR, x, y)).max).toBe(0);
  });
});
