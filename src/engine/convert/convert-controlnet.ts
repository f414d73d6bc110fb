/**
 * Converting a ControlNet file (lllyasviel/ControlNet's ldm naming, .safetensors / .pth, or
 * diffusers' ControlNetModel naming) into a
 * folder holding `controlnet/model.onnx` (emit/controlnet.ts) and `controlnet.json`. Like
 * convertVae, it writes into a temporary folder beside `outDir` and renames it into place at the
 * end, so a failed or cancelled conversion leaves nothing.
 */
import { stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ConvertProgress } from './convert';
import { intoPlace, newOutputDir } from './into-place';
import { detectControlNet } from './detect';
import { emitControlNet } from './emit/index';
import { withLdmControlNetNames } from './readers/diffusers-controlnet';
import { openCheckpoint } from './readers/index';
import type { ControlNetArchitecture } from './types';

/** Written beside controlnet/; read back to reuse a conversion. */
export const CONTROLNET_RECORD = 'controlnet.json';

/** What was converted, as recorded in the output's `controlnet.json`. */
export interface ControlNetConversionRecord {
  /** The file's name (not its path). */
  source: string;
  sourceBytes: number;
  /** The file's sha256 (hex), when the caller has it (A1111 names the model by its first 8). */
  sha256: string | null;
  precision: 'fp16' | 'fp32';
  architecture: ControlNetArchitecture;
}

export interface ConvertControlNetOptions {
  precision?: 'fp16' | 'fp32';
  sha256?: string;
  signal?: AbortSignal;
  /** After each weight written (phase 'unet': the ControlNet is the UNet's encoder half). */
  onProgress?: (p: ConvertProgress) => void;
  /** Skip detection (small test models, whose heads cannot be inferred). */
  architecture?: ControlNetArchitecture;
}

/** The ControlNet graph inside a converted folder. */
export const controlNetModelFile = (dir: string): string =>
  path.join(dir, 'controlnet', 'model.onnx');

/**
 * Converts the ControlNet `file` into `outDir` (which must not exist yet). Throws EngineError
 * 'model-unsupported' for a file that is not a ControlNet in ldm or diffusers naming, 'bad-input' when `outDir`
 * exists, 'cancelled' on abort.
 */
export async function convertControlNet(
  file: string,
  outDir: string,
  options: ConvertControlNetOptions = {},
): Promise<ControlNetConversionRecord & { dir: string }> {
  const precision = options.precision ?? 'fp16';
  const target = await newOutputDir(outDir);
  // A diffusers-named file is read under the ldm names: one emitter serves both namings.
  const raw = (await openCheckpoint(file)).source;
  const source = withLdmControlNetNames(raw);
  try {
    const arch = options.architecture ?? detectControlNet(raw.list(), path.basename(file));
    return await intoPlace(target, options.signal, async (temp) => {
      const dir = path.join(temp, 'controlnet');
      const emitted = { dir, precision, ...(options.signal ? { signal: options.signal } : {}) };
      const plan = await emitControlNet(source, arch, { ...emitted, dryRun: true });
      const started = performance.now();
      let tensorsDone = 0;
      let bytesDone = 0;
      await emitControlNet(source, arch, {
        ...emitted,
        onTensor: (p) => {
          tensorsDone++;
          bytesDone += p.bytes;
          if (!options.onProgress) return;
          const rate = bytesDone / Math.max(1e-3, (performance.now() - started) / 1000);
          options.onProgress({
            phase: 'unet',
            tensorsDone,
            tensorsTotal: plan.tensors,
            bytesDone,
            bytesTotal: plan.bytes,
            mbPerSecond: rate / 1e6,
            etaSeconds: rate > 0 ? Math.max(0, (plan.bytes - bytesDone) / rate) : null,
          });
        },
      });
      const record: ControlNetConversionRecord = {
        source: path.basename(file),
        sourceBytes: (await stat(file)).size,
        sha256: options.sha256 ?? null,
        precision,
        architecture: arch,
      };
      await writeFile(path.join(temp, CONTROLNET_RECORD), `${JSON.stringify(record, null, 2)}\n`);
      return { ...record, dir: target };
    });
  } finally {
    await source.close();
  }
}
