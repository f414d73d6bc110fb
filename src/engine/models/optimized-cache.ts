/**
 * The on-disk cache of ONNX Runtime's optimized graphs, so a model's second load skips graph
 * optimization (most of a UNet's session creation: minutes on a small CPU).
 *
 * The first session of a model file is created with `optimizedModelFilePath`, which makes ONNX
 * Runtime write the graph it optimized; later sessions open that file with graph optimization
 * 'disabled' (ORT's docs, "Graph Optimizations: online/offline mode"). At the 'all' level the
 * CPU provider's NCHWc layout rewrite is specific to the CPU that ran it (ORT warns so when it
 * saves), so an entry is keyed by the source file's path, the provider, ORT's version, the
 * optimization level and the CPU (model and feature flags).
 *
 * Layout: `<dir>/<key>/model.onnx` with its weights in `model.onnx.data` (protobuf cannot hold
 * more than 2 GB, and an SD UNet is 3.4 GB in fp32: ORT writes every initializer of at least
 * EXTERNAL_MIN_BYTES there, via session.optimized_model_external_initializers_file_name and
 * ..._min_size_in_bytes), and `entry.json`, written last, recording the source files' identity
 * and the written files' sizes and samples. An entry whose source changed, whose files do not
 * match entry.json, or that ONNX Runtime cannot open is deleted and built again. Entries are
 * built in a temporary folder and renamed into place, so a crash leaves no half entry behind.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  mkdir,
  open,
  readFile,
  readdir,
  rename,
  rm,
  stat,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { readOnnxHeader } from './onnx-file';

/** Bumped when the entry layout or what identifies a source changes. */
const ENTRY_VERSION = 1;
const ENTRY_FILE = 'entry.json';
export const OPTIMIZED_MODEL = 'model.onnx';
export const OPTIMIZED_DATA = 'model.onnx.data';
/** Initializers this size or larger go to the data file; smaller ones stay in the graph. */
const EXTERNAL_MIN_BYTES = 1024;
/** Entries kept; the least recently used beyond this are deleted after a new one is written. */
export const DEFAULT_MAX_ENTRIES = 8;
/** Bytes hashed per sample of a large file (16 samples spread over it, ends included). */
const SAMPLE_BYTES = 64 * 1024;
const SAMPLES = 16;
/** Files up to this size are hashed whole. */
const WHOLE_HASH_BYTES = 16 * 1024 * 1024;

/** What identifies one file's content without reading gigabytes. */
interface FileIdentity {
  /** Relative to the model file's folder. */
  name: string;
  size: number;
  mtimeMs: number;
  /** SHA-256 of the whole file (small files) or of SAMPLES spread samples. */
  sha256: string;
}

interface EntryRecord {
  version: number;
  key: KeyParts;
  source: FileIdentity[];
  written: FileIdentity[];
}

/** Everything the optimized graph depends on besides the source files' content. */
export interface KeyParts {
  modelPath: string;
  provider: string;
  ortVersion: string;
  level: string;
  cpu: string;
  /** A rewrite applied to the graph before ORT optimized it (attention-rewrite.ts), if any. */
  transform?: string;
}

let cpuId: string | undefined;
/** The CPU model and its feature flags (the NCHWc rewrite and kernels depend on them). */
export function cpuIdentity(): string {
  if (cpuId !== undefined) return cpuId;
  let flags = '';
  if (process.platform === 'linux') {
    try {
      const line = readFileSync('/proc/cpuinfo', 'utf8')
        .split('\n')
        .find((l) => /^(flags|Features)\s*:/.test(l));
      flags = line ?? '';
    } catch {
      // the model name alone then
    }
  }
  const model = cpus()[0]?.model ?? 'unknown';
  cpuId = `${process.platform}/${process.arch}/${model}/${createHash('sha256').update(flags).digest('hex').slice(0, 16)}`;
  return cpuId;
}

/** The folder name of the entry for these key parts. */
export function entryName(key: KeyParts): string {
  return createHash('sha256')
    .update(JSON.stringify([ENTRY_VERSION, key]))
    .digest('hex')
    .slice(0, 32);
}

async function fileIdentity(path: string, name: string): Promise<FileIdentity> {
  const st = await stat(path);
  const h = createHash('sha256');
  if (st.size <= WHOLE_HASH_BYTES) h.update(await readFile(path));
  else {
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.alloc(SAMPLE_BYTES);
      const span = st.size - SAMPLE_BYTES;
      for (let i = 0; i < SAMPLES; i++) {
        const at = Math.floor((span * i) / (SAMPLES - 1));
        const { bytesRead } = await fh.read(buf, 0, SAMPLE_BYTES, at);
        h.update(buf.subarray(0, bytesRead));
      }
    } finally {
      await fh.close();
    }
  }
  return { name, size: st.size, mtimeMs: st.mtimeMs, sha256: h.digest('hex') };
}

/** The model file and every external data file its graph names, identified. */
export async function sourceIdentity(modelPath: string): Promise<FileIdentity[]> {
  const dir = dirname(modelPath);
  const names = ['.', ...readOnnxHeader(modelPath).externalData.map((r) => r.location)];
  const out: FileIdentity[] = [];
  for (const n of [...new Set(names)].sort()) {
    const path = n === '.' ? modelPath : join(dir, n);
    out.push(await fileIdentity(path, n === '.' ? '.' : n));
  }
  return out;
}

async function writtenIdentity(entryDir: string): Promise<FileIdentity[]> {
  const out: FileIdentity[] = [];
  for (const n of [OPTIMIZED_MODEL, OPTIMIZED_DATA]) {
    try {
      out.push(await fileIdentity(join(entryDir, n), n));
    } catch (e) {
      // A model whose initializers are all tiny has no data file.
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || n === OPTIMIZED_MODEL) throw e;
    }
  }
  return out;
}

const sameFiles = (a: FileIdentity[], b: FileIdentity[]) => JSON.stringify(a) === JSON.stringify(b);

/** One model's place in the cache, for one provider. */
export class OptimizedEntry {
  readonly dir: string;
  #source: FileIdentity[] | null = null;

  constructor(
    readonly cacheDir: string,
    readonly key: KeyParts,
  ) {
    this.dir = join(resolve(cacheDir), entryName(key));
  }

  /** The optimized model to open, or null when there is no valid entry (a stale one is deleted). */
  async lookup(): Promise<string | null> {
    let record: EntryRecord;
    try {
      record = JSON.parse(await readFile(join(this.dir, ENTRY_FILE), 'utf8')) as EntryRecord;
    } catch {
      await this.remove();
      return null;
    }
    try {
      const valid =
        record.version === ENTRY_VERSION &&
        JSON.stringify(record.key) === JSON.stringify(this.key) &&
        sameFiles(record.source, await this.source()) &&
        sameFiles(record.written, await writtenIdentity(this.dir));
      if (valid) {
        // Marks it recently used for pruning.
        const now = new Date();
        await utimes(join(this.dir, ENTRY_FILE), now, now).catch(() => undefined);
        return join(this.dir, OPTIMIZED_MODEL);
      }
    } catch {
      // a file vanished or cannot be read: not valid
    }
    await this.remove();
    return null;
  }

  /**
   * A fresh temporary folder to have ONNX Runtime write into; `commit(tmp)` makes it the entry.
   * Returns the optimized model's path inside it.
   */
  async prepare(): Promise<{ tmp: string; modelPath: string }> {
    const tmp = `${this.dir}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    await mkdir(tmp, { recursive: true });
    return { tmp, modelPath: join(tmp, OPTIMIZED_MODEL) };
  }

  /** Records what `tmp` holds and moves it into place (replacing a stale entry). */
  async commit(tmp: string): Promise<void> {
    try {
      const record: EntryRecord = {
        version: ENTRY_VERSION,
        key: this.key,
        source: await this.source(),
        written: await writtenIdentity(tmp),
      };
      await writeFile(join(tmp, ENTRY_FILE), JSON.stringify(record, null, 1));
      await rm(this.dir, { recursive: true, force: true });
      await rename(tmp, this.dir);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }

  /** The source files' identity, read once per entry object (a load). */
  private async source(): Promise<FileIdentity[]> {
    this.#source ??= await sourceIdentity(this.key.modelPath);
    return this.#source;
  }
}

/**
 * Session config entries that make ONNX Runtime write the optimized model's weights to
 * OPTIMIZED_DATA beside it (needed past protobuf's 2 GB; a flat file also loads faster).
 */
export function saveOptimizedConfig(): Record<string, string> {
  return {
    optimized_model_external_initializers_file_name: OPTIMIZED_DATA,
    optimized_model_external_initializers_min_size_in_bytes: String(EXTERNAL_MIN_BYTES),
  };
}

/**
 * Deletes entries beyond the `keep` most recently used, and leftover temporary folders of
 * builds that died (older than an hour). Errors are ignored: the cache is only a cache.
 */
export async function pruneOptimizedCache(
  cacheDir: string,
  keep = DEFAULT_MAX_ENTRIES,
): Promise<number> {
  let names: string[];
  try {
    names = await readdir(cacheDir);
  } catch {
    return 0;
  }
  const entries: { dir: string; used: number }[] = [];
  let removed = 0;
  for (const n of names) {
    const dir = join(cacheDir, n);
    if (n.includes('.tmp-')) {
      const st = await stat(dir).catch(() => null);
      if (st && Date.now() - st.mtimeMs > 3600_000) {
        await rm(dir, { recursive: true, force: true }).catch(() => undefined);
        removed++;
      }
      continue;
    }
    const st = await stat(join(dir, ENTRY_FILE)).catch(() => null);
    entries.push({ dir, used: st?.mtimeMs ?? 0 });
  }
  entries.sort((a, b) => b.used - a.used);
  for (const e of entries.slice(keep)) {
    await rm(e.dir, { recursive: true, force: true }).catch(() => undefined);
    removed++;
  }
  return removed;
}
