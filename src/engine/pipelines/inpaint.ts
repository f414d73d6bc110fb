/**
 * Inpainting: repaint the white part of a mask, keep the rest of the picture bit for bit.
 *
 * Mask preparation follows A1111 (modules/processing.py, StableDiffusionProcessingImg2Img):
 * invert, binarize at 0.5, grow/shrink, feather with a Gaussian blur (mask.ts). A mask of
 * another size than the image is resized to it with nearest-neighbour.
 *
 * Two kinds of UNet, as diffusers' StableDiffusionInpaintPipeline runs them:
 * - 9 input channels (an inpainting model): every UNet call gets
 *   concat(scaled latents, mask at latent size (nearest, binary), scaling * encode(image *
 *   (mask < 0.5))), with guidance batching as in generate.ts; nothing is blended;
 * - 4 input channels (any model): after every step (the core's blend step) the known latents
 *   are put back,
 *   x = (1 - m) * (image_latents + noise * sigma_next) + m * x, with the batch's starting noise
 *   (diffusers' legacy inpaint pipeline and A1111 do the same), m being the mask at latent
 *   size where a cell counts as masked if any of its pixels is.
 * A 9-channel SDXL inpainting UNet (diffusers' StableDiffusionXLInpaintPipeline, e.g.
 * diffusers/stable-diffusion-xl-1.0-inpainting-0.1) takes the same 9 channels plus SDXL's
 * conditioning, which the guided UNet call (unet.ts) builds for it as for text to image: both
 * encoders' states, text_encoder_2's pooled text_embeds, and the base models' 6 time_ids
 * (original size, crop (0, 0), target size: both the size generated here, the crop's under
 * "only masked"; requires_aesthetics_score is false for that model, so no aesthetic score).
 * Both start like img2img (A1111): the encoded (filled) image noised to the first sigma of the
 * schedule cut by `strength`. (diffusers' inpaint pipeline starts from pure noise at strength
 * 1; here strength 1 still starts from the noised image, as A1111 does.)
 *
 * Before diffusion the masked pixels are filled (original / noise / edge, A1111's "masked
 * content"). "Only masked" (A1111's inpaint_full_res) crops the feathered mask's box plus
 * padding, widened to the aspect of settings.width x settings.height, and generates the crop
 * at that size (the CLI defaults it to the model's native size); otherwise the whole image is
 * generated at its own size rounded to a multiple of 8. The result is resized back (Lanczos)
 * and pasted with the feathered mask as alpha: out = a * generated + (1 - a) * original, so
 * every pixel where a = 0 is the input's, unchanged.
 */
import {
  type GenerationSettings,
  type MaskOptions,
  defaultMaskOptions,
} from '../../shared/generation';
import { EngineError } from '../errors';
import {
  type Box,
  type MaskPlane,
  type PixelImage,
  binarizeMask,
  checkImage,
  compositeWithMask,
  cropImage,
  cropMask,
  cropRegion,
  downscaleMask,
  featherMask,
  fillMasked,
  growMask,
  imageToTensor,
  invertMask,
  isMaskEmpty,
  maskFromImage,
  resizeImage,
  toRgb,
} from '../image';
import {
  type ControlSetup,
  type DiffusionHooks,
  type GeneratedImage,
  type RunContext,
  encodeImage,
  encodeTensor,
  runDiffusion,
} from './generate';

/** How the prepared mask is used (MaskOptions without the image reference). */
export type MaskUse = Pick<MaskOptions, 'blur' | 'fill' | 'onlyMasked' | 'padding'>;

/** MaskOptions' defaults, for a request that sends a mask image but no mask settings. */
export const defaultMaskUse: MaskUse & Pick<MaskOptions, 'grow' | 'invert'> = defaultMaskOptions;

/**
 * The painted mask -> the binary repaint mask at the image's size: nearest-resized if its size
 * differs, inverted if asked, binarized at 0.5, grown or shrunk. Throws for an empty result.
 */
export function prepareMask(
  maskImage: PixelImage,
  width: number,
  height: number,
  opts: Pick<MaskOptions, 'grow' | 'invert'>,
): MaskPlane {
  let m = maskFromImage(maskImage, width, height).mask;
  if (opts.invert) m = invertMask(m);
  m = binarizeMask(m);
  if (opts.grow !== 0) m = growMask(m, opts.grow);
  if (isMaskEmpty(m))
    throw new EngineError(
      'bad-input',
      opts.invert
        ? 'The inverted mask is empty (the mask is white everywhere), so there is nothing to repaint.'
        : opts.grow < 0
          ? `The mask is empty after shrinking it by ${-opts.grow} pixels, so there is nothing to repaint.`
          : 'The mask is empty: paint the area to repaint in white.',
    );
  return m;
}

/** Mode 'inpaint': the request's init image and mask. */
export async function runInpaint(
  ctx: RunContext,
  settings: GenerationSettings,
  initImage: PixelImage | null,
  maskImage: PixelImage | null,
  control?: ControlSetup,
): Promise<GeneratedImage[]> {
  if (!initImage)
    throw new EngineError('bad-input', 'Inpainting needs an input image: the picture to repaint.');
  if (!maskImage)
    throw new EngineError(
      'bad-input',
      'Inpainting needs a mask image: white where the picture should be repainted.',
    );
  checkImage(initImage, 'input image');
  checkImage(maskImage, 'mask');
  const image = toRgb(initImage);
  const opts = settings.mask ?? defaultMaskUse;
  const binary = prepareMask(maskImage, image.width, image.height, opts);
  return inpaintRegion(ctx, settings, image, binary, opts, control);
}

function roundTo(v: number, m: number): number {
  return Math.max(m, Math.round(v / m) * m);
}

/**
 * Inpaint `image` (RGB) where `binary` is 1, with the mask options `use`; returns images of
 * `image`'s size. Shared by inpainting and outpainting. ControlNet units see the control image
 * fitted to the picture and cropped as the picture is (A1111 crops the control image with the
 * input under "only masked"); the ControlNet takes the 4 latent channels even of a 9-channel
 * UNet (diffusers' StableDiffusionControlNetInpaintPipeline feeds it the latents alone).
 */
export async function inpaintRegion(
  ctx: RunContext,
  settings: GenerationSettings,
  image: PixelImage,
  binary: MaskPlane,
  use: MaskUse,
  control?: ControlSetup,
): Promise<GeneratedImage[]> {
  const { model } = ctx;
  const family = model.family;
  const channels = family.unetInChannels;
  if (channels !== 4 && channels !== 9)
    throw new EngineError(
      'model-unsupported',
      `${model.info.name} is ${family.classLabels ? 'an x4 upscaler' : `a ${channels}-channel model`}, which cannot inpaint; use a text-to-image or an inpainting model.`,
    );
  const scale = family.latentScale;
  const alpha = featherMask(binary, use.blur);
  const filled = fillMasked(image, binary, use.fill, settings.seed);

  // The region to generate and the size to generate it at.
  let box: Box = { x0: 0, y0: 0, x1: image.width, y1: image.height };
  let W = roundTo(image.width, scale);
  let H = roundTo(image.height, scale);
  if (use.onlyMasked) {
    W = settings.width;
    H = settings.height;
    box = cropRegion(alpha, use.padding, W, H) ?? box;
  }
  const boxW = box.x1 - box.x0;
  const boxH = box.y1 - box.y0;
  let work = cropImage(filled, box);
  if (boxW !== W || boxH !== H) work = resizeImage(work, W, H, 'lanczos3');
  const workMask = binarizeMask(downscaleMask(cropMask(binary, box), W, H, 'nearest'));
  const h = H / scale;
  const w = W / scale;

  const imageLatents = await encodeImage(ctx, work, W, H);
  const hooks: DiffusionHooks = { initLatents: () => imageLatents };
  if (control)
    hooks.control = { ...control, crop: { width: image.width, height: image.height, box } };
  if (channels === 9) {
    // diffusers: mask binarized, masked_image = image * (mask < 0.5), both at the work size;
    // the mask goes to latent size with nearest interpolation.
    const tensor = imageToTensor(work);
    const plane = W * H;
    for (let c = 0; c < 3; c++)
      for (let p = 0; p < plane; p++) if (workMask.data[p] >= 0.5) tensor.data[c * plane + p] = 0;
    const maskedLatents = await encodeTensor(ctx, tensor);
    const latentMask = downscaleMask(workMask, w, h, 'nearest');
    const extra = new Float32Array(5 * h * w);
    extra.set(latentMask.data, 0);
    extra.set(maskedLatents, h * w);
    hooks.extraChannels = { channels: 5, data: extra };
  } else {
    const m = downscaleMask(workMask, w, h, 'max').data;
    const plane = h * w;
    const per = imageLatents.length;
    hooks.blend = (x, sigmaNext, noise) => {
      for (let i = 0; i < x.length; i++) {
        const keep = 1 - m[i % plane];
        if (keep === 0) continue;
        const known = imageLatents[i % per] + noise[i] * sigmaNext;
        x[i] = keep * known + (1 - keep) * x[i];
      }
    };
  }

  const generated = await runDiffusion(
    ctx,
    { ...settings, mode: 'img2img', width: W, height: H },
    null,
    hooks,
  );
  return generated.map((g) => {
    let out = g.image;
    if (out.width !== boxW || out.height !== boxH) out = resizeImage(out, boxW, boxH, 'lanczos3');
    return { ...g, image: compositeWithMask(image, out, alpha, box.x0, box.y0) };
  });
}
