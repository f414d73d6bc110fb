// The content filter (issue 18 item 2): Stable Diffusion's safety checker, converted once into
// the data folder's cache, run on each generated image after decoding. Its verdict goes into
// the image's PNG metadata (`Content filter`, `Content filter scores`).

import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { PixelImage } from '../../engine';
import { SafetyChecker, type SafetyVerdict } from '../../engine/safety';
import { type Settings, StudioError } from '../../shared';
import { ensureSafetyCheckerConverted } from '../models/checkpoint-cache';

/** Where the checker is looked for when Settings names none. */
export const DEFAULT_CHECKER = path.join('models', 'safety_checker', 'model.safetensors');

/** The checker file Settings selects (absolute). */
export function checkerFile(settings: Settings, dataDir: string): string {
  return settings.contentFilterModel ?? path.join(dataDir, DEFAULT_CHECKER);
}

/** Runs the selected checker; keeps the last one loaded until the selection changes. */
export class ContentFilter {
  #loaded: { file: string; checker: Promise<SafetyChecker> } | null = null;

  constructor(private readonly dataDir: string) {}

  /**
   * Refuses, with a sentence, a job whose filter is on but whose checker file is missing (at
   * enqueue, so no generation is made and then lost).
   */
  async validate(settings: Settings): Promise<void> {
    if (!settings.contentFilter) return;
    const file = checkerFile(settings, this.dataDir);
    const st = await stat(file).catch(() => null);
    if (!st?.isFile()) {
      throw new StudioError(
        'invalid-argument',
        `The content filter is on but its model ${file} is missing; put Stable Diffusion's safety checker (model.safetensors) there, choose another file in Settings, or turn the filter off.`,
      );
    }
  }

  /** One verdict per image, or null when the filter is off. */
  async check(images: readonly PixelImage[], settings: Settings): Promise<SafetyVerdict[] | null> {
    if (!settings.contentFilter) return null;
    const file = checkerFile(settings, this.dataDir);
    if (this.#loaded?.file !== file) {
      await this.close();
      const checker = ensureSafetyCheckerConverted(file, { dataDir: this.dataDir }).then((c) =>
        SafetyChecker.open(c.model),
      );
      // A failed load is not kept: the next job tries again.
      checker.catch(() => {
        if (this.#loaded?.checker === checker) this.#loaded = null;
      });
      this.#loaded = { file, checker };
    }
    return (await this.#loaded.checker).check(images);
  }

  async close(): Promise<void> {
    const loaded = this.#loaded;
    this.#loaded = null;
    if (loaded) await (await loaded.checker.catch(() => null))?.release();
  }
}

/** The verdict as PNG metadata fields (A1111 text and our JSON). */
export function contentFilterFields(v: SafetyVerdict): Record<string, string> {
  return {
    'Content filter': v.flagged ? `flagged (concepts ${v.badConcepts.join(' ')})` : 'passed',
    'Content filter scores': JSON.stringify({
      special: v.specialScores,
      concepts: v.conceptScores,
    }),
  };
}
