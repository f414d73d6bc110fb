// A generation when memory is tight (pipelines/memory.ts, README "Performance"): with a memory
// budget below the UNet call's estimate the engine releases the text encoders' sessions after
// encoding the prompts (textEncodersInTheWay), the image is the same as with them kept, the
// encoded prompt is reused without them, and a new prompt creates them again; with a budget below
// one decoder call the decode runs in tiles (decodeGrid) and gives the untiled image up to the
// blend at tile edges. Real sessions on the known-answer fixture.
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { DiffusionEngine } from '../../src/engine';
import { unetCallBytes, vaeCallBytes } from '../../src/engine/pipelines/memory';
import { GenerationSettings, type GenerationInput } from '../../src/shared/generation';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';
import { diff } from './known-answer';

function settings(over: Partial<GenerationInput> = {}): GenerationSettings {
  return GenerationSettings.parse({
    model: 'fixture',
    prompt: 'a red house on a hill',
    seed: 3,
    sampler: 'euler',
    steps: 4,
    guidance: 7,
    width: 128,
    height: 128,
    ...over,
  });
}

let ka: FixtureInfo;
const roomy = new DiffusionEngine({ previewEvery: 0 });
const tight = new DiffusionEngine({ previewEvery: 0, memoryBudgetMb: 1 });

beforeAll(async () => {
  ka = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
});

afterAll(async () => {
  await roomy.release();
  await tight.release();
});

describe('text encoders under a tight memory budget', () => {
  it('are released before the UNet runs, with the same image; a new prompt creates them again', async () => {
    const model = await tight.load(ka.dir);
    // The budget is below one UNet call at 128x128 (16x16 latents, CFG rows 2).
    expect(unetCallBytes(model, 2, 16, 16)).toBeGreaterThan(1024 * 1024);
    const kept = await roomy.generate({ modelDir: ka.dir, settings: settings() });
    expect((await roomy.load(ka.dir)).attention.text_encoder).toBeDefined();

    const released = await tight.generate({ modelDir: ka.dir, settings: settings() });
    expect(released.images[0].image.data).toEqual(kept.images[0].image.data);
    expect(model.attention.text_encoder).toBeUndefined();
    expect(model.attention.unet).toBeDefined();

    // Which sessions the pipelines ask the model for from here on.
    const asked: string[] = [];
    const session = model.session.bind(model);
    model.session = (name) => {
      asked.push(name);
      return session(name);
    };

    // The same prompt again: encoded already, so no text encoder is asked for.
    const again = await tight.generate({ modelDir: ka.dir, settings: settings({ seed: 4 }) });
    expect(asked).toContain('unet');
    expect(asked).not.toContain('text_encoder');
    const keptAgain = await roomy.generate({ modelDir: ka.dir, settings: settings({ seed: 4 }) });
    expect(again.images[0].image.data).toEqual(keptAgain.images[0].image.data);

    // A new prompt: the encoder is created again, runs, and is released again.
    const prompt = 'a blue boat on a lake';
    const fresh = await tight.generate({ modelDir: ka.dir, settings: settings({ prompt }) });
    expect(asked).toContain('text_encoder');
    expect(model.attention.text_encoder).toBeUndefined();
    const freshKept = await roomy.generate({ modelDir: ka.dir, settings: settings({ prompt }) });
    expect(fresh.images[0].image.data).toEqual(freshKept.images[0].image.data);
  }, 300_000);

  it('the decode runs in tiles when one decoder call does not fit the budget', async () => {
    const size = { width: 256, height: 256 };
    const whole = await roomy.generate({ modelDir: ka.dir, settings: settings(size) });
    const model = await roomy.load(ka.dir);
    // Half of one whole decoder call on 32x32 latents: the engine has to tile it.
    const budgetMb = vaeCallBytes(model, 32, 32) / 2 / 2 ** 20;
    const tiled = new DiffusionEngine({ previewEvery: 0, memoryBudgetMb: budgetMb });
    try {
      const decoder = (await (await tiled.load(ka.dir)).session('vae_decoder')).session;
      const run = vi.spyOn(decoder, 'run');
      const r = await tiled.generate({ modelDir: ka.dir, settings: settings(size) });
      const shapes = run.mock.calls.map((c) => Object.values(c[0])[0].dims);
      expect(shapes.length).toBeGreaterThan(1);
      for (const d of shapes) {
        expect(d[2]).toBeLessThan(32);
        expect(d[3]).toBeLessThan(32);
      }
      expect([r.images[0].image.width, r.images[0].image.height]).toEqual([256, 256]);
      expect(diff(r.images[0].image.data, whole.images[0].image.data).mean).toBeLessThan(2);
    } finally {
      await tiled.release();
    }
  }, 300_000);
});
