// The text encoders give way to the UNet when memory is tight (pipelines/memory.ts
// textEncodersInTheWay, README "Performance"): with a memory budget below the UNet call's
// estimate the engine releases the text encoders' sessions after encoding the prompts, the image
// is the same as with them kept, the encoded prompt is reused without them, and a new prompt
// creates them again. Real sessions on the known-answer fixture.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine } from '../../src/engine';
import { unetCallBytes } from '../../src/engine/pipelines/memory';
import { GenerationSettings, type GenerationInput } from '../../src/shared/generation';
import { type FixtureInfo, fixtureModelInfo } from '../fixtures/models';

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
});
