// Inpainting and outpainting on the known-answer fixtures (TESTING.md): the UNet is the exact
// denoiser for a few latents x_k whose decodes are four flat quadrants, and the fixture VAE is an
// exact 8x8 patch codec. So "fill the hole with the matching content" is checkable per pixel:
// an image of x_k with one quadrant painted over must come back as x_k, for a 4-channel model
// (known latents blended back every step) and a 9-channel one (mask + masked-image latents in
// the UNet input), while every pixel outside the feathered mask is the input's, bit for bit.

import type * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DiffusionEngine, EngineError, TorchGenerator } from '../../src/engine';
import { parseSchedulerConfig, planSampling } from '../../src/engine/schedulers';
import type { GenerateResult, PixelImage } from '../../src/engine';
import {
  binarizeMask,
  featherMask,
  featherReach,
  growMask,
  maskFromImage,
} from '../../src/engine/image';
import { outpaintBand } from '../../src/engine/pipelines/outpaint';
import type { GenerationInput } from '../../src/shared/generation';
import { type FixtureInfo, SCHEDULER_CONFIGS, fixtureModelInfo } from '../fixtures/models';
import { knownImage } from './known-answer';
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
let ka9: FixtureInfo;
let engine: DiffusionEngine;

beforeAll(async () => {
  ka = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
  ka9 = await fixtureModelInfo('ka-inpaint', { family: 'inpaint', unet: 'known-answer' });
  engine = new DiffusionEngine({ previewEvery: 0 });
});
afterAll(async () => {
  await engine.release();
});

const settings = inpaintSettings;

async function gen(
  info: FixtureInfo,
  over: Partial<GenerationInput>,
  initImage: PixelImage | null,
  maskImage: PixelImage | null = null,
): Promise<GenerateResult> {
  return engine.generate({ modelDir: info.dir, settings: settings(over), initImage, maskImage });
}

/** Records the UNet's feeds (calling through to the real session). */
async function spyUnet(info: FixtureInfo) {
  const model = await engine.load(info.dir);
  const session = (await model.session('unet')).session;
  const calls: Record<string, { dims: number[]; data: Float32Array }>[] = [];
  const original = session.run.bind(session) as (...args: unknown[]) => Promise<unknown>;
  const spy = vi.spyOn(session, 'run').mockImplementation((async (...args: unknown[]) => {
    const feeds = args[0] as Record<string, ort.Tensor>;
    const rec: (typeof calls)[number] = {};
    for (const [name, t] of Object.entries(feeds))
      if (t.type === 'float32')
        rec[name] = { dims: [...t.dims], data: Float32Array.from(t.data as Float32Array) };
    calls.push(rec);
    return original(...args);
  }) as never);
  return { calls, restore: () => spy.mockRestore() };
}

async function expectEngineError(p: Promise<unknown>, code: string, message: RegExp) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(EngineError);
  expect((err as EngineError).code).toBe(code);
  expect((err as EngineError).message).toMatch(message);
}

const TL: Rect = { x0: 0, y0: 0, x1: 32, y1: 32 };
const BR: Rect = { x0: 32, y0: 32, x1: 64, y1: 64 };

describe('inpainting completes the hole from the matching stored latent', () => {
  it.each([
    ['4-channel (latent blending)', 'ka', 0, TL, 'original'],
    ['4-channel, edge fill', 'ka', 1, BR, 'edge'],
    ['4-channel, noise fill', 'ka', 2, TL, 'noise'],
    ['9-channel (inpainting UNet)', 'ka9', 0, TL, 'original'],
    ['9-channel, edge fill', 'ka9', 3, BR, 'edge'],
  ] as const)(
    '%s: x_k with a quadrant painted over comes back as x_k',
    async (_, which, k, hole, fill) => {
      const info = which === 'ka' ? ka : ka9;
      const truth = knownImage(info, k, 64, 64);
      const init = paint(truth, hole, [128, 128, 128]);
      const r = await gen(
        info,
        { mask: { image: 'm', blur: 0, fill } },
        init,
        rectMask(64, 64, hole),
      );
      const out = r.images[0].image;
      expect([out.width, out.height, out.channels]).toEqual([64, 64, 3]);
      // The hole now shows x_k's colour there (it was gray).
      const inHole = compare(out, truth, (x, y) => inRect(hole, x, y));
      expect(inHole.max, `${which} k=${k}`).toBeLessThanOrEqual(3);
      expect(compare(out, init, (x, y) => inRect(hole, x, y)).differing).toBe(inHole.count);
      // Everything else is the input, bit for bit.
      expect(compare(out, init, (x, y) => !inRect(hole, x, y)).max).toBe(0);
    },
  );

  it('9-channel: the UNet gets concat(latents, mask at latent size, scaling * encode(image * (mask < 0.5))), batched for guidance', async () => {
    const k = 1;
    const truth = knownImage(ka9, k, 64, 64);
    const init = paint(truth, TL, [250, 10, 10]);
    const unet = await spyUnet(ka9);
    try {
      await gen(ka9, { guidance: 5, steps: 3, strength: 1 }, init, rectMask(64, 64, TL));
    } finally {
      unet.restore();
    }
    expect(unet.calls).toHaveLength(3);
    const sample = unet.calls[0].sample;
    expect(sample.dims).toEqual([2, 9, 8, 8]); // [uncond; cond] x (4 + 1 + 4)
    const z = ka9.knownLatents![k];
    for (let row = 0; row < 2; row++) {
      const base = row * 9 * 64;
      for (let y = 0; y < 8; y++)
        for (let x = 0; x < 8; x++) {
          const hole = x < 4 && y < 4;
          expect(sample.data[base + 4 * 64 + y * 8 + x]).toBe(hole ? 1 : 0);
          for (let c = 0; c < 4; c++) {
            const got = sample.data[base + (5 + c) * 64 + y * 8 + x];
            const want = hole ? 0 : z[c * 64 + y * 8 + x];
            expect(Math.abs(got - want), `row ${row} c ${c} (${x},${y})`).toBeLessThan(0.01);
          }
        }
      // Both halves of the guidance batch carry the same latents and conditioning.
      expect(Array.from(sample.data.subarray(base, base + 9 * 64))).toEqual(
        Array.from(sample.data.subarray(0, 9 * 64)),
      );
    }
  });

  it('4-channel: the known latents are put back after every step (noised to the next sigma with the same noise)', async () => {
    const k = 2;
    const truth = knownImage(ka, k, 64, 64);
    const init = paint(truth, TL, [128, 128, 128]);
    const unet = await spyUnet(ka);
    try {
      await gen(ka, { steps: 6, strength: 1 }, init, rectMask(64, 64, TL));
    } finally {
      unet.restore();
    }
    // Every call after a step sees, outside the hole, exactly the image latents noised to that
    // step's sigma with the starting noise: (z + noise * s) / sqrt(s^2 + 1).
    const z = ka.knownLatents![k];
    const noise = new TorchGenerator(3).randn([1, 4, 8, 8]);
    const plan = planSampling(parseSchedulerConfig(SCHEDULER_CONFIGS.sd15), 'euler', 6);
    expect(unet.calls).toHaveLength(6);
    let holeDiffers = 0;
    for (let step = 1; step < 6; step++) {
      const s = plan.sigmas[step];
      const x = unet.calls[step].sample.data;
      for (let ch = 0; ch < 4; ch++)
        for (let y = 0; y < 8; y++)
          for (let xx = 0; xx < 8; xx++) {
            const i = ch * 64 + y * 8 + xx;
            const c = 1 / Math.sqrt(s * s + 1);
            if (xx < 4 && y < 4) {
              // The hole is free: not the (gray, ~0) image latents noised.
              holeDiffers += Math.abs(x[i] - noise[i] * s * c) > 0.05 ? 1 : 0;
            } else {
              // z from an 8-bit image: within the codec's quantization (scaling * 8 / 255).
              const want = (z[i] + noise[i] * s) * c;
              expect(Math.abs(x[i] - want), `step ${step} ${i}`).toBeLessThan(0.006 * c + 1e-5);
            }
          }
    }
    expect(holeDiffers).toBeGreaterThan(0);
  });
});

/** Pixels the feathered mask can touch: within `reach` of the grown binary mask. */
function featherSupport(mask: PixelImage, grow: number, blur: number) {
  const m = featherMask(
    growMask(binarizeMask(maskFromImage(mask, mask.width, mask.height).mask), grow),
    blur,
  );
  return (x: number, y: number) => m.data[y * mask.width + x] > 0;
}

function discMask(width: number, height: number, cx: number, cy: number, r: number): PixelImage {
  const data = new Uint8Array(width * height);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++)
      data[y * width + x] = (x - cx) ** 2 + (y - cy) ** 2 <= r * r ? 255 : 0;
  return { width, height, channels: 1, data };
}

describe('outside the feathered mask the input comes back bit-identical', () => {
  it.each([
    ['4-channel', 'ka'],
    ['9-channel', 'ka9'],
  ] as const)('%s: blur 4, grow 3, a disc on a textured picture', async (_, which) => {
    const info = which === 'ka' ? ka : ka9;
    const init = texture(64, 64, 7);
    const mask = discMask(64, 64, 40, 22, 9);
    const r = await gen(info, { mask: { image: 'm', blur: 4, grow: 3 } }, init, mask);
    const out = r.images[0].image;
    const touched = featherSupport(mask, 3, 4);
    const outside = compare(out, init, (x, y) => !touched(x, y));
    expect(outside.count).toBeGreaterThan(2000);
    expect(outside.max).toBe(0);
    // Inside the disc the picture was repainted.
    const inside = compare(out, init, (x, y) => (x - 40) ** 2 + (y - 22) ** 2 <= 64);
    expect(inside.differing).toBeGreaterThan(inside.count * 0.9);
  });

  it('the mask can be RGB(A) and of another size (nearest-resized to the image)', async () => {
    const truth = knownImage(ka, 0, 64, 64);
    const init = paint(truth, TL, [128, 128, 128]);
    // 16x16 RGBA, TL quadrant white and opaque; elsewhere white but transparent (= keep).
    const small = new Uint8Array(16 * 16 * 4);
    for (let y = 0; y < 16; y++)
      for (let x = 0; x < 16; x++)
        small.set([255, 255, 255, x < 8 && y < 8 ? 255 : 0], (y * 16 + x) * 4);
    const a = await gen(ka, {}, init, { width: 16, height: 16, channels: 4, data: small });
    const b = await gen(ka, {}, init, rectMask(64, 64, TL));
    expect(Buffer.from(a.images[0].image.data).equals(Buffer.from(b.images[0].image.data))).toBe(
      true,
    );
  });

  it('invert: a mask painted over the keep area repaints the rest', async () => {
    const truth = knownImage(ka, 2, 64, 64);
    const init = paint(truth, BR, [128, 128, 128]);
    const keep = rectMask(64, 64, { x0: 0, y0: 0, x1: 64, y1: 32 }); // top half = keep
    const keepLeft = rectMask(64, 64, { x0: 0, y0: 0, x1: 32, y1: 64 });
    // Repaint = not (top half or left half) = BR quadrant.
    const data = keep.data.map((v, i) => Math.max(v, keepLeft.data[i]));
    const r = await gen(ka, { mask: { image: 'm', blur: 0, invert: true } }, init, {
      ...keep,
      data,
    });
    const out = r.images[0].image;
    expect(compare(out, truth, (x, y) => inRect(BR, x, y)).max).toBeLessThanOrEqual(3);
    expect(compare(out, init, (x, y) => !inRect(BR, x, y)).max).toBe(0);
  });
});

describe('only masked: crop, generate at the processing size, paste back', () => {
  it('a small hole in a 128x128 picture is generated as a 64x64 crop; the rest is untouched', async () => {
    const init = texture(128, 128, 3);
    const hole: Rect = { x0: 84, y0: 12, x1: 100, y1: 30 };
    const mask = rectMask(128, 128, hole);
    const unet = await spyUnet(ka);
    let r: GenerateResult;
    try {
      r = await gen(
        ka,
        { mask: { image: 'm', blur: 2, onlyMasked: true, padding: 8 }, width: 64, height: 64 },
        init,
        mask,
      );
    } finally {
      unet.restore();
    }
    // The UNet ran at the processing size, not the picture's.
    expect(unet.calls[0].sample.dims).toEqual([1, 4, 8, 8]);
    const out = r.images[0].image;
    expect([out.width, out.height]).toEqual([128, 128]);
    const touched = featherSupport(mask, 0, 2);
    expect(compare(out, init, (x, y) => !touched(x, y)).max).toBe(0);
    const inside = compare(out, init, (x, y) => inRect(hole, x, y));
    expect(inside.differing).toBeGreaterThan(inside.count * 0.9);
  });

  it('a crop the size of the processing size pastes the known-answer fill exactly', async () => {
    // 128x64 picture: x_k on the right 64x64, a flat gray left half; the hole is x_k's TR
    // quadrant. padding 32 makes the crop exactly the right half, generated at 64x64 untouched
    // by resizing, so the fill must be x_k's colour.
    const k = 1;
    const truth = knownImage(ka, k, 64, 64);
    const data = new Uint8Array(128 * 64 * 3).fill(128);
    for (let y = 0; y < 64; y++)
      data.set(truth.data.subarray(y * 192, (y + 1) * 192), (y * 128 + 64) * 3);
    const hole: Rect = { x0: 96, y0: 0, x1: 128, y1: 32 };
    const init = paint({ width: 128, height: 64, channels: 3, data }, hole, [128, 128, 128]);
    const r = await gen(
      ka,
      { mask: { image: 'm', blur: 0, onlyMasked: true, padding: 32 }, width: 64, height: 64 },
      init,
      rectMask(128, 64, hole),
    );
    const out = r.images[0].image;
    const tr = 32 * 3;
    const want = paint(init, hole, [truth.data[tr], truth.data[tr + 1], truth.data[tr + 2]]);
    expect(compare(out, want, (x, y) => inRect(hole, x, y)).max).toBeLessThanOrEqual(3);
    expect(compare(out, init, (x, y) => !inRect(hole, x, y)).max).toBe(0);
  });
});

describe('outpainting', () => {
  it('extends the canvas; the original away from the seam is identical; the new area is a stored latent', async () => {
    const k = 0;
    const init = knownImage(ka, k, 64, 64);
    const r = await gen(
      ka,
      {
        mode: 'outpaint',
        mask: null,
        outpaint: { right: 32, bottom: 0, left: 0, top: 0 },
        strength: 1,
      },
      init,
    );
    const out = r.images[0].image;
    expect([out.width, out.height]).toEqual([96, 64]);
    const band = outpaintBand(4) + featherReach(4);
    const kept = compare(out, { ...out, data: embed(init, 96, 64, 0, 0) }, (x) => x < 64 - band);
    expect(kept.max).toBe(0);
    // The new strip is not the edge fill left as it was: it was denoised into content.
    const strip = (x: number) => x >= 64 + 8;
    let best = Infinity;
    for (let j = 0; j < ka.knownLatents!.length; j++) {
      const d = compare(out, knownImage(ka, j, 96, 64), (x) => strip(x)).max;
      best = Math.min(best, d);
    }
    expect(best).toBeLessThanOrEqual(6);
  });

  it('any side, with the 9-channel model: sizes add up and the centre is untouched', async () => {
    const init = texture(64, 64, 5);
    const r = await gen(
      ka9,
      {
        mode: 'outpaint',
        mask: { image: 'outpaint', blur: 2, fill: 'edge' },
        outpaint: { left: 16, top: 8, right: 0, bottom: 24 },
      },
      init,
    );
    const out = r.images[0].image;
    expect([out.width, out.height]).toEqual([80, 96]);
    const band = outpaintBand(2) + featherReach(2);
    const placed = embed(init, 80, 96, 16, 8);
    const centre = compare(
      out,
      { ...out, data: placed },
      (x, y) => x >= 16 + band && x < 80 && y >= 8 + band && y < 8 + 64 - band,
    );
    expect(centre.count).toBeGreaterThan(1000);
    expect(centre.max).toBe(0);
  });
});

/** `img` placed at (left, top) on a black width x height canvas. */
function embed(img: PixelImage, width: number, height: number, left: number, top: number) {
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < img.height; y++)
    out.set(
      img.data.subarray(y * img.width * 3, (y + 1) * img.width * 3),
      ((y + top) * width + left) * 3,
    );
  return out;
}

describe('clear errors', () => {
  it('missing mask, missing image, empty mask, nothing to outpaint, 9-channel model without a mask', async () => {
    const init = knownImage(ka, 0, 64, 64);
    await expectEngineError(gen(ka, {}, init, null), 'bad-input', /needs a mask image/);
    await expectEngineError(
      gen(ka, {}, null, rectMask(64, 64, TL)),
      'bad-input',
      /needs an input image/,
    );
    const empty = rectMask(64, 64, { x0: 0, y0: 0, x1: 0, y1: 0 });
    await expectEngineError(gen(ka, {}, init, empty), 'bad-input', /mask is empty/);
    await expectEngineError(
      gen(
        ka,
        { mask: { image: 'm', invert: true } },
        init,
        rectMask(64, 64, { x0: 0, y0: 0, x1: 64, y1: 64 }),
      ),
      'bad-input',
      /inverted mask is empty/,
    );
    await expectEngineError(
      gen(
        ka,
        { mask: { image: 'm', grow: -20 } },
        init,
        rectMask(64, 64, { x0: 0, y0: 0, x1: 8, y1: 8 }),
      ),
      'bad-input',
      /empty after shrinking/,
    );
    await expectEngineError(
      gen(ka, { mode: 'outpaint', mask: null, outpaint: null }, init),
      'bad-input',
      /at least one side/,
    );
    // (A 9-channel model outside the inpaint mode runs with everything masked: see
    // pipeline-variants.test.ts.)
  });
});
