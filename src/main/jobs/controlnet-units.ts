/**
 * A job's ControlNet units (issue 19) between the queue and the engine: checked when queued
 * (their models in the ControlNet folder, their control images in the library, a mode the engine
 * guides), then made ready when the job runs (each ControlNet converted once, its family checked
 * against the model's, its control image read) with A1111's `ControlNet N` infotext fields.
 */
import type { PixelImage } from '../../engine';
import { type GenerationSettings, type ModelEntry, StudioError } from '../../shared';
import {
  type ControlNetService,
  controlNetFamilyProblem,
  controlNetInfotext,
  resolveControlNetFile,
} from '../models/controlnets';
import type { VaePrepareProgress } from '../models/vaes';
import { readPixels } from './images';

/** Looks a library image or upload up by id, throwing the queue's sentence when it is gone. */
type ImageLookup = (id: string, what: string) => Promise<{ file: string }>;

/** Refuses, in one sentence, units the engine cannot run or whose files are not there. */
export async function validateControlUnits(
  settings: GenerationSettings,
  controlNets: ControlNetService,
  image: ImageLookup,
): Promise<void> {
  if (settings.controlnets.length === 0) return;
  // The engine guides every mode but outpainting and the x4 upscaler (src/engine/engine.ts).
  if (settings.mode === 'outpaint')
    throw new StudioError(
      'invalid-argument',
      'ControlNet does not work with outpainting yet: outpaint without the units, then inpaint or generate with them.',
    );
  if (settings.upscale?.method === 'x4')
    throw new StudioError(
      'invalid-argument',
      'The x4 upscaler takes no ControlNet (none is made for its UNet): use the hires upscaler with the units, or the x4 upscaler without them.',
    );
  const folder = controlNets.folder();
  for (const [i, unit] of settings.controlnets.entries()) {
    await resolveControlNetFile(unit.model, folder);
    await image(unit.image, `control image of ControlNet unit ${i + 1}`);
  }
}

/** The engine's `controlnets` and the infotext fields of a job's units. */
export interface PreparedUnits {
  controlnets: { file: string; image: PixelImage }[];
  fields: Record<string, string>;
}

/**
 * Converts each unit's ControlNet (once; hashing and converting show as `onProgress`), checks it
 * fits `model`'s family and reads its control image. A unit of weight 0 is prepared too: the
 * infotext records it, and the engine leaves it out.
 */
export async function prepareControlUnits(
  settings: GenerationSettings,
  model: Pick<ModelEntry, 'name' | 'family'>,
  controlNets: ControlNetService,
  image: ImageLookup,
  options: { signal?: AbortSignal; onProgress?: (p: VaePrepareProgress) => void },
): Promise<PreparedUnits> {
  const prepared: PreparedUnits = { controlnets: [], fields: {} };
  for (const [i, unit] of settings.controlnets.entries()) {
    const cn = await controlNets.prepare(unit.model, options);
    const problem = controlNetFamilyProblem(cn, model);
    if (problem) throw new StudioError('invalid-argument', problem);
    const { file } = await image(unit.image, `control image of ControlNet unit ${i + 1}`);
    prepared.controlnets.push({ file: cn.modelFile, image: await readPixels(file, 'control') });
    prepared.fields[`ControlNet ${i}`] = controlNetInfotext(unit, cn.name, cn.sha256);
  }
  return prepared;
}
