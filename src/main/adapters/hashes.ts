/**
 * A1111's short hashes of LoRA and embedding files, as its infotext writes them
 * (`Lora hashes: "name: 0123456789ab"`, `TI hashes: ...`): the first 12 hex digits of a sha256.
 *
 * - Embeddings: sha256 of the whole file (textual_inversion.py: `hashes.sha256(filename,
 *   "textual_inversion/" + name)`).
 * - LoRAs (extensions-builtin/Lora/network.py, NetworkOnDisk): the `sshs_model_hash` of a
 *   safetensors file's metadata when kohya wrote one, else `hashes.sha256(..., use_addnet_hash=
 *   is_safetensors)`: for .safetensors the sha256 of the bytes after the header (kohya's
 *   "addnet" hash, modules/hashes.py addnet_hash_safetensors), so editing the metadata keeps
 *   the hash; for .pt/.ckpt the whole file.
 *
 * Hashing reads the whole file, so results are kept in the data folder by path, size and
 * modification time (a file changed in place is hashed again).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { NetworkKind } from '../../shared';
import { readSafetensorsHeader } from './header';

/** Length of A1111's short network hash (network.py `set_hash`: `self.hash[0:12]`). */
export const SHORT_HASH_LENGTH = 12;

export const HASHES_FILE = 'network-hashes.json';

async function sha256From(file: string, start: number): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file, { start, highWaterMark: 4 << 20 }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** The full A1111 hash (64 hex digits) of a LoRA or embedding file, computed now. */
export async function a1111NetworkHash(file: string, kind: NetworkKind): Promise<string> {
  if (kind === 'lora' && path.extname(file).toLowerCase() === '.safetensors') {
    const header = await readSafetensorsHeader(file);
    const recorded = header.metadata.sshs_model_hash;
    if (typeof recorded === 'string' && /^[0-9a-fA-F]{12,64}$/.test(recorded))
      return recorded.toLowerCase();
    return sha256From(file, header.dataOffset ?? 0);
  }
  return sha256From(file, 0);
}

/**
 * The hashes computed so far, in one small JSON file of the data folder; `hash()` answers from
 * it when the file's size and time are unchanged. Concurrent hashes of one file share the work.
 */
export class NetworkHashes {
  readonly #file: string;
  #known: Record<string, string> | null = null;
  readonly #inFlight = new Map<string, Promise<string>>();
  #writing: Promise<void> = Promise.resolve();

  constructor(dataDir: string) {
    this.#file = path.join(dataDir, HASHES_FILE);
  }

  async #load(): Promise<Record<string, string>> {
    if (this.#known) return this.#known;
    try {
      const data = JSON.parse(await readFile(this.#file, 'utf8')) as unknown;
      this.#known =
        data && typeof data === 'object' && !Array.isArray(data)
          ? (data as Record<string, string>)
          : {};
    } catch {
      this.#known = {};
    }
    return this.#known;
  }

  static #key(kind: NetworkKind, file: string, size: number, mtimeMs: number): string {
    return `${kind}|${path.resolve(file)}|${size}|${Math.round(mtimeMs)}`;
  }

  /** The hash when it is known for the file as it is now; never reads the file's content. */
  async known(
    kind: NetworkKind,
    file: string,
    size: number,
    mtimeMs: number,
  ): Promise<string | null> {
    const value = (await this.#load())[NetworkHashes.#key(kind, file, size, mtimeMs)];
    return typeof value === 'string' && /^[0-9a-f]{12,64}$/.test(value) ? value : null;
  }

  /** The full hash of the file, from the cache or computed (and then remembered). */
  async hash(kind: NetworkKind, file: string): Promise<string> {
    const st = await stat(file);
    const key = NetworkHashes.#key(kind, file, st.size, st.mtimeMs);
    const cached = await this.known(kind, file, st.size, st.mtimeMs);
    if (cached) return cached;
    let running = this.#inFlight.get(key);
    if (!running) {
      running = a1111NetworkHash(file, kind).finally(() => this.#inFlight.delete(key));
      this.#inFlight.set(key, running);
    }
    const value = await running;
    const known = await this.#load();
    // Entries of the same path with an older size/time are stale: drop them.
    const prefix = `${kind}|${path.resolve(file)}|`;
    for (const k of Object.keys(known)) if (k.startsWith(prefix) && k !== key) delete known[k];
    known[key] = value;
    await this.#save();
    return value;
  }

  /** Writes the cache (temp file, rename); a write that fails only costs a later re-hash. */
  #save(): Promise<void> {
    this.#writing = this.#writing.then(async () => {
      try {
        await mkdir(path.dirname(this.#file), { recursive: true });
        const tmp = `${this.#file}.tmp-${process.pid}`;
        await writeFile(tmp, JSON.stringify(this.#known ?? {}));
        await rename(tmp, this.#file);
      } catch {
        // a read-only data folder: hashes are computed again next time
      }
    });
    return this.#writing;
  }
}

export function shortNetworkHash(hash: string): string {
  return hash.slice(0, SHORT_HASH_LENGTH);
}
