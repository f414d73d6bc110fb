/**
 * Execution providers and session creation.
 *
 * What onnxruntime-node 1.30 ships (its README's platform table, and `listSupportedBackends()`):
 * CPU everywhere; WebGPU on Windows, macOS and Linux x64 (experimental; not Linux arm64);
 * DirectML on Windows; CoreML on macOS; CUDA 12 on Linux x64 only, and only after its install
 * script downloads libonnxruntime_providers_cuda.so (CI skips that with
 * ONNXRUNTIME_NODE_INSTALL=skip, so `cuda` is listed but does not load).
 *
 * A session is created with the preferred provider first (plus CPU, so nodes the provider lacks
 * still run); if that throws and CPU works, the session runs on CPU and the reason is recorded.
 */
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import * as ort from 'onnxruntime-node';
import type { ExecutionProviderPreference } from '../../shared/settings';
import { EngineError, shortReason, wrapSessionCreateError } from '../errors';
import {
  ATTENTION_REWRITE_ID,
  type AttentionCount,
  countAttentionFile,
  prepareAttention,
} from './attention-rewrite';
import { type BackgroundState, engineThreads, threadPolicy } from './priority';
import { widenFloat16IfAny, widensFloat16 } from './widen-fp16';
import {
  OptimizedEntry,
  cpuIdentity,
  pruneOptimizedCache,
  saveOptimizedConfig,
} from './optimized-cache';

// Provider fallbacks are recorded with their reason and shown to the user; ONNX Runtime's own
// native error lines for them (a missing CUDA library, no WebGPU adapter) are noise on stderr.
// LATENT_STUDIO_ORT_LOG=verbose|info|warning|error brings them back for debugging.
const ortLogLevels = ['verbose', 'info', 'warning', 'error', 'fatal'] as const;
const wantedLog = process.env.LATENT_STUDIO_ORT_LOG;
ort.env.logLevel = ortLogLevels.find((l) => l === wantedLog) ?? 'fatal';

export type ProviderName = 'cuda' | 'dml' | 'coreml' | 'webgpu' | 'cpu';
export type ProviderPreference = ExecutionProviderPreference;

/** Bundled providers per platform/arch from onnxruntime-node's README (used for other platforms). */
const PREBUILT: Record<string, readonly ProviderName[]> = {
  'win32/x64': ['dml', 'webgpu', 'cpu'],
  'win32/arm64': ['dml', 'webgpu', 'cpu'],
  'linux/x64': ['cuda', 'webgpu', 'cpu'],
  'linux/arm64': ['cpu'],
  'darwin/x64': ['coreml', 'webgpu', 'cpu'],
  'darwin/arm64': ['coreml', 'webgpu', 'cpu'],
};

/** Preference order: vendor GPU APIs first, then WebGPU, CPU last. */
const ORDER: Record<string, readonly ProviderName[]> = {
  linux: ['cuda', 'webgpu', 'cpu'],
  win32: ['cuda', 'dml', 'webgpu', 'cpu'],
  darwin: ['coreml', 'webgpu', 'cpu'],
};

function backendNames(available: readonly (string | { name: string })[]): Set<string> {
  return new Set(available.map((b) => (typeof b === 'string' ? b : b.name)));
}

/**
 * The providers to try for 'auto', best first, always ending with 'cpu'.
 * `available` defaults to what this onnxruntime-node build lists (for the running platform) or
 * to the prebuilt table (for any other platform).
 */
export function chooseProviders(
  platform: string = process.platform,
  arch: string = process.arch,
  available?: readonly (string | { name: string })[],
): ProviderName[] {
  let names: Set<string>;
  if (available) names = backendNames(available);
  else if (platform === process.platform && arch === process.arch) {
    names = backendNames(ort.listSupportedBackends?.() ?? [{ name: 'cpu' }]);
  } else names = new Set(PREBUILT[`${platform}/${arch}`] ?? ['cpu']);
  const order = ORDER[platform] ?? ['cpu'];
  const out = order.filter((p) => p !== 'cpu' && names.has(p));
  out.push('cpu');
  return out;
}

/** Physical cores (ORT's own default for intra-op threads), bounded by what this process may use. */
export function physicalCoreCount(): number {
  const logical = Math.max(1, availableParallelism());
  if (process.platform === 'linux') {
    try {
      const cores = new Set<string>();
      let phys = '0';
      for (const line of readFileSync('/proc/cpuinfo', 'utf8').split('\n')) {
        const [k, v] = line.split(':').map((s) => s?.trim());
        if (k === 'physical id') phys = v ?? '0';
        else if (k === 'core id') cores.add(`${phys}/${v}`);
      }
      if (cores.size > 0) return Math.max(1, Math.min(cores.size, logical));
    } catch {
      // fall through
    }
  }
  return logical;
}

export interface SessionOptionsInput {
  threads?: number;
  /**
   * Folder of the optimized-graph cache (optimized-cache.ts): the first session of a model file
   * writes ONNX Runtime's optimized graph there, later ones open it with optimization off.
   * Absent: no cache (every load optimizes).
   */
  optimizedCacheDir?: string;
  /**
   * Whether ONNX Runtime's intra-op threads spin while waiting for work
   * (session.intra_op.allow_spinning). Spinning saves wake-ups on an idle machine but burns cores
   * other programs need on a busy one; absent: decided by `spinByDefault()` when the session is
   * created.
   */
  spinning?: boolean;
  /**
   * Rewrite exported MatMul + Softmax attention into MultiHeadAttention before ONNX Runtime
   * optimizes the graph (attention-rewrite.ts; far less memory, same outputs). Default true.
   */
  rewriteAttention?: boolean;
  /**
   * On the CPU provider, widen float16 weights the graph casts to float32 into a temporary
   * float32 file before ONNX Runtime reads the model (widen-fp16.ts: it then never holds both
   * copies; same outputs). Default true; ignored on other providers and on a cache hit.
   */
  widenFloat16?: boolean;
  /**
   * ONNX Runtime's CPU arena and memory-pattern planning (enableCpuMemArena, enableMemPattern).
   * Default true; off trades allocation speed for a lower peak (README "Performance").
   */
  memArena?: boolean;
  /**
   * Memory patterns alone (enableMemPattern); absent: as `memArena`. ONNX Runtime plans a
   * pattern at a shape's first run and, from the second, allocates it as one block beside the
   * arena chunks the first run left: a session's second run at a shape then holds twice its
   * first (the VAE decoder at 512x512: +1.03 GiB, then +0.91 GiB more). Off, the arena's freed
   * chunks serve the second run (+0) at the same speed (README "Performance").
   */
  memPattern?: boolean;
}

/**
 * The options of component `name`'s session: the VAE decoders (`vae_decoder`, the x4
 * upscaler's `vae`) run without memory patterns. A decode is the largest call of a generation
 * (4 GiB for SDXL at 1024x1024) and runs once per image, tile after tile of one shape: with
 * patterns, its second call at a shape held another copy of the first's memory and bought no
 * speed (bench:memory --decoder, README "Performance"). The arena stays on: without it every
 * call's first run at a shape was 3x slower here (its buffers allocated one by one).
 */
export function componentOptions(name: string, options: SessionOptionsInput): SessionOptionsInput {
  return name === 'vae_decoder' || name === 'vae' ? { ...options, memPattern: false } : options;
}

let backgroundState: BackgroundState = { background: false, onBattery: false, mode: 'gentle' };

/**
 * Tells session creation whether the studio is in the background or on battery (priority.ts):
 * sessions created from now on take their spinning default from it, and the engine's threads
 * get the policy's priority now. Returns what applying the priority did.
 */
export function setBackgroundState(state: BackgroundState): ReturnType<typeof engineThreads.apply> {
  backgroundState = { ...state };
  return engineThreads.apply(
    threadPolicy(backgroundState, loadavg()[0] ?? 0, availableParallelism()).niceness,
  );
}

/**
 * Spinning only when the machine is quiet: the 1-minute load average below the cores this
 * process may use (measured on the mid UNet, README "Performance": spinning off was faster on a
 * busy machine and no slower on a quiet one), and never while the studio is in the background
 * or on battery and gentle (`setBackgroundState`).
 */
export function spinByDefault(
  load: number = loadavg()[0] ?? 0,
  cores: number = availableParallelism(),
): boolean {
  return threadPolicy(backgroundState, load, cores).spinning;
}

const GRAPH_LEVEL = 'all';

/** Session options for one provider. */
export function sessionOptions(
  provider: ProviderName,
  opts: SessionOptionsInput = {},
): ort.InferenceSession.SessionOptions {
  const threads = opts.threads && opts.threads > 0 ? Math.floor(opts.threads) : physicalCoreCount();
  return {
    executionProviders: provider === 'cpu' ? ['cpu'] : [provider, 'cpu'],
    graphOptimizationLevel: GRAPH_LEVEL,
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    // DirectML does not support memory patterns (ORT's DirectML EP docs); everything else does.
    enableMemPattern: provider !== 'dml' && (opts.memPattern ?? opts.memArena ?? true),
    enableCpuMemArena: opts.memArena ?? true,
    extra: {
      session: { intra_op: { allow_spinning: (opts.spinning ?? spinByDefault()) ? '1' : '0' } },
    },
  };
}

/** Providers that failed once in this process, with why: not tried again. */
const providerFailures = new Map<ProviderName, string>();

let vulkanLoader: boolean | undefined;
/**
 * WebGPU on Linux runs on Vulkan; without the loader, Dawn fails after a slow probe and prints
 * to stderr. Looking for libvulkan.so.1 where the dynamic linker would (ld.so.cache and the
 * usual folders) tells us first.
 */
function hasVulkanLoader(): boolean {
  if (vulkanLoader !== undefined) return vulkanLoader;
  const name = 'libvulkan.so.1';
  const dirs = [
    ...(process.env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean),
    '/usr/lib/x86_64-linux-gnu',
    '/usr/lib/aarch64-linux-gnu',
    '/usr/lib64',
    '/usr/lib',
    '/lib/x86_64-linux-gnu',
    '/lib64',
  ];
  vulkanLoader = dirs.some((d) => existsSync(join(d, name)));
  if (!vulkanLoader) {
    try {
      vulkanLoader = readFileSync('/etc/ld.so.cache').includes(name);
    } catch {
      vulkanLoader = false;
    }
  }
  return vulkanLoader;
}

/** A reason a provider cannot work here, known without trying it; null when worth a try. */
function precheckProvider(provider: ProviderName): string | undefined {
  if (provider === 'webgpu' && process.platform === 'linux' && !hasVulkanLoader()) {
    return 'webgpu: no Vulkan loader (libvulkan.so.1) is installed';
  }
  return undefined;
}

/** Forget recorded provider failures (after the user installs drivers, and in tests). */
export function resetProviderFailures(): void {
  providerFailures.clear();
}

/** A readable reason a provider could not be used. */
function providerReason(provider: ProviderName, e: unknown): string {
  const reason = shortReason(e);
  if (provider === 'cuda' && /failed to load shared library/i.test(reason)) {
    const lib = cudaProviderLibrary();
    if (lib && !existsSync(lib)) {
      return 'cuda: libonnxruntime_providers_cuda.so is not installed (onnxruntime-node downloads it at install time unless ONNXRUNTIME_NODE_INSTALL=skip)';
    }
    return 'cuda: the CUDA provider library did not load (CUDA 12 and cuDNN 9 runtime libraries are needed)';
  }
  if (/no available backend found|backend not found/i.test(reason)) {
    return `${provider}: this onnxruntime-node build does not include it`;
  }
  return `${provider}: ${reason}`;
}

function cudaProviderLibrary(): string | null {
  try {
    const pkg = createRequire(import.meta.url).resolve('onnxruntime-node');
    return join(
      dirname(pkg),
      '..',
      'bin',
      'napi-v6',
      process.platform,
      process.arch,
      'libonnxruntime_providers_cuda.so',
    );
  } catch {
    return null;
  }
}

export interface CreatedSession {
  session: ort.InferenceSession;
  provider: ProviderName;
  /** Why a preferred provider was not used (null when the first choice worked). */
  fallbackReason: string | null;
  /**
   * The optimized-graph cache: 'hit' (opened from it, optimization skipped), 'written' (optimized
   * now and saved for next time), 'off' (no cache folder, or it could not be written).
   */
  cache: OptimizedCacheUse;
  /** Attentions rewritten into MultiHeadAttention at this load (0 on a cache hit). */
  attentionRewrites: number;
  /** Float16 weights widened to float32 before ONNX Runtime read them (widen-fp16.ts; 0 on a cache hit). */
  widenedWeights: number;
  /** Whether its intra-op threads spin while waiting (fixed for the session's life). */
  spinning: boolean;
  /**
   * The attention of the graph the session runs (rewritten, or the cached optimized graph): how
   * many attentions hold their N x N scores and how many run fused. Null when the file could not
   * be read for it (a model file over 2 GB, which ONNX Runtime reads itself).
   */
  attention: AttentionCount | null;
}

export type OptimizedCacheUse = 'hit' | 'written' | 'off';

/**
 * Create a session for `modelPath` (`file` names it in errors, relative to the model folder),
 * trying providers in order. Model errors (corrupt, truncated, missing weights) are thrown as
 * EngineErrors naming the file; provider errors fall through to the next provider.
 */
export async function createSession(
  modelPath: string,
  file: string,
  preference: ProviderPreference = 'auto',
  opts: SessionOptionsInput & {
    baseDir?: string;
    /**
     * Create from these bytes instead of reading `modelPath`: patched weights held in memory
     * (adapters/lora.ts): the model as a buffer or its path, and external-data files by location.
     */
    source?: SessionSourceInput;
  } = {},
): Promise<CreatedSession> {
  const order: ProviderName[] =
    preference === 'auto'
      ? chooseProviders()
      : preference === 'cpu'
        ? ['cpu']
        : [preference, 'cpu'];
  // Decided once, so the session records what it got.
  const spinning = opts.spinning ?? spinByDefault();
  const reasons: string[] = [];
  const failed: [ProviderName, string][] = [];
  for (const provider of order) {
    if (provider !== 'cpu') {
      const known = providerFailures.get(provider) ?? precheckProvider(provider);
      if (known) {
        reasons.push(known);
        continue;
      }
    }
    try {
      // The session's intra-op threads are recorded so their priority can follow the studio's
      // background state (priority.ts).
      const created = await engineThreads.track(() =>
        createOne(modelPath, provider, { ...opts, spinning }),
      );
      // A later provider loaded the model, so the earlier ones failed for their own reasons.
      for (const [p, r] of failed) if (!/out of memory/i.test(r)) providerFailures.set(p, r);
      const fallbackReason = reasons.length > 0 ? reasons.join('; ') : null;
      return { ...created, provider, fallbackReason, spinning };
    } catch (e) {
      if (provider === 'cpu') {
        throw wrapSessionCreateError(e, file, {
          ...(opts.baseDir ? { baseDir: opts.baseDir } : {}),
          provider: 'cpu',
        });
      }
      // Was it the provider or the model? Only CPU can tell: the next attempt decides.
      const reason = providerReason(provider, e);
      reasons.push(reason);
      failed.push([provider, reason]);
    }
  }
  // Unreachable: the order always ends with cpu.
  throw new EngineError('provider', `No execution provider could load ${file}.`, { file });
}

const ortVersion = (): string => ort.env.versions.node ?? ort.env.versions.common ?? 'unknown';

/** Patched weights held in memory: the model as a buffer or its path, external data by location. */
export interface SessionSourceInput {
  model: string | Uint8Array;
  externalData: { path: string; data: Uint8Array }[];
}

/**
 * One session on one provider: from the optimized-graph cache when it holds a valid entry,
 * else optimized from `modelPath` (writing the entry when a cache folder is given).
 */
async function createOne(
  modelPath: string,
  provider: ProviderName,
  opts: SessionOptionsInput & { source?: SessionSourceInput },
): Promise<Omit<CreatedSession, 'provider' | 'fallbackReason' | 'spinning'>> {
  const options = sessionOptions(provider, opts);
  const rewrite = opts.rewriteAttention ?? true;
  const src = opts.source;
  if (src) {
    // Patched weights (LoRAs) never use the optimized-graph cache: its entries are keyed by the
    // files on disk, whose weights these are not.
    if (src.externalData.length > 0) options.externalData = src.externalData;
    const { rewrite: r, attention } = await prepareAttention(src.model, dirname(modelPath), {
      rewrite,
    });
    const model = r?.model ?? src.model;
    const session =
      typeof model === 'string'
        ? await ort.InferenceSession.create(model, options)
        : await ort.InferenceSession.create(model, withFolder(options, r?.folder));
    return {
      session,
      cache: 'off',
      attentionRewrites: r?.replaced ?? 0,
      widenedWeights: 0,
      attention,
    };
  }
  // Read, and rewritten when it has exported attention, only when ORT is about to optimize it;
  // then its float16 weights widened (CPU), into a temporary folder under `tempParent`.
  const source = async (tempParent: string) => {
    const {
      rewrite: r,
      attention,
      bytes,
    } = await prepareAttention(modelPath, dirname(modelPath), {
      rewrite,
    });
    const base = r
      ? {
          model: r.model as string | Uint8Array,
          options: withFolder(options, r.folder),
          attentionRewrites: r.replaced,
          attention,
        }
      : { model: modelPath as string | Uint8Array, options, attentionRewrites: 0, attention };
    const widened =
      bytes && (opts.widenFloat16 ?? true) && widensFloat16(provider)
        ? await widenFloat16IfAny(bytes, dirname(modelPath), tempParent)
        : null;
    return widened
      ? { ...base, model: widened.path, options, widened, widenedWeights: widened.widened }
      : { ...base, widened: null, widenedWeights: 0 };
  };
  const create = async (
    s: Awaited<ReturnType<typeof source>>,
    o: ort.InferenceSession.SessionOptions,
  ) => {
    try {
      return typeof s.model === 'string'
        ? await ort.InferenceSession.create(s.model, o)
        : await ort.InferenceSession.create(s.model, o);
    } finally {
      await s.widened?.dispose();
    }
  };
  const plain = async () => {
    const s = await source(opts.optimizedCacheDir ?? tmpdir());
    const { widened: _, ...rest } = s;
    return { session: await create(s, s.options), cache: 'off' as const, ...rest };
  };
  if (!opts.optimizedCacheDir) return plain();
  const entry = new OptimizedEntry(opts.optimizedCacheDir, {
    modelPath,
    provider,
    ortVersion: ortVersion(),
    level: GRAPH_LEVEL,
    cpu: cpuIdentity(),
    ...(rewrite ? { transform: ATTENTION_REWRITE_ID } : {}),
  });
  let cached: string | null = null;
  try {
    cached = await entry.lookup();
  } catch {
    // An unreadable cache is no cache.
  }
  if (cached) {
    try {
      const session = await ort.InferenceSession.create(cached, {
        ...options,
        graphOptimizationLevel: 'disabled',
      });
      return {
        session,
        cache: 'hit',
        attentionRewrites: 0,
        widenedWeights: 0,
        attention: await countAttentionFile(cached),
      };
    } catch {
      // A damaged entry (or one this ORT cannot read): rebuilt below from the source.
      await entry.remove();
    }
  }
  let target: { tmp: string; modelPath: string };
  try {
    target = await entry.prepare();
  } catch {
    // The cache folder cannot be written (read-only, full): load without it.
    return plain();
  }
  let session: ort.InferenceSession;
  let s: Awaited<ReturnType<typeof source>>;
  try {
    s = await source(opts.optimizedCacheDir);
  } catch (e) {
    await rm(target.tmp, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  }
  try {
    session = await create(s, {
      ...s.options,
      optimizedModelFilePath: target.modelPath,
      extra: {
        session: { ...(s.options.extra?.session as object | undefined), ...saveOptimizedConfig() },
      },
    });
  } catch (e) {
    await rm(target.tmp, { recursive: true, force: true }).catch(() => undefined);
    // Writing the optimized model failed, not the model: load without the cache.
    if (/save|writ|serializ|no space|permission|denied|open file/i.test(shortReason(e)))
      return plain();
    throw e;
  }
  try {
    await entry.commit(target.tmp);
    await pruneOptimizedCache(opts.optimizedCacheDir);
  } catch {
    // The session works; the next load optimizes again.
    return {
      session,
      cache: 'off',
      attentionRewrites: s.attentionRewrites,
      widenedWeights: s.widenedWeights,
      attention: s.attention,
    };
  }
  return {
    session,
    cache: 'written',
    attentionRewrites: s.attentionRewrites,
    widenedWeights: s.widenedWeights,
    attention: s.attention,
  };
}

/**
 * A model created from bytes finds its external weights through this folder (ORT's
 * session.model_external_initializers_file_folder_path), as it would beside its file.
 */
function withFolder(
  options: ort.InferenceSession.SessionOptions,
  folder: string | undefined,
): ort.InferenceSession.SessionOptions {
  if (!folder) return options;
  const session = {
    ...(options.extra?.session as object | undefined),
    model_external_initializers_file_folder_path: folder,
  };
  return { ...options, extra: { ...options.extra, session } };
}
