/**
 * Sessions are expensive (seconds and gigabytes for a UNet), so they are shared: one per
 * (model file, provider preference, options). Creation is deduplicated, so two callers asking
 * at once get the same session. `release` ends sessions through `session.release()`.
 */
import type * as ort from 'onnxruntime-node';
import { resolve } from 'node:path';
import {
  createSession,
  type CreatedSession,
  type ProviderPreference,
  type SessionOptionsInput,
} from './providers';
import type { SessionVariant } from '../adapters/lora';

export interface SessionKey {
  /** Absolute path of the .onnx file. */
  modelPath: string;
  preference: ProviderPreference;
  options: SessionOptionsInput;
  /**
   * A patched variant of the file (LoRAs merged, adapters/lora.ts), cached apart under its id;
   * absent for the file as it is.
   */
  variant?: SessionVariant;
}

interface Entry {
  modelPath: string;
  promise: Promise<CreatedSession>;
  variant: boolean;
  /** Buffers the session may read from (in-memory external data) for as long as it lives. */
  keepAlive?: Uint8Array[];
}

function keyOf(k: SessionKey): string {
  return JSON.stringify([
    resolve(k.modelPath),
    k.preference,
    k.options.threads ?? 0,
    k.options.optimizedCacheDir ?? null,
    k.options.spinning ?? null,
    ...(k.variant ? [k.variant.id] : []),
  ]);
}

export class SessionCache {
  private readonly entries = new Map<string, Entry>();

  /** The cached session for this key, creating it on first use. `file` names it in errors. */
  get(key: SessionKey, file: string, baseDir?: string): Promise<CreatedSession> {
    const k = keyOf(key);
    const hit = this.entries.get(k);
    if (hit) return hit.promise;
    const variant = key.variant;
    const entry: Entry = {
      modelPath: resolve(key.modelPath),
      promise: Promise.resolve(null as unknown as CreatedSession),
      variant: variant !== undefined,
    };
    const create = async (): Promise<CreatedSession> => {
      const source = variant ? await variant.source() : undefined;
      if (source) entry.keepAlive = source.keepAlive;
      return createSession(resolve(key.modelPath), file, key.preference, {
        ...key.options,
        ...(baseDir ? { baseDir } : {}),
        ...(source ? { source } : {}),
      });
    };
    const promise = create();
    entry.promise = promise;
    this.entries.set(k, entry);
    // A failed creation is not cached: the next call tries again (after the user fixes the file).
    promise.catch(() => {
      if (this.entries.get(k) === entry) this.entries.delete(k);
    });
    return promise;
  }

  /** Whether a session for this key exists or is being created. */
  has(key: SessionKey): boolean {
    return this.entries.has(keyOf(key));
  }

  get size(): number {
    return this.entries.size;
  }

  /**
   * Release sessions: those whose model file is `path` or lies under the folder `path`, or all
   * of them when no path is given. Resolves when every released session has been freed.
   */
  async release(path?: string, which: 'all' | 'variants' | 'plain' = 'all'): Promise<number> {
    const prefix = path === undefined ? undefined : resolve(path);
    const victims: Entry[] = [];
    for (const [k, e] of this.entries) {
      if ((which === 'variants' && !e.variant) || (which === 'plain' && e.variant)) continue;
      if (
        prefix === undefined ||
        e.modelPath === prefix ||
        e.modelPath.startsWith(
          prefix.endsWith('/') || prefix.endsWith('\\') ? prefix : prefix + '/',
        ) ||
        e.modelPath.startsWith(prefix + '\\')
      ) {
        victims.push(e);
        this.entries.delete(k);
      }
    }
    await Promise.all(
      victims.map(async (e) => {
        let session: ort.InferenceSession;
        try {
          session = (await e.promise).session;
        } catch {
          return; // never created
        }
        await session.release();
        e.keepAlive = undefined;
      }),
    );
    return victims.length;
  }

  /** Release the patched variants (LoRAs) of files under `path`, keeping the plain sessions. */
  releaseVariants(path: string): Promise<number> {
    return this.release(path, 'variants');
  }

  releaseAll(): Promise<number> {
    return this.release();
  }
}

/** The process-wide cache loadModel uses unless given another. */
export const sessionCache = new SessionCache();
