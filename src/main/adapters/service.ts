/**
 * The LoRA and embedding folders as the host serves them: the listing (scanned on first use and
 * on `refresh`, a few ms per unchanged file), preview images, and the resolution of a job's
 * prompt into the engine's `loras` / `embeddings` with the hashes its infotext records.
 */
import sharp from 'sharp';
import {
  type NetworkFile,
  type NetworkList,
  type NetworkPreview,
  type NetworkRef,
  type Settings,
  type StudioService,
  StudioError,
} from '../../shared';
import { NetworkHashes, shortNetworkHash } from './hashes';
import { type NetworkCatalog, type ResolvedNetworks, findLora, resolveNetworks } from './resolve';
import { FolderScanner, type ScannedFile, networkFolders } from './scan';

export type NetworkMethods = Pick<StudioService, 'listNetworks' | 'getNetworkPreview'>;

/** Longest side of a preview as served (the picker shows them as small cards). */
const PREVIEW_SIZE = 192;
const MAX_PREVIEWS_KEPT = 500;

export class NetworkService {
  readonly methods: NetworkMethods;
  readonly hashes: NetworkHashes;
  readonly #scanner = new FolderScanner();
  #catalog: (NetworkCatalog & { problems: string[] }) | null = null;
  #scanning: Promise<NetworkCatalog & { problems: string[] }> | null = null;
  /** Moves on at each settingsChanged(): a scan started before it is not cached. */
  #generation = 0;
  readonly #previews = new Map<string, string>();

  constructor(
    readonly dataDir: string,
    readonly settings: () => Pick<Settings, 'loraDir' | 'embeddingsDir'>,
  ) {
    this.hashes = new NetworkHashes(dataDir);
    this.methods = {
      listNetworks: (input) => this.list(input.refresh),
      getNetworkPreview: (input) => this.preview(input),
    } satisfies NetworkMethods;
  }

  /**
   * The folders changed in Settings, or a file was placed in one: the next listing scans them.
   * A scan already running may have read the folders before the change, so its answer is not
   * kept (the generation moves on) and later listings start a scan of their own.
   */
  settingsChanged(): void {
    this.#catalog = null;
    this.#scanning = null;
    this.#generation += 1;
  }

  /** The scanned folders (scanning them when not scanned yet, or when `refresh`). */
  async catalog(refresh = false): Promise<NetworkCatalog & { problems: string[] }> {
    if (this.#catalog && !refresh) return this.#catalog;
    const generation = this.#generation;
    let scanning = this.#scanning;
    if (!scanning) {
      const started = this.#scan().finally(() => {
        if (this.#scanning === started) this.#scanning = null;
      });
      this.#scanning = scanning = started;
    }
    const catalog = await scanning;
    if (generation === this.#generation) this.#catalog = catalog;
    return catalog;
  }

  async #scan(): Promise<NetworkCatalog & { problems: string[] }> {
    const folders = networkFolders(this.settings(), this.dataDir);
    const problems: string[] = [];
    const loras = await this.#scanner.scan('lora', folders.loraDir, problems);
    const embeddings = await this.#scanner.scan('embedding', folders.embeddingsDir, problems);
    // Hashes already computed are shown; the others are computed when a file is first used.
    for (const f of [...loras, ...embeddings]) {
      const known = await this.hashes.known(f.kind, f.file, f.bytes, f.mtime);
      f.hash = known ? shortNetworkHash(known) : null;
    }
    return { ...folders, loras, embeddings, problems };
  }

  async list(refresh: boolean): Promise<NetworkList> {
    const c = await this.catalog(refresh);
    const pub = (f: ScannedFile): NetworkFile => ({
      kind: f.kind,
      name: f.name,
      relativeName: f.relativeName,
      file: f.file,
      bytes: f.bytes,
      mtime: f.mtime,
      hash: f.hash,
      family: f.family,
      vectors: f.vectors,
      hasPreview: f.hasPreview,
      problem: f.problem,
      alias: f.alias,
    });
    return {
      loraDir: c.loraDir,
      embeddingsDir: c.embeddingsDir,
      loras: c.loras.map(pub),
      embeddings: c.embeddings.map(pub),
      problems: c.problems,
    };
  }

  async preview(ref: NetworkRef): Promise<NetworkPreview> {
    const c = await this.catalog();
    const file =
      ref.kind === 'lora'
        ? findLora(c.loras, ref.name)
        : c.embeddings.find((e) => e.name === ref.name || e.relativeName === ref.name);
    if (!file)
      throw new StudioError(
        'not-found',
        `No ${ref.kind === 'lora' ? 'LoRA' : 'embedding'} named "${ref.name}" is in its folder.`,
      );
    if (!file.previewFile) return { dataUrl: null };
    const key = `${file.previewFile}|${file.mtime}`;
    const known = this.#previews.get(key);
    if (known) return { dataUrl: known };
    try {
      const webp = await sharp(file.previewFile, { limitInputPixels: 100_000_000 })
        .rotate()
        .resize(PREVIEW_SIZE, PREVIEW_SIZE, { fit: 'inside', withoutEnlargement: true })
        .webp({ quality: 80 })
        .toBuffer();
      const url = `data:image/webp;base64,${webp.toString('base64')}`;
      if (this.#previews.size >= MAX_PREVIEWS_KEPT) this.#previews.clear();
      this.#previews.set(key, url);
      return { dataUrl: url };
    } catch {
      // A damaged preview image: the card shows its placeholder.
      return { dataUrl: null };
    }
  }

  /**
   * A job's LoRAs and embeddings, from its prompts, against a fresh scan (so a file added or
   * removed since the last listing counts; unchanged headers are not read again). Throws
   * StudioError with one sentence when a tag cannot be used.
   */
  async resolve(prompts: { prompt: string; negativePrompt: string }): Promise<ResolvedNetworks> {
    const hashOf = async (kind: 'lora' | 'embedding', file: string) => {
      const full = await this.hashes.hash(kind, file);
      const listed = [...(this.#catalog?.loras ?? []), ...(this.#catalog?.embeddings ?? [])].find(
        (f) => f.file === file && f.kind === kind,
      );
      if (listed) listed.hash = shortNetworkHash(full);
      return full;
    };
    return resolveNetworks(prompts, await this.catalog(true), hashOf);
  }
}
