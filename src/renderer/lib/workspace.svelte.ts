import type { GenerationSettings } from '../../shared';
import { imageFromRef } from './canvas.svelte';
import type { SeedMode } from './generate.svelte';
import type { Studio } from './studio.svelte';

/**
 * The work in progress, as it was: the form's every field, the canvas image (a library image id)
 * and the painted mask (a greyscale PNG). Kept in the browser's storage for this studio origin,
 * so a reload or a restart of the app brings it back.
 */
export interface SavedWorkspace {
  version: 1;
  // The units live apart from the form (controlnets.svelte.ts): `controlnets` below.
  form: Omit<GenerationSettings, 'initImage' | 'mask' | 'controlnets'> & {
    mask: Omit<NonNullable<GenerationSettings['mask']>, 'image'>;
    seedChoice: SeedMode;
    hiresFix: boolean;
  };
  imageId: string | null;
  /** The ControlNet units with a model and a control image (absent in older saved work). */
  controlnets?: GenerationSettings['controlnets'];
  /** The mask as exportMask writes it (base64 PNG), or null when nothing is painted. */
  mask: string | null;
}

const storageKey = 'latent-studio:workspace';
const saveDelayMs = 400;

export function readWorkspace(): SavedWorkspace | null {
  try {
    const raw = localStorage.getItem(storageKey);
    if (!raw) return null;
    const saved = JSON.parse(raw) as SavedWorkspace;
    return saved?.version === 1 && saved.form ? saved : null;
  } catch {
    return null;
  }
}

/** Saves the work in progress a moment after each change, and puts it back at start. */
export class Workspace {
  #timer: ReturnType<typeof setTimeout> | undefined;
  #stop: (() => void) | null = null;

  constructor(private readonly studio: Studio) {}

  snapshot(): Omit<SavedWorkspace, 'mask'> {
    const f = this.studio.form;
    return {
      version: 1,
      form: {
        mode: f.mode,
        model: f.modelId,
        vae: f.vae,
        fastDecode: f.fastDecode,
        prompt: f.prompt,
        negativePrompt: f.negativePrompt,
        seed: f.seed,
        seedMode: f.batchSeeds,
        seedChoice: f.seedMode,
        sampler: f.sampler,
        schedule: f.schedule,
        steps: f.steps,
        guidance: f.guidance,
        width: f.width,
        height: f.height,
        batchSize: f.batchSize,
        batchCount: f.batchCount,
        strength: f.strength,
        mask: { ...f.mask },
        outpaint: { ...f.outpaint },
        upscale: { ...f.upscale },
        hiresFix: f.hiresFix,
      },
      imageId: this.studio.canvas.image?.imageId ?? null,
      controlnets: this.studio.controlnets.settings(),
    };
  }

  /** Puts saved work back: the form at once, then the canvas image and its mask. */
  async restore(saved: SavedWorkspace | null = readWorkspace()): Promise<void> {
    if (!saved) return;
    const studio = this.studio;
    const { seedChoice, hiresFix, mask, ...settings } = saved.form;
    studio.form.apply({ ...settings, mask: { ...mask, image: '' } });
    studio.form.seedMode = seedChoice;
    studio.form.hiresFix = hiresFix;
    if (saved.controlnets?.length) await studio.controlnets.apply(saved.controlnets);
    const api = studio.api;
    if (!api || !saved.imageId) return;
    try {
      studio.canvas.setImage(imageFromRef(await api.getImage({ id: saved.imageId })));
      if (saved.mask) await studio.canvas.loadMask(`data:image/png;base64,${saved.mask}`);
    } catch {
      // The image was deleted since: the form alone comes back.
    }
  }

  /** Saves after every change from now on (call after restore). */
  watch(): void {
    this.#stop?.();
    this.#stop = $effect.root(() => {
      $effect(() => {
        const snapshot = this.snapshot();
        // A stroke, an undo or a loaded mask changes these; the pixels are read when saving.
        void this.studio.canvas.maskCoverage;
        void this.studio.canvas.hasMask;
        clearTimeout(this.#timer);
        this.#timer = setTimeout(() => void this.#save(snapshot), saveDelayMs);
      });
    });
  }

  async #save(snapshot: Omit<SavedWorkspace, 'mask'>): Promise<void> {
    const canvas = this.studio.canvas;
    // Mid-stroke the mask is half painted; the stroke's end changes the coverage and saves again.
    if (canvas.stroking) return;
    let mask: string | null = null;
    try {
      if (canvas.image && canvas.hasMask) mask = await canvas.exportMask();
    } catch {
      mask = null;
    }
    try {
      localStorage.setItem(storageKey, JSON.stringify({ ...snapshot, mask }));
    } catch {
      // Storage full or refused: the last saved state stays.
    }
  }
}
