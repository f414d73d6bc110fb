// `npm run generate -- --model DIR --prompt TEXT ... --out FILE.png`: the engine from the
// command line, for scripts and servers. One line on stderr and a non-zero exit on any error.
import fs from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ImageTooLargeError, withImage } from './images/decode';
import { DiffusionEngine, type PixelImage } from '../engine';
import {
  GenerationSettings,
  defaultGenerationSettings as defaults,
  defaultMaskOptions as maskDefaults,
  defaultUpscaleOptions as upscaleDefaults,
  maxSide,
  samplerNames,
  samplerTakesSchedule,
  scheduleNames,
  sigmaSamplerNames,
} from '../shared/generation';
import { fileURLToPath } from 'node:url';
import { networkInfotextFields } from '../shared/networks';
import { cliNetworks } from './adapters/cli-networks';
import { UsageError, runCli } from './cli-run';
import { encodePngWithMetadata } from './library/png-metadata';
import { vaeInfotextFields } from './models/vaes';
import {
  ensureConverted,
  ensureControlNetConverted,
  ensureVaeConverted,
  formatConvertProgress,
  isCheckpointFile,
  resourcesDirFrom,
  sha256File,
  shortHash,
  vocabularyIn,
} from './models/checkpoint-cache';
import { controlNetModelPath } from '../engine/pipelines/controlnet-io';
import { controlNetInfotext } from './models/controlnets';
import { defaultDataDir } from './paths';
import { appVersion } from './version';

const usage = `Usage: npm run generate -- --model DIR --prompt TEXT [options] --out FILE.png

  --model DIR|FILE     model folder (diffusers ONNX or optimum layout), or a single-file
                       checkpoint (.safetensors, .ckpt: SD 1.x, 2.x, SDXL), converted on first
                       use into the data folder's cache and reused afterwards
  --vae FILE           a VAE-only file (.safetensors, .ckpt) used instead of the model's own:
                       with a checkpoint, built into its conversion; with a folder, converted
                       once into the data folder's cache and used for this generation
  --prediction P       with an SD 2.x checkpoint that does not say: epsilon or v
  --data-dir DIR       where converted checkpoints and VAEs are cached (default: the app's data
                       folder)
  --prompt TEXT        what to draw; (word:1.2) [word] BREAK are understood, <lora:name:weight>
                       applies a LoRA of --lora-dir, an embedding's file name uses it
  --lora-dir DIR       LoRA folder (default: the studio's, <data folder>/models/Lora)
  --embeddings-dir DIR embeddings folder (default: the studio's, <data folder>/embeddings)
  --lora FILE:WEIGHT   apply this LoRA file (or a name in --lora-dir) as if tagged in the
                       prompt; repeatable; WEIGHT defaults to 1
  --negative TEXT      what to avoid
  --seed N             noise seed (default: random, printed)
  --steps N            sampling steps (default ${defaults.steps})
  --sampler NAME       ${samplerNames.join(', ')} (default ${defaults.sampler})
  --schedule NAME      ${scheduleNames.join(', ')} (default: the sampler's own); karras and
                       exponential apply to ${sigmaSamplerNames.join(', ')}
  --cfg X              guidance scale (default ${defaults.guidance}; <= 1 disables guidance)
  --width N, --height N  size in pixels, multiples of 8 (default: the model's native size)
  --batch-size N       images per noise draw (default ${defaults.batchSize})
  --batch-count N      number of draws (default ${defaults.batchCount})
  --seed-mode MODE     batch (one draw, like diffusers/ComfyUI) or per-image (seed+i, like A1111)
  --init PNG           image-to-image from this picture
  --strength X         how much to change the init image, 0..1 (default ${defaults.strength})
  --mask PNG           inpaint the white part of this mask (needs --init; resized to it if needed)
  --mask-blur N        feather radius of the mask edge in pixels (default ${maskDefaults.blur})
  --mask-grow N        grow (N > 0) or shrink (N < 0) the mask by N pixels (default ${maskDefaults.grow});
                       write a negative value as --mask-grow=-4
  --invert-mask        repaint the black part instead
  --only-masked        generate only a crop around the mask (at --width x --height, default the
                       model's native size) and paste it back
  --mask-padding N     pixels around the mask in that crop (default ${maskDefaults.padding})
  --mask-fill MODE     what the masked area starts from: original, noise or edge (default ${maskDefaults.fill})
  --outpaint L,T,R,B   extend the init image by these pixels (multiples of 8; one value: all sides)
  --upscale F          two-pass hires fix: generate, enlarge by F (1..4), img2img at the larger
                       size; with --init: enlarge that picture (Lanczos, then img2img)
  --hires-steps N      steps of the hires pass (default ${upscaleDefaults.hiresSteps})
  --hires-strength X   denoising strength of the hires pass, 0..1 (default ${upscaleDefaults.hiresStrength})
  --hires-upscaler M   latent (bilinear in latent space, default) or lanczos (in pixels)
  --upscaler x4        enlarge --init 4x with the x4 upscaler model given by --upscaler-model
  --upscaler-model DIR the x4 upscaler's folder (--model defaults to it)
  --noise-level N      x4: noise added to the low-resolution input, 0..350 (default ${upscaleDefaults.noiseLevel})
  --tile N             tile size in pixels for tiled diffusion and VAE decoding (default: chosen
                       from the memory budget)
  --memory-budget MB   memory the upscaler may use for activations (default 60% of free RAM)
  --provider NAME      auto, cpu, cuda, dml, coreml, webgpu (default auto)
  --threads N          CPU threads (default: physical cores)
  --controlnet FILE    a ControlNet guiding the image: a .safetensors (ldm or diffusers naming;
                       SD 1.x/2.x/SDXL), converted once into the data folder's cache, or an
                       ONNX ControlNet (.onnx or its folder) used as it is; a checkpoint --model
                       is then converted with a UNet that takes its residuals
  --control-image PNG  the control image (resized to the output size)
  --preprocessor P     none (use the image as it is) or canny (default none)
  --canny-low N, --canny-high N  canny's thresholds (default 100, 200)
  --control-weight W   the unit's weight, 0..2 (default 1; 0 leaves the image as without it)
  --control-start S, --control-end E  fractions of the steps the unit acts in (default 0, 1)
  --control-guess      "ControlNet is more important" (A1111's control mode)
  --no-metadata        do not write the parameters into the PNG
  --quiet              no progress on stderr
  --out FILE.png       where to write; with several images, FILE-1.png, FILE-2.png, ...`;

function numberArg(values: Record<string, unknown>, name: string): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n))
    throw new UsageError(`--${name} must be a number, not "${String(raw)}".`);
  return n;
}

async function readImage(file: string, flag = 'init'): Promise<PixelImage> {
  const stat = await fs.stat(file).catch(() => null);
  if (!stat?.isFile()) throw new UsageError(`--${flag}: ${file} does not exist.`);
  try {
    // A mask keeps its alpha (transparent = keep); the engine reads luminance times alpha.
    const { data, info } = await withImage(file, { what: `--${flag}: ${file}` }, (image) =>
      (flag === 'mask' ? image.ensureAlpha() : image.removeAlpha())
        .raw()
        .toBuffer({ resolveWithObject: true }),
    );
    return {
      width: info.width,
      height: info.height,
      channels: info.channels === 4 ? 4 : 3,
      data: new Uint8Array(data.buffer, data.byteOffset, data.length),
    };
  } catch (err) {
    if (err instanceof ImageTooLargeError) throw new UsageError(err.message);
    throw new UsageError(
      `--${flag}: ${file} is not an image that can be read (${(err as Error).message.split('\n')[0]}).`,
    );
  }
}

/** --mask and --outpaint with their options -> mode, settings.mask and settings.outpaint. */
function maskingArgs(values: Record<string, unknown>): {
  mode: 'inpaint' | 'outpaint' | null;
  mask: Record<string, unknown> | null;
  outpaint: Record<string, number> | null;
} {
  const maskFlags = [
    'mask-blur',
    'mask-grow',
    'invert-mask',
    'only-masked',
    'mask-padding',
    'mask-fill',
  ];
  const given = maskFlags.filter((f) => values[f] !== undefined && values[f] !== false);
  if (values.mask !== undefined && values.outpaint !== undefined)
    throw new UsageError('--mask and --outpaint cannot be used together.');
  if (values.mask === undefined && values.outpaint === undefined) {
    if (given.length > 0) throw new UsageError(`--${given[0]} needs --mask or --outpaint.`);
    return { mode: null, mask: null, outpaint: null };
  }
  const mode = values.mask !== undefined ? 'inpaint' : 'outpaint';
  if (values.init === undefined)
    throw new UsageError(
      mode === 'inpaint'
        ? '--mask needs --init (the picture to repaint).'
        : '--outpaint needs --init (the picture to extend).',
    );
  if (mode === 'outpaint') {
    for (const f of ['mask-grow', 'invert-mask'])
      if (given.includes(f)) throw new UsageError(`--${f} does not apply to --outpaint.`);
  }
  let outpaint: Record<string, number> | null = null;
  if (mode === 'outpaint') {
    const raw = String(values.outpaint);
    const parts = raw.split(',').map((p) => p.trim());
    const nums = parts.map(Number);
    if (
      (parts.length !== 1 && parts.length !== 4) ||
      nums.some((n, i) => parts[i] === '' || !Number.isInteger(n))
    )
      throw new UsageError(
        `--outpaint must be L,T,R,B (four whole numbers of pixels) or one number for all sides, not "${raw}".`,
      );
    const [left, top, right, bottom] =
      nums.length === 1 ? [nums[0], nums[0], nums[0], nums[0]] : nums;
    outpaint = { left, top, right, bottom };
  }
  let mask: Record<string, unknown> | null = null;
  if (mode === 'inpaint' || given.length > 0) {
    mask = {
      // Outpainting builds its own mask; the name records where it came from.
      image: mode === 'inpaint' ? path.resolve(String(values.mask)) : 'outpaint',
      blur: numberArg(values, 'mask-blur'),
      grow: numberArg(values, 'mask-grow'),
      invert: values['invert-mask'] === true,
      onlyMasked: values['only-masked'] === true,
      padding: numberArg(values, 'mask-padding'),
      fill: values['mask-fill'] ?? (mode === 'outpaint' ? 'edge' : 'original'),
    };
  }
  return { mode, mask, outpaint };
}

/** settings.upscale field -> its CLI flag, for error messages. */
const upscaleFlags: Record<string, string> = {
  method: 'upscaler',
  factor: 'upscale',
  upscaler: 'hires-upscaler',
  hiresSteps: 'hires-steps',
  hiresStrength: 'hires-strength',
  noiseLevel: 'noise-level',
  model: 'upscaler-model',
  tile: 'tile',
};

/** --upscale / --upscaler and their options -> mode 'upscale' (with --init) and settings.upscale. */
function upscaleArgs(values: Record<string, unknown>): {
  mode: 'upscale' | null;
  upscale: Record<string, unknown> | null;
} {
  const flags = [
    'hires-steps',
    'hires-strength',
    'hires-upscaler',
    'upscaler-model',
    'noise-level',
    'tile',
  ];
  const given = flags.filter((f) => values[f] !== undefined);
  if (values.upscale === undefined && values.upscaler === undefined) {
    if (given.length > 0) throw new UsageError(`--${given[0]} needs --upscale or --upscaler.`);
    return { mode: null, upscale: null };
  }
  if (values.upscaler !== undefined && values.upscaler !== 'x4' && values.upscaler !== 'hires')
    throw new UsageError(`--upscaler must be x4 or hires, not "${String(values.upscaler)}".`);
  const x4 = values.upscaler === 'x4';
  if (values.mask !== undefined || values.outpaint !== undefined)
    throw new UsageError('--upscale and --upscaler cannot be combined with --mask or --outpaint.');
  if (x4) {
    if (values.init === undefined)
      throw new UsageError('--upscaler x4 needs --init (the picture).');
    if (values['upscaler-model'] === undefined)
      throw new UsageError('--upscaler x4 needs --upscaler-model (the x4 upscaler folder).');
    for (const f of ['hires-steps', 'hires-strength', 'hires-upscaler'])
      if (given.includes(f)) throw new UsageError(`--${f} does not apply to --upscaler x4.`);
  } else if (values['noise-level'] !== undefined || values['upscaler-model'] !== undefined) {
    throw new UsageError(
      `--${values['noise-level'] !== undefined ? 'noise-level' : 'upscaler-model'} applies to --upscaler x4 only.`,
    );
  }
  return {
    mode: values.init !== undefined ? 'upscale' : null,
    upscale: {
      method: x4 ? 'x4' : 'hires',
      factor: x4 ? undefined : (numberArg(values, 'upscale') ?? 2),
      upscaler: values['hires-upscaler'],
      hiresSteps: numberArg(values, 'hires-steps'),
      hiresStrength: numberArg(values, 'hires-strength'),
      noiseLevel: numberArg(values, 'noise-level'),
      model: x4 ? path.resolve(String(values['upscaler-model'])) : null,
      tile: numberArg(values, 'tile'),
    },
  };
}

/**
 * `--model FILE.safetensors`: the converted folder from the data folder's cache (converting it
 * the first time, with progress on stderr), or null when --model is a folder.
 */
async function checkpointModel(values: {
  model?: string;
  vae?: string;
  prediction?: string;
  controlnet?: string;
  'data-dir'?: string;
  quiet?: boolean;
}): Promise<{ dir: string; sha256: string; name: string; vae: string | null } | null> {
  const file = path.resolve(values.model!);
  const stat = await fs.stat(file).catch(() => null);
  if (!stat?.isFile() || !isCheckpointFile(file)) {
    if (values.prediction)
      throw new UsageError('--prediction applies to a checkpoint file given as --model.');
    return null;
  }
  const prediction = values.prediction;
  if (prediction !== undefined && !['epsilon', 'v', 'v_prediction'].includes(prediction))
    throw new UsageError(`--prediction must be epsilon or v, not "${prediction}".`);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const result = await ensureConverted(file, {
    dataDir: dataDirOf(values),
    vocabularyFile: vocabularyIn(resourcesDirFrom(here)),
    ...(values.vae ? { vae: path.resolve(values.vae) } : {}),
    ...(prediction ? { prediction: prediction === 'epsilon' ? 'epsilon' : 'v_prediction' } : {}),
    ...(values.controlnet ? { controlResiduals: true } : {}),
    onProgress: (p) => {
      if (values.quiet) return;
      const doing = p.phase === 'hashing' ? 'checking' : 'converting';
      process.stderr.write(`\r${doing} ${path.basename(file)}: ${formatConvertProgress(p)}      `);
    },
  });
  if (!values.quiet && result.converted) process.stderr.write(`\nconverted into ${result.dir}\n`);
  return {
    dir: result.dir,
    sha256: result.sha256,
    name: path.basename(file, path.extname(file)),
    // A1111's `VAE:` is the file's name with its extension.
    vae: result.record.vae ? path.basename(result.record.vae) : null,
  };
}

const dataDirOf = (values: { 'data-dir'?: string }): string =>
  path.resolve(values['data-dir'] ?? process.env.LATENT_STUDIO_DATA_DIR ?? defaultDataDir());

/** Conversion progress of `file` on stderr (nothing with --quiet). */
function conversionProgress(
  file: string,
  quiet: boolean | undefined,
): (p: Parameters<typeof formatConvertProgress>[0]) => void {
  return (p) => {
    if (quiet) return;
    const doing = p.phase === 'hashing' ? 'checking' : 'converting';
    process.stderr.write(`\r${doing} ${path.basename(file)}: ${formatConvertProgress(p)}      `);
  };
}

function reportConverted(result: { converted: boolean; dir: string }, quiet?: boolean): void {
  if (!quiet && result.converted) process.stderr.write(`\nconverted into ${result.dir}\n`);
}

/**
 * `--vae FILE` with a model folder: the VAE converted into the data folder's cache (once, with
 * progress on stderr) for this generation, and its infotext fields.
 */
async function replacementVae(values: {
  vae?: string;
  'data-dir'?: string;
  quiet?: boolean;
}): Promise<{ file: string; dir: string; fields: { 'VAE hash': string; VAE: string } }> {
  const file = path.resolve(values.vae!);
  const stat = await fs.stat(file).catch(() => null);
  if (!stat?.isFile()) throw new UsageError(`--vae: ${file} does not exist.`);
  if (!isCheckpointFile(file))
    throw new UsageError(
      `--vae: ${path.basename(file)} is not a VAE file (.safetensors, .ckpt, .pt).`,
    );
  const result = await ensureVaeConverted(file, {
    dataDir: dataDirOf(values),
    onProgress: conversionProgress(file, values.quiet),
  });
  reportConverted(result, values.quiet);
  return { file, dir: result.dir, fields: vaeInfotextFields({ file, sha256: result.sha256 }) };
}

/**
 * `--controlnet FILE --control-image PNG`: the ControlNet converted into the data folder's cache
 * (once), its unit's settings (checked by GenerationSettings), the control image and the
 * infotext field; null without --controlnet.
 */
async function controlNetArgs(values: {
  controlnet?: string;
  'control-image'?: string;
  preprocessor?: string;
  'control-guess'?: boolean;
  'data-dir'?: string;
  quiet?: boolean;
}): Promise<{
  unit: Record<string, unknown>;
  file: string;
  image: PixelImage;
  name: string;
  sha256: string;
} | null> {
  if (!values.controlnet) {
    for (const flag of [
      'control-image',
      'preprocessor',
      'control-weight',
      'control-start',
      'control-end',
    ])
      if ((values as Record<string, unknown>)[flag] !== undefined)
        throw new UsageError(`--${flag} needs --controlnet FILE.`);
    return null;
  }
  if (!values['control-image'])
    throw new UsageError('--controlnet needs --control-image PNG (the image that guides it).');
  const file = path.resolve(values.controlnet);
  const stat = await fs.stat(file).catch(() => null);
  if (!stat) throw new UsageError(`--controlnet: ${file} does not exist.`);
  const image = await readImage(path.resolve(values['control-image']), 'control-image');
  let result: { modelFile: string; sha256: string };
  if (stat.isDirectory() || /\.onnx$/i.test(file)) {
    // An ONNX ControlNet (a diffusers ONNX folder, its controlnet/ or model.onnx): as it is.
    const modelFile = await controlNetModelPath(file);
    result = { modelFile, sha256: await sha256File(modelFile) };
  } else {
    const converted = await ensureControlNetConverted(file, {
      dataDir: dataDirOf(values),
      onProgress: conversionProgress(file, values.quiet),
    });
    reportConverted(converted, values.quiet);
    result = converted;
  }
  const unit = {
    model: file,
    image: path.resolve(values['control-image']),
    preprocessor: values.preprocessor,
    lowThreshold: numberArg(values, 'canny-low'),
    highThreshold: numberArg(values, 'canny-high'),
    weight: numberArg(values, 'control-weight'),
    start: numberArg(values, 'control-start'),
    end: numberArg(values, 'control-end'),
    guess: values['control-guess'],
  };
  return {
    unit,
    file: result.modelFile,
    image,
    name: path.basename(file, path.extname(file)),
    sha256: result.sha256,
  };
}

const controlFlags: Record<string, string> = {
  preprocessor: 'preprocessor',
  lowThreshold: 'canny-low',
  highThreshold: 'canny-high',
  weight: 'control-weight',
  start: 'control-start',
  end: 'control-end',
};

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
      schedule: { type: 'string' },
      cfg: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      'batch-size': { type: 'string' },
      'batch-count': { type: 'string' },
      'seed-mode': { type: 'string' },
      init: { type: 'string' },
      strength: { type: 'string' },
      mask: { type: 'string' },
      'mask-blur': { type: 'string' },
      'mask-grow': { type: 'string' },
      'invert-mask': { type: 'boolean', default: false },
      'only-masked': { type: 'boolean', default: false },
      'mask-padding': { type: 'string' },
      'mask-fill': { type: 'string' },
      outpaint: { type: 'string' },
      upscale: { type: 'string' },
      'hires-steps': { type: 'string' },
      'hires-strength': { type: 'string' },
      'hires-upscaler': { type: 'string' },
      upscaler: { type: 'string' },
      'upscaler-model': { type: 'string' },
      'noise-level': { type: 'string' },
      tile: { type: 'string' },
      'memory-budget': { type: 'string' },
      provider: { type: 'string' },
      threads: { type: 'string' },
      'no-metadata': { type: 'boolean', default: false },
      quiet: { type: 'boolean', default: false },
      vae: { type: 'string' },
      prediction: { type: 'string' },
      controlnet: { type: 'string' },
      'control-image': { type: 'string' },
      preprocessor: { type: 'string' },
      'canny-low': { type: 'string' },
      'canny-high': { type: 'string' },
      'control-weight': { type: 'string' },
      'control-start': { type: 'string' },
      'control-end': { type: 'string' },
      'control-guess': { type: 'boolean', default: false },
      'data-dir': { type: 'string' },
      'lora-dir': { type: 'string' },
      'embeddings-dir': { type: 'string' },
      lora: { type: 'string', multiple: true },
      out: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (!values.model && values.upscaler === 'x4' && values['upscaler-model'])
    values.model = values['upscaler-model'];
  if (!values.model) throw new UsageError('--model is required.');
  if (values.prompt === undefined) throw new UsageError('--prompt is required.');
  if (!values.out) throw new UsageError('--out is required.');
  if (!/\.png$/i.test(values.out)) throw new UsageError('--out must name a .png file.');

  // LoRA tags and embeddings resolve before anything loads: a missing file stops here.
  const networks = await cliNetworks({
    prompt: values.prompt,
    negativePrompt: values.negative ?? '',
    dataDir: path.resolve(
      values['data-dir'] ?? process.env.LATENT_STUDIO_DATA_DIR ?? defaultDataDir(),
    ),
    loraDir: values['lora-dir'],
    embeddingsDir: values['embeddings-dir'],
    loras: values.lora ?? [],
  });

  const provider = values.provider ?? 'auto';
  if (!['auto', 'cpu', 'cuda', 'dml', 'coreml', 'webgpu'].includes(provider))
    throw new UsageError(
      `--provider must be auto, cpu, cuda, dml, coreml or webgpu, not "${provider}".`,
    );
  const engine = new DiffusionEngine({
    provider: provider as 'auto',
    threads: numberArg(values, 'threads') ?? 0,
    previewEvery: 0,
    memoryBudgetMb: numberArg(values, 'memory-budget'),
  });
  const upscaling = upscaleArgs(values);
  // Before the model: its flags are checked first, and a checkpoint's conversion depends on it.
  const control = await controlNetArgs(values);
  const checkpoint = await checkpointModel(values);
  if (checkpoint) values.model = checkpoint.dir;
  // A checkpoint's --vae is built into its conversion; a folder's is used per generation.
  const vae = values.vae && !checkpoint ? await replacementVae(values) : null;
  const model = await engine.load(values.model);
  const native = model.family.nativeSize;

  const seed = numberArg(values, 'seed') ?? Math.floor(Math.random() * 2 ** 32);
  const masking = maskingArgs(values);
  const initImage = values.init ? await readImage(values.init) : null;
  const maskImage = values.mask ? await readImage(values.mask, 'mask') : null;
  // Inpainting the whole image and outpainting work at the image's own size: say so in Size.
  let size = native;
  if (initImage && masking.mode === 'outpaint' && masking.outpaint)
    size = {
      width: initImage.width + masking.outpaint.left + masking.outpaint.right,
      height: initImage.height + masking.outpaint.top + masking.outpaint.bottom,
    };
  else if (initImage && masking.mode === 'inpaint' && !values['only-masked'])
    size = { width: initImage.width, height: initImage.height };
  const side = (v: number) => Math.min(maxSide, Math.max(64, Math.round(v / 8) * 8));
  const parsed = GenerationSettings.safeParse({
    mode: upscaling.mode ?? masking.mode ?? (values.init ? 'img2img' : 'txt2img'),
    model: path.resolve(values.model),
    vae: vae?.file ?? null,
    prompt: networks.prompt,
    negativePrompt: values.negative,
    seed,
    seedMode: values['seed-mode'],
    sampler: values.sampler,
    schedule: values.schedule,
    steps: numberArg(values, 'steps'),
    guidance: numberArg(values, 'cfg'),
    width: numberArg(values, 'width') ?? side(size.width),
    height: numberArg(values, 'height') ?? side(size.height),
    batchSize: numberArg(values, 'batch-size'),
    batchCount: numberArg(values, 'batch-count'),
    strength: numberArg(values, 'strength'),
    initImage: values.init ? path.resolve(values.init) : null,
    mask: masking.mask,
    outpaint: masking.outpaint,
    upscale: upscaling.upscale,
    controlnets: control ? [control.unit] : [],
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (issue.path[0] === 'controlnets')
      throw new UsageError(
        `--${controlFlags[String(issue.path[2])] ?? 'controlnet'}: ${issue.message}.`,
      );
    const maskFlag =
      issue.path[0] === 'mask' && issue.path[1] !== undefined
        ? `mask-${String(issue.path[1])}`
        : issue.path[0] === 'upscale' && issue.path[1] !== undefined
          ? upscaleFlags[String(issue.path[1])]
          : undefined;
    const flag =
      maskFlag ??
      {
        guidance: 'cfg',
        negativePrompt: 'negative',
        batchSize: 'batch-size',
        batchCount: 'batch-count',
        seedMode: 'seed-mode',
      }[String(issue.path[0])] ??
      String(issue.path[0]);
    throw new UsageError(`--${flag}: ${issue.message}.`);
  }
  const settings = parsed.data;
  if (!samplerTakesSchedule(settings.sampler, settings.schedule))
    throw new UsageError(
      `--schedule: ${settings.schedule} does not apply to ${settings.sampler}, which runs on its own timesteps; use it with ${sigmaSamplerNames.join(', ')}.`,
    );

  const started = Date.now();
  const result = await engine.generate(
    {
      settings,
      modelDir: values.model,
      initImage,
      maskImage,
      vaeDir: vae?.dir ?? null,
      ...(networks.resolved.loras.length ? { loras: networks.resolved.loras } : {}),
      ...(networks.resolved.embeddings.length ? { embeddings: networks.resolved.embeddings } : {}),
      controlnets: control ? [{ file: control.file, image: control.image }] : [],
    },
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
            extra: {
              modelName: checkpoint?.name ?? model.info.name,
              ...(checkpoint ? { modelHash: shortHash(checkpoint.sha256) } : {}),
              ...(checkpoint?.vae ? { VAE: checkpoint.vae } : {}),
              ...vae?.fields,
              ...networkInfotextFields(networks.resolved),
              ...(control
                ? {
                    'ControlNet 0': controlNetInfotext(
                      settings.controlnets[0],
                      control.name,
                      control.sha256,
                    ),
                  }
                : {}),
              version: `Latent Studio ${appVersion}`,
            },
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

runCli('latent-studio', main);
