/**
 * Reading a model folder: diffusers' ONNX layout or optimum's (ENGINE-NOTES §1).
 *
 * Nothing here creates an ONNX Runtime session. Each model.onnx has its header read (graph
 * inputs/outputs, external weight references) so that missing, truncated or foreign files are
 * reported by name before any expensive load, and so that the family can be told from the
 * declared signatures.
 */
import { readdir, stat } from 'node:fs/promises';
import { basename, isAbsolute, join, relative, resolve, sep } from 'node:path';
import { EngineError } from '../errors';
import { parseJsonText } from './json';
import { OnnxFormatError, readOnnxHeader, type OnnxHeader } from './onnx-file';
import {
  isRegularFile,
  notRegularFile,
  readRegularText,
  UnreadableFileError,
  type FileKind,
} from './safe-read';
import {
  onnxComponentNames,
  tokenizerNames,
  type ComponentName,
  type JsonObject,
  type ModelIndexExtras,
  type ModelInfo,
  type OnnxComponent,
  type TokenizerFolder,
  type TokenizerName,
  type WeightsFile,
} from './types';

/** Relative path with forward slashes, for messages. */
function rel(root: string, p: string): string {
  return relative(root, p).split(sep).join('/');
}

async function statOrNull(p: string) {
  try {
    return await stat(p);
  } catch (e) {
    if (
      (e as NodeJS.ErrnoException).code === 'ENOENT' ||
      (e as NodeJS.ErrnoException).code === 'ENOTDIR'
    )
      return null;
    throw e;
  }
}

/** An EngineError naming the file for a read that failed (not a regular file, too large, EACCES). */
function unreadable(name: string, e: unknown): EngineError {
  if (e instanceof UnreadableFileError)
    return new EngineError('model-corrupt', e.sentence(name), { file: name, cause: e });
  const code = (e as NodeJS.ErrnoException).code;
  return new EngineError('model-corrupt', `${name} could not be read (${code ?? 'error'}).`, {
    file: name,
    cause: e,
  });
}

/**
 * Whether a file the folder may hold is there, checked as it will be read later (a regular file
 * within its kind's cap, see safe-read.ts) without reading it. Missing: false; present but not
 * readable so: EngineError 'model-corrupt' naming it.
 */
async function checkFile(root: string, path: string, kind: FileKind): Promise<boolean> {
  try {
    return await isRegularFile(path, kind);
  } catch (e) {
    throw unreadable(rel(root, path), e);
  }
}

/**
 * Read a JSON object file (Python's NaN / Infinity included, see json.ts). Missing: null (or
 * EngineError when `required`). Bad JSON, a non-object, not a regular file or over the JSON
 * cap: EngineError 'model-corrupt' naming it.
 */
export async function readJsonFile(
  root: string,
  path: string,
  required: boolean,
): Promise<JsonObject | null> {
  const name = rel(root, path);
  let text: string | null;
  try {
    text = await readRegularText(path, 'json');
  } catch (e) {
    throw unreadable(name, e);
  }
  if (text === null) {
    if (!required) return null;
    throw new EngineError('model-missing-file', `${name} is missing from the model folder.`, {
      file: name,
    });
  }
  let value: unknown;
  try {
    value = parseJsonText(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);
  } catch (e) {
    const reason = (e as Error).message.split('\n')[0];
    throw new EngineError('model-corrupt', `${name} is not valid JSON (${reason}).`, {
      file: name,
      cause: e,
    });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new EngineError(
      'model-corrupt',
      `${name} should hold a JSON object but holds ${Array.isArray(value) ? 'an array' : String(value === null ? 'null' : typeof value)}.`,
      {
        file: name,
      },
    );
  }
  return value as JsonObject;
}

/** Read an ONNX header, turning failures into EngineErrors that name the file. */
export function readHeaderOrThrow(root: string, path: string): OnnxHeader {
  const name = rel(root, path);
  try {
    return readOnnxHeader(path);
  } catch (e) {
    if (e instanceof UnreadableFileError) throw unreadable(name, e);
    if (e instanceof OnnxFormatError) {
      throw new EngineError(
        'model-corrupt',
        e.kind === 'truncated'
          ? `${name} is truncated (${e.message}); copy or download it again.`
          : `${name} is not an ONNX model (${e.message}).`,
        { file: name, cause: e },
      );
    }
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new EngineError('model-missing-file', `${name} is missing from the model folder.`, {
        file: name,
      });
    }
    if (code === 'EISDIR') {
      throw new EngineError('model-corrupt', `${name} is a folder, not an ONNX file.`, {
        file: name,
      });
    }
    throw new EngineError(
      'model-corrupt',
      `${name} could not be read (${code ?? (e as Error).message}).`,
      {
        file: name,
        cause: e,
      },
    );
  }
}

/**
 * Where an external weights file named in `file` lives. ONNX Runtime reads external data only
 * from the model file's own folder and below, and refuses absolute or escaping locations when a
 * session is created; they are refused here too, before anything is looked up there, so that a
 * model folder cannot have the inspector stat (and report the size of) any file on the machine.
 * The check is on the path as written, as ONNX Runtime's is: symlinked files inside the folder
 * (Hugging Face snapshots point into ../../blobs) stay fine.
 */
function externalDataPath(root: string, dir: string, file: string, location: string): string {
  const path = resolve(dir, location);
  const within = relative(dir, path);
  if (
    isAbsolute(location) ||
    /^[a-zA-Z]:|^[\\/]/.test(location) ||
    within === '' ||
    within === '..' ||
    within.startsWith(`..${sep}`) ||
    isAbsolute(within) ||
    location.includes('\0')
  ) {
    throw new EngineError(
      'model-corrupt',
      `${file} keeps weights at "${location.slice(0, 200)}", outside ${rel(root, dir)}/; external weights must sit in the model file's own folder.`,
      { file },
    );
  }
  return path;
}

/** The model file in a component folder: model.onnx, else the only *.onnx there. */
async function findModelFile(root: string, dir: string): Promise<string> {
  const preferred = join(dir, 'model.onnx');
  if (await statOrNull(preferred)) return preferred;
  const entries = await readdir(dir).catch(() => [] as string[]);
  const onnx = entries.filter((f) => f.toLowerCase().endsWith('.onnx'));
  if (onnx.length === 1) return join(dir, onnx[0]);
  const name = rel(root, preferred);
  throw new EngineError(
    'model-missing-file',
    onnx.length === 0
      ? `${name} is missing from the model folder.`
      : `${rel(root, dir)}/ holds several .onnx files (${onnx.join(', ')}) and no model.onnx.`,
    { file: name },
  );
}

export async function readComponent(
  root: string,
  name: ComponentName,
  className: string | null,
): Promise<OnnxComponent> {
  const dir = join(root, name);
  const modelPath = await findModelFile(root, dir);
  const file = rel(root, modelPath);
  const header = readHeaderOrThrow(root, modelPath);
  const modelBytes = (await stat(modelPath)).size;

  const externalData: WeightsFile[] = [];
  for (const ref of header.externalData) {
    const path = externalDataPath(root, dir, file, ref.location);
    const wfile = rel(root, path);
    const st = await statOrNull(path);
    if (st && !st.isFile()) throw unreadable(wfile, notRegularFile(st, 'onnx'));
    if (!st) {
      throw new EngineError(
        'model-missing-file',
        `${wfile} is missing: ${file} keeps ${ref.tensors} weight tensor${ref.tensors === 1 ? '' : 's'} in it.`,
        { file: wfile },
      );
    }
    if (st.size < ref.bytesNeeded) {
      throw new EngineError(
        'model-corrupt',
        `${wfile} is truncated: it has ${st.size} bytes but ${file} needs at least ${ref.bytesNeeded}.`,
        { file: wfile },
      );
    }
    externalData.push({ file: wfile, path, bytes: st.size });
  }

  const config = await readJsonFile(root, join(dir, 'config.json'), false);
  return {
    name,
    dir,
    modelPath,
    file,
    bytes: modelBytes + externalData.reduce((a, w) => a + w.bytes, 0),
    externalData,
    signature: { inputs: header.inputs, outputs: header.outputs },
    header: {
      irVersion: header.irVersion,
      producerName: header.producerName,
      producerVersion: header.producerVersion,
      opsets: header.opsets,
      convInWeightDims: header.convInWeightDims,
    },
    config,
    className,
  };
}

async function readTokenizer(root: string, name: TokenizerName): Promise<TokenizerFolder> {
  const dir = join(root, name);
  // Each file the tokenizer reads later (ClipTokenizer.fromFolder, in the worker and for token
  // counts) is checked here, at inspection, so a hostile one fails the model up front.
  const need = async (f: string) => {
    const p = join(dir, f);
    if (!(await checkFile(root, p, 'tokenizer'))) {
      throw new EngineError(
        'model-missing-file',
        `${name}/${f} is missing from the model folder; the CLIP tokenizer needs vocab.json and merges.txt.`,
        { file: `${name}/${f}` },
      );
    }
    return p;
  };
  const optional = async (f: string, kind: FileKind) =>
    (await checkFile(root, join(dir, f), kind)) ? join(dir, f) : null;
  const vocabPath = await need('vocab.json');
  const mergesPath = await need('merges.txt');
  await optional('tokenizer.json', 'tokenizer');
  return {
    name,
    dir,
    vocabPath,
    mergesPath,
    specialTokensMapPath: await optional('special_tokens_map.json', 'json'),
    tokenizerConfigPath: await optional('tokenizer_config.json', 'json'),
  };
}

/** model_index.json entry for a component: ["diffusers", "OnnxRuntimeModel"], [null, null]... */
function indexEntry(
  index: JsonObject | null,
  key: string,
): { listed: boolean; present: boolean; className: string | null } {
  if (!index || !(key in index)) return { listed: false, present: false, className: null };
  const v = index[key];
  if (Array.isArray(v)) {
    const cls = typeof v[1] === 'string' ? v[1] : null;
    return { listed: true, present: v[0] !== null || v[1] !== null, className: cls };
  }
  return { listed: true, present: v !== null, className: null };
}

function extrasOf(index: JsonObject | null): ModelIndexExtras {
  const out: ModelIndexExtras = {};
  if (!index) return out;
  if (typeof index.max_noise_level === 'number') out.maxNoiseLevel = index.max_noise_level;
  if (typeof index.force_zeros_for_empty_prompt === 'boolean')
    out.forceZerosForEmptyPrompt = index.force_zeros_for_empty_prompt;
  if (typeof index.requires_safety_checker === 'boolean')
    out.requiresSafetyChecker = index.requires_safety_checker;
  if (typeof index.requires_aesthetics_score === 'boolean')
    out.requiresAestheticsScore = index.requires_aesthetics_score;
  if (typeof index._diffusers_version === 'string') out.diffusersVersion = index._diffusers_version;
  return out;
}

/**
 * Inspect a model folder. Throws EngineError naming the first missing or broken file:
 * a missing folder, model_index.json with bad JSON, a component listed but absent, a
 * truncated or non-ONNX model.onnx, missing or short external weights, a missing tokenizer
 * file, a missing scheduler config.
 */
export async function openModelFolder(dir: string): Promise<ModelInfo> {
  const root = resolve(dir);
  const st = await statOrNull(root);
  if (!st) {
    throw new EngineError('model-missing-file', `The model folder ${root} does not exist.`, {
      file: root,
    });
  }
  if (!st.isDirectory()) {
    throw new EngineError(
      'bad-input',
      `${root} is a file; a model is a folder with model_index.json.`,
      { file: root },
    );
  }

  const notes: string[] = [];
  const modelIndex = await readJsonFile(root, join(root, 'model_index.json'), false);
  if (!modelIndex) {
    if (!(await statOrNull(join(root, 'unet')))) {
      throw new EngineError(
        'model-missing-file',
        `model_index.json is missing from ${basename(root)}; this does not look like a diffusers or optimum model folder.`,
        { file: 'model_index.json' },
      );
    }
    notes.push('model_index.json is missing; the folder was read by its component folders alone.');
  }
  const pipelineClass = typeof modelIndex?._class_name === 'string' ? modelIndex._class_name : null;

  const components: ModelInfo['components'] = {};
  let sawConfigJson = false;
  for (const name of onnxComponentNames) {
    if (name === 'safety_checker') continue; // never run: the studio does not filter images
    const entry = indexEntry(modelIndex, name);
    const folder = await statOrNull(join(root, name));
    if (!folder || !folder.isDirectory()) {
      // optimum's model_index.json is the PyTorch pipeline's: one `vae` entry, exported as
      // vae_encoder/ and vae_decoder/.
      const exportedAsPair =
        name === 'vae' && (await statOrNull(join(root, 'vae_decoder'))) !== null;
      if (entry.present && !exportedAsPair) {
        throw new EngineError(
          'model-missing-file',
          `${name}/model.onnx is missing: model_index.json lists ${name} but the folder is not there.`,
          { file: `${name}/model.onnx` },
        );
      }
      continue;
    }
    const c = await readComponent(root, name, entry.className);
    if (c.config) sawConfigJson = true;
    components[name] = c;
  }
  if ((await statOrNull(join(root, 'safety_checker'))) !== null) {
    notes.push('safety_checker/ is present and is not used.');
  }

  const requireComponent = (name: ComponentName, why: string) => {
    if (!components[name]) {
      throw new EngineError(
        'model-missing-file',
        `${name}/model.onnx is missing from the model folder (${why}).`,
        {
          file: `${name}/model.onnx`,
        },
      );
    }
  };
  requireComponent('unet', 'every model needs its UNet');
  requireComponent('text_encoder', 'every model needs its text encoder');
  if (!components.vae_decoder && !components.vae) {
    throw new EngineError(
      'model-missing-file',
      `vae_decoder/model.onnx is missing from the model folder.`,
      {
        file: 'vae_decoder/model.onnx',
      },
    );
  }

  const tokenizers: ModelInfo['tokenizers'] = {};
  for (const name of tokenizerNames) {
    const encoder: ComponentName = name === 'tokenizer' ? 'text_encoder' : 'text_encoder_2';
    const folder = await statOrNull(join(root, name));
    if (folder?.isDirectory() || components[encoder])
      tokenizers[name] = await readTokenizer(root, name);
  }

  const schedulerConfig = (await readJsonFile(
    root,
    join(root, 'scheduler', 'scheduler_config.json'),
    true,
  ))!;
  const lowResSchedulerConfig =
    (await statOrNull(join(root, 'low_res_scheduler'))) !== null ||
    indexEntry(modelIndex, 'low_res_scheduler').present
      ? await readJsonFile(root, join(root, 'low_res_scheduler', 'scheduler_config.json'), true)
      : null;

  // optimum writes a config.json beside each model.onnx; diffusers' conversion script does not.
  const layout: ModelInfo['layout'] = sawConfigJson ? 'optimum' : 'diffusers';

  return {
    dir: root,
    name: basename(root),
    layout,
    pipelineClass,
    modelIndex,
    extras: extrasOf(modelIndex),
    components,
    tokenizers,
    schedulerConfig,
    lowResSchedulerConfig,
    notes,
  };
}
