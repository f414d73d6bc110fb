/**
 * Loading a model: inspect the folder, create the UNet and VAE decoder sessions, read their
 * signatures from the sessions, decide the family. The text encoder(s) and the VAE encoder get
 * their sessions on first use (a txt2img run after the prompt is cached never needs the text
 * encoder again; only img2img and inpainting need the VAE encoder).
 */
import type * as ort from 'onnxruntime-node';
import type { SessionVariant } from '../adapters/lora';
import { EngineError, throwIfAborted, wrapRunError } from '../errors';
import type { AttentionCount } from './attention-rewrite';
import type { IoSpec } from '../tensor';
import { detectFamily } from './family';
import { openModelFolder } from './folder';
import { type ProviderName, type ProviderPreference, componentOptions } from './providers';
import { sessionCache as defaultCache, type SessionCache, type SessionKey } from './session-cache';
import { findInput, findOutput, signatureFromSession, validateSignature } from './signature';
import type { ComponentName, FamilyInfo, JsonObject, ModelInfo, Signature } from './types';

export interface LoadOptions {
  /** 'auto' picks per platform (CUDA, DirectML, CoreML, WebGPU), falling back to CPU. */
  provider?: ProviderPreference;
  /** Intra-op threads; default: physical cores. */
  threads?: number;
  /** The optimized-graph cache folder (providers.ts SessionOptionsInput); none when absent. */
  optimizedCacheDir?: string;
  /** Session cache to use; default: the process-wide one. */
  cache?: SessionCache;
  /** Components to create from patched weights (LoRAs merged, adapters/lora.ts). */
  variants?: Partial<Record<ComponentName, SessionVariant>>;
}

/** A created session of one component, with the signature the session reports. */
export interface ComponentSession {
  /** The folder component, or 'controlnet' for a ControlNet guiding the model (its own file). */
  name: ComponentName | 'controlnet';
  /** Relative to the model folder ("unet/model.onnx"), for messages. */
  file: string;
  session: ort.InferenceSession;
  signature: Signature;
  provider: ProviderName;
  fallbackReason: string | null;
  /** The attention of the graph the session runs (CreatedSession.attention); null: not known. */
  attention: AttentionCount | null;
  input(name: string): IoSpec | undefined;
  output(name: string): IoSpec | undefined;
  /** session.run with errors wrapped into EngineErrors naming the file; checks `signal` around it. */
  run(feeds: Record<string, ort.Tensor>, signal?: AbortSignal): Promise<Record<string, ort.Tensor>>;
}

export interface LoadedModel {
  dir: string;
  info: ModelInfo;
  /** Decided from the sessions' own signatures. */
  family: FamilyInfo;
  /** The provider the UNet runs on. */
  provider: ProviderName;
  /** Why the requested/preferred provider was not used, or null. */
  fallbackReason: string | null;
  /** Signatures of every component: session-read for those with a session, header-read otherwise. */
  signatures: Partial<Record<ComponentName, Signature>>;
  /**
   * The attention of each component with a session (the UNet and VAE decoder from the load on),
   * as its session runs it: fused (MultiHeadAttention, rewritten at load or written so by the
   * converter) or materialised (N x N scores held). The memory plan reads it; a component absent
   * or null is planned as materialised.
   */
  attention: Partial<Record<ComponentName, AttentionCount | null>>;
  /** scheduler/scheduler_config.json, raw; the schedulers module parses it. */
  schedulerConfig: JsonObject;
  /** low_res_scheduler/scheduler_config.json (x4), raw. */
  lowResSchedulerConfig: JsonObject | null;
  /** Folders for ClipTokenizer.fromFolder. tokenizer_2 only for SDXL. */
  tokenizerDirs: { tokenizer: string; tokenizer_2: string | null };
  /** 'vae' for the x4 upscaler, else 'vae_decoder'. */
  decoderName: 'vae_decoder' | 'vae';
  /**
   * Components created from patched weights (LoRAs merged); anything that builds its own
   * session of such a component (the embeddings' grown text encoder) must start from these.
   */
  variants?: Partial<Record<ComponentName, SessionVariant>>;
  has(name: ComponentName): boolean;
  /** The component's session, created on first use and shared through the session cache. */
  session(name: ComponentName): Promise<ComponentSession>;
  /**
   * Release one component's session (the next `session(name)` creates it again): what the
   * pipelines do with the text encoders when the UNet needs their memory (pipelines/memory.ts).
   */
  releaseSession(name: ComponentName): Promise<void>;
  /** Release this model's sessions (every session of this folder in the cache). */
  release(): Promise<void>;
}

const WHY_NEEDED: Partial<Record<ComponentName, string>> = {
  vae_encoder: 'image-to-image and inpainting encode their input with it',
  text_encoder_2: 'SDXL needs its second text encoder',
};

export async function loadModel(dir: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const info = await openModelFolder(dir);
  const cache = opts.cache ?? defaultCache;
  const preference = opts.provider ?? 'auto';
  const options = {
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    ...(opts.optimizedCacheDir ? { optimizedCacheDir: opts.optimizedCacheDir } : {}),
  };
  const signatures: Partial<Record<ComponentName, Signature>> = {};
  const attention: Partial<Record<ComponentName, AttentionCount | null>> = {};
  for (const [name, c] of Object.entries(info.components))
    signatures[name as ComponentName] = c.signature;
  const sessions = new Map<ComponentName, Promise<ComponentSession>>();

  const open = (name: ComponentName): Promise<ComponentSession> => {
    const existing = sessions.get(name);
    if (existing) return existing;
    const c = info.components[name];
    if (!c) {
      const why = WHY_NEEDED[name];
      return Promise.reject(
        new EngineError(
          'model-missing-file',
          `${name}/model.onnx is missing from the model folder${why ? ` (${why})` : ''}.`,
          {
            file: `${name}/model.onnx`,
          },
        ),
      );
    }
    const key = {
      modelPath: c.modelPath,
      preference,
      options: componentOptions(name, options),
      variant: opts.variants?.[name],
    };
    const p = createComponentSession(cache, key, name, c.file, info.dir).then((s) => {
      signatures[name] = s.signature;
      attention[name] = s.attention;
      return s;
    });
    sessions.set(name, p);
    p.catch(() => {
      if (sessions.get(name) === p) sessions.delete(name);
    });
    return p;
  };

  // Cheap checks first: a folder whose family cannot be told fails before any session exists.
  detectFamily(info);
  const decoderName: 'vae_decoder' | 'vae' = info.components.vae_decoder ? 'vae_decoder' : 'vae';
  let unet: ComponentSession;
  try {
    unet = await open('unet');
    await open(decoderName);
  } catch (e) {
    await cache.release(info.dir);
    throw e;
  }
  const family = detectFamily(info, signatures);

  return {
    dir: info.dir,
    info,
    family,
    provider: unet.provider,
    fallbackReason: unet.fallbackReason,
    signatures,
    attention,
    schedulerConfig: info.schedulerConfig,
    lowResSchedulerConfig: info.lowResSchedulerConfig,
    tokenizerDirs: {
      tokenizer: info.tokenizers.tokenizer!.dir,
      tokenizer_2: family.sdxlConditioning ? (info.tokenizers.tokenizer_2?.dir ?? null) : null,
    },
    decoderName,
    ...(opts.variants ? { variants: opts.variants } : {}),
    has: (name) => info.components[name] !== undefined,
    session: open,
    async releaseSession(name) {
      const c = info.components[name];
      if (!c || !sessions.has(name)) return;
      sessions.delete(name);
      delete attention[name];
      await cache.release(c.modelPath);
    },
    async release() {
      sessions.clear();
      await cache.release(info.dir);
    },
  };
}

/**
 * The cached session of `key` as component `name`: created on first use, its signature read from
 * the session and checked (`file` names it in messages).
 */
export async function createComponentSession(
  cache: SessionCache,
  key: SessionKey,
  name: ComponentName,
  file: string,
  baseDir: string,
): Promise<ComponentSession> {
  const created = await cache.get(key, file, baseDir);
  const signature = signatureFromSession(created.session);
  validateSignature(name, signature, file);
  return componentSession(
    name,
    file,
    created.session,
    signature,
    created.provider,
    created.fallbackReason,
    created.attention,
  );
}

/** Wraps a created session with its signature and error-wrapping `run`. */
export function componentSession(
  name: ComponentName | 'controlnet',
  file: string,
  session: ort.InferenceSession,
  signature: Signature,
  provider: ProviderName,
  fallbackReason: string | null,
  attention: AttentionCount | null = null,
): ComponentSession {
  return {
    name,
    file,
    session,
    signature,
    provider,
    fallbackReason,
    attention,
    input: (n) => findInput(signature, n),
    output: (n) => findOutput(signature, n),
    async run(feeds, signal) {
      throwIfAborted(signal, `Running ${file}`);
      let out: ort.InferenceSession.ReturnType;
      try {
        out = await session.run(feeds);
      } catch (e) {
        throw wrapRunError(e, file);
      }
      throwIfAborted(signal, `Running ${file}`);
      return out as Record<string, ort.Tensor>;
    },
  };
}
