import { z } from 'zod';
import { CheckpointImportProgress, CheckpointImportRequest } from './checkpoint';
import { ControlNetList, ControlPreview, ControlPreviewRequest } from './controlnets';
import {
  DownloadEntry,
  DownloadPlanSummary,
  DownloadProgress,
  DownloadRequest,
  HubSearchHit,
  HubSearchRequest,
  HubTokenInput,
  HubTokenStatus,
  ModelTrashResult,
  ModelUpdate,
} from './downloads';
import type { Envelope } from './errors';
import { StudioError } from './errors';
import { GenerationSettings } from './generation';
import {
  DeleteResult,
  GalleryPage,
  GalleryQuery,
  GenerationDetail,
  Id,
  ImageRef,
  ImageUpload,
  JobProgress,
  LibraryStatus,
  ModelEntry,
  QueueState,
  UploadedImage,
} from './library';
import { NetworkList, NetworkPreview, NetworkRef } from './networks';
import { ContentFilterStatus, Settings, SettingsPatch } from './settings';
import { AppInfo, EngineStatus } from './status';
import { PreviewDecoderStatus } from './taesd';
import { VaeList } from './vae';
import { WatermarkReport } from './watermark';

/**
 * The one contract between the studio and its host. Each method takes at most one argument,
 * validated by `input` where it enters the host, and resolves to `output`. Both transports
 * (Electron IPC and loopback HTTP/WebSocket) and both ends (main's binding, the renderer's
 * client) are derived from this object; nothing here is declared twice.
 */
const none = z.undefined();
const ids = z.array(Id).min(1).max(10_000);

export const studioMethods = {
  // App and settings
  getAppInfo: { input: none, output: AppInfo },
  getEngineStatus: { input: none, output: EngineStatus },
  /** Where the content filter's checker file is and whether it is present. */
  getContentFilterStatus: { input: none, output: ContentFilterStatus },
  /** Queues the download of the content filter's checker to where the filter looks for it. */
  downloadContentFilterModel: { input: none, output: DownloadEntry },
  /** Whether the TAESD decoders (fast previews, fast decode) are in models/taesd. */
  getPreviewDecoders: { input: none, output: PreviewDecoderStatus },
  /** Queues the download of the TAESD decoders that are missing; their downloads. */
  downloadPreviewDecoders: { input: none, output: z.array(DownloadEntry) },
  getSettings: { input: none, output: Settings },
  updateSettings: { input: SettingsPatch, output: Settings },

  // Models
  listModels: { input: none, output: z.array(ModelEntry) },
  /** Adds a model folder (diffusers ONNX or optimum layout); inspects it first. */
  addModel: { input: z.object({ path: z.string().min(1).max(4096) }).strict(), output: ModelEntry },
  removeModel: { input: z.object({ id: Id }).strict(), output: z.null() },
  /** Converts a single-file checkpoint (once, cached by sha256) and adds it; progress as `checkpointImport`. */
  importCheckpoint: { input: CheckpointImportRequest, output: ModelEntry },
  /** Stops the import of that file; its importCheckpoint call rejects with 'cancelled'. */
  cancelCheckpointImport: {
    input: z.object({ path: z.string().min(1).max(4096) }).strict(),
    output: z.null(),
  },
  /** The replacement VAEs offered: the VAE-only files in the VAE folder (Settings.vaeDir). */
  listVaes: { input: none, output: VaeList },
  /** The ControlNet models offered: the .safetensors files in the ControlNet folder (Settings.controlnetDir). */
  listControlNets: { input: none, output: ControlNetList },
  /** A control image preprocessed as a unit would (at the output size): what the ControlNet sees. */
  previewControlImage: { input: ControlPreviewRequest, output: ControlPreview },
  /** Downloads, unfinished first; progress of the running one as `downloadProgress`. */
  listDownloads: { input: none, output: z.array(DownloadEntry) },
  /** Resolves a Hub repo (pinned to its commit) or a file URL, checks the disk, and queues it. */
  startDownload: { input: DownloadRequest, output: DownloadEntry },
  /** Stops a download, keeping its partial files. */
  pauseDownload: { input: z.object({ id: Id }).strict(), output: DownloadEntry },
  /** Queues a paused or failed download again; it resumes from its partial files. */
  resumeDownload: { input: z.object({ id: Id }).strict(), output: DownloadEntry },
  /** Stops a download and removes what it fetched. */
  cancelDownload: { input: z.object({ id: Id }).strict(), output: DownloadEntry },
  /** What startDownload would fetch (files, size, licence), resolved but not queued. */
  planDownload: { input: DownloadRequest, output: DownloadPlanSummary },
  /** Hub repos by name (tagged onnx by default), most downloaded first. */
  searchHub: { input: HubSearchRequest, output: z.array(HubSearchHit) },
  /** Where the Hub token comes from (never the token). */
  getHubToken: { input: none, output: HubTokenStatus },
  /** Keeps a Hub token (encrypted where the desktop can); refused when HF_TOKEN is set. */
  setHubToken: { input: HubTokenInput, output: HubTokenStatus },
  clearHubToken: { input: none, output: HubTokenStatus },
  /** Downloaded models whose repo's main moved; `force` asks the Hub now, else at most daily. */
  checkModelUpdates: {
    input: z.object({ force: z.boolean().default(false) }).strict(),
    output: z.array(ModelUpdate),
  },
  /** Downloads the repo's main beside the model; the model switches to it once verified. */
  updateModel: { input: z.object({ modelId: Id }).strict(), output: DownloadEntry },
  /** Removes a model; a folder a download put in the models folder goes to the trash. */
  trashModel: { input: z.object({ id: Id }).strict(), output: ModelTrashResult },
  /** Brings back a model removed by trashModel (until the app closes). */
  undoTrashModel: {
    input: z.object({ token: z.string().min(1).max(200) }).strict(),
    output: ModelEntry,
  },
  /** Tokens per 75-token chunk of a prompt, with the model's own tokenizer. */
  countTokens: {
    input: z.object({ modelId: Id, prompt: z.string().max(20_000) }).strict(),
    output: z.object({ total: z.number().int(), chunks: z.array(z.number().int()) }),
  },

  // LoRAs and textual-inversion embeddings (the folders in Settings)
  /** The LoRA and embedding files of the folders; `refresh` scans again instead of the cache. */
  listNetworks: {
    input: z.object({ refresh: z.boolean().default(false) }).strict(),
    output: NetworkList,
  },
  /** The preview image beside a listed file, made small; dataUrl null when it has none. */
  getNetworkPreview: { input: NetworkRef, output: NetworkPreview },

  // Images given by the studio (init images, painted masks, imported PNGs)
  uploadImage: { input: ImageUpload, output: UploadedImage },
  /** A library image or an upload by id, with its URL and size (to show it again). */
  getImage: { input: z.object({ id: Id }).strict(), output: ImageRef },

  // The queue
  /** Queues a generation; `settings.model` is a model id; image fields are image ids. */
  enqueue: { input: z.object({ settings: GenerationSettings }).strict(), output: QueueState },
  getQueue: { input: none, output: QueueState },
  pauseQueue: { input: none, output: QueueState },
  resumeQueue: { input: none, output: QueueState },
  cancelJob: { input: z.object({ id: Id }).strict(), output: QueueState },
  cancelAll: { input: none, output: QueueState },
  /** Moves a queued job to `position` among the queued ones (0 = next). */
  moveJob: {
    input: z.object({ id: Id, position: z.number().int().min(0) }).strict(),
    output: QueueState,
  },

  // The gallery
  searchGallery: { input: GalleryQuery, output: GalleryPage },
  getGeneration: { input: z.object({ id: Id }).strict(), output: GenerationDetail },
  setFavorite: {
    input: z.object({ imageIds: ids, favorite: z.boolean() }).strict(),
    output: z.null(),
  },
  setRating: {
    input: z.object({ imageIds: ids, rating: z.number().int().min(0).max(5) }).strict(),
    output: z.null(),
  },
  setTags: {
    input: z
      .object({ imageId: Id, tags: z.array(z.string().trim().min(1).max(100)).max(100) })
      .strict(),
    output: z.null(),
  },
  deleteImages: { input: z.object({ imageIds: ids }).strict(), output: DeleteResult },
  undoDelete: {
    input: z.object({ token: z.string().min(1).max(200) }).strict(),
    output: z.object({ restored: z.number().int() }),
  },
  /** Shows the image's file in the OS file manager (desktop only). */
  revealImage: { input: z.object({ imageId: Id }).strict(), output: z.null() },
  getLibraryStatus: { input: none, output: LibraryStatus },
  /** Restores the last automatic backup after a failed integrity check. */
  restoreBackup: { input: none, output: LibraryStatus },
  /** Reads the invisible watermark of a library image (ours or Stable Diffusion's scripts'). */
  checkWatermark: { input: z.object({ imageId: Id }).strict(), output: WatermarkReport },
} as const satisfies Record<string, { input: z.ZodType; output: z.ZodType }>;

/** Events pushed from the host; names are what `on()` takes. */
export const studioEvents = {
  engineStatus: EngineStatus,
  settingsChanged: Settings,
  modelsChanged: z.array(ModelEntry),
  checkpointImport: CheckpointImportProgress,
  downloadProgress: DownloadProgress,
  queueChanged: QueueState,
  jobProgress: JobProgress,
  /** Images added, changed (favorite, rating, tags) or removed, by image id. */
  galleryChanged: z.object({ added: z.array(Id), updated: z.array(Id), removed: z.array(Id) }),
  libraryStatus: LibraryStatus,
  /**
   * A file was put in one of the folders Settings names (a download placed a LoRA, embedding,
   * VAE or ControlNet): the list of that kind is stale, and asking for it again shows the file.
   */
  modelFileAdded: z.object({
    kind: z.enum(['lora', 'embedding', 'vae', 'controlnet']),
    file: z.string(),
  }),
} as const satisfies Record<string, z.ZodType>;

export type StudioMethods = typeof studioMethods;
export type MethodName = keyof StudioMethods;
export type EventName = keyof typeof studioEvents;
export type MethodInput<M extends MethodName> = z.input<StudioMethods[M]['input']>;
export type MethodOutput<M extends MethodName> = z.output<StudioMethods[M]['output']>;
export type EventPayload<E extends EventName> = z.output<(typeof studioEvents)[E]>;

type CallArgs<M extends MethodName> =
  undefined extends MethodInput<M> ? [] : [input: MethodInput<M>];

/** What the renderer sees: promise-returning methods plus a typed event subscription. */
export type StudioApi = {
  [M in MethodName]: (...args: CallArgs<M>) => Promise<MethodOutput<M>>;
} & {
  /** Subscribe to a host event; returns the function that unsubscribes. */
  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void;
};

/** What the host implements: each method receives its already-validated input. */
export type StudioService = {
  [M in MethodName]: (
    input: z.output<StudioMethods[M]['input']>,
  ) => Promise<MethodOutput<M>> | MethodOutput<M>;
};

export const methodNames = Object.keys(studioMethods) as MethodName[];
export const eventNames = Object.keys(studioEvents) as EventName[];

export function isMethodName(name: unknown): name is MethodName {
  return typeof name === 'string' && Object.hasOwn(studioMethods, name);
}

export function isEventName(name: unknown): name is EventName {
  return typeof name === 'string' && Object.hasOwn(studioEvents, name);
}

/** The minimum a transport provides; the typed client is built on top of it. */
export interface Transport {
  call(method: MethodName, input: unknown): Promise<Envelope>;
  subscribe(listener: (event: EventName, payload: unknown) => void): () => void;
}

/** Builds the typed `StudioApi` over any transport. */
export function createStudioClient(transport: Transport): StudioApi {
  const listeners = new Map<EventName, Set<(payload: never) => void>>();
  let unsubscribe: (() => void) | null = null;

  const client: Record<string, unknown> = {};
  for (const method of methodNames) {
    client[method] = async (input?: unknown) => {
      const envelope = await transport.call(method, input);
      if (!envelope.ok) throw new StudioError(envelope.error.code, envelope.error.message);
      return envelope.value;
    };
  }
  client.on = (event: EventName, listener: (payload: never) => void) => {
    if (!isEventName(event))
      throw new StudioError('invalid-argument', `Unknown event "${String(event)}".`);
    let set = listeners.get(event);
    if (!set) listeners.set(event, (set = new Set()));
    set.add(listener);
    unsubscribe ??= transport.subscribe((name, payload) => {
      for (const fn of listeners.get(name) ?? []) fn(payload as never);
    });
    return () => {
      set.delete(listener);
    };
  };
  return client as StudioApi;
}
