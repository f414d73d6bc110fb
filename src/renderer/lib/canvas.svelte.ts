import type {
  ContentFilterState,
  GalleryItem,
  GenerationSettings,
  ImageRef,
  ImportedControlUnit,
  UploadedImage,
  UsedNetwork,
} from '../../shared';
import { blobToBase64, clamp } from './format';
import type { Studio } from './studio.svelte';

/** The image on the canvas: a library image (or an upload) the next job starts from. */
export interface CanvasImage {
  imageId: string;
  url: string;
  width: number;
  height: number;
  generationId: string | null;
  /** The content filter's verdict: a 'flagged' image is shown blurred until revealed. */
  contentFilter?: ContentFilterState;
}

export type Tool = 'brush' | 'eraser';

/** Settings read from an imported PNG's metadata (ours, A1111, ComfyUI, InvokeAI). */
export interface ImportedSettings {
  imageId: string;
  name: string | null;
  source: Exclude<NonNullable<UploadedImage['metadata']>['source'], 'none'>;
  settings: Partial<GenerationSettings>;
  /** What could not be restored, one sentence each (a VAE missing from the VAE folder). */
  notes: string[];
  /** The LoRAs and embeddings its infotext lists (`Lora hashes`, `TI hashes`). */
  networks: UsedNetwork[];
  /** A1111's `ControlNet N` units, without control images (ours are in `settings`). */
  controlnets: ImportedControlUnit[];
}

export const metadataSourceLabels: Record<ImportedSettings['source'], string> = {
  'latent-studio': 'Latent Studio',
  a1111: 'AUTOMATIC1111',
  comfyui: 'ComfyUI',
  invokeai: 'InvokeAI',
};

/**
 * Colours the mask can be shown in; only a mask pixel's alpha is the mask. Rose by default;
 * another one where the picture has much of it (a rose mask is hard to see on red).
 */
export const maskColours = {
  rose: [255, 56, 96],
  green: [0, 200, 83],
  cyan: [0, 200, 255],
  yellow: [255, 214, 0],
  white: [255, 255, 255],
  black: [0, 0, 0],
} as const satisfies Record<string, readonly [number, number, number]>;
export type MaskColourName = keyof typeof maskColours;
const historyLimit = 40;

export function imageFromRef(ref: ImageRef): CanvasImage {
  return {
    imageId: ref.imageId,
    url: ref.url,
    width: ref.width,
    height: ref.height,
    generationId: ref.generationId,
    contentFilter: ref.contentFilter,
  };
}

export function imageFromItem(item: GalleryItem): CanvasImage {
  return {
    imageId: item.imageId,
    url: item.url,
    width: item.width,
    height: item.height,
    generationId: item.generationId,
    contentFilter: item.contentFilter,
  };
}

/**
 * The canvas: the current image, the painted mask (an offscreen-sized <canvas> the state owns,
 * so it survives switching views), its undo history, and the view transform (zoom and pan).
 */
export class Canvas {
  image = $state.raw<CanvasImage | null>(null);
  /** The images of the last finished generation, to pick from. */
  results = $state.raw<GalleryItem[]>([]);

  tool = $state<Tool>('brush');
  /** Brush diameter in image pixels. */
  brushSize = $state(32);
  /** 1 = hard edge, 0 = soft all the way from the centre. */
  hardness = $state(0.7);
  maskOpacity = $state(0.55);
  /**
   * Whether the mask overlay is drawn. It hides when an inpainting result arrives (to see the
   * result, not the paint over it) and shows again with the toggle or the next brush stroke.
   */
  maskShown = $state(true);
  maskColourName = $state<MaskColourName>('rose');

  zoom = $state(1);
  panX = $state(0);
  panY = $state(0);
  stageWidth = $state(0);
  stageHeight = $state(0);
  panning = $state(false);
  spaceHeld = $state(false);

  canUndo = $state(false);
  canRedo = $state(false);
  hasMask = $state(false);
  /** Share of the image the mask covers, 0..1 (mean opacity: a soft edge counts in part). */
  maskCoverage = $state(0);
  loading = $state(false);

  /**
   * The keyboard brush: where it is (image pixels; null until the keyboard moves it) and whether
   * it paints while it moves ("pen down", toggled with P).
   */
  cursor = $state<{ x: number; y: number } | null>(null);
  penDown = $state(false);

  /** Settings found in the PNG last dropped, pasted or opened; null when none or dismissed. */
  imported = $state.raw<ImportedSettings | null>(null);

  #mask: HTMLCanvasElement | null = null;
  #undo: ImageData[] = [];
  #redo: ImageData[] = [];
  #last: { x: number; y: number } | null = null;

  constructor(private readonly studio: Studio) {}

  /** The mask layer; components mount it, the state keeps it. */
  get maskElement(): HTMLCanvasElement {
    if (!this.#mask) {
      this.#mask = document.createElement('canvas');
      this.#mask.className = 'mask-layer';
      this.#mask.dataset.testid = 'mask-layer';
      this.#mask.width = this.image?.width ?? 1;
      this.#mask.height = this.image?.height ?? 1;
    }
    return this.#mask;
  }

  #context(): CanvasRenderingContext2D {
    return this.maskElement.getContext('2d', { willReadFrequently: true })!;
  }

  setImage(image: CanvasImage): void {
    const sameSize =
      this.image && this.image.width === image.width && this.image.height === image.height;
    this.image = image;
    if (!sameSize) {
      const mask = this.maskElement;
      mask.width = image.width;
      mask.height = image.height;
      this.#undo = [];
      this.#redo = [];
      this.#syncHistory();
      this.hasMask = false;
      this.maskCoverage = 0;
      this.brushSize = clamp(Math.round(Math.min(image.width, image.height) / 8), 4, 256);
      this.fit();
    }
    this.endKeyboardStroke();
    if (this.cursor)
      this.cursor = {
        x: clamp(this.cursor.x, 0, image.width - 1),
        y: clamp(this.cursor.y, 0, image.height - 1),
      };
  }

  // ---- view ---------------------------------------------------------------------------------

  /** The area shown: the image plus any outpaint extension. */
  #bounds() {
    const img = this.image;
    if (!img) return null;
    const o = this.studio.form.mode === 'outpaint' ? this.studio.form.outpaint : null;
    return {
      x: -(o?.left ?? 0),
      y: -(o?.top ?? 0),
      w: img.width + (o ? o.left + o.right : 0),
      h: img.height + (o ? o.top + o.bottom : 0),
    };
  }

  /** Whether the whole area (image plus outpaint extension) is on the stage as it is shown. */
  showsAll(): boolean {
    const b = this.#bounds();
    if (!b || !this.stageWidth || !this.stageHeight) return true;
    const x0 = this.panX + b.x * this.zoom;
    const y0 = this.panY + b.y * this.zoom;
    const x1 = x0 + b.w * this.zoom;
    const y1 = y0 + b.h * this.zoom;
    return x0 >= -0.5 && y0 >= -0.5 && x1 <= this.stageWidth + 0.5 && y1 <= this.stageHeight + 0.5;
  }

  /**
   * The view is as fit() left it (not zoomed or panned since): when the stage changes size (the
   * result strip or a toolbar appears, the window resizes) it is fitted again.
   */
  fitted = $state(true);

  fit(): void {
    const b = this.#bounds();
    if (!b || !this.stageWidth || !this.stageHeight) return;
    this.fitted = true;
    const margin = 48;
    this.zoom = Math.min((this.stageWidth - margin) / b.w, (this.stageHeight - margin) / b.h, 16);
    this.panX = (this.stageWidth - b.w * this.zoom) / 2 - b.x * this.zoom;
    this.panY = (this.stageHeight - b.h * this.zoom) / 2 - b.y * this.zoom;
  }

  /** Zooms by `factor` keeping the stage point (sx, sy) still. */
  zoomAt(factor: number, sx: number, sy: number): void {
    const zoom = clamp(this.zoom * factor, 0.05, 32);
    const k = zoom / this.zoom;
    this.fitted = false;
    this.panX = sx - (sx - this.panX) * k;
    this.panY = sy - (sy - this.panY) * k;
    this.zoom = zoom;
  }

  zoomBy(factor: number): void {
    this.zoomAt(factor, this.stageWidth / 2, this.stageHeight / 2);
  }

  panBy(dx: number, dy: number): void {
    this.fitted = false;
    this.panX += dx;
    this.panY += dy;
  }

  // ---- painting -----------------------------------------------------------------------------

  /** Shows the mask in another colour; the mask (its alpha) does not change. */
  setMaskColour(name: MaskColourName): void {
    this.maskColourName = name;
    if (this.#mask) this.#recolour(this.#context());
  }

  #recolour(ctx: CanvasRenderingContext2D): void {
    const { width, height } = this.maskElement;
    const [red, green, blue] = maskColours[this.maskColourName];
    ctx.save();
    ctx.globalCompositeOperation = 'source-in';
    ctx.fillStyle = `rgb(${red},${green},${blue})`;
    ctx.fillRect(0, 0, width, height);
    ctx.restore();
  }

  setBrushSize(size: number): void {
    this.brushSize = clamp(Math.round(size), 1, 1024);
  }

  #dab(ctx: CanvasRenderingContext2D, x: number, y: number): void {
    const r = Math.max(0.5, this.brushSize / 2);
    const [red, green, blue] = maskColours[this.maskColourName];
    const gradient = ctx.createRadialGradient(x, y, 0, x, y, r);
    const solid = `rgba(${red},${green},${blue},1)`;
    gradient.addColorStop(0, solid);
    gradient.addColorStop(clamp(this.hardness, 0, 0.999), solid);
    gradient.addColorStop(1, `rgba(${red},${green},${blue},0)`);
    ctx.fillStyle = gradient;
    ctx.beginPath();
    ctx.arc(x, y, r, 0, Math.PI * 2);
    ctx.fill();
  }

  /** Starts a stroke at image coordinates (x, y). */
  strokeStart(x: number, y: number): void {
    if (!this.image) return;
    this.maskShown = true;
    const ctx = this.#context();
    this.#pushHistory(ctx);
    ctx.globalCompositeOperation = this.tool === 'eraser' ? 'destination-out' : 'source-over';
    this.#dab(ctx, x, y);
    this.#last = { x, y };
    this.hasMask = true;
  }

  strokeTo(x: number, y: number): void {
    const last = this.#last;
    if (!last) return;
    const ctx = this.#context();
    const distance = Math.hypot(x - last.x, y - last.y);
    const spacing = Math.max(0.5, this.brushSize / 6);
    const steps = Math.floor(distance / spacing);
    for (let i = 1; i <= steps; i++) {
      const t = (i * spacing) / distance;
      this.#dab(ctx, last.x + (x - last.x) * t, last.y + (y - last.y) * t);
    }
    if (steps > 0) {
      const t = (steps * spacing) / distance;
      this.#last = { x: last.x + (x - last.x) * t, y: last.y + (y - last.y) * t };
    }
  }

  strokeEnd(): void {
    if (!this.#last) return;
    this.#last = null;
    this.#context().globalCompositeOperation = 'source-over';
    this.#measureMask();
  }

  // ---- painting from the keyboard -----------------------------------------------------------

  /** How far an arrow key moves the brush, in image pixels (Shift: `big`). */
  keyboardStep(big: boolean): number {
    const side = this.image ? Math.min(this.image.width, this.image.height) : 64;
    const small = Math.max(1, Math.round(side / 64));
    return big ? small * 8 : small;
  }

  /** Shows the keyboard brush (at the image's centre the first time). */
  showCursor(): void {
    const img = this.image;
    if (!img || this.cursor) return;
    this.cursor = { x: Math.floor(img.width / 2), y: Math.floor(img.height / 2) };
  }

  /** Moves the keyboard brush by (dx, dy) image pixels, painting on the way when the pen is down. */
  moveCursor(dx: number, dy: number): void {
    const img = this.image;
    if (!img) return;
    this.showCursor();
    const from = this.cursor!;
    const to = {
      x: clamp(from.x + dx, 0, img.width - 1),
      y: clamp(from.y + dy, 0, img.height - 1),
    };
    this.cursor = to;
    if (this.penDown) {
      if (!this.stroking) this.strokeStart(from.x + 0.5, from.y + 0.5);
      this.strokeTo(to.x + 0.5, to.y + 0.5);
      // The end point itself, so a stroke reaches where the brush stopped.
      this.#dabAtLast(to.x + 0.5, to.y + 0.5);
      this.#measureMask();
    }
  }

  #dabAtLast(x: number, y: number): void {
    const ctx = this.#context();
    this.#dab(ctx, x, y);
    this.#last = { x, y };
  }

  /** One dab of the current tool at the keyboard brush (Enter or Space). */
  stamp(): void {
    if (!this.image) return;
    this.showCursor();
    const { x, y } = this.cursor!;
    const wasDown = this.stroking;
    if (wasDown) this.strokeEnd();
    this.strokeStart(x + 0.5, y + 0.5);
    this.strokeEnd();
  }

  /** P: paint while the brush moves (one undo step per pen-down), or lift the pen. */
  togglePen(): void {
    if (!this.image) return;
    if (this.penDown) {
      this.endKeyboardStroke();
      return;
    }
    this.showCursor();
    this.penDown = true;
    const { x, y } = this.cursor!;
    this.strokeStart(x + 0.5, y + 0.5);
    this.#measureMask();
  }

  /** Lifts the keyboard pen (Escape, switching images or modes). */
  endKeyboardStroke(): void {
    if (!this.penDown) return;
    this.penDown = false;
    this.strokeEnd();
  }

  toggleTool(): void {
    const stroking = this.penDown;
    if (stroking) this.endKeyboardStroke();
    this.tool = this.tool === 'brush' ? 'eraser' : 'brush';
    if (stroking) this.togglePen();
  }

  /** What the keyboard brush is doing, in words (for the live region and the caption). */
  describeBrush(): string {
    const tool = this.tool === 'eraser' ? 'Eraser' : 'Brush';
    const where = this.cursor ? ` at ${this.cursor.x}, ${this.cursor.y}` : '';
    const pen = this.penDown ? (this.tool === 'eraser' ? ', erasing' : ', painting') : '';
    return `${tool}${where}, ${this.brushSize} px${pen}. Mask covers ${formatCoverage(this.maskCoverage)} of the image.`;
  }

  get stroking(): boolean {
    return this.#last !== null;
  }

  #pushHistory(ctx: CanvasRenderingContext2D): void {
    const { width, height } = this.maskElement;
    this.#undo.push(ctx.getImageData(0, 0, width, height));
    if (this.#undo.length > historyLimit) this.#undo.shift();
    this.#redo = [];
    this.#syncHistory();
  }

  #syncHistory(): void {
    this.canUndo = this.#undo.length > 0;
    this.canRedo = this.#redo.length > 0;
  }

  #swap(from: ImageData[], to: ImageData[]): void {
    const snapshot = from.pop();
    if (!snapshot) return;
    const ctx = this.#context();
    const { width, height } = this.maskElement;
    to.push(ctx.getImageData(0, 0, width, height));
    ctx.putImageData(snapshot, 0, 0);
    this.#recolour(ctx); // the snapshot may be from before a colour change
    this.#syncHistory();
    this.#measureMask();
  }

  undo(): void {
    this.#swap(this.#undo, this.#redo);
  }

  redo(): void {
    this.#swap(this.#redo, this.#undo);
  }

  clear(): void {
    if (!this.image) return;
    const ctx = this.#context();
    this.#pushHistory(ctx);
    ctx.clearRect(0, 0, this.maskElement.width, this.maskElement.height);
    this.hasMask = false;
    this.maskCoverage = 0;
  }

  invert(): void {
    if (!this.image) return;
    const ctx = this.#context();
    this.#pushHistory(ctx);
    const { width, height } = this.maskElement;
    const data = ctx.getImageData(0, 0, width, height);
    const px = data.data;
    const colour = maskColours[this.maskColourName];
    for (let i = 0; i < px.length; i += 4) {
      px[i] = colour[0];
      px[i + 1] = colour[1];
      px[i + 2] = colour[2];
      px[i + 3] = 255 - px[i + 3];
    }
    ctx.putImageData(data, 0, 0);
    this.#measureMask();
  }

  #measureMask(): void {
    const { width, height } = this.maskElement;
    const px = this.#context().getImageData(0, 0, width, height).data;
    let sum = 0;
    for (let i = 3; i < px.length; i += 4) sum += px[i];
    this.hasMask = sum > 0;
    this.maskCoverage = sum / (255 * width * height);
  }

  /**
   * Puts a stored mask (greyscale, white = repaint, as exportMask writes it) on the mask layer,
   * as one undoable step. The mask must have the image's size.
   */
  async loadMask(url: string): Promise<void> {
    const img = new Image();
    img.src = url;
    await img.decode();
    const { width, height } = this.maskElement;
    if (img.naturalWidth !== width || img.naturalHeight !== height)
      throw new Error(
        `the mask is ${img.naturalWidth} × ${img.naturalHeight}, the image ${width} × ${height}`,
      );
    const scratch = document.createElement('canvas');
    scratch.width = width;
    scratch.height = height;
    const sctx = scratch.getContext('2d', { willReadFrequently: true })!;
    sctx.drawImage(img, 0, 0);
    const grey = sctx.getImageData(0, 0, width, height);
    const px = grey.data;
    const colour = maskColours[this.maskColourName];
    for (let i = 0; i < px.length; i += 4) {
      px[i + 3] = px[i];
      px[i] = colour[0];
      px[i + 1] = colour[1];
      px[i + 2] = colour[2];
    }
    const ctx = this.#context();
    this.#pushHistory(ctx);
    ctx.putImageData(grey, 0, 0);
    this.#measureMask();
  }

  /** The mask as the engine reads it: a greyscale PNG, white = repaint. Base64, no prefix. */
  async exportMask(): Promise<string> {
    const { width, height } = this.maskElement;
    const source = this.#context().getImageData(0, 0, width, height).data;
    const out = document.createElement('canvas');
    out.width = width;
    out.height = height;
    const ctx = out.getContext('2d')!;
    const image = ctx.createImageData(width, height);
    for (let i = 0; i < source.length; i += 4) {
      const v = source[i + 3];
      image.data[i] = v;
      image.data[i + 1] = v;
      image.data[i + 2] = v;
      image.data[i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    const blob = await new Promise<Blob | null>((r) => out.toBlob(r, 'image/png'));
    if (!blob) throw new Error('Could not encode the mask.');
    return blobToBase64(blob);
  }

  // ---- images in ----------------------------------------------------------------------------

  /**
   * Puts a dropped, pasted or opened image file on the canvas (uploads it to the host first).
   * Settings found in its metadata are offered in Generate (`imported`).
   */
  async importFile(file: Blob, name?: string): Promise<void> {
    const api = this.studio.api;
    if (!api) return;
    if (!/^image\/(png|jpeg|webp)$/.test(file.type)) {
      this.studio.notices.push('error', 'Only PNG, JPEG and WebP images can be used.');
      return;
    }
    this.loading = true;
    try {
      const data = await blobToBase64(file);
      const uploaded = await api.uploadImage({ data, purpose: 'import', name });
      const found = uploaded.metadata;
      this.imported =
        found && found.source !== 'none' && Object.keys(found.settings).length
          ? {
              imageId: uploaded.imageId,
              name: name ?? null,
              source: found.source,
              settings: found.settings,
              notes: found.notes ?? [],
              networks: found.networks,
              controlnets: found.controlnets ?? [],
            }
          : null;
      this.setImage({
        imageId: uploaded.imageId,
        url: uploaded.url,
        width: uploaded.width,
        height: uploaded.height,
        generationId: null,
      });
      if (this.studio.form.mode === 'txt2img') this.studio.form.mode = 'img2img';
      this.studio.form.setSize(
        Math.max(64, Math.round(uploaded.width / 8) * 8),
        Math.max(64, Math.round(uploaded.height / 8) * 8),
      );
    } catch (err) {
      this.studio.notices.error(err, 'Could not use that image');
    } finally {
      this.loading = false;
    }
  }
}

export function formatCoverage(share: number): string {
  if (share <= 0) return '0%';
  if (share < 0.001) return 'under 0.1%';
  const pct = share * 100;
  return `${pct < 10 ? pct.toFixed(1) : Math.round(pct)}%`;
}
