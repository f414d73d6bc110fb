/**
 * Converting Stable Diffusion's safety checker (diffusers' StableDiffusionSafetyChecker, e.g.
 * CompVis/stable-diffusion-safety-checker's model.safetensors) into `safety_checker/model.onnx`
 * for the content filter (issue 18 item 2). As convertVae does, it writes through intoPlace, so a
 * failed or cancelled conversion leaves nothing.
 */
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import { describeOtherFile, detectSafetyChecker } from './detect';
import { emitSafetyChecker } from './emit/index';
import { intoPlace, newOutputDir } from './into-place';
import { openCheckpoint } from './readers/index';
import type { SafetyCheckerArchitecture } from './types';

/** Written beside safety_checker/; read back to reuse a conversion. */
export const SAFETY_RECORD = 'safety-checker.json';
/** The graph inside a converted folder. */
export const SAFETY_MODEL = path.join('safety_checker', 'model.onnx');

/** What was converted, as recorded in the output's `safety-checker.json`. */
export interface SafetyConversionRecord {
  /** The checker file's name (not its path). */
  source: string;
  sourceBytes: number;
  sha256: string | null;
  precision: 'fp16' | 'fp32';
  checker: SafetyCheckerArchitecture;
}

export interface ConvertSafetyOptions {
  precision?: 'fp16' | 'fp32';
  sha256?: string;
  signal?: AbortSignal;
}

/**
 * Converts the safety checker `file` into `outDir` (which must not exist yet). Throws EngineError
 * 'model-unsupported' with a sentence naming what the file is when it is not a safety checker,
 * 'bad-input' when `outDir` exists, 'cancelled' on abort.
 */
export async function convertSafetyChecker(
  file: string,
  outDir: string,
  options: ConvertSafetyOptions = {},
): Promise<SafetyConversionRecord & { dir: string }> {
  const precision = options.precision ?? 'fp16';
  const target = await newOutputDir(outDir);
  const { source } = await openCheckpoint(file);
  try {
    const checker = detectSafetyChecker(source.list());
    if (!checker) {
      const what = describeOtherFile(source.list().map((t) => t.name)) ?? 'a diffusion checkpoint';
      throw new EngineError(
        'model-unsupported',
        `${path.basename(file)} is ${what}, not Stable Diffusion's safety checker.`,
        { file },
      );
    }
    const record: SafetyConversionRecord = {
      source: path.basename(file),
      sourceBytes: (await stat(file)).size,
      sha256: options.sha256 ?? null,
      precision,
      checker,
    };
    await intoPlace(target, options.signal, async (temp) => {
      await emitSafetyChecker(source, checker, {
        dir: path.join(temp, 'safety_checker'),
        precision,
        ...(options.signal ? { signal: options.signal } : {}),
      });
      await writeFile(path.join(temp, SAFETY_RECORD), `${JSON.stringify(record, null, 2)}\n`);
    });
    return { ...record, dir: target };
  } finally {
    await source.close();
  }
}
