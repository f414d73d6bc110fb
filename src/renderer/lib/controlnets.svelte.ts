import {
  type ControlNetList,
  type ControlNetUnit,
  type ControlPreprocessor,
  type ImportedControlUnit,
  maxControlPreviewSide,
} from '../../shared';
import { blobToBase64 } from './format';
import { describeError } from './errors';
import type { Studio } from './studio.svelte';

/** A unit's control image as the form shows it: an upload or a library image, by id. */
export interface ControlImage {
  imageId: string;
  url: string;
  width: number;
  height: number;
}

/** One ControlNet unit of the form (ControlNetUnit, with its image to show and its preview). */
export interface ControlUnitForm {
  /** Stable key for the list (units are added and removed). */
  key: number;
  /** A file name of the ControlNet folder; '' until one is chosen. */
  model: string;
  image: ControlImage | null;
  preprocessor: ControlPreprocessor;
  lowThreshold: number;
  highThreshold: number;
  weight: number;
  start: number;
  end: number;
  guess: boolean;
  /** What the ControlNet will see (a PNG data URL), null until computed. */
  preview: string | null;
  /** Why the preview could not be made. */
  problem: string | null;
}

/** The most units the queue takes (GenerationSettings.controlnets). */
export const maxControlUnits = 4;

const isId = (v: string): boolean => /^[A-Za-z0-9_-]{1,64}$/.test(v);

/**
 * The ControlNet units of the Generate form (issue 19): the models the host's ControlNet folder
 * offers, each unit's settings and control image (uploaded, the canvas image, or the lines
 * painted with the mask brush), and the preprocessed preview the host computes.
 */
export class ControlNets {
  list = $state.raw<ControlNetList | null>(null);
  /** Why the folder could not be listed. */
  problem = $state<string | null>(null);
  units = $state<ControlUnitForm[]>([]);
  #nextKey = 1;
  /** Pending preview requests by unit key (not state: nothing shows them). */
  #previewTimers: Record<number, ReturnType<typeof setTimeout>> = {};

  constructor(private readonly studio: Studio) {}

  /** Why Generate cannot run with these units, in words; null when it can. */
  blocker = $derived.by(() => {
    if (this.units.length === 0) return null;
    const mode = this.studio.form.mode;
    if (mode !== 'txt2img' && mode !== 'img2img')
      return 'ControlNet works in Text and Image modes: remove the units or switch mode.';
    if (mode === 'txt2img' && this.studio.form.hiresFix)
      return 'ControlNet does not work with the hires fix yet: turn one of them off.';
    for (const [i, u] of this.units.entries()) {
      if (!u.model) return `Choose a model for ControlNet unit ${i + 1}.`;
      if (!u.image) return `Give ControlNet unit ${i + 1} a control image.`;
      if (u.start > u.end) return `ControlNet unit ${i + 1} starts after it ends.`;
      if (u.preprocessor === 'canny' && u.lowThreshold > u.highThreshold)
        return `ControlNet unit ${i + 1}'s low threshold is above its high one.`;
    }
    return null;
  });

  /** Reads the folder again (at start, when the setting changes, when a model list opens). */
  async load(): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    try {
      this.list = await api.listControlNets();
      this.problem = null;
    } catch (err) {
      this.problem = describeError(err);
    }
  }

  /** Whether `name` is a file of the ControlNet folder (as last listed). */
  has(name: string): boolean {
    return this.list?.files.some((f) => f.name === name) ?? false;
  }

  add(from: Partial<Omit<ControlUnitForm, 'key'>> = {}): ControlUnitForm | null {
    if (this.units.length >= maxControlUnits) return null;
    const unit: ControlUnitForm = {
      key: this.#nextKey++,
      model: this.list?.files[0]?.name ?? '',
      image: null,
      preprocessor: 'canny',
      lowThreshold: 100,
      highThreshold: 200,
      weight: 1,
      start: 0,
      end: 1,
      guess: false,
      preview: null,
      problem: null,
      ...from,
    };
    this.units.push(unit);
    return this.units[this.units.length - 1];
  }

  remove(key: number): void {
    clearTimeout(this.#previewTimers[key]);
    this.units = this.units.filter((u) => u.key !== key);
  }

  #unit(key: number): ControlUnitForm | undefined {
    return this.units.find((u) => u.key === key);
  }

  /** Uploads an image file as the unit's control image. */
  async useFile(key: number, file: Blob, name?: string): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
      this.studio.notices.push('error', 'Only PNG, JPEG and WebP images can be used.');
      return;
    }
    try {
      const data = await blobToBase64(file);
      const up = await api.uploadImage({ data, purpose: 'init', ...(name ? { name } : {}) });
      this.#setImage(key, up);
    } catch (err) {
      this.studio.notices.error(err, 'Could not use that control image');
    }
  }

  /** The canvas's current image as the unit's control image. */
  useCanvasImage(key: number): void {
    const image = this.studio.canvas.image;
    if (image) this.#setImage(key, image);
  }

  /**
   * The lines painted on the canvas with the mask brush as a scribble: white lines on black, as
   * the mask exports (the same painting code; in Text mode the mask is not used otherwise).
   */
  async usePaintedLines(key: number): Promise<void> {
    const api = this.studio.api;
    if (!api || !this.studio.canvas.hasMask) return;
    try {
      const data = await this.studio.canvas.exportMask();
      const up = await api.uploadImage({ data, purpose: 'init', name: 'scribble.png' });
      const unit = this.#unit(key);
      if (unit) unit.preprocessor = 'none';
      this.#setImage(key, up);
    } catch (err) {
      this.studio.notices.error(err, 'Could not use the painted lines');
    }
  }

  #setImage(key: number, image: ControlImage): void {
    const unit = this.#unit(key);
    if (!unit) return;
    unit.image = {
      imageId: image.imageId,
      url: image.url,
      width: image.width,
      height: image.height,
    };
    this.schedulePreview(key);
  }

  /** Asks the host for the unit's preview a moment after its image or preprocessor changes. */
  schedulePreview(key: number): void {
    clearTimeout(this.#previewTimers[key]);
    this.#previewTimers[key] = setTimeout(() => void this.#preview(key), 200);
  }

  async #preview(key: number): Promise<void> {
    const unit = this.#unit(key);
    const api = this.studio.api;
    if (!unit?.image || !api) return;
    const form = this.studio.form;
    // At the output size (what the engine feeds the ControlNet), within what the host previews.
    const scale = Math.min(1, maxControlPreviewSide / Math.max(form.width, form.height));
    const side = (v: number) => Math.max(8, Math.round(v * scale));
    const request = {
      image: unit.image.imageId,
      preprocessor: unit.preprocessor,
      lowThreshold: unit.lowThreshold,
      highThreshold: Math.max(unit.lowThreshold, unit.highThreshold),
      width: side(form.width),
      height: side(form.height),
    };
    try {
      const preview = await api.previewControlImage(request);
      const now = this.#unit(key);
      if (now) {
        now.preview = preview.dataUrl;
        now.problem = null;
      }
    } catch (err) {
      const now = this.#unit(key);
      if (now) {
        now.preview = null;
        now.problem = describeError(err);
      }
    }
  }

  /** The units as the queue takes them (call only when `blocker` is null). */
  settings(): ControlNetUnit[] {
    return this.units
      .filter((u) => u.model && u.image)
      .map((u) => ({
        model: u.model,
        image: u.image!.imageId,
        preprocessor: u.preprocessor,
        lowThreshold: u.lowThreshold,
        highThreshold: u.highThreshold,
        weight: u.weight,
        start: u.start,
        end: u.end,
        guess: u.guess,
      }));
  }

  /** Puts a stored generation's units back, their control images fetched by id ("reuse"). */
  async apply(units: readonly ControlNetUnit[]): Promise<void> {
    this.units = [];
    for (const u of units) {
      const { image: imageId, ...rest } = u;
      const unit = this.add({ ...rest, image: null });
      if (!unit || !isId(imageId) || !this.studio.api) continue;
      try {
        const ref = await this.studio.api.getImage({ id: imageId });
        this.#setImage(unit.key, ref);
      } catch (err) {
        this.studio.notices.error(
          err,
          `The control image of ControlNet unit ${units.indexOf(u) + 1} could not be shown`,
        );
      }
    }
  }

  /** Units read from an imported image (A1111's `ControlNet N`): without control images. */
  applyImported(units: readonly ImportedControlUnit[]): void {
    this.units = [];
    for (const { model, ...rest } of units) this.add({ ...rest, model: model ?? '' });
  }
}
