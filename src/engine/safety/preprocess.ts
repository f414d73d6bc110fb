// CLIP's image preprocessing, as transformers' CLIPImageProcessor does it for
// openai/clip-vit-large-patch14 (preprocessor_config.json): resize the shortest side to 224 with
// Pillow's BICUBIC (the longer side int(224 * long / short)), centre-crop 224 x 224 (offset
// (size - 224) // 2), scale to 0..1, normalise with CLIP's mean and std (openai/CLIP clip.py).

import { EngineError } from '../errors';
import { checkImage, type PixelImage, toRgb } from '../image/pixels';
import { resizeBicubic } from '../image/resize';
import type { FloatTensor } from '../image/pixels';

export const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073] as const;
export const CLIP_STD = [0.26862954, 0.26130258, 0.27577711] as const;

/**
 * Images (RGB or RGBA; alpha is dropped) -> clip_input [N, 3, size, size], float32 NCHW, CLIP-
 * normalised. `size` is the checker's input side (224 for ViT-L/14).
 */
export function clipImageInput(images: readonly PixelImage[], size = 224): FloatTensor {
  if (images.length === 0) throw new EngineError('bad-input', 'There is no image to check.');
  const plane = size * size;
  const data = new Float32Array(images.length * 3 * plane);
  images.forEach((raw, n) => {
    checkImage(raw);
    const img = toRgb(raw);
    const short = Math.min(img.width, img.height);
    // transformers' get_resize_output_image_size: the long side is int(size * long / short).
    const w = img.width === short ? size : Math.floor((size * img.width) / short);
    const h = img.height === short ? size : Math.floor((size * img.height) / short);
    const resized = resizeBicubic(img, w, h);
    const top = (h - size) >> 1;
    const left = (w - size) >> 1;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const s = ((top + y) * w + left + x) * 3;
        for (let c = 0; c < 3; c++) {
          data[(n * 3 + c) * plane + y * size + x] =
            (resized.data[s + c] / 255 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
      }
    }
  });
  return { data, dims: [images.length, 3, size, size] };
}
