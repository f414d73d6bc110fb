import {
  type GenerationInput,
  type GenerationMode,
  type GenerationSettings,
  type MaskOptions,
  defaultGenerationSettings,
  defaultMaskOptions,
  defaultOutpaintOptions,
  defaultUpscaleOptions,
  familyCapabilities,
  isSdxlFamily,
  type SamplerName,
  type ScheduleName,
  type UpscaleOptions,
  maxPromptChars,
  maxSide,
  samplerTakesSchedule,
} from '../../shared';
import { clamp } from './format';
import { promptMarks, textForCounting, withEmbeddingCost } from './prompt-networks';
import type { Studio } from './studio.svelte';

export type SeedMode = 'random' | 'fixed';
export interface TokenCount {
  total: number;
  chunks: number[];
}

export const modeLabels: Record<GenerationMode, string> = {
  txt2img: 'Text',
  img2img: 'Image',
  inpaint: 'Inpaint',
  outpaint: 'Outpaint',
  upscale: 'Upscale',
};

export interface SizePreset {
  label: string;
  width: number;
  height: number;
}

/** Aspect ratios offered, short side first. */
const presetRatios: [number, number][] = [
  [1, 1],
  [2, 3],
  [3, 2],
  [3, 4],
  [4, 3],
  [9, 16],
  [16, 9],
];

const snap8 = (v: number) => Math.max(64, Math.round(v / 8) * 8);

/**
 * Sizes to offer for a model: its native size in each aspect ratio. SD 1.x/2.x models were
 * trained on a fixed short side (512 x 768 for 2:3), SDXL on buckets of about the native area
 * (832 x 1216), so the family picks which side stays. Multiples of 8, at least 64, as the
 * engine takes. Without a known native size: SD 1.x's 512.
 */
export function sizePresetsFor(
  native: { width: number; height: number } | null,
  family: string | null,
): SizePreset[] {
  const base = native ? Math.sqrt(native.width * native.height) : 512;
  const sameArea = isSdxlFamily(family);
  const out: SizePreset[] = [];
  for (const [a, b] of presetRatios) {
    const portrait = a <= b;
    const [short, long] = portrait ? [a, b] : [b, a];
    const shortSide = sameArea ? snap8(base * Math.sqrt(short / long)) : snap8(base);
    const longSide = snap8((shortSide * long) / short);
    const [width, height] = portrait ? [shortSide, longSide] : [longSide, shortSide];
    const taken = out.some((p) => p.width === width && p.height === height);
    if (width > maxSide || height > maxSide || taken) continue;
    out.push({ label: `${width} × ${height} (${a}:${b})`, width, height });
  }
  return out;
}

/** A random seed in the range torch accepts (32 bits keeps it readable). */
export const randomSeed = () => Math.floor(Math.random() * 2 ** 32);

const sideProblem = (v: number): string | null => {
  if (!Number.isInteger(v)) return 'must be a whole number';
  if (v < 64) return 'must be at least 64';
  if (v > maxSide) return `must be at most ${maxSide}`;
  if (v % 8 !== 0) return 'must be a multiple of 8';
  return null;
};

/**
 * The Generate form: every setting of the next generation. Image inputs (the source image, the
 * painted mask) live on the canvas; `settings()` joins both into what the queue takes.
 */
export class GenerateForm {
  mode = $state<GenerationMode>('txt2img');
  modelId = $state('');
  /** A replacement VAE's file name in the VAE folder; null: the model's own. */
  vae = $state<string | null>(null);
  /** Fast decode (TAESD): the final image decoded by TAESD instead of the VAE. */
  fastDecode = $state(defaultGenerationSettings.fastDecode);
  prompt = $state('');
  negativePrompt = $state('');
  sampler = $state<SamplerName>(defaultGenerationSettings.sampler);
  /** Kept while a sampler that cannot take it is chosen; sent as 'default' then. */
  schedule = $state<ScheduleName>(defaultGenerationSettings.schedule);
  steps = $state(defaultGenerationSettings.steps);
  guidance = $state(defaultGenerationSettings.guidance);
  seedMode = $state<SeedMode>('random');
  seed = $state(randomSeed());
  /**
   * How a batch draws its noise: 'batch' one generator for the whole batch (diffusers, ComfyUI),
   * 'per-image' seed + i for image i (A1111), so each image is a batch of one with its seed.
   */
  batchSeeds = $state<GenerationSettings['seedMode']>('batch');
  /** The seed the last generation used (what "reuse last" picks). */
  lastSeed = $state<number | null>(null);
  width = $state(defaultGenerationSettings.width);
  height = $state(defaultGenerationSettings.height);
  batchSize = $state(defaultGenerationSettings.batchSize);
  batchCount = $state(defaultGenerationSettings.batchCount);
  strength = $state(defaultGenerationSettings.strength);

  mask = $state<Omit<MaskOptions, 'image'>>({ ...defaultMaskOptions });
  outpaint = $state({ ...defaultOutpaintOptions });
  // Lanczos then a light second pass keeps the picture's shapes; a latent enlargement needs a
  // strength that redraws them (0.5 and up), which is a choice to make, not a form default.
  upscale = $state<UpscaleOptions>({
    ...defaultUpscaleOptions,
    upscaler: 'lanczos',
    hiresStrength: 0.35,
  });
  /** txt2img only: the two-pass hires fix with the upscale options. */
  hiresFix = $state(false);

  promptTokens = $state.raw<TokenCount | null>(null);
  negativeTokens = $state.raw<TokenCount | null>(null);

  widthProblem = $derived(sideProblem(this.width));
  heightProblem = $derived(sideProblem(this.height));
  model = $derived.by(() => this.studio.models.byId(this.modelId) ?? null);
  needsImage = $derived(this.mode !== 'txt2img');
  /** Modes that repaint part of an image, where an inpainting (9-channel) model works. */
  paintsInside = $derived(this.mode === 'inpaint' || this.mode === 'outpaint');
  /** In Inpaint/Outpaint with a text-to-image model: an inpainting model to suggest, if any. */
  inpaintingSuggestion = $derived.by(() => {
    if (!this.paintsInside || !this.model || familyCapabilities(this.model.family).inpaint)
      return null;
    return this.studio.models.generators.find((m) => familyCapabilities(m.family).inpaint) ?? null;
  });
  /** Why Generate cannot run now, in words; null when it can. */
  blocker = $derived.by(() => {
    if (!this.model) return 'Choose a model first.';
    if (this.widthProblem) return `Width ${this.widthProblem}.`;
    if (this.heightProblem) return `Height ${this.heightProblem}.`;
    const tooLong = (text: string, what: string) =>
      text.length > maxPromptChars
        ? `${what} is ${text.length.toLocaleString('en-US')} characters long; shorten it to ${maxPromptChars.toLocaleString('en-US')}.`
        : null;
    const long =
      tooLong(this.prompt, 'The prompt') ?? tooLong(this.negativePrompt, 'The negative prompt');
    if (long) return long;
    if (this.needsImage && !this.studio.canvas.image)
      return 'Drop, paste or send an image to the canvas first.';
    if (this.mode === 'inpaint' && !this.studio.canvas.hasMask)
      return 'Paint the area to repaint on the canvas first.';
    if (this.mode === 'upscale' && this.upscale.method === 'x4' && !this.upscale.model)
      return 'Choose an x4 upscaler model.';
    return this.studio.controlnets.blocker;
  });

  #tokenTimers: Record<'prompt' | 'negative', ReturnType<typeof setTimeout> | undefined> = {
    prompt: undefined,
    negative: undefined,
  };

  constructor(private readonly studio: Studio) {}

  /** Picks a model and follows its native size and the settings its card recommends. */
  chooseModel(id: string): void {
    this.modelId = id;
    const model = this.studio.models.byId(id);
    if (model?.nativeWidth && model.nativeHeight) {
      this.width = model.nativeWidth;
      this.height = model.nativeHeight;
    }
    const d = model?.defaults;
    if (d?.sampler) this.sampler = d.sampler;
    if (d?.steps) {
      this.steps = d.steps;
      // The second pass redraws detail only: about half the steps the card asks for.
      this.upscale.hiresSteps = Math.max(1, Math.round(d.steps / 2));
    }
    if (d?.guidance !== null && d?.guidance !== undefined) this.guidance = d.guidance;
  }

  /**
   * Picks the first model that makes images from text (else the first at all) when none, or one
   * no longer listed, is chosen.
   */
  ensureModel(): void {
    if (this.model) return;
    const generators = this.studio.models.generators;
    const first = generators.find((m) => !familyCapabilities(m.family).inpaint) ?? generators[0];
    if (first) this.chooseModel(first.id);
    else this.modelId = '';
  }

  setSize(width: number, height: number): void {
    this.width = width;
    this.height = height;
  }

  swapSize(): void {
    [this.width, this.height] = [this.height, this.width];
  }

  dice(): void {
    this.seed = randomSeed();
    this.seedMode = 'fixed';
  }

  reuseLastSeed(): void {
    if (this.lastSeed === null) return;
    this.seed = this.lastSeed;
    this.seedMode = 'fixed';
  }

  useSeed(seed: number): void {
    this.seed = seed;
    this.seedMode = 'fixed';
  }

  /**
   * Sets the form up to make `image` of a stored generation again as image `batchIndex` + 1 of
   * the next one: its seed, and under one noise draw per batch ('batch') the batch size it was
   * drawn with, since image i's noise is the i-th slice of that draw. Returns which image of
   * the next generation it will be (0-based).
   */
  reuseSeedOf(
    image: { seed: number; batchIndex: number },
    settings: Pick<GenerationSettings, 'seedMode' | 'batchSize'>,
  ): number {
    this.useSeed(image.seed);
    this.batchSeeds = settings.seedMode;
    if (settings.seedMode === 'batch' && settings.batchSize > 1) {
      this.batchSize = settings.batchSize;
      this.batchCount = 1;
      return image.batchIndex;
    }
    return 0;
  }

  /**
   * Counts tokens a moment after typing stops (the host tokenizes with the model's own). LoRA
   * tags cost nothing and an embedding its vectors, so they are taken out of the text counted
   * and the embeddings' vectors added (prompt-networks.ts).
   */
  refreshTokens(which: 'prompt' | 'negative'): void {
    clearTimeout(this.#tokenTimers[which]);
    const text = which === 'prompt' ? this.prompt : this.negativePrompt;
    const modelId = this.modelId;
    const api = this.studio.api;
    if (!api || !modelId) return;
    const marks = promptMarks(text, this.studio.networks.list);
    const costs = marks.filter((m) => m.kind === 'embedding').map((m) => m.cost);
    this.#tokenTimers[which] = setTimeout(async () => {
      try {
        const counted = await api.countTokens({ modelId, prompt: textForCounting(text, marks) });
        const chunks = costs.length ? withEmbeddingCost(counted.chunks, costs) : counted.chunks;
        const count = { total: chunks.reduce((a, b) => a + b, 0), chunks };
        if (which === 'prompt') this.promptTokens = count;
        else this.negativeTokens = count;
      } catch {
        if (which === 'prompt') this.promptTokens = null;
        else this.negativeTokens = null;
      }
    }, 250);
  }

  /** The settings of the next job; image ids come from the canvas. */
  settings(images: { initImage: string | null; maskImage: string | null }): GenerationInput {
    const seed = this.seedMode === 'random' ? randomSeed() : this.seed;
    const withImage = this.mode !== 'txt2img';
    const settings: GenerationInput = {
      mode: this.mode,
      model: this.modelId,
      // The x4 upscaler decodes with its own VAE, which nothing replaces.
      vae: this.mode === 'upscale' && this.upscale.method === 'x4' ? null : this.vae,
      fastDecode: this.fastDecode,
      prompt: this.prompt,
      negativePrompt: this.negativePrompt,
      seed,
      seedMode: this.batchSeeds,
      sampler: this.sampler,
      schedule: samplerTakesSchedule(this.sampler, this.schedule) ? this.schedule : 'default',
      steps: this.steps,
      guidance: this.guidance,
      width: this.width,
      height: this.height,
      batchSize: this.batchSize,
      batchCount: this.batchCount,
      strength: this.strength,
      initImage: withImage ? images.initImage : null,
      mask:
        this.mode === 'inpaint' && images.maskImage
          ? { ...this.mask, image: images.maskImage }
          : null,
      outpaint: this.mode === 'outpaint' ? { ...this.outpaint } : null,
      upscale:
        this.mode === 'upscale' || (this.mode === 'txt2img' && this.hiresFix)
          ? { ...this.upscale }
          : null,
      controlnets: this.studio.controlnets.settings(),
    };
    return settings;
  }

  /** Fills the form from a stored generation ("reuse all settings"). */
  apply(s: Partial<GenerationSettings>): void {
    if (s.mode) this.mode = s.mode;
    if (s.model && this.studio.models.byId(s.model)) this.modelId = s.model;
    if (s.vae !== undefined) this.vae = s.vae;
    if (s.fastDecode !== undefined) this.fastDecode = s.fastDecode;
    if (s.prompt !== undefined) this.prompt = s.prompt;
    if (s.negativePrompt !== undefined) this.negativePrompt = s.negativePrompt;
    if (s.sampler) this.sampler = s.sampler;
    if (s.schedule) this.schedule = s.schedule;
    if (s.steps) this.steps = s.steps;
    if (s.guidance !== undefined) this.guidance = s.guidance;
    if (s.seed !== undefined) this.useSeed(s.seed);
    if (s.seedMode) this.batchSeeds = s.seedMode;
    if (s.width) this.width = s.width;
    if (s.height) this.height = s.height;
    if (s.batchSize) this.batchSize = s.batchSize;
    if (s.batchCount) this.batchCount = s.batchCount;
    if (s.strength !== undefined) this.strength = s.strength;
    if (s.mask) {
      const { image: _image, ...options } = s.mask;
      this.mask = options;
    }
    if (s.outpaint) this.outpaint = { ...s.outpaint };
    if (s.upscale) this.upscale = { ...s.upscale };
    this.hiresFix = s.mode === 'txt2img' && !!s.upscale;
  }

  /** Outpaint extensions, snapped to multiples of 8 the engine accepts. */
  setOutpaint(side: 'left' | 'top' | 'right' | 'bottom', pixels: number): void {
    this.outpaint[side] = clamp(Math.round(pixels / 8) * 8, 0, 2048);
  }
}
