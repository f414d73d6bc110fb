import sharp from 'sharp';
import type { PixelImage } from '../../engine';
import { StudioError } from '../../shared';
import { ImageTooLargeError, withImage } from '../images/decode';

/**
 * An image file as the engine takes it: RGB for a source image (alpha dropped), one grey
 * channel for a mask (transparent areas count as black, i.e. kept).
 */
export async function readPixels(
  file: string,
  kind: 'init' | 'mask' | 'control',
): Promise<PixelImage> {
  const what = { init: 'source image', mask: 'mask image', control: 'control image' }[kind];
  try {
    const { data, info } = await withImage(file, { what: `The ${what}` }, (image) =>
      (kind === 'mask'
        ? image.flatten({ background: '#000000' }).toColourspace('b-w')
        : image.toColourspace('srgb').removeAlpha()
      )
        .raw()
        .toBuffer({ resolveWithObject: true }),
    );
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
    if (err instanceof ImageTooLargeError) throw err;
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
