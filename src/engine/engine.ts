import path from 'node:path';
import { GenerationSettings } from '../shared/generation';
import { type PreviewDecoder, taesdVariantFor } from '../shared/taesd';
import type { UsedEmbedding } from './adapters/embeddings';
import { type LoraPlan, type LoraReport, planLoras } from './adapters/lora';
import { EngineError, throwIfAborted } from './errors';
import type { PixelImage } from './image';
import {
  type LoadedModel,
  type ProviderPreference,
  SessionCache,
  loadModel,
  openModelFolder,
} from './models';
import type { SessionOptionsInput } from './models/providers';
import { type ComponentSession, componentSession } from './models/load';
import { isControlResidual, signatureFromSession } from './models/signature';
import { openTaesdSession } from './models/taesd';
import { type VaeFolder, checkVaeFits, openVaeFolder, withVae } from './models/vae';
import {
  type ControlSetup,
  type GenerateProgress,
  type GeneratedImage,
  runDiffusion,
} from './pipelines/generate';
import type { ControlUnit } from './pipelines/controlnet';
import { controlNetModelPath, controlUnetPath } from './pipelines/controlnet-io';
import { runInpaint } from './pipelines/inpaint';
import { runOutpaint } from './pipelines/outpaint';
import { memoryBudgetBytes } from './pipelines/memory';
import { type StageTimings, emptyTimings } from './pipelines/stats';
import { TextConditioner } from './pipelines/text';
import { runUpscale } from './pipelines/upscale';
import { TaesdDecoder, defaultTaesdPreviewShare } from './pipelines/taesd';
import { isAbortError } from './schedulers';
import { SafetyChecker, type SafetyVerdict } from './safety';

export interface EngineOptions {
  provider?: ProviderPreference;
  /** ONNX Runtime intra-op threads; 0 or absent: physical cores. */
  threads?: number;
  /**
   * Folder for ONNX Runtime's optimized graphs (models/optimized-cache.ts), so a model's second
   * load skips graph optimization; the host passes one in its data folder. None when absent.
   */
  optimizedCacheDir?: string;
  /** Preview every N steps (default 4, 0 for none). */
  previewEvery?: number;
  /**
   * The share of sampling time TAESD previews may take (default 0.1): a wanted preview is
   * decoded by TAESD only while the time spent on them stays within it (pipelines/taesd.ts).
   */
  taesdPreviewShare?: number;
  /**
   * Activation memory (MB) the upscale pipelines plan tiling against; default 60% of free RAM.
   * Set it to the GPU's memory on a GPU provider (the engine cannot query it).
   */
  memoryBudgetMb?: number;
}

/**
 * A LoRA merged into the model for one generation, resolved by the host from a prompt's
 * `<lora:name:weight>` tag (src/shared/network-tags.ts) or given directly (`--lora FILE:WEIGHT`).
 */
export interface LoraRequest {
  /** The LoRA file (.safetensors, .ckpt/.pt). */
  path: string;
  /** As written in the prompt / shown in messages and the infotext. */
  name: string;
  /** Multiplier for the text encoder(s) and for the UNet (A1111's te and unet multipliers). */
  teWeight: number;
  unetWeight: number;
}

/** A textual-inversion embedding available to this generation's prompts under `token`. */
export interface EmbeddingRequest {
  /** The word that stands for the embedding in prompts (A1111: the file name without extension). */
  token: string;
  /** The embedding file (.pt, .bin, .safetensors). */
  path: string;
}

export interface GenerateRequest {
  settings: GenerationSettings;
  /** Folder of the model named by settings.model, already resolved by the host. */
  modelDir: string;
  initImage?: PixelImage | null;
  /** Mode 'upscale', method 'x4': the x4 model folder, resolved by the host from upscale.model. */
  upscaleModelDir?: string | null;
  /** inpaint: the painted mask (white = repaint), any channel count; resized to the image. */
  maskImage?: PixelImage | null;
  /** LoRAs to merge (from pristine base weights) for this generation; none when absent. */
  loras?: LoraRequest[];
  /** Embeddings the prompts may use by token; the engine uses those whose token appears. */
  embeddings?: EmbeddingRequest[];
  /**
   * A converted VAE folder (vae_encoder/, vae_decoder/) used instead of the model's own VAE,
   * resolved by the host from settings.vae (ensureVaeConverted); the model's own when absent.
   */
  vaeDir?: string | null;
  /**
   * One entry per settings.controlnets unit, in order, resolved by the host: the converted
   * ControlNet's model.onnx and the (not yet preprocessed) control image.
   */
  controlnets?: { file: string; image: PixelImage }[];
  /**
   * The content filter (issue 18): the converted safety checker's model.onnx, resolved (and
   * converted) by the host. Each decoded image is checked here, in the engine's thread, and the
   * result carries one verdict per image; no live previews are sent (they would show an image
   * before it was checked). Off when absent.
   */
  contentFilter?: { modelFile: string } | null;
  /**
   * A converted TAESD decoder folder (model.onnx, convertTaesd) for the model's family
   * (taesdVariantFor), resolved by the host: it makes the live previews and, with
   * settings.fastDecode, the final images. Without it, latent-RGB previews and the VAE.
   */
  taesdDir?: string | null;
  /** What the live previews show (default 'taesd': TAESD when taesdDir is given). */
  previewDecoder?: PreviewDecoder;
}

/** What TAESD did in a generation (GenerateResult.taesd). */
export interface TaesdReport {
  /** Previews TAESD decoded, and the milliseconds they took (within the denoise stage). */
  previews: number;
  previewMs: number;
  /** True when TAESD, not the VAE, decoded the final images (settings.fastDecode). */
  fastDecode: boolean;
  /** Why the TAESD decoder given could not be used (one sentence), or null. */
  problem: string | null;
}

export interface GenerateResult {
  images: GeneratedImage[];
  family: string;
  familyReasons: string[];
  provider: string;
  fallbackReason: string | null;
  timings: StageTimings;
  /**
   * The embeddings the prompts named (in first-use order), each once, with its file's SHA-256:
   * what the host writes as `TI hashes:`. Empty when none was used.
   */
  embeddings: UsedEmbedding[];
  /**
   * Per requested LoRA, in request order: how many of its tensors patched a weight and which
   * matched nothing (absent when the request had no LoRAs).
   */
  loras?: LoraReport[];
  /** One verdict per image, in `images` order, when the request set `contentFilter`. */
  contentFilter?: SafetyVerdict[];
  /** Present when the request gave a TAESD decoder (taesdDir). */
  taesd?: TaesdReport;
}

export interface RunOptions {
  signal?: AbortSignal;
  onProgress?: (p: GenerateProgress) => void;
}

/**
 * The engine: one loaded model at a time (switching models releases the previous one's
 * sessions), prompt embeddings cached per model, and at most one replacement VAE (switching it
 * releases only the previous VAE's sessions: the model's stay). Not thread-safe: the worker runs
 * one request at a time.
 */
export class DiffusionEngine {
  #loaded: {
    dir: string;
    /** Model, provider and threads; `key` adds the LoRA set. */
    baseKey: string;
    key: string;
    model: LoadedModel;
    text: TextConditioner;
  } | null = null;
  /** The replacement VAE last used, with the model it was checked against. */
  #vae: { key: string; folder: VaeFolder; model: LoadedModel; view: LoadedModel } | null = null;
  /** The folder of the TAESD decoder whose session is held, if any. */
  #taesdDir: string | null = null;
  /**
   * This engine's own sessions. Releasing a model ends its sessions, so they must not be shared
   * with another engine (or loadModel caller) in the process that still uses them.
   */
  readonly #sessions = new SessionCache();
  /** The content filter's checker, kept until another file is asked for or release(). */
  #checker: { file: string; checker: Promise<SafetyChecker> } | null = null;

  constructor(private options: EngineOptions = {}) {}

  /** Changing provider or threads takes effect at the next model load. */
  configure(options: EngineOptions): void {
    this.options = { ...this.options, ...options };
  }

  async generate(request: GenerateRequest, run: RunOptions = {}): Promise<GenerateResult> {
    const parsed = GenerationSettings.safeParse(request.settings);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new EngineError(
        'bad-input',
        `Invalid setting ${issue.path.join('.') || ''}: ${issue.message}.`,
      );
    }
    const settings = parsed.data;
    const timings = emptyTimings();
    const started = performance.now();
    throwIfAborted(run.signal, 'Generation');
    // Upscaling: txt2img with the hires fix, or mode 'upscale' (x4 runs on the x4 model itself).
    const upscaling =
      settings.mode === 'upscale' || (settings.mode === 'txt2img' && settings.upscale !== null);
    const x4 = settings.mode === 'upscale' && settings.upscale?.method === 'x4';
    const modelDir = x4
      ? (request.upscaleModelDir ?? settings.upscale?.model ?? request.modelDir)
      : request.modelDir;
    // LoRAs change the generating model; the x4 upscaler is a model of its own and gets none.
    const loras = !x4 && request.loras && request.loras.length > 0 ? request.loras : null;
    let plan: LoraPlan | null = null;
    if (loras) {
      const started = performance.now();
      const info = await openModelFolder(path.resolve(modelDir));
      plan = await planLoras(
        info,
        loras,
        this.options.threads ? { threads: this.options.threads } : {},
      );
      timings.loadMs += performance.now() - started;
    }
    const loaded = await this.#model(modelDir, timings, plan);
    loaded.text.useEmbeddings(request.embeddings ?? [], [settings.prompt, settings.negativePrompt]);
    const model = request.vaeDir
      ? await this.#withVae(loaded.model, request.vaeDir, timings)
      : loaded.model;
    // A preview would show the image before the content filter has seen it.
    const previewEvery = request.contentFilter ? 0 : (this.options.previewEvery ?? 4);
    const taesd = await this.#taesdFor(request, model, {
      previews: (request.previewDecoder ?? 'taesd') === 'taesd' && !!run.onProgress,
      // The tiled upscales decode by their own hooks; the x4 upscaler has no TAESD (its family).
      fastDecode: settings.fastDecode && !upscaling,
      timings,
    });
    let images: GeneratedImage[];
    try {
      const ctx = {
        model,
        text: loaded.text,
        timings,
        signal: run.signal,
        onProgress: run.onProgress,
        previewEvery,
        taesd: taesd.previews && previewEvery > 0 ? taesd.decoder : null,
        fastDecode: taesd.fastDecode ? taesd.decoder : null,
        ...(this.options.memoryBudgetMb ? { memoryBudgetMb: this.options.memoryBudgetMb } : {}),
      };
      const init = request.initImage ?? null;
      const controlled = settings.controlnets.some((u) => u.weight !== 0);
      if (controlled && settings.mode === 'outpaint')
        throw new EngineError(
          'bad-input',
          'ControlNet does not work with outpainting yet; outpaint without a unit, then inpaint or generate with it.',
        );
      if (controlled && x4)
        throw new EngineError(
          'bad-input',
          'The x4 upscaler takes no ControlNet (no ControlNet is made for its UNet); use the hires upscaler with a unit, or the x4 upscaler without one.',
        );
      const units = await this.#controlUnits(settings, request.controlnets ?? [], timings);
      const unet = await this.#controlUnet(model, units, plan !== null, timings);
      const control: ControlSetup = { units, ...(unet ? { unet } : {}) };
      if (settings.mode === 'inpaint')
        images = await runInpaint(ctx, settings, init, request.maskImage ?? null, control);
      else if (settings.mode === 'outpaint') images = await runOutpaint(ctx, settings, init);
      else if (upscaling)
        images = await runUpscale(
          { ...ctx, memoryBudgetBytes: memoryBudgetBytes(this.options.memoryBudgetMb) },
          settings,
          init,
          control,
        );
      else images = await runDiffusion(ctx, settings, init, { control });
    } catch (err) {
      // The samplers stop with a DOMException AbortError; callers get the engine's own code.
      if (isAbortError(err))
        throw new EngineError('cancelled', 'Generation was cancelled.', { cause: err });
      throw err;
    }
    const verdicts = request.contentFilter
      ? await this.#checkContent(request.contentFilter.modelFile, images, timings, run.signal)
      : null;
    timings.totalMs = performance.now() - started;
    return {
      images,
      family: loaded.model.family.family,
      familyReasons: loaded.model.family.reasons,
      provider: loaded.model.provider,
      fallbackReason: loaded.model.fallbackReason,
      timings,
      embeddings: loaded.text.usedEmbeddings(),
      ...(plan ? { loras: plan.reports } : {}),
      ...(verdicts ? { contentFilter: verdicts } : {}),
      ...(request.taesdDir
        ? {
            taesd: {
              previews: taesd.decoder?.previews ?? 0,
              previewMs: taesd.decoder?.previewMs ?? 0,
              fastDecode: (taesd.decoder?.finalDecodes ?? 0) > 0,
              problem: taesd.problem,
            },
          }
        : {}),
    };
  }

  /** The content filter's verdicts on `images` (its session counts as loading the first time). */
  async #checkContent(
    file: string,
    images: GeneratedImage[],
    timings: StageTimings,
    signal: AbortSignal | undefined,
  ): Promise<SafetyVerdict[]> {
    throwIfAborted(signal, 'Generation');
    const resolved = path.resolve(file);
    if (this.#checker?.file !== resolved) {
      await this.#releaseChecker();
      const started = performance.now();
      const checker = SafetyChecker.open(resolved);
      this.#checker = { file: resolved, checker };
      try {
        await checker;
      } catch (err) {
        // A checker that failed to load is not kept: the next generation tries again.
        if (this.#checker?.checker === checker) this.#checker = null;
        throw err;
      }
      timings.loadMs += performance.now() - started;
    }
    return (await this.#checker!.checker).check(images.map((g) => g.image));
  }

  async #releaseChecker(): Promise<void> {
    const loaded = this.#checker;
    this.#checker = null;
    if (loaded) await (await loaded.checker.catch(() => null))?.release();
  }

  /**
   * The request's TAESD decoder for this model, when it is wanted (previews or fast decode) and
   * fits: a family with a TAESD variant, a decoder taking the model's latent channels. A decoder
   * that cannot be used is no error: the run falls back (latent-RGB previews, the VAE) and
   * `problem` says why.
   */
  async #taesdFor(
    request: GenerateRequest,
    model: LoadedModel,
    want: { previews: boolean; fastDecode: boolean; timings: StageTimings },
  ): Promise<{
    decoder: TaesdDecoder | null;
    previews: boolean;
    fastDecode: boolean;
    problem: string | null;
  }> {
    const none = { decoder: null, previews: false, fastDecode: false };
    if (!request.taesdDir || (!want.previews && !want.fastDecode))
      return { ...none, problem: null };
    if (taesdVariantFor(model.family.family) === null)
      return {
        ...none,
        problem: `No TAESD decoder fits ${model.info.name} (${model.family.family}); the latent previews and its VAE are used.`,
      };
    const started = performance.now();
    try {
      const dir = path.resolve(request.taesdDir);
      if (this.#taesdDir !== null && this.#taesdDir !== dir) await this.#releaseTaesd();
      this.#taesdDir = dir;
      const session = await openTaesdSession(dir, model, {
        cache: this.#sessions,
        preference: this.options.provider ?? 'auto',
        options: this.#sessionOptions(),
      });
      const decoder = new TaesdDecoder(
        session,
        this.options.taesdPreviewShare ?? defaultTaesdPreviewShare,
      );
      return { decoder, previews: want.previews, fastDecode: want.fastDecode, problem: null };
    } catch (err) {
      if (!(err instanceof EngineError)) throw err;
      return { ...none, problem: err.message };
    } finally {
      want.timings.loadMs += performance.now() - started;
    }
  }

  async #releaseTaesd(): Promise<void> {
    const dir = this.#taesdDir;
    this.#taesdDir = null;
    if (dir) await this.#sessions.release(dir);
  }

  /** Loads (or reuses) a model without generating, e.g. to show its family. */
  async load(modelDir: string): Promise<LoadedModel> {
    return (await this.#model(modelDir, emptyTimings())).model;
  }

  /** Releases every session: the model's, the replacement VAE's and the content filter's. */
  async release(): Promise<void> {
    await this.#releaseChecker();
    await this.#releaseModel();
  }

  async #releaseModel(): Promise<void> {
    const current = this.#loaded;
    this.#loaded = null;
    await current?.text.release();
    await this.#releaseVae();
    await this.#releaseTaesd();
    await current?.model.release();
  }

  async #releaseVae(): Promise<void> {
    const vae = this.#vae;
    this.#vae = null;
    if (vae) await this.#sessions.release(vae.folder.dir);
  }

  /** `model` decoding (and encoding) with the converted VAE in `dir`, after checking it fits. */
  async #withVae(model: LoadedModel, dir: string, timings: StageTimings): Promise<LoadedModel> {
    const resolved = path.resolve(dir);
    if (this.#vae?.key === resolved && this.#vae.model === model) return this.#vae.view;
    const started = performance.now();
    const folder = await openVaeFolder(resolved);
    checkVaeFits(model, folder);
    if (this.#vae?.key !== resolved) await this.#releaseVae();
    const view = withVae(model, folder, {
      cache: this.#sessions,
      preference: this.options.provider ?? 'auto',
      options: this.#sessionOptions(),
    });
    // The decoder is created now, as loadModel does the model's own: a broken file fails here.
    await view.session('vae_decoder');
    timings.loadMs += performance.now() - started;
    this.#vae = { key: resolved, folder, model, view };
    return view;
  }

  #sessionOptions(): SessionOptionsInput {
    return {
      ...(this.options.threads ? { threads: this.options.threads } : {}),
      ...(this.options.optimizedCacheDir
        ? { optimizedCacheDir: this.options.optimizedCacheDir }
        : {}),
    };
  }

  /** The settings' ControlNet units with their sessions and preprocessed images (weight 0: none). */
  async #controlUnits(
    settings: GenerationSettings,
    resolved: { file: string; image: PixelImage }[],
    timings: StageTimings,
  ): Promise<ControlUnit[]> {
    if (resolved.length !== settings.controlnets.length) {
      throw new EngineError(
        'internal',
        `${settings.controlnets.length} ControlNet units but ${resolved.length} resolved models and images.`,
      );
    }
    const started = performance.now();
    const units: ControlUnit[] = [];
    for (const [i, unit] of settings.controlnets.entries()) {
      if (unit.weight === 0) continue;
      const { file, image } = resolved[i];
      // A converted folder or a diffusers ONNX ControlNet folder names its model.onnx.
      const modelPath = path.resolve(await controlNetModelPath(file));
      const session = await this.#extraSession('controlnet', modelPath, file);
      units.push({ ...unit, session, source: image });
    }
    timings.loadMs += performance.now() - started;
    return units;
  }

  /**
   * The UNet to run with ControlNet `units`: undefined for the folder's own UNet (it takes the
   * residuals, or no unit acts), else the folder's ControlNet UNet (OnnxStack's
   * `controlnet/model.onnx`). Throws one sentence when the folder has neither.
   */
  async #controlUnet(
    model: LoadedModel,
    units: readonly ControlUnit[],
    withLoras: boolean,
    timings: StageTimings,
  ): Promise<ComponentSession | undefined> {
    if (units.length === 0) return undefined;
    if ((model.signatures.unet?.inputs ?? []).some(isControlResidual)) return undefined;
    const variant = await controlUnetPath(model.dir);
    const hint =
      'convert the model from its .safetensors with ControlNet support, or use an ONNX export whose UNet takes down_block_N_additional_residual inputs';
    if (!variant) {
      throw new EngineError(
        'model-unsupported',
        `${model.info.name}'s UNet takes no ControlNet residuals and the folder has no ControlNet UNet (controlnet/model.onnx); ${hint}.`,
        { file: model.dir },
      );
    }
    if (withLoras) {
      throw new EngineError(
        'bad-input',
        `LoRAs cannot be merged into ${model.info.name}'s ControlNet UNet (controlnet/model.onnx) yet; generate without the LoRA or ${hint}.`,
        { file: model.dir },
      );
    }
    const started = performance.now();
    const session = await this.#extraSession(
      'unet',
      path.resolve(variant),
      'controlnet/model.onnx',
    );
    timings.loadMs += performance.now() - started;
    if (!session.signature.inputs.some(isControlResidual) || !session.output('out_sample')) {
      throw new EngineError(
        'model-unsupported',
        `${model.info.name}'s UNet takes no ControlNet residuals and its controlnet/model.onnx is not a UNet that does; ${hint}.`,
        { file: variant },
      );
    }
    return session;
  }

  /** A session of a file outside the model's components (a ControlNet, a ControlNet UNet). */
  async #extraSession(
    name: 'controlnet' | 'unet',
    modelPath: string,
    file: string,
  ): Promise<ComponentSession> {
    const created = await this.#sessions.get(
      {
        modelPath,
        preference: this.options.provider ?? 'auto',
        options: this.#sessionOptions(),
      },
      path.basename(path.dirname(modelPath)) + '/' + path.basename(modelPath),
      path.dirname(modelPath),
    );
    return componentSession(
      name,
      file,
      created.session,
      signatureFromSession(created.session),
      created.provider,
      created.fallbackReason,
      created.attention,
    );
  }

  async #model(dir: string, timings: StageTimings, plan: LoraPlan | null = null) {
    const resolved = path.resolve(dir);
    const baseKey = JSON.stringify([
      resolved,
      this.options.provider ?? 'auto',
      this.#sessionOptions(),
    ]);
    const key = `${baseKey}|${plan?.id ?? ''}`;
    if (this.#loaded?.key === key) return this.#loaded;
    if (this.#loaded?.baseKey === baseKey) {
      // Same model, another LoRA set: the plain sessions (VAE, unpatched encoders) stay; the
      // patched ones go before new ones are built, so two patched UNets never share memory.
      const previous = this.#loaded;
      this.#loaded = null;
      await previous.text.release();
      await this.#sessions.releaseVariants(resolved);
    } else await this.#releaseModel();
    // A patched component replaces its plain session: holding both would keep two UNets in
    // memory (7 GB for SD 1.5 in float32). Going back to no LoRA creates the plain one again.
    for (const file of plan?.patchedFiles ?? []) await this.#sessions.release(file, 'plain');
    const started = performance.now();
    const model = await loadModel(resolved, {
      provider: this.options.provider ?? 'auto',
      cache: this.#sessions,
      ...this.#sessionOptions(),
      ...(plan ? { variants: plan.variants } : {}),
    });
    timings.loadMs += performance.now() - started;
    this.#loaded = {
      dir: resolved,
      baseKey,
      key,
      model,
      text: new TextConditioner(model, {
        ...(this.options.threads ? { threads: this.options.threads } : {}),
      }),
    };
    return this.#loaded;
  }
}
