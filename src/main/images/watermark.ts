/**
 * The host's side of the invisible watermark (src/engine/image/watermark.ts): marking a
 * generation before it is encoded, and checking an image file for "Check watermark" and
 * `npm run watermark -- --check FILE`.
 */
import {
  type PixelImage,
  type WatermarkMessage,
  canWatermark,
  embedWatermark,
  findWatermark,
  isEngineError,
  watermarkForFamily,
} from '../../engine';
import { StudioError, type WatermarkReport } from '../../shared';
import { ImageTooLargeError, maxStudioImagePixels, withImage } from './decode';

/** A generated image as it will be saved: marked, or as it came when marking is off or it is too small. */
export interface MarkedImage {
  image: PixelImage;
  /** The message it carries; null: not marked. */
  watermark: WatermarkMessage | null;
}

/**
 * Marks `image` with the message of its model family's reference scripts when `enabled` and the
 * image is at least 256x256 pixels (the library's own limit); otherwise returns it as is.
 */
export function markGenerated(
  image: PixelImage,
  family: string | null,
  enabled: boolean,
): MarkedImage {
  if (!enabled || image.channels === 1 || !canWatermark(image)) return { image, watermark: null };
  const message = watermarkForFamily(family);
  return { image: embedWatermark(image, message.bits), watermark: message };
}

/** Reads the watermark of an image file (PNG, JPEG, WebP...); one-sentence StudioErrors. */
export async function checkWatermarkFile(
  file: string,
  name = 'The image',
): Promise<WatermarkReport> {
  let image: PixelImage;
  try {
    const { data, info } = await withImage(
      file,
      { what: name, maxPixels: maxStudioImagePixels },
      (img) => img.toColourspace('srgb').removeAlpha().raw().toBuffer({ resolveWithObject: true }),
    );
    image = {
      width: info.width,
      height: info.height,
      channels: 3,
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    };
  } catch (err) {
    if (err instanceof ImageTooLargeError) throw err;
    const reason = (err as Error).message.split('\n')[0];
    throw new StudioError('invalid-argument', `${name} could not be read as an image (${reason}).`);
  }
  let check;
  try {
    check = findWatermark(image);
  } catch (err) {
    if (!isEngineError(err, 'bad-input')) throw err;
    throw new StudioError(
      'invalid-argument',
      `${name} is ${image.width}x${image.height}; a watermark can only be read from 256x256 pixels or more.`,
    );
  }
  const m = check.message;
  const resized =
    check.readAt.width !== image.width || check.readAt.height !== image.height
      ? ` (read at ${check.readAt.width}x${check.readAt.height}, the size it was resized from)`
      : '';
  return {
    found: m !== null,
    message: m?.label ?? null,
    writer: m?.writer ?? null,
    matchingBits: check.matchingBits,
    totalBits: check.totalBits,
    summary: m
      ? `Watermarked: “${m.label}” (${m.writer}), ${check.matchingBits} of ${check.totalBits} bits read${resized}.`
      : `No watermark: the best match, ${check.matchingBits} of ${check.totalBits} bits, is what an unmarked image gives by chance.`,
  };
}
