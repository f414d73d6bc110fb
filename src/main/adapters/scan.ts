/**
 * The LoRA and embedding folders: where they are, and the files in them. Layout as A1111 users
 * keep it (its `--lora-dir` default `models/Lora`, `--embeddings-dir` default `embeddings`),
 * subfolders included, with a preview image beside a file (extra_networks.py find_preview:
 * `name.<ext>` or `name.preview.<ext>` for png, jpg, jpeg, webp, gif).
 */
import type { Dirent } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import type { NetworkFile, NetworkKind, Settings } from '../../shared';
import { HeaderError, embeddingShape, loraFamily, readFileHeader } from './header';

export const LORA_EXTENSIONS = ['.safetensors', '.pt', '.ckpt'];
export const EMBEDDING_EXTENSIONS = ['.pt', '.bin', '.safetensors'];
const PREVIEW_EXTENSIONS = ['png', 'jpg', 'jpeg', 'webp', 'gif'];
/** A folder tree deeper or larger than this is not a LoRA folder; stop rather than hang. */
const MAX_DEPTH = 12;
const MAX_FILES = 20_000;

export interface NetworkFolders {
  loraDir: string;
  embeddingsDir: string;
}

/** The folders of the settings, or A1111's defaults inside the data folder. */
export function networkFolders(
  settings: Pick<Settings, 'loraDir' | 'embeddingsDir'>,
  dataDir: string,
): NetworkFolders {
  return {
    loraDir: settings.loraDir ?? path.join(dataDir, 'models', 'Lora'),
    embeddingsDir: settings.embeddingsDir ?? path.join(dataDir, 'embeddings'),
  };
}

interface Found {
  file: string;
  relativeName: string;
  bytes: number;
  mtime: number;
  preview: string | null;
}

/** Files below `root` with one of `extensions`, and the preview image beside each. */
async function walk(root: string, extensions: readonly string[]): Promise<Found[]> {
  const out: Found[] = [];
  const visit = async (dir: string, depth: number): Promise<void> => {
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    const names = new Set(entries.map((e) => e.name));
    for (const e of entries) {
      if (out.length >= MAX_FILES || e.name.startsWith('.')) continue;
      const full = path.join(dir, e.name);
      // A1111 walks with followlinks=True: a linked folder or file counts as what it points to.
      const st = e.isSymbolicLink() ? await stat(full).catch(() => null) : null;
      const isDir = e.isDirectory() || st?.isDirectory() === true;
      if (isDir) {
        if (depth < MAX_DEPTH) await visit(full, depth + 1);
        continue;
      }
      const ext = path.extname(e.name).toLowerCase();
      if (!extensions.includes(ext)) continue;
      const info = st ?? (await stat(full).catch(() => null));
      if (!info?.isFile()) continue;
      const base = e.name.slice(0, e.name.length - ext.length);
      const candidates = PREVIEW_EXTENSIONS.flatMap((x) => [
        `${base}.${x}`,
        `${base}.preview.${x}`,
      ]);
      const preview = candidates.find((c) => names.has(c));
      const rel = path.relative(root, path.join(dir, base)).split(path.sep).join('/');
      out.push({
        file: full,
        relativeName: rel,
        bytes: info.size,
        mtime: info.mtimeMs,
        preview: preview ? path.join(dir, preview) : null,
      });
    }
  };
  await visit(root, 0);
  return out;
}

export interface ScannedFile extends NetworkFile {
  /** Absolute path of the preview image, when there is one. */
  previewFile: string | null;
}

/** What reading a header told, kept by path, size and time so a rescan skips unchanged files. */
type HeaderFacts = Pick<ScannedFile, 'family' | 'vectors' | 'problem' | 'alias'>;

export class FolderScanner {
  readonly #facts = new Map<string, HeaderFacts>();

  /**
   * The files of one folder (recursively), sorted by relative name. A folder that does not
   * exist gives no files and a sentence in `problems`.
   */
  async scan(kind: NetworkKind, root: string, problems: string[]): Promise<ScannedFile[]> {
    const what = kind === 'lora' ? 'LoRA' : 'embeddings';
    const st = await stat(root).catch(() => null);
    if (!st) {
      problems.push(`The ${what} folder ${root} does not exist yet; put ${what} files there.`);
      return [];
    }
    if (!st.isDirectory()) {
      problems.push(
        `The ${what} folder ${root} is a file, not a folder; choose a folder in Settings.`,
      );
      return [];
    }
    const found = await walk(root, kind === 'lora' ? LORA_EXTENSIONS : EMBEDDING_EXTENSIONS);
    const out: ScannedFile[] = [];
    for (const f of found) {
      const facts = await this.#headerFacts(kind, f);
      out.push({
        kind,
        name: path.basename(f.relativeName),
        relativeName: f.relativeName,
        file: f.file,
        bytes: f.bytes,
        mtime: Math.round(f.mtime),
        hash: null,
        hasPreview: f.preview !== null,
        previewFile: f.preview,
        ...facts,
      });
    }
    out.sort((a, b) => a.relativeName.localeCompare(b.relativeName, 'en'));
    return out;
  }

  async #headerFacts(kind: NetworkKind, f: Found): Promise<HeaderFacts> {
    const key = `${kind}|${f.file}|${f.bytes}|${f.mtime}`;
    const cached = this.#facts.get(key);
    if (cached) return cached;
    let facts: HeaderFacts;
    try {
      const header = await readFileHeader(f.file);
      if (kind === 'lora') {
        const alias = header.metadata.ss_output_name;
        facts = {
          family: loraFamily(header),
          vectors: null,
          problem: header.tensors.size === 0 ? 'It holds no tensors.' : null,
          alias: typeof alias === 'string' && alias.trim() ? alias : null,
        };
      } else {
        const shape = embeddingShape(header);
        facts = shape
          ? { family: shape.family, vectors: shape.vectors, problem: null, alias: null }
          : {
              family: null,
              vectors: null,
              problem:
                'It holds no embedding vectors A1111 would read (string_to_param, emb_params, clip_l/clip_g).',
              alias: null,
            };
      }
    } catch (err) {
      const why =
        err instanceof HeaderError
          ? err.message
          : `it could not be read (${(err as Error).message})`;
      facts = {
        family: null,
        vectors: null,
        problem: `${why.charAt(0).toUpperCase()}${why.slice(1)}.`,
        alias: null,
      };
    }
    for (const k of this.#facts.keys())
      if (k.startsWith(`${kind}|${f.file}|`)) this.#facts.delete(k);
    this.#facts.set(key, facts);
    return facts;
  }
}
