import { z } from 'zod';

/** Sampler ids, as the CLI and the stored settings spell them. */
export const samplerNames = [
  'ddpm',
  'ddim',
  'euler',
  'euler_a',
  'heun',
  'dpmpp_2m',
  'lcm',
] as const;
export const SamplerName = z.enum(samplerNames);
export type SamplerName = z.infer<typeof SamplerName>;

/**
 * Noise schedules, apart from the sampler as in A1111 (`Schedule type`) and ComfyUI
 * (`scheduler`). 'default': the sampler's own, as the model's scheduler_config.json sets it up
 * (diffusers' scheduler for that sampler); 'karras': Karras et al. 2022 (rho 7); 'exponential':
 * evenly spaced in log sigma. Both span the model's training sigmas, as k-diffusion does.
 */
export const scheduleNames = ['default', 'karras', 'exponential'] as const;
export const ScheduleName = z.enum(scheduleNames);
export type ScheduleName = z.infer<typeof ScheduleName>;

/**
 * The samplers that step through any list of sigmas, so take every schedule. DDPM, DDIM and
 * LCM step on their own discrete timesteps and take only 'default'.
 */
export const sigmaSamplerNames: readonly SamplerName[] = ['euler', 'euler_a', 'heun', 'dpmpp_2m'];

/** Whether `sampler` can run with `schedule`. */
export function samplerTakesSchedule(sampler: SamplerName, schedule: ScheduleName): boolean {
  return schedule === 'default' || sigmaSamplerNames.includes(sampler);
}

/** How A1111 (and so most other tools reading our PNGs) names each sampler. */
export const a1111SamplerNames: Record<SamplerName, string> = {
  ddpm: 'DDPM',
  ddim: 'DDIM',
  euler: 'Euler',
  euler_a: 'Euler a',
  heun: 'Heun',
  dpmpp_2m: 'DPM++ 2M',
  lcm: 'LCM',
};

/** A1111's `Schedule type` labels (webui 1.9+); 'default' is its "Automatic". */
export const a1111ScheduleNames: Record<ScheduleName, string> = {
  default: 'Automatic',
  karras: 'Karras',
  exponential: 'Exponential',
};

/**
 * Sampler ids of older versions, which named the schedule in the sampler: still accepted in
 * stored settings, queued jobs and PNGs, and read as the sampler and schedule they meant.
 */
export const legacySamplerNames: Readonly<
  Record<string, { sampler: SamplerName; schedule: ScheduleName }>
> = {
  dpmpp_2m_karras: { sampler: 'dpmpp_2m', schedule: 'karras' },
};

/**
 * Rewrites a legacy sampler id in raw settings (`{ sampler: 'dpmpp_2m_karras' }`) as the
 * sampler and schedule it meant; anything else is returned as it is.
 */
export function upgradeLegacySettings(raw: unknown): unknown {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) return raw;
  const sampler = (raw as { sampler?: unknown }).sampler;
  if (typeof sampler !== 'string' || !Object.hasOwn(legacySamplerNames, sampler)) return raw;
  const meant = legacySamplerNames[sampler];
  const schedule = (raw as { schedule?: unknown }).schedule;
  return { ...raw, sampler: meant.sampler, schedule: schedule ?? meant.schedule };
}

export const generationModes = ['txt2img', 'img2img', 'inpaint', 'outpaint', 'upscale'] as const;
export const GenerationMode = z.enum(generationModes);
export type GenerationMode = z.infer<typeof GenerationMode>;

/** Longest prompt accepted: far beyond any useful prompt, short of hurting the tokenizer. */
export const maxPromptChars = 20_000;
/** Largest side in pixels; larger outputs go through the upscaler with tiling. */
export const maxSide = 4096;

const Side = z
  .number()
  .int()
  .min(64, 'must be at least 64 pixels')
  .max(maxSide, `must be at most ${maxSide} pixels`)
  .refine((v) => v % 8 === 0, 'must be a multiple of 8');

/** How a painted mask is applied (white = repaint). */
export const MaskOptions = z
  .object({
    /** The mask image: a path or a library image id. */
    image: z.string().min(1).max(4096),
    /** Feather radius in pixels (Gaussian blur of the mask edge). */
    blur: z.number().int().min(0).max(256).default(4),
    /** Grow (>0) or shrink (<0) the mask by this many pixels before feathering. */
    grow: z.number().int().min(-256).max(256).default(0),
    invert: z.boolean().default(false),
    /** Crop around the mask (plus padding), generate at the model's size, paste back. */
    onlyMasked: z.boolean().default(false),
    padding: z.number().int().min(0).max(1024).default(32),
    /** What the masked area holds before diffusion. */
    fill: z.enum(['original', 'noise', 'edge']).default('original'),
  })
  .strict();
export type MaskOptions = z.infer<typeof MaskOptions>;
/** MaskOptions' defaults, without the image reference. */
export const defaultMaskOptions: Omit<MaskOptions, 'image'> = MaskOptions.omit({
  image: true,
}).parse({});

const Extension = z
  .number()
  .int()
  .min(0)
  .max(2048)
  .refine((v) => v % 8 === 0, 'must be a multiple of 8');
/** Outpainting: pixels added on each side of the source image. */
export const OutpaintOptions = z
  .object({
    left: Extension.default(0),
    top: Extension.default(0),
    right: Extension.default(0),
    bottom: Extension.default(0),
  })
  .strict();
export type OutpaintOptions = z.infer<typeof OutpaintOptions>;

/** Upscaling: two-pass ("hires") img2img at a larger size, or the x4 upscaler model. */
export const UpscaleOptions = z
  .object({
    method: z.enum(['hires', 'x4']).default('hires'),
    /** hires: target size = base size * factor (rounded to multiples of 8). */
    factor: z.number().min(1).max(4).default(2),
    /** hires: how the base result is enlarged before the second pass. */
    upscaler: z.enum(['latent', 'lanczos']).default('latent'),
    hiresSteps: z.number().int().min(1).max(500).default(15),
    hiresStrength: z.number().min(0).max(1).default(0.5),
    /** x4: noise added to the low-resolution input (0..max_noise_level, 350). */
    noiseLevel: z.number().int().min(0).max(350).default(20),
    /** x4: the upscaler model folder or id (the generation's `model` is the base model). */
    model: z.string().min(1).max(4096).nullable().default(null),
    /** Tile size in pixels for tiled diffusion / VAE decoding; 0 picks it from memory. */
    tile: z.number().int().min(0).max(4096).default(0),
  })
  .strict();
export type UpscaleOptions = z.infer<typeof UpscaleOptions>;

/** Control-image preprocessors: 'none' uses the image as it is (a depth, pose or line map). */
export const controlPreprocessors = ['none', 'canny'] as const;
export const ControlPreprocessor = z.enum(controlPreprocessors);
export type ControlPreprocessor = z.infer<typeof ControlPreprocessor>;

const Fraction = z.number().min(0).max(1);

/**
 * One ControlNet unit (Zhang et al. 2023): a ControlNet model guiding the generation by a control
 * image, with A1111's per-unit settings.
 */
export const ControlNetUnit = z
  .object({
    /** The ControlNet file (.safetensors) or converted folder: a path or a name. */
    model: z.string().min(1).max(4096),
    /** The control image: a path or a library image id. */
    image: z.string().min(1).max(4096),
    preprocessor: ControlPreprocessor.default('none'),
    /** Canny's hysteresis thresholds on the gradient magnitude (OpenCV's, 0..255 images). */
    lowThreshold: z.number().min(0).max(1000).default(100),
    highThreshold: z.number().min(0).max(1000).default(200),
    /** How strongly the residuals count; 0 leaves the generation exactly as without the unit. */
    weight: z.number().min(0).max(2).default(1),
    /** Fractions of the steps between which the unit acts. */
    start: Fraction.default(0),
    end: Fraction.default(1),
    /** A1111's "ControlNet is more important": soft weights, conditional half only. */
    guess: z.boolean().default(false),
  })
  .strict()
  .refine((u) => u.start <= u.end, { message: 'start must not be after end', path: ['start'] })
  .refine((u) => u.lowThreshold <= u.highThreshold, {
    message: 'the low threshold must not exceed the high one',
    path: ['lowThreshold'],
  });
export type ControlNetUnit = z.infer<typeof ControlNetUnit>;

/**
 * A ControlNet unit read from an imported image's infotext (A1111's `ControlNet N`): its settings
 * without the control image, which A1111 does not store; `model` is the file of the ControlNet
 * folder of that name, null when the folder has none.
 */
export const ImportedControlUnit = z.object({
  model: z.string().nullable(),
  preprocessor: ControlPreprocessor.optional(),
  lowThreshold: z.number().optional(),
  highThreshold: z.number().optional(),
  weight: z.number().optional(),
  start: Fraction.optional(),
  end: Fraction.optional(),
  guess: z.boolean().optional(),
});
export type ImportedControlUnit = z.infer<typeof ImportedControlUnit>;

/** The fields of a generation (see GenerationSettings, which parses with them). */
export const GenerationFields = z
  .object({
    mode: GenerationMode.default('txt2img'),
    /** Model folder path or library id. */
    model: z.string().min(1).max(4096),
    /**
     * A replacement VAE for this generation: null uses the model's own; else a VAE-only file
     * (.safetensors, .ckpt, .pt), named by its path or by its file name in the studio's VAE
     * folder. The latent scaling factor stays the model family's.
     */
    vae: z.string().min(1).max(4096).nullable().default(null),
    prompt: z.string().max(maxPromptChars, `must be at most ${maxPromptChars} characters`),
    negativePrompt: z.string().max(maxPromptChars).default(''),
    /** Any integer 0 .. 2^53-1; torch seeds its generator with the low 32 bits. */
    seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
    /** 'batch': one noise draw for the whole batch (diffusers, ComfyUI); 'per-image': seed+i (A1111). */
    seedMode: z.enum(['batch', 'per-image']).default('batch'),
    sampler: SamplerName.default('euler_a'),
    /** The sigma schedule the sampler steps through (samplerTakesSchedule says which apply). */
    schedule: ScheduleName.default('default'),
    steps: z.number().int().min(1).max(500).default(25),
    guidance: z.number().min(0).max(50).default(7),
    width: Side.default(512),
    height: Side.default(512),
    batchSize: z.number().int().min(1).max(16).default(1),
    batchCount: z.number().int().min(1).max(100).default(1),
    /** img2img denoising strength, 0 keeps the input, 1 ignores it. */
    strength: z.number().min(0).max(1).default(0.75),
    /** Source image for img2img/inpaint/upscale: a path or an image id of the library. */
    initImage: z.string().min(1).max(4096).nullable().default(null),
    /** inpaint (and outpaint, which builds its own mask): how the mask is used. */
    mask: MaskOptions.nullable().default(null),
    outpaint: OutpaintOptions.nullable().default(null),
    /** txt2img with upscale: the two-pass hires fix; mode 'upscale': enlarge initImage. */
    upscale: UpscaleOptions.nullable().default(null),
    /** ControlNet units, applied together (their residuals summed); none by default. */
    controlnets: z.array(ControlNetUnit).max(4, 'at most 4 ControlNet units').default([]),
    /**
     * Decode the final image with TAESD (the preview decoder, src/shared/taesd.ts) instead of the
     * full VAE: seconds instead of a minute on a CPU, at a visible loss of detail. Off by default;
     * without a TAESD decoder for the model's family, and for upscaling, the full VAE decodes.
     */
    fastDecode: z.boolean().default(false),
  })
  .strict();

/**
 * A generation, frozen: every setting the engine took, as one JSON object. It is what the queue
 * stores, what the history stores and what the PNG carries, so that any image can be made again.
 * Images (init image, mask) are referenced by content hash or path, never inlined. Parsing
 * upgrades settings stored by older versions (upgradeLegacySettings); GenerationFields is the
 * object schema itself (its fields, `.partial()`).
 */
export const GenerationSettings = z.preprocess(upgradeLegacySettings, GenerationFields);
export type GenerationSettings = z.infer<typeof GenerationFields>;
export type GenerationInput = z.input<typeof GenerationFields>;

/**
 * GenerationSettings' defaults (and those of its option objects), for forms and usage texts
 * that start from them: read from the schema, never restated.
 */
export const defaultGenerationSettings: Omit<GenerationSettings, 'model' | 'prompt' | 'seed'> =
  GenerationFields.omit({ model: true, prompt: true, seed: true }).parse({});
export const defaultUpscaleOptions: UpscaleOptions = UpscaleOptions.parse({});
export const defaultOutpaintOptions: OutpaintOptions = OutpaintOptions.parse({});
