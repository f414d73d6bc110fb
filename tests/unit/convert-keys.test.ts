// Full-size key coverage: the SD 1.5, SD 2.1 and SDXL base key sets (name -> shape, written by
// tools/convert-reference/make_full.py from the reference models, whose key structure the
// crosscheck loads strictly into the original sources) are every one consumed by the emitters'
// graphs, with the parameter counts the published models have. Graphs are built, not written.

import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildTextEncoder } from '../../src/engine/convert/emit/text-encoder';
import { buildUNet } from '../../src/engine/convert/emit/unet';
import { buildVae } from '../../src/engine/convert/emit/vae';
import { Graph } from '../../src/engine/convert/onnx/graph';
import { keySetSource } from '../fixtures/safetensors-fixture';

function load(name: string) {
  return keySetSource(path.join(__dirname, '../fixtures/reference', `keys-${name}.json`));
}

/** Builds every component; returns the consumed keys and the stored parameters per component. */
function buildAll(name: string) {
  const { source, arch, keys } = load(name);
  const consumed = new Set<string>();
  const params: Record<string, number> = {};
  const add = (component: string, build: (g: Graph) => Set<string>): void => {
    const g = new Graph(component, 'fp32');
    build(g).forEach((k) => consumed.add(k));
    params[component] = g.weightBytes() / 4;
  };
  add('unet', (g) => buildUNet(g, source, arch.unet, arch.unetPrefix, 'fused'));
  add('vae_encoder', (g) => buildVae('encoder', g, source, arch.vae, arch.vaePrefix, 'fused'));
  add('vae_decoder', (g) => buildVae('decoder', g, source, arch.vae, arch.vaePrefix, 'fused'));
  arch.textEncoders.forEach((te, i) =>
    add(`text_encoder${i ? `_${i + 1}` : ''}`, (g) =>
      buildTextEncoder(g, source, te, arch.family, 'fused'),
    ),
  );
  const unused = Object.keys(keys).filter((k) => !consumed.has(k));
  return { params, unused };
}

describe('full-size key sets are consumed whole', () => {
  it('SD 1.5: every key; UNet 859.52 M parameters, CLIP ViT-L 123.06 M', () => {
    const { params, unused } = buildAll('sd15');
    expect(unused).toEqual([]);
    expect(params.unet).toBe(859_520_964);
    // position_ids is in the file but not a weight of the graph.
    expect(params.text_encoder).toBe(123_060_480);
    expect(params.vae_encoder + params.vae_decoder).toBe(83_653_863);
  });

  it('SD 2.1: every key, the last OpenCLIP layer consumed but not emitted', () => {
    const { params, unused } = buildAll('sd21');
    expect(unused).toEqual([]);
    expect(params.unet).toBe(865_910_724);
    // ViT-H text tower, 24 layers stored of 12 D^2 + 13 D = 12,596,224 parameters each; 23 run:
    // 23 layers + token (49408 x 1024) and position (77 x 1024) embeddings + ln_final.
    expect(params.text_encoder).toBe(23 * 12_596_224 + 49408 * 1024 + 77 * 1024 + 2 * 1024);
  });

  it('SDXL: every key; UNet 2.567 G parameters, both text encoders', () => {
    const { params, unused } = buildAll('sdxl');
    expect(unused).toEqual([]);
    expect(params.unet).toBe(2_567_463_684);
    expect(params.text_encoder).toBe(123_060_480);
    expect(params.text_encoder_2).toBe(694_659_840);
  });
});
