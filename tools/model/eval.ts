// Prompt adherence of the built-in models, through the studio's own engine (DiffusionEngine, the
// code the CLI and the studio run). Every prompt of heldout.jsonl (captions whose colour, shape
// and background combination never appeared in training) is drawn at the native size, and the
// colour and shape of the main object are measured from the pixels (measure.ts).
//
//   node scripts/run-tool.mjs tools/model/eval.ts [--task txt2img|inpaint] [--model DIR]
//        [--source-model DIR] [--steps 20] [--sampler euler_a] [--cfg 5] [--limit N] [--seeds 3]
//        [--strength 1] [--threads 1] [--out .cache/model-eval/eval.json] [--sheet FILE.png]
//
// --task txt2img (the default): text to image with --model.
// --task inpaint: replacing an object. --source-model (the text-to-image model) draws the prompt's
//   scene with another colour and shape; the object it drew (its measured box, grown by 4 px) is
//   masked, and --model inpaints the held-out prompt there (--strength, 1 by default). The same cases are then
//   run with the source model itself, which inpaints by the engine's 4-channel latent blending:
//   the baseline the 9-channel model has to beat.
//
// Every prompt is drawn with `--seeds N` seeds (its recorded one, then others derived from it; 3
// by default, 300 images), for a figure with a smaller sampling error. Prints the figure and
// writes a JSON summary (export.py --evaluation FILE puts it in the model card). Exits 1 when
// fewer than 90% of the images show both the asked colour and shape.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { DiffusionEngine, type PixelImage } from '../../src/engine';
import {
  GenerationSettings,
  type GenerationInput,
  type SamplerName,
} from '../../src/shared/generation';
import { colorNames, measure, shapeNames, type Measurement } from './measure';
import spec from './spec.json' with { type: 'json' };

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
    task: { type: 'string', default: 'txt2img' },
    model: { type: 'string' },
    'source-model': { type: 'string', default: 'resources/models/latent-shapes' },
    prompts: { type: 'string', default: 'tools/model/heldout.jsonl' },
    steps: { type: 'string', default: '20' },
    sampler: { type: 'string', default: 'euler_a' },
    cfg: { type: 'string', default: '5' },
    limit: { type: 'string' },
    seeds: { type: 'string', default: '3' },
    strength: { type: 'string', default: '1' },
    threads: { type: 'string', default: '1' },
    out: { type: 'string' },
    sheet: { type: 'string' },
  },
});

const target = 0.9;
const task = values.task === 'inpaint' ? 'inpaint' : 'txt2img';
if (values.task !== task) throw new Error(`--task is txt2img or inpaint, not ${values.task}`);
const modelDir =
  values.model ??
  (task === 'inpaint'
    ? 'resources/models/latent-shapes-inpainting'
    : 'resources/models/latent-shapes');
const outFile = values.out ?? `.cache/model-eval/eval-${task}.json`;

/** The full caption of a scene, in the words the models were trained on. */
function caption(a: {
  size: string;
  color: string;
  shape: string;
  position: string;
  background: string;
}): string {
  const article = (w: string) => ('aeiou'.includes(w[0]) ? 'an' : 'a');
  const size = spec.sizes[a.size as keyof typeof spec.sizes].synonyms[0];
  const where = spec.positions[a.position as keyof typeof spec.positions].phrases[0];
  return `${article(size)} ${size} ${a.color} ${a.shape} ${where} on ${article(a.background)} ${a.background} background`;
}

/** Another colour and shape than the prompt's (and not its background's colour). */
function otherObject(p: HeldoutPrompt): { color: string; shape: string } {
  const c = colorNames.indexOf(p.color as (typeof colorNames)[number]);
  let k = 3;
  while ([p.color, p.background].includes(colorNames[(c + k) % colorNames.length])) k++;
  const s = shapeNames.indexOf(p.shape);
  return {
    color: colorNames[(c + k) % colorNames.length],
    shape: shapeNames[(s + 2) % shapeNames.length],
  };
}

/** A white box on black (white = repaint): the object's box grown by `grow` pixels. */
function boxMask(width: number, height: number, m: Measurement, grow: number): PixelImage {
  const data = new Uint8Array(width * height * 3);
  const [bx, by, bw, bh] = m.bbox!;
  const x0 = Math.max(0, bx - grow);
  const y0 = Math.max(0, by - grow);
  const x1 = Math.min(width, bx + bw + grow);
  const y1 = Math.min(height, by + bh + grow);
  for (let y = y0; y < y1; y++) data.fill(255, (y * width + x0) * 3, (y * width + x1) * 3);
  return { width, height, channels: 3, data };
}

interface Verdict {
  color: string | null;
  shape: string | null;
  background: string | null;
  iou: number;
  ok: boolean;
}

function judge(image: PixelImage, p: HeldoutPrompt): Verdict {
  const m = measure(image);
  return {
    color: m.color,
    shape: m.shape,
    background: m.background,
    iou: m.iou,
    ok: m.color === p.color && m.shape === p.shape,
  };
}

function percentages(verdicts: Verdict[], prompts: HeldoutPrompt[]) {
  const n = verdicts.length;
  const pct = (k: number) => Math.round((1000 * k) / n) / 10;
  return {
    both_percent: pct(verdicts.filter((v) => v.ok).length),
    color_percent: pct(verdicts.filter((v, i) => v.color === prompts[i].color).length),
    shape_percent: pct(verdicts.filter((v, i) => v.shape === prompts[i].shape).length),
    background_kept_percent: pct(
      verdicts.filter((v, i) => v.background === prompts[i].background).length,
    ),
  };
}

async function main(): Promise<number> {
  const lines = (await readFile(values.prompts!, 'utf8')).split('\n').filter((l) => l.trim());
  let prompts = lines.map((l) => JSON.parse(l) as HeldoutPrompt);
  if (values.limit) prompts = prompts.slice(0, Number(values.limit));
  // One engine per model: an engine keeps one model loaded, and this alternates between two.
  const engines = new Map<string, DiffusionEngine>();
  const engineFor = (dir: string) => {
    let e = engines.get(dir);
    if (!e) {
      e = new DiffusionEngine({
        provider: 'cpu',
        threads: Number(values.threads),
        previewEvery: 0,
      });
      engines.set(dir, e);
    }
    return e;
  };
  const model = await engineFor(modelDir).load(modelDir);
  if (task === 'inpaint' && model.family.unetInChannels !== 9)
    console.log(`note: ${modelDir} is not a 9-channel model; it inpaints by latent blending`);
  const { width, height } = model.family.nativeSize;
  const steps = Number(values.steps);
  const guidance = Number(values.cfg);
  const sampler = values.sampler as SamplerName;
  const common = { prompt: '', seed: 0, sampler, steps, guidance, width, height };
  const draw = async (
    dir: string,
    input: Partial<GenerationInput>,
    init?: PixelImage,
    mask?: PixelImage,
  ) => {
    const settings = GenerationSettings.parse({ ...common, model: path.resolve(dir), ...input });
    const result = await engineFor(dir).generate({
      settings,
      modelDir: dir,
      initImage: init ?? null,
      maskImage: mask ?? null,
    });
    return result.images[0].image;
  };

  const seedsPerPrompt = Math.max(1, Math.floor(Number(values.seeds)));
  const runs = prompts.flatMap((prompt) =>
    Array.from({ length: seedsPerPrompt }, (_, k) => ({
      ...prompt,
      // k = 0 is the recorded seed; others step by a large prime, within torch's 32-bit range.
      seed: (prompt.seed + k * 104_729) % 2 ** 32,
    })),
  );
  const verdicts: Verdict[] = [];
  const baseline: Verdict[] = [];
  const records = [];
  const images: PixelImage[] = [];
  let sourceMisses = 0;
  const started = performance.now();
  for (const p of runs) {
    if (task === 'txt2img') {
      const image = await draw(modelDir, { prompt: p.prompt, seed: p.seed });
      images.push(image);
      const v = judge(image, p);
      verdicts.push(v);
      records.push({ ...p, got: v, ok: v.ok });
      if (!v.ok)
        console.log(
          `miss: "${p.prompt}" (seed ${p.seed}) -> ${v.color ?? 'nothing'} ${v.shape ?? ''}`,
        );
      continue;
    }
    // Inpainting: draw a scene with another object, mask that object, ask for the prompt's.
    const other = otherObject(p);
    const sourcePrompt = caption({ ...p, ...other });
    const source = await draw(values['source-model']!, { prompt: sourcePrompt, seed: p.seed });
    const drawn = measure(source);
    if (!drawn.bbox) {
      sourceMisses++;
      continue;
    }
    const mask = boxMask(width, height, drawn, 4);
    const inpaint: Partial<GenerationInput> = {
      mode: 'inpaint',
      prompt: p.prompt,
      seed: p.seed,
      strength: Number(values.strength),
      initImage: 'source.png',
      mask: { image: 'mask.png', blur: 2 },
    };
    const image = await draw(modelDir, inpaint, source, mask);
    const blended = await draw(values['source-model']!, inpaint, source, mask);
    images.push(source, image, blended);
    const v = judge(image, p);
    const b = judge(blended, p);
    verdicts.push(v);
    baseline.push(b);
    records.push({ ...p, source: sourcePrompt, mask: drawn.bbox, got: v, baseline: b, ok: v.ok });
    if (!v.ok)
      console.log(
        `miss: "${p.prompt}" over "${sourcePrompt}" (seed ${p.seed}) -> ${v.color ?? 'nothing'} ${v.shape ?? ''}`,
      );
  }
  const seconds = (performance.now() - started) / 1000;
  for (const e of engines.values()) await e.release();

  const judged = records.map((r) => r as HeldoutPrompt);
  const n = verdicts.length;
  const summary = {
    model: path.basename(path.resolve(modelDir)),
    task,
    images: n,
    seeds_per_prompt: seedsPerPrompt,
    ...percentages(verdicts, judged),
    ...(task === 'inpaint'
      ? {
          source_model: path.basename(path.resolve(values['source-model']!)),
          source_misses: sourceMisses,
          mask: "the source object's measured box grown by 4 px, blur 2",
          strength: Number(values.strength),
          baseline: {
            model: path.basename(path.resolve(values['source-model']!)),
            how: "4-channel latent blending (the engine's inpainting for text-to-image models)",
            ...percentages(baseline, judged),
          },
        }
      : {}),
    sampler,
    steps,
    guidance,
    size: [width, height],
    prompts: path.basename(values.prompts!),
    seconds: Math.round(seconds * 10) / 10,
    measured_by:
      'tools/model/measure.ts (background = border median, object = largest region, colour = nearest named, shape = best template IoU)',
  };
  const what =
    task === 'inpaint'
      ? `${n} objects replaced by inpainting`
      : `${n} images` +
        (seedsPerPrompt > 1
          ? ` (${prompts.length} held-out prompts, ${seedsPerPrompt} seeds each)`
          : '');
  console.log(
    `${summary.both_percent}% of ${what} show the asked colour and shape ` +
      `(colour ${summary.color_percent}%, shape ${summary.shape_percent}%), ` +
      `${sampler} ${steps} steps, guidance ${guidance}, ${width}x${height}, ${summary.seconds} s`,
  );
  if (summary.baseline)
    console.log(
      `baseline (${summary.baseline.model}, latent blending): ${summary.baseline.both_percent}% ` +
        `(colour ${summary.baseline.color_percent}%, shape ${summary.baseline.shape_percent}%)` +
        (sourceMisses ? `; ${sourceMisses} source images had no object and were skipped` : ''),
    );
  await mkdir(path.dirname(path.resolve(outFile)), { recursive: true });
  await writeFile(outFile, JSON.stringify({ ...summary, results: records }, null, 2) + '\n');
  await writeFile(
    outFile.replace(/\.json$/, '') + '.summary.json',
    JSON.stringify(summary, null, 2) + '\n',
  );
  if (values.sheet) await writeSheet(images.slice(0, task === 'inpaint' ? 63 : 64), values.sheet);
  return summary.both_percent >= target * 100 ? 0 : 1;
}

/** A contact sheet of the first images, 8 per row (inpaint: source, 9-channel, blended; 9 per row), 2 px gaps. */
async function writeSheet(images: PixelImage[], file: string): Promise<void> {
  const { width: w, height: h } = images[0];
  const cols = task === 'inpaint' ? 9 : 8;
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
