import sharp from 'sharp';
import type { PixelImage } from '../../engine';
import { StudioError } from '../../shared';

/**
 * An image file as the engine takes it: RGB for a source image (alpha dropped), one grey
 * channel for a mask (transparent areas count as black, i.e. kept).
 */
export async function readPixels(file: string, kind: 'init' | 'mask'): Promise<PixelImage> {
  try {
    const pipeline =
      kind === 'mask'
        ? sharp(file).flatten({ background: '#000000' }).toColourspace('b-w')
        : sharp(file).toColourspace('srgb').removeAlpha();
    const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
    const channels = kind === 'mask' ? 1 : 3;
    if (info.channels !== channels)
      throw new Error(`decoded to ${info.channels} channels instead of ${channels}`);
    return {
      width: info.width,
      height: info.height,
      channels,
      data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength),
    };
  } catch (err) {
    const what = kind === 'mask' ? 'mask image' : 'source image';
    const reason = (err as Error).message.split('\n')[0];
    throw new StudioError('storage', `The ${what} could not be read (${reason}).`);
  }
}

/** Pixels to a PNG data URL, for the live preview (the latent preview is small already). */
export async function previewDataUrl(image: PixelImage): Promise<string> {
  const png = await sharp(image.data, {
    raw: { width: image.width, height: image.height, channels: image.channels },
  })
    .png({ compressionLevel: 3 })
    .toBuffer();
  return `data:image/png;base64,${png.toString('base64')}`;
}
