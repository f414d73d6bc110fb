/**
 * ControlNet models for the studio (issue 19): the ControlNet folder (Settings.controlnetDir,
 * else `models/controlnet` in the data folder) lists the files offered; a unit's `model` (a file
 * name in that folder, or a path) is resolved to its file, converted once into the data folder's
 * cache (ensureControlNetConverted) and handed to the engine. The infotext records each unit as
 * AUTOMATIC1111's sd-webui-controlnet does: one `ControlNet N: "Module: ..., Model: name [hash],
 * Weight: ..., ..."` field per enabled unit, so that A1111 and tools reading its PNGs see it.
 */
import path from 'node:path';
import {
  type ControlNetFile,
  type ControlNetList,
  type ControlPreview,
  type ImportedControlUnit,
  type Settings,
  StudioError,
  controlNetFileExtensions,
  isModelFamily,
  isSdxlFamily,
} from '../../shared';
import type { ControlNetUnit } from '../../shared/generation';
import { isEngineError } from '../../engine/errors';
import { describeEngineError } from '../../engine/describe-error';
import { controlImage } from '../../engine/pipelines/controlnet';
import type { CheckpointFamily } from '../../engine/convert/types';
import { previewDataUrl, readPixels } from '../jobs/images';
import { isLibraryError } from '../library/errors';
import { type CachedControlNet, ensureControlNetConverted } from './checkpoint-cache';
import { folderProblem, listFolderFiles, resolveFolderFile } from './folder-files';
import type { VaePrepareProgress } from './vaes';

/** The value of the `ControlNet N` field for `unit`, whose model file is `name` with `sha256`. */
export function controlNetInfotext(unit: ControlNetUnit, name: string, sha256: string): string {
  const canny = unit.preprocessor === 'canny';
  const fields: [string, string | number][] = [
    ['Module', unit.preprocessor],
    // sd-webui-controlnet names a model by its first 8 hex digits of sha256.
    ['Model', `${name} [${sha256.slice(0, 8)}]`],
    ['Weight', unit.weight],
    // We resize the control image to the output size without cropping: its "Just Resize".
    ['Resize Mode', 'Just Resize'],
    ...(canny
      ? ([
          ['Threshold A', unit.lowThreshold],
          ['Threshold B', unit.highThreshold],
        ] as [string, number][])
      : []),
    ['Guidance Start', unit.start],
    ['Guidance End', unit.end],
    ['Control Mode', unit.guess ? 'ControlNet is more important' : 'Balanced'],
  ];
  return fields.map(([k, v]) => `${k}: ${v}`).join(', ');
}

/** What an A1111 `ControlNet N` field says of its unit (parseControlNetInfotext). */
export interface ImportedControlNet {
  /** The model's name as written, without its `[hash]`; null when the field names none. */
  model: string | null;
  /** The first hex digits of the model file's sha256, when written. */
  hash: string | null;
  /** The unit's settings that the field gives and this studio takes. */
  unit: Partial<Omit<ControlNetUnit, 'model' | 'image'>>;
  /** sd-webui-controlnet's module when it is one this studio has no preprocessor for. */
  unsupportedModule: string | null;
}

/**
 * Reads one `ControlNet N` field (`Module: canny, Model: name [hash], Weight: 1, ...`, the value
 * inside its quotes). Fields this studio has no counterpart for are ignored; numbers out of range
 * are left out (the unit's defaults apply).
 */
export function parseControlNetInfotext(value: string): ImportedControlNet {
  const fields = new Map<string, string>();
  // sd-webui-controlnet joins `key: value` pairs with ", "; a value holds no ": ".
  for (const part of value.split(/,\s*(?=[A-Za-z][A-Za-z ]*:\s)/)) {
    const at = part.indexOf(':');
    if (at > 0) fields.set(part.slice(0, at).trim().toLowerCase(), part.slice(at + 1).trim());
  }
  const num = (key: string, min: number, max: number): number | undefined => {
    const v = Number(fields.get(key));
    return fields.has(key) && Number.isFinite(v) && v >= min && v <= max ? v : undefined;
  };
  const unit: ImportedControlNet['unit'] = {};
  const module = fields.get('module') ?? 'none';
  let unsupportedModule: string | null = null;
  if (module === 'canny') unit.preprocessor = 'canny';
  else if (module === 'none' || module === 'None') unit.preprocessor = 'none';
  else unsupportedModule = module;
  const weight = num('weight', 0, 2);
  if (weight !== undefined) unit.weight = weight;
  const start = num('guidance start', 0, 1);
  const end = num('guidance end', 0, 1);
  if (start !== undefined && (end === undefined || start <= end)) unit.start = start;
  if (end !== undefined && (start === undefined || start <= end)) unit.end = end;
  if (module === 'canny') {
    const low = num('threshold a', 0, 1000);
    const high = num('threshold b', 0, 1000);
    if (low !== undefined && high !== undefined && low <= high) {
      unit.lowThreshold = low;
      unit.highThreshold = high;
    }
  }
  const mode = fields.get('control mode');
  if (mode) unit.guess = /controlnet is more important/i.test(mode);
  const named = fields.get('model')?.match(/^(.*?)\s*(?:\[([0-9a-f]+)\])?$/i);
  const model = named?.[1] && named[1] !== 'None' ? named[1] : null;
  return { model, hash: named?.[2]?.toLowerCase() ?? null, unit, unsupportedModule };
}

/**
 * The units an imported A1111 image names (`ControlNet 0`, `ControlNet 1`, ...), each model
 * matched by name to a file of the ControlNet folder, and one sentence for each thing that could
 * not be restored (the control images always: A1111 does not store them).
 */
export async function controlNetsFromImported(
  raw: Record<string, string>,
  folder: string,
): Promise<{ units: ImportedControlUnit[]; notes: string[] }> {
  const keys = Object.keys(raw)
    .filter((k) => /^ControlNet \d+$/.test(k))
    .sort((a, b) => Number(a.slice(11)) - Number(b.slice(11)));
  if (keys.length === 0) return { units: [], notes: [] };
  const files = await listControlNetFiles(folder);
  const stem = (n: string) => n.slice(0, n.length - path.extname(n).length).toLowerCase();
  const units: ImportedControlUnit[] = [];
  const notes: string[] = [];
  for (const key of keys.slice(0, 4)) {
    const read = parseControlNetInfotext(raw[key]);
    const found = read.model
      ? files.find((f) => stem(f.name) === read.model!.toLowerCase() || f.name === read.model)
      : undefined;
    const n = units.length + 1;
    if (read.unsupportedModule)
      notes.push(
        `ControlNet unit ${n} used the ${read.unsupportedModule} preprocessor, which this studio does not have: give it an already preprocessed control image.`,
      );
    if (read.model && !found)
      notes.push(
        `ControlNet unit ${n} used the model ${read.model}, which is not in the ControlNet folder ${folder}; put it there to use it.`,
      );
    notes.push(
      `ControlNet unit ${n} needs its control image again: A1111 does not store it in the image.`,
    );
    units.push({ model: found?.name ?? null, ...read.unit });
  }
  if (keys.length > 4)
    notes.push(`The image names ${keys.length} ControlNet units; the first 4 were restored.`);
  return { units, notes };
}

/** The ControlNet folder the settings name: Settings.controlnetDir, else `models/controlnet`. */
export function controlNetFolder(
  settings: Pick<Settings, 'controlnetDir'>,
  dataDir: string,
): string {
  return path.resolve(settings.controlnetDir ?? path.join(dataDir, 'models', 'controlnet'));
}

const controlNetKind = { what: 'ControlNet', extensions: controlNetFileExtensions };

/** Why `dir` cannot be the ControlNet folder (one sentence), or null; checked when it is set. */
export function controlNetFolderProblem(dir: string): string | null {
  return folderProblem(dir, controlNetKind);
}

/** The ControlNet files directly in `folder`, by name; none when the folder does not exist. */
export function listControlNetFiles(folder: string): Promise<ControlNetFile[]> {
  return listFolderFiles(folder, controlNetKind);
}

/**
 * The file a unit's `model` names: a path (absolute, or with a folder in it) as it is, a bare
 * name inside `folder`. Throws StudioError 'not-found' with one sentence when it is not there.
 */
export function resolveControlNetFile(model: string, folder: string): Promise<string> {
  return resolveFolderFile(model, folder, controlNetKind);
}

/**
 * Which ControlNets fit a model family: one trained for SD 1.x guides SD 1.x models, SD 2.x's
 * the SD 2.x ones, SDXL's the SDXL ones (the residuals' channels and the text embedding width
 * differ). Null when it fits or the model's family is not known; else the sentence.
 */
export function controlNetFamilyProblem(
  controlNet: { name: string; family: CheckpointFamily },
  model: { name: string; family: string | null },
): string | null {
  const family = model.family;
  if (!isModelFamily(family)) return null;
  const modelKind: CheckpointFamily = isSdxlFamily(family)
    ? 'sdxl'
    : ['sd2', 'sd2-v', 'sd-turbo'].includes(family)
      ? 'sd2'
      : 'sd1';
  if (modelKind === controlNet.family) return null;
  const label = { sd1: 'SD 1.x', sd2: 'SD 2.x', sdxl: 'SDXL' };
  return `The ControlNet ${controlNet.name} is for ${label[controlNet.family]} models, but ${model.name} is ${label[modelKind]}: choose a ControlNet made for it.`;
}

/** A unit's ControlNet ready for the engine. */
export interface PreparedControlNet {
  /** The converted graph (GenerateRequest.controlnets[].file). */
  modelFile: string;
  /** The file's name without its extension (the infotext's model name). */
  name: string;
  sha256: string;
  family: CheckpointFamily;
}

/** The ControlNet folder's listing, control previews, and units' models made ready. */
export class ControlNetService {
  constructor(
    private readonly context: {
      dataDir: string;
      settings: { get(): Settings };
      /** The engine worker bundle: ControlNets are converted in a thread of it when given. */
      workerPath?: string | null;
    },
    /** A library image or upload by id (the library's resolveImage). */
    private readonly resolveImage: (id: string) => { file: string } | Promise<{ file: string }>,
  ) {}

  folder(): string {
    return controlNetFolder(this.context.settings.get(), this.context.dataDir);
  }

  async list(): Promise<ControlNetList> {
    const folder = this.folder();
    return { folder, files: await listControlNetFiles(folder) };
  }

  /** The unit's control image preprocessed at the output size, as the engine will see it. */
  async preview(input: {
    image: string;
    preprocessor: ControlNetUnit['preprocessor'];
    lowThreshold: number;
    highThreshold: number;
    width: number;
    height: number;
  }): Promise<ControlPreview> {
    let file: string;
    try {
      ({ file } = await this.resolveImage(input.image));
    } catch (err) {
      if (isLibraryError(err, 'unknown-image'))
        throw new StudioError(
          'not-found',
          'The control image is not in the library (deleted, or never uploaded): add it again.',
        );
      throw err;
    }
    const pixels = await readPixels(file, 'control');
    const { preview } = controlImage(pixels, input, input.width, input.height);
    return {
      dataUrl: await previewDataUrl(preview),
      width: preview.width,
      height: preview.height,
    };
  }

  /**
   * A unit's ControlNet, converted once (cached by sha256) for the engine; `onProgress` gets the
   * hashing and conversion progress (the job's loading stage).
   */
  async prepare(
    model: string,
    options: { signal?: AbortSignal; onProgress?: (p: VaePrepareProgress) => void } = {},
  ): Promise<PreparedControlNet> {
    const file = await resolveControlNetFile(model, this.folder());
    let converted: CachedControlNet;
    try {
      converted = await ensureControlNetConverted(file, {
        dataDir: this.context.dataDir,
        // Off the host's thread: a full-size ControlNet takes tens of seconds to convert.
        workerPath: this.context.workerPath ?? null,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      });
    } catch (e) {
      if (isEngineError(e, 'cancelled')) throw e;
      const code = isEngineError(e, 'model-unsupported') ? 'invalid-argument' : 'model';
      throw new StudioError(code, describeEngineError(e).message);
    }
    return {
      modelFile: converted.modelFile,
      name: path.basename(file, path.extname(file)),
      sha256: converted.sha256,
      family: converted.record.architecture.family,
    };
  }
}
