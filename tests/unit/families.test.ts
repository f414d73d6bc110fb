// Model families and their capabilities, declared once in src/shared (issue 16 item 4).
import { describe, expect, it } from 'vitest';
import {
  familyCapabilities,
  familyDescriptions,
  familyLabel,
  isModelFamily,
  isSdxlFamily,
  modelFamilies,
} from '../../src/shared';

describe('model families', () => {
  it('describes every family the engine reports, and nothing else', () => {
    expect(Object.keys(familyDescriptions).sort()).toEqual([...modelFamilies].sort());
    for (const family of modelFamilies) expect(familyLabel(family)).not.toBe(family);
  });

  it('x4 upscalers only upscale; 9-channel models (SD and SDXL) inpaint and generate; the rest generate', () => {
    expect(familyCapabilities('x4-upscaler')).toEqual({
      generate: false,
      inpaint: false,
      upscale: true,
    });
    // SDXL's inpainting model too: diffusers' StableDiffusionXLInpaintPipeline runs it for text
    // to image with an all-white mask, as the studio runs every 9-channel model outside Inpaint.
    for (const family of ['inpaint', 'sdxl-inpaint'] as const)
      expect(familyCapabilities(family), family).toEqual({
        generate: true,
        inpaint: true,
        upscale: false,
      });
    const nine = ['inpaint', 'sdxl-inpaint', 'x4-upscaler'];
    for (const family of modelFamilies.filter((f) => !nine.includes(f)))
      expect(familyCapabilities(family), family).toEqual({
        generate: true,
        inpaint: false,
        upscale: false,
      });
  });

  it('says which families are built on SDXL (latent previews, size presets, memory estimates)', () => {
    expect(modelFamilies.filter(isSdxlFamily)).toEqual(['sdxl', 'sdxl-turbo', 'sdxl-inpaint']);
    expect(familyLabel('sdxl-inpaint')).toBe('SDXL Inpainting');
    for (const family of [null, undefined, 'sdxl-refiner', 'toString'])
      expect(isSdxlFamily(family)).toBe(false);
  });

  it('gives an unknown or missing family no capability and shows it as it is', () => {
    for (const family of [null, undefined, '', 'sd15', 'toString', '__proto__']) {
      expect(familyCapabilities(family)).toEqual({
        generate: false,
        inpaint: false,
        upscale: false,
      });
      expect(isModelFamily(family)).toBe(false);
    }
    expect(familyLabel(null)).toBe('unknown family');
    expect(familyLabel('sd9-xl')).toBe('sd9-xl');
    expect(familyLabel('sdxl-turbo')).toBe('SDXL Turbo');
  });
});
