// Prompt adherence of the built-in model, through the studio's own engine (DiffusionEngine, the
// code the CLI and the studio run): every prompt of heldout.jsonl (captions whose colour, shape
// and background combination never appeared in training) is generated at the native size, and
// the colour and shape of the main object are measured from the pixels (measure.ts).
//
//   node scripts/run-tool.mjs tools/model/eval.ts [--model DIR] [--steps 20] [--sampler euler_a]
//        [--cfg 5] [--limit N] [--seeds 3] [--threads 1] [--out .cache/model-eval/eval.json] [--sheet FILE.png]
//
// Prints the figure and writes a JSON summary (export.py --evaluation FILE puts it in the model
// card). Every prompt is drawn with `--seeds N` seeds (its recorded one, then others derived
// from it; 3 by default, 300 images), for a figure with a smaller sampling error. Exits 1 when fewer than 90% of the images show both the asked colour and shape.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { DiffusionEngine, type PixelImage } from '../../src/engine';
import { GenerationSettings, type SamplerName } from '../../src/shared/generation';
import { measure } from './measure';

interface HeldoutPrompt {
  prompt: string;
  color: string;
  shape: string;
  background: string;
  size: string;
  position: string;
  seed: number;
}

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'resources/models/latent-shapes' },
    prompts: { type: 'string', default: 'tools/model/heldout.jsonl' },
    steps: { type: 'string', default: '20' },
    sampler: { type: 'string', default: 'euler_a' },
    cfg: { type: 'string', default: '5' },
    limit: { type: 'string' },
    seeds: { type: 'string', default: '3' },
    threads: { type: 'string', default: '1' },
    out: { type: 'string', default: '.cache/model-eval/eval.json' },
    sheet: { type: 'string' },
  },
});

const target = 0.9;

async function main(): Promise<number> {
  const lines = (await readFile(values.prompts!, 'utf8')).split('\n').filter((l) => l.trim());
  let prompts = lines.map((l) => JSON.parse(l) as HeldoutPrompt);
  if (values.limit) prompts = prompts.slice(0, Number(values.limit));
  const engine = new DiffusionEngine({
    provider: 'cpu',
    threads: Number(values.threads),
    previewEvery: 0,
  });
  const model = await engine.load(values.model!);
  const { width, height } = model.family.nativeSize;
  const steps = Number(values.steps);
  const guidance = Number(values.cfg);
  const sampler = values.sampler as SamplerName;

  const results = [];
  const images: PixelImage[] = [];
  const started = performance.now();
  const seedsPerPrompt = Math.max(1, Math.floor(Number(values.seeds)));
  const runs = prompts.flatMap((prompt) =>
    Array.from({ length: seedsPerPrompt }, (_, k) => ({
      ...prompt,
      // k = 0 is the recorded seed; others step by a large prime, within torch's 32-bit range.
      seed: (prompt.seed + k * 104_729) % 2 ** 32,
    })),
  );
  for (const p of runs) {
    const settings = GenerationSettings.parse({
      model: path.resolve(values.model!),
      prompt: p.prompt,
      seed: p.seed,
      sampler,
      steps,
      guidance,
      width,
      height,
    });
    const result = await engine.generate({ settings, modelDir: values.model! });
    const image = result.images[0].image;
    images.push(image);
    const m = measure(image);
    const ok = m.color === p.color && m.shape === p.shape;
    results.push({ ...p, got: { color: m.color, shape: m.shape, iou: m.iou }, ok });
    if (!ok)
      console.log(
        `miss: "${p.prompt}" (seed ${p.seed}) -> ${m.color ?? 'nothing'} ${m.shape ?? ''}`,
      );
  }
  const seconds = (performance.now() - started) / 1000;
  await engine.release();

  const n = results.length;
  const pct = (k: number) => Math.round((1000 * k) / n) / 10;
  const summary = {
    model: path.basename(path.resolve(values.model!)),
    images: n,
    seeds_per_prompt: seedsPerPrompt,
    both_percent: pct(results.filter((r) => r.ok).length),
    color_percent: pct(results.filter((r) => r.got.color === r.color).length),
    shape_percent: pct(results.filter((r) => r.got.shape === r.shape).length),
    sampler,
    steps,
    guidance,
    size: [width, height],
    prompts: path.basename(values.prompts!),
    seconds: Math.round(seconds * 10) / 10,
    measured_by:
      'tools/model/measure.ts (background = border median, object = largest region, colour = nearest named, shape = best template IoU)',
  };
  console.log(
    `${summary.both_percent}% of ${n} images ` +
      (seedsPerPrompt > 1
        ? `(${prompts.length} held-out prompts, ${seedsPerPrompt} seeds each) `
        : `of held-out prompts `) +
      `show the asked colour and shape ` +
      `(colour ${summary.color_percent}%, shape ${summary.shape_percent}%), ` +
      `${sampler} ${steps} steps, guidance ${guidance}, ${width}x${height}, ${summary.seconds} s`,
  );
  await mkdir(path.dirname(path.resolve(values.out!)), { recursive: true });
  await writeFile(values.out!, JSON.stringify({ ...summary, results }, null, 2) + '\n');
  await writeFile(
    values.out!.replace(/\.json$/, '') + '.summary.json',
    JSON.stringify(summary, null, 2) + '\n',
  );
  if (values.sheet) await writeSheet(images.slice(0, 64), values.sheet);
  return summary.both_percent >= target * 100 ? 0 : 1;
}

/** A contact sheet of the first images, 8 per row, 2 px gaps. */
async function writeSheet(images: PixelImage[], file: string): Promise<void> {
  const { width: w, height: h } = images[0];
  const cols = 8;
  const rows = Math.ceil(images.length / cols);
  const W = cols * (w + 2);
  const H = rows * (h + 2);
  const out = new Uint8Array(W * H * 3).fill(128);
  images.forEach((img, i) => {
    const ox = (i % cols) * (w + 2);
    const oy = Math.floor(i / cols) * (h + 2);
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++)
        for (let c = 0; c < 3; c++)
          out[((oy + y) * W + ox + x) * 3 + c] = img.data[(y * w + x) * img.channels + c];
  });
  await sharp(out, { raw: { width: W, height: H, channels: 3 } })
    .png()
    .toFile(file);
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(2);
  },
);
