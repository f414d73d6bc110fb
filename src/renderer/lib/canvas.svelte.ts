import type { GalleryItem } from '../../shared';
import { blobToBase64, clamp } from './format';
import type { Studio } from './studio.svelte';

/** The image on the canvas: a library image (or an upload) the next job starts from. */
export interface CanvasImage {
  imageId: string;
  url: string;
  width: number;
  height: number;
  generationId: string | null;
}

export type Tool = 'brush' | 'eraser';

/** Mask pixels are this colour on screen; only their alpha is the mask. */
const maskColour = [255, 56, 96] as const;
const historyLimit = 40;

export function imageFromItem(item: GalleryItem): CanvasImage {
  return {
    imageId: item.imageId,
    url: item.url,
    width: item.width,
    height: item.height,
    generationId: item.generationId,
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
  loading = $state(false);

  #mask: HTMLCanvasElement | null = null;
  #undo: ImageData[] = [];
  #redo: ImageData[] = [];
  #last: { x: number; y: number } | null = null;
  #uploadedUrls: string[] = [];

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
      this.brushSize = clamp(Math.round(Math.min(image.width, image.height) / 8), 4, 256);
      this.fit();
    }
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

  fit(): void {
    const b = this.#bounds();
    if (!b || !this.stageWidth || !this.stageHeight) return;
    const margin = 48;
    this.zoom = Math.min((this.stageWidth - margin) / b.w, (this.stageHeight - margin) / b.h, 16);
    this.panX = (this.stageWidth - b.w * this.zoom) / 2 - b.x * this.zoom;
    this.panY = (this.stageHeight - b.h * this.zoom) / 2 - b.y * this.zoom;
  }

  /** Zooms by `factor` keeping the stage point (sx, sy) still. */
  zoomAt(factor: number, sx: number, sy: number): void {
    const zoom = clamp(this.zoom * factor, 0.05, 32);
    const k = zoom / this.zoom;
    this.panX = sx - (sx - this.panX) * k;
    this.panY = sy - (sy - this.panY) * k;
    this.zoom = zoom;
  }

  zoomBy(factor: number): void {
    this.zoomAt(factor, this.stageWidth / 2, this.stageHeight / 2);
  }

  panBy(dx: number, dy: number): void {
    this.panX += dx;
    this.panY += dy;
  }

  // ---- painting -----------------------------------------------------------------------------

  setBrushSize(size: number): void {
    this.brushSize = clamp(Math.round(size), 1, 1024);
  }

  #dab(ctx: CanvasRenderingContext2D, x: number, y: number): void {
    const r = Math.max(0.5, this.brushSize / 2);
    const [red, green, blue] = maskColour;
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
    this.hasMask = this.#maskHasPixels();
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
    this.#syncHistory();
    this.hasMask = this.#maskHasPixels();
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
  }

  invert(): void {
    if (!this.image) return;
    const ctx = this.#context();
    this.#pushHistory(ctx);
    const { width, height } = this.maskElement;
    const data = ctx.getImageData(0, 0, width, height);
    const px = data.data;
    for (let i = 0; i < px.length; i += 4) {
      px[i] = maskColour[0];
      px[i + 1] = maskColour[1];
      px[i + 2] = maskColour[2];
      px[i + 3] = 255 - px[i + 3];
    }
    ctx.putImageData(data, 0, 0);
    this.hasMask = this.#maskHasPixels();
  }

  #maskHasPixels(): boolean {
    const { width, height } = this.maskElement;
    const px = this.#context().getImageData(0, 0, width, height).data;
    for (let i = 3; i < px.length; i += 4) if (px[i] > 0) return true;
    return false;
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

  /** Puts a dropped or pasted image file on the canvas (uploads it to the host first). */
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
      const uploaded = await api.uploadImage({ data, purpose: 'init', name });
      // Uploads are not gallery items and carry no URL: show the local copy.
      const url = URL.createObjectURL(file);
      this.#uploadedUrls.push(url);
      this.setImage({
        imageId: uploaded.imageId,
        url,
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
