// `node scripts/run-tool.mjs tools/bench/controlnet.ts [--steps N] [--repeats N] [--size N]
//   [--family sd1|sdxl]`
// The per-step cost of one ControlNet unit (issue 19): the recorded small sd1 (or sdxl) fixture
// converted with a residual UNet and the fixture ControlNet, both fp32, generating with no unit and with
// one unit in the same run (medians over the repeats after a warm-up). Prints denoise ms per step
// for each and their ratio; the ratio, not the absolute time, is what carries to full-size
// models, where the ControlNet is about half the UNet's encoder and middle block.
import { existsSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DiffusionEngine, type PixelImage } from '../../src/engine';
import { GenerationSettings } from '../../src/shared/generation';
import { convertedFixture, fixtureControlNet } from '../../tests/fixtures/controlnet-fixture';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '10' },
    repeats: { type: 'string', default: '5' },
    size: { type: 'string', default: '256' },
    family: { type: 'string', default: 'sd1' },
  },
});
const steps = Number(values.steps);
const repeats = Number(values.repeats);
const size = Number(values.size);
const family = values.family === 'sdxl' ? 'sdxl' : 'sd1';
const REF = path.resolve('tests', 'fixtures', 'reference');

// run-tool bundles this file into out/tools, where the fixture helper looks for `reference/`
// beside itself: point that at the recorded fixtures.
const bundledReference = path.resolve('out', 'tools', 'reference');
if (!existsSync(bundledReference)) await symlink(REF, bundledReference, 'dir');

const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-controlnet-'));
try {
  const modelDir = await convertedFixture(dir, family, path.join(dir, 'model'), {
    controlResiduals: true,
  });
  const cn = { model: await fixtureControlNet(path.join(dir, 'cn'), family) };
  const image: PixelImage = {
    width: size,
    height: size,
    channels: 3,
    data: new Uint8Array(size * size * 3).map((_, i) => (i * 37) % 256),
  };
  const engine = new DiffusionEngine({ provider: 'cpu', previewEvery: 0 });
  const perStep = async (units: number): Promise<number> => {
    const times: number[] = [];
    for (let r = 0; r <= repeats; r++) {
      const settings = GenerationSettings.parse({
        model: 'fixture',
        prompt: 'a house',
        seed: r,
        sampler: 'euler',
        steps,
        guidance: 5,
        width: size,
        height: size,
        controlnets: Array.from({ length: units }, () => ({ model: 'cn', image: 'c.png' })),
      });
      const result = await engine.generate({
        modelDir,
        settings,
        controlnets: Array.from({ length: units }, () => ({ file: cn.model, image })),
      });
      if (r > 0) times.push(result.timings.denoiseMs / steps);
    }
    times.sort((a, b) => a - b);
    return times[Math.floor(times.length / 2)];
  };
  const plain = await perStep(0);
  const one = await perStep(1);
  await engine.release();
  console.log(
    JSON.stringify(
      {
        family,
        size,
        steps,
        repeats,
        msPerStepNoUnit: +plain.toFixed(2),
        msPerStepOneUnit: +one.toFixed(2),
        oneUnitCostRatio: +(one / plain).toFixed(3),
      },
      null,
      2,
    ),
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
