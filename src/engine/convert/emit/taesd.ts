// TAESD's decoder, the tiny autoencoder for live previews (madebyollin/taesd, MIT; taesd.py's
// `Decoder`, read at the repository's HEAD of 2026-12). The same graph serves taesd_decoder
// (SD 1/2) and taesdxl_decoder (SDXL); only the weights differ. Layout, as nn.Sequential indices:
//    0 Clamp: tanh(x / 3) * 3          1 conv 3x3 (latent channels -> 64)   2 ReLU
//    3-5 Block x3                      6 Upsample nearest x2                7 conv 3x3, no bias
//    8-10 Block x3                     11 Upsample nearest x2               12 conv 3x3, no bias
//    13-15 Block x3                    16 Upsample nearest x2               17 conv 3x3, no bias
//    18 Block                          19 conv 3x3 (64 -> 3)
// A Block is relu(conv(relu(conv(relu(conv(x))))) + x) with 3x3 convs `conv.0`, `conv.2`,
// `conv.4` (its skip is the identity: every Block is 64 -> 64).
//
// Weights are found as taesd.py saves them ("1.weight", "3.conv.0.weight", optionally under
// "decoder.") or as diffusers' AutoencoderTiny does ("decoder.layers.0.weight": the same list
// without the Clamp module, so every index one lower).
//
// The graph takes `latent_sample` (the UNet's latents as they are: TAESD's scale is 1.0) and
// gives `sample` in [-1, 1] like the VAE decoder's (taesd.py's output is [0, 1]; diffusers'
// AutoencoderTiny maps it with x * 2 - 1 too), so the pipeline's image conversion is shared.

import { EngineError } from '../../errors';
import type { Graph } from '../onnx/graph';
import type { TensorSource } from '../types';
import { Params } from './layers';

const WIDTH = 64;
/** Block positions in taesd.py's Sequential. */
const BLOCKS = [3, 4, 5, 8, 9, 10, 13, 14, 15, 18];
/** Upsample positions, each followed by a bias-free conv. */
const UPSAMPLES = [6, 11, 16];

/** How a file names the Sequential's modules: the prefix and the index shift. */
interface Naming {
  prefix: string;
  shift: number;
}

/** Tells taesd.py's naming from diffusers'; null when the file is not a TAESD decoder. */
export function taesdNaming(source: TensorSource): Naming | null {
  const candidates: Naming[] = [
    { prefix: '', shift: 0 },
    { prefix: 'decoder.', shift: 0 },
    { prefix: 'decoder.layers.', shift: -1 },
  ];
  return (
    candidates.find(
      (n) =>
        source.info(`${n.prefix}${1 + n.shift}.weight`) !== undefined &&
        source.info(`${n.prefix}${19 + n.shift}.weight`) !== undefined &&
        source.info(`${n.prefix}${3 + n.shift}.conv.0.weight`) !== undefined,
    ) ?? null
  );
}

/** The latent channels a TAESD decoder file takes (4 for SD 1/2 and SDXL). */
export function taesdLatentChannels(source: TensorSource): number {
  const n = taesdNaming(source);
  const shape = n ? source.info(`${n.prefix}${1 + n.shift}.weight`)?.shape : undefined;
  if (!n || !shape || shape.length !== 4) {
    throw new EngineError(
      'model-unsupported',
      `${source.path} is not a TAESD decoder (its tensors are not named like taesd_decoder.pth's).`,
      { file: source.path },
    );
  }
  return shape[1]!;
}

class TaesdEmitter {
  readonly p: Params;
  constructor(
    readonly g: Graph,
    source: TensorSource,
    readonly naming: Naming,
  ) {
    this.p = new Params(source, g, 'the TAESD decoder');
  }

  /** The module at taesd.py's Sequential `index`, with `rest` appended. */
  key(index: number, rest?: string): string {
    const base = `${this.naming.prefix}${index + this.naming.shift}`;
    return rest ? `${base}.${rest}` : base;
  }

  conv(x: string, key: string, inC: number, outC: number, bias: boolean): string {
    const w = this.p.plain(`${key}.weight`, [outC, inC, 3, 3]);
    const inputs = bias ? [x, w, this.p.plain(`${key}.bias`, [outC])] : [x, w];
    return this.g.op(
      'Conv',
      inputs,
      { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [1, 1] },
      key,
    );
  }

  relu(x: string): string {
    return this.g.op('Relu', [x]);
  }

  block(x: string, index: number): string {
    let h = this.relu(this.conv(x, this.key(index, 'conv.0'), WIDTH, WIDTH, true));
    h = this.relu(this.conv(h, this.key(index, 'conv.2'), WIDTH, WIDTH, true));
    h = this.conv(h, this.key(index, 'conv.4'), WIDTH, WIDTH, true);
    return this.relu(this.g.op('Add', [h, x]));
  }

  build(latentChannels: number): Set<string> {
    const g = this.g;
    const z = g.input('latent_sample', 'float32', ['batch', latentChannels, 'height', 'width']);
    const three = g.f32(Float32Array.of(3));
    // Clamp: tanh(x / 3) * 3 (taesd.py's Clamp module).
    let h = g.op('Mul', [g.op('Tanh', [g.op('Div', [z, three])]), three]);
    h = this.relu(this.conv(h, this.key(1), latentChannels, WIDTH, true));
    for (let i = 3; i <= 18; i++) {
      if (BLOCKS.includes(i)) h = this.block(h, i);
      else if (UPSAMPLES.includes(i)) {
        h = g.op(
          'Resize',
          [h, '', g.f32(Float32Array.of(1, 1, 2, 2))],
          { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' },
          'upsample',
        );
        h = this.conv(h, this.key(i + 1), WIDTH, WIDTH, false);
        i++; // the conv after it
      }
    }
    h = this.conv(h, this.key(19), WIDTH, 3, true);
    // [0, 1] -> [-1, 1], as the VAE decoder's `sample`.
    h = g.op('Sub', [g.op('Mul', [h, g.f32(Float32Array.of(2))]), g.f32(Float32Array.of(1))]);
    g.output(h, 'sample', 'float32', ['batch', 3, 'image_height', 'image_width']);
    return this.p.consumed;
  }
}

/**
 * Builds the TAESD decoder graph into `g` from a taesd_decoder / taesdxl_decoder file; returns
 * the keys it consumed. Throws an EngineError naming the file when it is not a TAESD decoder.
 */
export function buildTaesdDecoder(g: Graph, source: TensorSource): Set<string> {
  const latentChannels = taesdLatentChannels(source);
  return new TaesdEmitter(g, source, taesdNaming(source)!).build(latentChannels);
}
