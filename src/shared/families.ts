/**
 * Model families and what each can do, declared once. The engine tells a model's family from its
 * files (src/engine/models/family.ts; ENGINE-NOTES §2-3) and the host stores it as
 * `ModelEntry.family`; everything that decides what a model may be used for (the studio's model
 * lists, the inpainting suggestion, labels) asks `familyCapabilities` instead of comparing family
 * strings, so a new family is one entry here.
 */

/** Every family the engine reports. */
export const modelFamilies = [
  'sd1',
  'sd2',
  'sd2-v',
  'sd-turbo',
  'lcm',
  'sdxl',
  'sdxl-turbo',
  'inpaint',
  'sdxl-inpaint',
  'x4-upscaler',
] as const;
export type ModelFamily = (typeof modelFamilies)[number];

/** What a model can be used for. */
export interface FamilyCapabilities {
  /**
   * Makes images from a prompt: text to image, image to image, hires passes, and inpainting or
   * outpainting by blending latents under the mask.
   */
  readonly generate: boolean;
  /**
   * Made for inpainting: its UNet also takes the mask and the masked image (9 channels), so it
   * is the model to prefer in Inpaint and Outpaint.
   */
  readonly inpaint: boolean;
  /** Enlarges a given image 4x (the x4 upscaler); such a model does nothing else. */
  readonly upscale: boolean;
}

export interface FamilyDescription {
  /** The name people know the family by. */
  readonly label: string;
  readonly capabilities: FamilyCapabilities;
  /**
   * Built on SDXL: its latent space (previews), its training at about 1024 x 1024 in aspect
   * buckets of the same area (size presets) and its UNet's shape (memory estimates).
   */
  readonly sdxl: boolean;
}

const generator: FamilyCapabilities = { generate: true, inpaint: false, upscale: false };
const inpainter: FamilyCapabilities = { generate: true, inpaint: true, upscale: false };

export const familyDescriptions: Readonly<Record<ModelFamily, FamilyDescription>> = {
  sd1: { label: 'SD 1.x', capabilities: generator, sdxl: false },
  sd2: { label: 'SD 2.x', capabilities: generator, sdxl: false },
  'sd2-v': { label: 'SD 2.x (v)', capabilities: generator, sdxl: false },
  'sd-turbo': { label: 'SD Turbo', capabilities: generator, sdxl: false },
  lcm: { label: 'LCM', capabilities: generator, sdxl: false },
  sdxl: { label: 'SDXL', capabilities: generator, sdxl: true },
  'sdxl-turbo': { label: 'SDXL Turbo', capabilities: generator, sdxl: true },
  // A 9-channel model also runs the other modes with everything masked (as in AUTOMATIC1111).
  inpaint: { label: 'Inpainting', capabilities: inpainter, sdxl: false },
  // The same for SDXL's: diffusers' StableDiffusionXLInpaintPipeline runs text to image with an
  // all-white mask (the model was trained with fully masked samples too) and image to image at
  // strength < 1, so it generates as well as inpaints.
  'sdxl-inpaint': { label: 'SDXL Inpainting', capabilities: inpainter, sdxl: true },
  'x4-upscaler': {
    label: 'x4 upscaler',
    capabilities: { generate: false, inpaint: false, upscale: true },
    sdxl: false,
  },
};

const nothing: FamilyCapabilities = { generate: false, inpaint: false, upscale: false };

export function isModelFamily(family: unknown): family is ModelFamily {
  return (
    typeof family === 'string' && Object.prototype.hasOwnProperty.call(familyDescriptions, family)
  );
}

/** What a model of `family` can do; a family not known here (or none yet) can do nothing. */
export function familyCapabilities(family: string | null | undefined): FamilyCapabilities {
  return isModelFamily(family) ? familyDescriptions[family].capabilities : nothing;
}

/** The family as people know it ("SDXL Turbo"); an unknown id is shown as it is. */
export function familyLabel(family: string | null | undefined): string {
  if (!family) return 'unknown family';
  return isModelFamily(family) ? familyDescriptions[family].label : family;
}

/** Whether `family` is built on SDXL (FamilyDescription.sdxl); false for an unknown one. */
export function isSdxlFamily(family: string | null | undefined): boolean {
  return isModelFamily(family) && familyDescriptions[family].sdxl;
}
