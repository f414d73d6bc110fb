// Model families and their capabilities, declared once in src/shared (issue 16 item 4).
import { describe, expect, it } from 'vitest';
import {
  familyCapabilities,
  familyDescriptions,
  familyLabel,
  isModelFamily,
  modelFamilies,
} from '../../src/shared';

describe('model families', () => {
  it('describes every family the engine reports, and nothing else', () => {
    expect(Object.keys(familyDescriptions).sort()).toEqual([...modelFamilies].sort());
    for (const family of modelFamilies) expect(familyLabel(family)).not.toBe(family);
  });

  it('x4 upscalers only upscale; 9-channel models inpaint and generate; the rest generate', () => {
    expect(familyCapabilities('x4-upscaler')).toEqual({
      generate: false,
      inpaint: false,
      upscale: true,
    });
    expect(familyCapabilities('inpaint')).toEqual({
      generate: true,
      inpaint: true,
      upscale: false,
    });
    for (const family of modelFamilies.filter((f) => f !== 'inpaint' && f !== 'x4-upscaler'))
      expect(familyCapabilities(family), family).toEqual({
        generate: true,
        inpaint: false,
        upscale: false,
      });
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
