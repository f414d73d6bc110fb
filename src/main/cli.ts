// `npm run generate -- --model DIR --prompt TEXT ... --out FILE.png`: the engine from the
// command line, for scripts and servers. One line on stderr and a non-zero exit on any error.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { DiffusionEngine, type PixelImage, describeEngineError } from '../engine';
import { GenerationSettings, samplerNames } from '../shared/generation';
import { encodePngWithMetadata } from './library/png-metadata';
import { appVersion } from './version';

const usage = `Usage: npm run generate -- --model DIR --prompt TEXT [options] --out FILE.png

  --model DIR          model folder (diffusers ONNX or optimum layout)
  --prompt TEXT        what to draw; (word:1.2) [word] BREAK are understood
  --negative TEXT      what to avoid
  --seed N             noise seed (default: random, printed)
  --steps N            sampling steps (default 25)
  --sampler NAME       ${samplerNames.join(', ')} (default euler_a)
  --cfg X              guidance scale (default 7; <= 1 disables guidance)
  --width N, --height N  size in pixels, multiples of 8 (default: the model's native size)
  --batch-size N       images per noise draw (default 1)
  --batch-count N      number of draws (default 1)
  --seed-mode MODE     batch (one draw, like diffusers/ComfyUI) or per-image (seed+i, like A1111)
  --init PNG           image-to-image from this picture
  --strength X         how much to change the init image, 0..1 (default 0.75)
  --provider NAME      auto, cpu, cuda, dml, coreml, webgpu (default auto)
  --threads N          CPU threads (default: physical cores)
  --no-metadata        do not write the parameters into the PNG
  --quiet              no progress on stderr
  --out FILE.png       where to write; with several images, FILE-1.png, FILE-2.png, ...`;

class UsageError extends Error {}

function numberArg(values: Record<string, unknown>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n))
    throw new UsageError(`--${name} must be a number, not "${String(raw)}".`);
  return n;
}

async function readImage(file: string): Promise<PixelImage> {
  const stat = await fs.stat(file).catch(() => null);
  if (!stat?.isFile()) throw new UsageError(`--init: ${file} does not exist.`);
  try {
    const { data, info } = await sharp(file)
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    return {
      width: info.width,
      height: info.height,
      channels: 3,
      data: new Uint8Array(data.buffer, data.byteOffset, data.length),
    };
  } catch (err) {
    throw new UsageError(
      `--init: ${file} is not an image that can be read (${(err as Error).message.split('\n')[0]}).`,
    );
  }
}

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      prompt: { type: 'string' },
      negative: { type: 'string', default: '' },
      seed: { type: 'string' },
      steps: { type: 'string' },
      sampler: { type: 'string' },
      cfg: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      'batch-size': { type: 'string' },
      'batch-count': { type: 'string' },
      'seed-mode': { type: 'string' },
      init: { type: 'string' },
      strength: { type: 'string' },
      provider: { type: 'string' },
      threads: { type: 'string' },
      'no-metadata': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (!values.model) throw new UsageError('--model is required.');
  if (values.prompt === undefined) throw new UsageError('--prompt is required.');
  if (!values.out) throw new UsageError('--out is required.');
  if (!/\.png$/i.test(values.out)) throw new UsageError('--out must name a .png file.');

  const provider = values.provider ?? 'auto';
  if (!['auto', 'cpu', 'cuda', 'dml', 'coreml', 'webgpu'].includes(provider))
    throw new UsageError(
      `--provider must be auto, cpu, cuda, dml, coreml or webgpu, not "${provider}".`,
    );
  const engine = new DiffusionEngine({
    provider: provider as 'auto',
    threads: numberArg(values, 'threads') ?? 0,
    previewEvery: 0,
  });
  const model = await engine.load(values.model);
  const native = model.family.nativeSize;

  const seed = numberArg(values, 'seed') ?? Math.floor(Math.random() * 2 ** 32);
  const parsed = GenerationSettings.safeParse({
    mode: values.init ? 'img2img' : 'txt2img',
    model: path.resolve(values.model),
    prompt: values.prompt,
    negativePrompt: values.negative,
    seed,
    seedMode: values['seed-mode'],
    sampler: values.sampler,
    steps: numberArg(values, 'steps'),
    guidance: numberArg(values, 'cfg'),
    width: numberArg(values, 'width') ?? native.width,
    height: numberArg(values, 'height') ?? native.height,
    batchSize: numberArg(values, 'batch-size'),
    batchCount: numberArg(values, 'batch-count'),
    strength: numberArg(values, 'strength'),
    initImage: values.init ? path.resolve(values.init) : null,
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const flag =
      {
        guidance: 'cfg',
        negativePrompt: 'negative',
        batchSize: 'batch-size',
        batchCount: 'batch-count',
        seedMode: 'seed-mode',
      }[String(issue.path[0])] ?? String(issue.path[0]);
    throw new UsageError(`--${flag}: ${issue.message}.`);
  }
  const settings = parsed.data;
  const initImage = values.init ? await readImage(values.init) : null;

  const started = Date.now();
  const result = await engine.generate(
    { settings, modelDir: values.model, initImage },
    {
      onProgress: (p) => {
        if (values.quiet || p.stage !== 'denoise') return;
        const eta = p.etaMs === null ? '' : `, ${(p.etaMs / 1000).toFixed(1)} s left`;
        const batch = p.batchCount > 1 ? `batch ${p.batch + 1}/${p.batchCount}, ` : '';
        process.stderr.write(`\r${batch}step ${p.step}/${p.total}${eta}   `);
      },
    },
  );
  if (!values.quiet) process.stderr.write('\n');

  const out = path.resolve(values.out);
  await fs.mkdir(path.dirname(out), { recursive: true });
  const many = result.images.length > 1;
  for (const [i, generated] of result.images.entries()) {
    const file = many ? out.replace(/\.png$/i, `-${i + 1}.png`) : out;
    const imageSettings = { ...settings, seed: generated.seed };
    const png = await encodePngWithMetadata(
      generated.image.data instanceof Uint8Array
        ? generated.image.data
        : new Uint8Array(generated.image.data),
      generated.image.width,
      generated.image.height,
      generated.image.channels as 3 | 4,
      values['no-metadata']
        ? null
        : {
            settings: imageSettings,
            extra: { modelName: model.info.name, version: `Latent Studio ${appVersion}` },
          },
    );
    await fs.writeFile(file, png);
    console.log(file);
  }
  if (!values.quiet) {
    const t = result.timings;
    console.error(
      `${result.images.length} image(s), seed ${settings.seed}, ${result.family} on ${result.provider}${result.fallbackReason ? ` (${result.fallbackReason})` : ''}, ${((Date.now() - started) / 1000).toFixed(1)} s (text ${t.textMs.toFixed(0)} ms, denoise ${t.denoiseMs.toFixed(0)} ms, decode ${t.decodeMs.toFixed(0)} ms)`,
    );
  }
  await engine.release();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    if (
      err instanceof UsageError ||
      (err as { code?: string })?.code?.startsWith?.('ERR_PARSE_ARGS')
    ) {
      console.error(`latent-studio: ${(err as Error).message}`);
      console.error('Run with --help for the options.');
      process.exit(2);
    }
    console.error(`latent-studio: ${describeEngineError(err).message}`);
    process.exit(1);
  },
);
