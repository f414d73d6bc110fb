/**
 * PNG metadata: what our PNGs carry and what we can read back from other tools' PNGs.
 *
 * We write two text chunks right after IHDR (see DESIGN.md "Storage" and ENGINE-NOTES.md §7):
 *  - `parameters`: the A1111 text, so other tools (A1111, Forge, civitai, image browsers) read
 *    our images;
 *  - `latent-studio`: our own JSON `{ "version": 1, "settings": GenerationSettings, "extra": {...} }`,
 *    the exact settings, so that any image can be made again.
 *
 * We read ours first, then A1111 `parameters`, ComfyUI `prompt`, InvokeAI `invokeai_metadata`
 * and ComfyUI `workflow`. JPEG and WebP files carry the same texts elsewhere (metadata/).
 */
import sharp from 'sharp';
import { GenerationSettings } from '../../shared/generation';
import { formatA1111Parameters, parseA1111Parameters, type A1111Extra } from './png/a1111';
import { addPngTextChunks, readPngTextChunks } from './png/chunks';
import { settingsFromComfy } from './png/comfyui';
import { apiGraphFromWorkflow } from './png/comfyui-workflow';
import { settingsFromA1111, settingsFromInvoke, type PartialSettings } from './png/foreign';

export {
  PngFormatError,
  addPngTextChunks,
  isLatin1,
  pngKeywordProblem,
  readPngTextChunks,
  type PngTextChunk,
  type PngTextEntry,
  type ReadTextOptions,
  type TextChunkKind,
} from './png/chunks';
export {
  formatA1111Parameters,
  parseA1111Parameters,
  quoteA1111Value,
  type A1111Extra,
  type A1111Parameters,
} from './png/a1111';
export { samplerFromA1111, samplerFromComfy } from './png/foreign';

/** Keyword of our own JSON chunk. */
export const LATENT_STUDIO_KEYWORD = 'latent-studio';
/** Keyword of the A1111 text. */
export const A1111_KEYWORD = 'parameters';
/** Version of our JSON chunk's layout. */
export const LATENT_STUDIO_METADATA_VERSION = 1;

export interface PngGenerationMetadata {
  settings: GenerationSettings;
  extra?: A1111Extra;
}

export type MetadataSource = 'latent-studio' | 'a1111' | 'comfyui' | 'invokeai' | 'none';

export interface ReadGenerationMetadata {
  source: MetadataSource;
  settings: Partial<GenerationSettings>;
  /** Source-specific fields as text: A1111 params, ComfyUI sampler inputs, InvokeAI fields, our extra. */
  raw: Record<string, string>;
}

/** Largest JSON text we parse from a chunk, in characters. */
const MAX_JSON_CHARS = 4 * 1024 * 1024;
/** Largest A1111 text we parse, in characters. */
const MAX_PARAMETERS_CHARS = 1024 * 1024;

function parseJson(text: string | undefined): unknown {
  if (text === undefined || text.length > MAX_JSON_CHARS) return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

function cleanExtra(extra: A1111Extra | undefined): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  if (!extra) return out;
  for (const [k, v] of Object.entries(extra)) {
    if (typeof v === 'string' || (typeof v === 'number' && Number.isFinite(v))) out[k] = v;
  }
  return out;
}

/** The text chunks (keyword -> text) we write for one generation. */
export function generationTextEntries(
  metadata: PngGenerationMetadata,
): Array<{ keyword: string; text: string }> {
  const settings = GenerationSettings.parse(metadata.settings);
  const extra = cleanExtra(metadata.extra);
  const ours = { version: LATENT_STUDIO_METADATA_VERSION, settings, extra };
  return [
    // A NUL cannot be stored in a PNG text chunk; our JSON keeps the exact prompt.
    { keyword: A1111_KEYWORD, text: formatA1111Parameters(settings, extra).replaceAll('\0', '') },
    { keyword: LATENT_STUDIO_KEYWORD, text: JSON.stringify(ours) },
  ];
}

function fromOurs(text: string | undefined): ReadGenerationMetadata | null {
  const json = parseJson(text);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return null;
  const record = json as Record<string, unknown>;
  const version = record.version;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) return null;
  const parsed = GenerationSettings.safeParse(record.settings);
  if (!parsed.success) return null;
  const raw: Record<string, string> = {};
  const extra = record.extra;
  if (typeof extra === 'object' && extra !== null && !Array.isArray(extra)) {
    for (const [k, v] of Object.entries(extra as Record<string, unknown>).slice(0, 200)) {
      if (typeof v === 'string' || typeof v === 'number')
        Object.defineProperty(raw, k, {
          value: String(v),
          enumerable: true,
          writable: true,
          configurable: true,
        });
    }
  }
  return { source: 'latent-studio', settings: parsed.data, raw };
}

/**
 * Settings from (keyword, text) pairs named as PNG text chunks name them, whatever file they
 * came from. The first text of each keyword wins (we write ours right after IHDR).
 */
export function metadataFromText(
  chunks: ReadonlyArray<{ keyword: string; text: string }>,
): ReadGenerationMetadata {
  const byKeyword = new Map<string, string>();
  for (const c of chunks) if (!byKeyword.has(c.keyword)) byKeyword.set(c.keyword, c.text);

  const ours = fromOurs(byKeyword.get(LATENT_STUDIO_KEYWORD));
  if (ours) return ours;

  const parameters = byKeyword.get(A1111_KEYWORD);
  if (parameters !== undefined && parameters.length <= MAX_PARAMETERS_CHARS) {
    const parsed = parseA1111Parameters(parameters);
    if (Object.keys(parsed.params).length > 0) {
      const { settings, raw } = settingsFromA1111(parsed);
      return { source: 'a1111', settings, raw };
    }
  }

  const comfyPrompt = parseJson(byKeyword.get('prompt'));
  const comfy = comfyPrompt === undefined ? null : settingsFromComfy(comfyPrompt);
  if (comfy) return { source: 'comfyui', ...comfy };

  const invoke = settingsFromInvoke(parseJson(byKeyword.get('invokeai_metadata')));
  if (invoke) return { source: 'invokeai', ...invoke };

  // A ComfyUI image with only the editor's `workflow`, or an A1111 text with a prompt and no
  // parameters.
  const workflow = parseJson(byKeyword.get('workflow'));
  if (workflow !== undefined) {
    const fromWorkflow = settingsFromComfy(apiGraphFromWorkflow(workflow));
    return fromWorkflow
      ? { source: 'comfyui', ...fromWorkflow }
      : { source: 'comfyui', settings: {}, raw: {} };
  }
  if (
    parameters !== undefined &&
    parameters.length <= MAX_PARAMETERS_CHARS &&
    parameters.trim() !== ''
  ) {
    const { settings, raw } = settingsFromA1111(parseA1111Parameters(parameters));
    return { source: 'a1111', settings, raw };
  }
  return none();
}

function none(): ReadGenerationMetadata {
  return { source: 'none', settings: {}, raw: {} };
}

/**
 * The generation settings a PNG describes, from whichever tool wrote it. Never throws: a file
 * that is not a readable PNG, or holds nothing we understand, gives source 'none'; fields that
 * do not pass the GenerationSettings schema are left out of `settings`.
 */
export function readGenerationMetadata(png: Uint8Array): ReadGenerationMetadata {
  try {
    return metadataFromText(readPngTextChunks(png, { onBadText: 'skip' }));
  } catch {
    return none();
  }
}

/** The settings fields a read gave, for callers that only want those. */
export type { PartialSettings };

/**
 * Pixels (RGB or RGBA, row-major, 8-bit) to a PNG (zlib level 6), carrying `parameters` and
 * `latent-studio` text chunks when metadata is given.
 */
export async function encodePngWithMetadata(
  rgb: Uint8Array,
  width: number,
  height: number,
  channels: 3 | 4,
  metadata?: PngGenerationMetadata | null,
): Promise<Uint8Array> {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1)
    throw new Error(`The image size ${width}x${height} is not a positive whole number of pixels.`);
  if (channels !== 3 && channels !== 4)
    throw new Error(`An image to encode must have 3 or 4 channels, not ${channels}.`);
  if (rgb.length !== width * height * channels)
    throw new Error(
      `The pixel buffer holds ${rgb.length} bytes but a ${width}x${height} image with ${channels} channels needs ${width * height * channels}.`,
    );
  const entries = metadata ? generationTextEntries(metadata) : null;
  const buf = await sharp(rgb, { raw: { width, height, channels } })
    .png({ compressionLevel: 6 })
    .toBuffer();
  const png = new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
  return entries ? addPngTextChunks(png, entries) : png;
}
