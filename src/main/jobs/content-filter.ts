// The content filter (issue 18 item 2): Stable Diffusion's safety checker, converted once into
// the data folder's cache (in a converter thread), run by the engine worker on each generated
// image after decoding (GenerateRequest.contentFilter): the host holds no ONNX session for it.
// Its verdict goes into the image's PNG metadata (`Content filter`, `Content filter scores`) and
// the history (images.content_filter).

import { statSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { SafetyVerdict } from '../../engine/safety/decision';
import {
  type ContentFilterStatus,
  type Settings,
  StudioError,
  safetyCheckerFile,
} from '../../shared';
import { ensureSafetyCheckerConverted } from '../models/checkpoint-cache';

/** Where the checker is looked for when Settings names none (the catalogue's download lands here). */
export const DEFAULT_CHECKER = path.join(...safetyCheckerFile.target.split('/'));

/** The checker file Settings selects (absolute). */
export function checkerFile(settings: Settings, dataDir: string): string {
  return settings.contentFilterModel ?? path.join(dataDir, DEFAULT_CHECKER);
}

/** Where the selected checker is and whether it is there. */
export function contentFilterStatus(settings: Settings, dataDir: string): ContentFilterStatus {
  const file = checkerFile(settings, dataDir);
  return {
    file,
    isDefault: settings.contentFilterModel === null,
    present: statSync(file, { throwIfNoEntry: false })?.isFile() ?? false,
  };
}

/**
 * Why `file` cannot be the content filter's checker (a sentence), or null: checked when Settings
 * set it, so a wrong path is refused at once rather than at the next Generate.
 */
export function checkerFileProblem(file: string): string | null {
  const st = statSync(file, { throwIfNoEntry: false });
  if (!st) return `There is no file at ${file}; choose the safety checker's model.safetensors.`;
  if (!st.isFile())
    return `${file} is a folder; choose the safety checker's model.safetensors inside it.`;
  if (!/\.safetensors$/i.test(file))
    return `${path.basename(file)} is not a .safetensors file; the content filter takes the safety checker's model.safetensors (CompVis/stable-diffusion-safety-checker).`;
  return null;
}

/** Prepares the selected checker for the engine: validated at enqueue, converted at run time. */
export class ContentFilter {
  constructor(
    private readonly dataDir: string,
    /** The engine worker bundle, whose converter thread converts the checker; none: this thread. */
    private readonly workerPath: string | null = null,
  ) {}

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
        `The content filter is on but its model ${file} is missing; download it or choose the safety checker's model.safetensors in Settings, or turn the filter off.`,
      );
    }
  }

  /**
   * The engine request's `contentFilter` for these settings: the converted checker's graph
   * (converted on first use, then reused from the cache), or null when the filter is off.
   */
  async prepare(settings: Settings, signal?: AbortSignal): Promise<{ modelFile: string } | null> {
    if (!settings.contentFilter) return null;
    await this.validate(settings);
    const converted = await ensureSafetyCheckerConverted(checkerFile(settings, this.dataDir), {
      dataDir: this.dataDir,
      ...(this.workerPath ? { workerPath: this.workerPath } : {}),
      ...(signal ? { signal } : {}),
    });
    return { modelFile: converted.model };
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
