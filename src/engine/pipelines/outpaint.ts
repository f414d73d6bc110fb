/**
 * Outpainting: extend the canvas by settings.outpaint {left, top, right, bottom} pixels and
 * inpaint the new area so it continues the picture (A1111's "outpainting mk2" and
 * "poor man's outpainting" scripts work the same way: fill, mask, inpaint).
 *
 * The repaint mask is the new area plus a band of `outpaintBand(blur)` pixels of the original
 * along each extended side (so the seam itself is repainted); feathering spreads it another
 * featherReach(blur) pixels. Original pixels farther than band + reach from an extended side
 * come back bit-identical. The new area is filled before diffusion by spreading the colours at
 * the original's border outwards (mask fill 'edge'); a 'noise' fill from settings.mask replaces
 * that. The mask options blur, onlyMasked and padding apply; grow and invert do not.
 */
import type { GenerationSettings } from '../../shared/generation';
import { maxSide } from '../../shared/generation';
import { EngineError } from '../errors';
import {
  type MaskPlane,
  type PixelImage,
  checkImage,
  featherReach,
  fillMasked,
  toRgb,
} from '../image';
import type { GeneratedImage, RunContext } from './generate';
import { defaultMaskUse, inpaintRegion } from './inpaint';

/** Width of the strip of the original that is repainted along each extended side. */
export function outpaintBand(blur: number): number {
  return Math.max(8, featherReach(blur));
}

export async function runOutpaint(
  ctx: RunContext,
  settings: GenerationSettings,
  initImage: PixelImage | null,
): Promise<GeneratedImage[]> {
  if (!initImage)
    throw new EngineError('bad-input', 'Outpainting needs an input image: the picture to extend.');
  checkImage(initImage, 'input image');
  const ext = settings.outpaint;
  if (!ext || ext.left + ext.top + ext.right + ext.bottom === 0)
    throw new EngineError(
      'bad-input',
      'Outpainting needs at least one side to extend: set left, top, right or bottom above 0.',
    );
  const src = toRgb(initImage);
  const W = src.width + ext.left + ext.right;
  const H = src.height + ext.top + ext.bottom;
  if (W > maxSide || H > maxSide)
    throw new EngineError(
      'bad-input',
      `Outpainting ${src.width}x${src.height} by those sides gives ${W}x${H}, larger than ${maxSide} pixels a side.`,
    );
  const opts = settings.mask ?? defaultMaskUse;
  const band = outpaintBand(opts.blur);

  // The canvas with the original at (left, top), and the repaint mask.
  const canvas = new Uint8Array(W * H * 3);
  for (let y = 0; y < src.height; y++)
    canvas.set(
      src.data.subarray(y * src.width * 3, (y + 1) * src.width * 3),
      ((y + ext.top) * W + ext.left) * 3,
    );
  const mask = new Float32Array(W * H);
  const inner = {
    x0: ext.left + (ext.left > 0 ? band : 0),
    y0: ext.top + (ext.top > 0 ? band : 0),
    x1: ext.left + src.width - (ext.right > 0 ? band : 0),
    y1: ext.top + src.height - (ext.bottom > 0 ? band : 0),
  };
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      mask[y * W + x] = x >= inner.x0 && x < inner.x1 && y >= inner.y0 && y < inner.y1 ? 0 : 1;
  const binary: MaskPlane = { width: W, height: H, data: mask };
  if (inner.x1 <= inner.x0 || inner.y1 <= inner.y0)
    throw new EngineError(
      'bad-input',
      `The image (${src.width}x${src.height}) is too small to outpaint: at least ${2 * band + 1} pixels a side are needed.`,
    );

  const base = fillMasked({ width: W, height: H, channels: 3, data: canvas }, binary, 'edge');
  return inpaintRegion(ctx, settings, base, binary, {
    blur: opts.blur,
    fill: opts.fill === 'noise' ? 'noise' : 'original',
    onlyMasked: opts.onlyMasked,
    padding: opts.padding,
  });
}
