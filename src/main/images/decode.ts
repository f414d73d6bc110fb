/**
 * Every decode of an image the studio did not just make itself goes through here: uploads,
 * re-imports and thumbnails of files found in the data folder, a job's source image and mask,
 * the CLI's inputs. A PNG of a few hundred KiB can declare 16383 x 16383 pixels (sharp's own
 * default limit, 0.27 gigapixels, is exactly that) and decode to a quarter of a gigabyte or
 * more; a few at once used to take the host from 1.5 to 4.7 GB. So: read the header first,
 * refuse what is larger than a stated limit before any pixel is decoded, tell sharp the same
 * limit, and let only a few decodes run at a time in the whole process.
 */
import sharp, { type Sharp } from 'sharp';
import { StudioError, UpscaleOptions, maxSide } from '../../shared';

/**
 * The largest image taken as an input (an init image, a mask, an import, the CLI's --init):
 * the studio's largest size, maxSide x maxSide (4096 x 4096, 16.8 megapixels), in any shape.
 */
export const maxInputPixels = maxSide * maxSide;

/** The largest upscale: hires by its largest factor, or the x4 upscaler. */
const maxUpscaleFactor = Math.max(4, UpscaleOptions.shape.factor.unwrap().maxValue ?? 0);

/**
 * The largest image the studio itself writes (an upscale of a maxSide image: 16384 x 16384,
 * 268 megapixels). Thumbnails and re-imports of its own files may be that large; they are
 * decoded streaming (a thumbnail, a checksum of the pixels), never into one buffer.
 */
export const maxStudioImagePixels = (maxSide * maxUpscaleFactor) ** 2;

/** How many decodes may run at once in this process (each already uses libvips' threads). */
export const decodeSlots = 2;

/** A counting semaphore: at most `slots` tasks run at once, the rest wait in order. */
export class DecodeGate {
  #running = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly slots: number) {}

  /** Tasks running now (for tests and the benchmark). */
  get running(): number {
    return this.#running;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#running >= this.slots)
      await new Promise<void>((resolve) => this.#waiting.push(resolve));
    else this.#running++;
    try {
      return await task();
    } finally {
      const next = this.#waiting.shift();
      // The slot passes straight to the next task, so `running` never exceeds `slots`.
      if (next) next();
      else this.#running--;
    }
  }
}

/** The host-wide gate every decode below waits on. */
export const decodeGate = new DecodeGate(decodeSlots);

export interface ImageHeader {
  /** sharp's name: png, jpeg, webp, gif, ... */
  format: string;
  width: number;
  height: number;
}

const megapixels = (pixels: number) => `${(pixels / 1e6).toFixed(1)} megapixels`;

/**
 * The refusal of an image larger than `maxPixels`, in one sentence that gives both sizes.
 * `what` names the image for a person ("The source image", `"photo.png"`).
 */
export function tooLargeMessage(what: string, header: ImageHeader, maxPixels: number): string {
  const side = Math.round(Math.sqrt(maxPixels));
  return `${what} is ${header.width}x${header.height} (${megapixels(header.width * header.height)}); the studio reads images of at most ${megapixels(maxPixels)} (${side}x${side} or the same area in another shape).`;
}

/** An image refused for its size: an invalid argument, not a damaged file. */
export class ImageTooLargeError extends StudioError {
  constructor(
    what: string,
    readonly header: ImageHeader,
    readonly maxPixels: number,
  ) {
    super('invalid-argument', tooLargeMessage(what, header, maxPixels));
  }
}

/**
 * The format and size from the header alone (no pixel is decoded). Throws sharp's error when
 * the header cannot be read.
 */
export async function readImageHeader(input: Buffer | Uint8Array | string): Promise<ImageHeader> {
  const meta = await sharp(input).metadata();
  if (!meta.format || !meta.width || !meta.height)
    throw new Error('the header gives no format or size');
  return { format: meta.format, width: meta.width, height: meta.height };
}

export interface DecodeOptions {
  /** Names the image in messages: "The source image", `"photo.png"`. */
  what: string;
  /** Defaults to maxInputPixels. */
  maxPixels?: number;
}

/**
 * Runs `use` on the image once its header shows it within the limit, inside the host-wide gate,
 * with sharp limited to the same pixel count and failing on truncated data. Throws
 * ImageTooLargeError before decoding anything when the image is too large; other errors
 * (unreadable header, damaged data) are sharp's, for the caller to word.
 */
export async function withImage<T>(
  input: Buffer | Uint8Array | string,
  options: DecodeOptions,
  use: (image: Sharp, header: ImageHeader) => Promise<T>,
): Promise<T> {
  const maxPixels = options.maxPixels ?? maxInputPixels;
  const header = await readImageHeader(input);
  if (header.width * header.height > maxPixels)
    throw new ImageTooLargeError(options.what, header, maxPixels);
  return decodeGate.run(() =>
    use(sharp(input, { limitInputPixels: maxPixels, failOn: 'truncated' }), header),
  );
}

/**
 * Checks that an uploaded image is whole: a readable header and, when its format is one of
 * `formats`, a size within maxInputPixels and every pixel decodable (streamed through a
 * statistic, so memory stays small). Returns the header, only the format for other formats (the
 * caller refuses those in its own words). Errors are StudioErrors with one sentence for a person.
 */
export async function checkUploadedImage(
  data: Buffer,
  name: string | undefined,
  formats: readonly string[],
): Promise<Partial<ImageHeader>> {
  const what = name ? `"${name.slice(0, 100)}"` : 'The image';
  try {
    const header = await readImageHeader(data);
    if (!formats.includes(header.format)) return { format: header.format };
    await withImage(data, { what }, (image) => image.stats());
    return header;
  } catch (err) {
    if (err instanceof StudioError) throw err;
    throw new StudioError(
      'invalid-argument',
      `${what} could not be read: it is damaged or not a PNG, JPEG or WebP image.`,
    );
  }
}

/**
 * The size of a PNG the studio wrote (found in the data folder without its row), or null when
 * it is not a whole PNG within maxStudioImagePixels.
 */
export async function checkStudioPng(
  png: Buffer,
): Promise<{ width: number; height: number } | null> {
  try {
    return await withImage(
      png,
      { what: 'The image', maxPixels: maxStudioImagePixels },
      async (image, header) => {
        if (header.format !== 'png') return null;
        await image.stats();
        return { width: header.width, height: header.height };
      },
    );
  } catch {
    return null;
  }
}

/** A WebP thumbnail at most `size` on its longer side, of an image the studio wrote. */
export async function makeThumbnail(image: Uint8Array, size: number): Promise<Uint8Array> {
  const buf = await withImage(
    image,
    { what: 'The image', maxPixels: maxStudioImagePixels },
    (img) =>
      img
        .resize(size, size, { fit: 'inside', withoutEnlargement: true })
        .webp({ quality: 80 })
        .toBuffer(),
  );
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
