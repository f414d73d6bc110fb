// Which TAESD decoder a model family takes (src/shared/taesd.ts): SD 1.x/2.x latents -> taesd,
// SDXL's -> taesdxl, the x4 upscaler's and unknown families' -> none.
import { describe, expect, it } from 'vitest';
import {
  PreviewDecoderEntry,
  modelFamilies,
  previewDecoderCatalogue,
  previewDecoderUrl,
  taesdFileStems,
  taesdVariantFor,
  taesdVariants,
} from '../../src/shared';

describe('taesdVariantFor', () => {
  it('gives every family its decoder', () => {
    const chosen = Object.fromEntries(modelFamilies.map((f) => [f, taesdVariantFor(f)]));
    expect(chosen).toEqual({
      sd1: 'taesd',
      sd2: 'taesd',
      'sd2-v': 'taesd',
      'sd-turbo': 'taesd',
      lcm: 'taesd',
      sdxl: 'taesdxl',
      'sdxl-turbo': 'taesdxl',
      inpaint: 'taesd',
      'sdxl-inpaint': 'taesdxl',
      'x4-upscaler': null,
    });
  });

  it('gives none to families it does not know (SD3, Flux) and to inherited property names', () => {
    for (const f of ['sd3', 'flux', '', 'toString', '__proto__'])
      expect(taesdVariantFor(f)).toBe(null);
  });

  it('names the files as madebyollin/taesd publishes them', () => {
    expect(taesdFileStems).toEqual({ taesd: 'taesd_decoder', taesdxl: 'taesdxl_decoder' });
  });
});

describe('previewDecoderCatalogue', () => {
  it('offers one decoder file per variant, named as the studio looks for it in models/taesd', () => {
    expect(previewDecoderCatalogue.map((e) => e.variant).sort()).toEqual([...taesdVariants].sort());
    for (const e of previewDecoderCatalogue) {
      expect(PreviewDecoderEntry.parse(e)).toEqual(e);
      expect(e.file).toBe(`${taesdFileStems[e.variant]}.safetensors`);
    }
    expect(previewDecoderUrl(previewDecoderCatalogue[0]!)).toBe(
      'https://huggingface.co/madebyollin/taesd/resolve/main/taesd_decoder.safetensors',
    );
  });
});
