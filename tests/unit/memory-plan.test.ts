// The memory plan (src/engine/pipelines/memory.ts) knows whether a session's attention is fused:
// it reads LoadedModel.attention, counted from the graph the session runs (countAttention in
// attention-rewrite.ts). Checked against the peaks `npm run bench:memory` measured (README
// "Performance"), and for what it changes: a fused UNet is not tiled where an exported one is.
import { describe, expect, test } from 'vitest';
import { encodeModel, type NodeSpec } from '../../src/engine/convert/onnx/proto';
import type { LoadedModel } from '../../src/engine/models';
import { type AttentionCount, countAttention } from '../../src/engine/models/attention-rewrite';
import {
  DECODE_CAP_BYTES,
  SPARE_CAP_BYTES,
  decodeGrid,
  generationBudgetBytes,
  materialisesAttention,
  textEncodersInTheWay,
  planMemory,
  unetCallBytes,
  vaeCallBytes,
} from '../../src/engine/pipelines/memory';

const GiB = 2 ** 30;

function graph(nodes: NodeSpec[]): Uint8Array {
  return encodeModel({
    irVersion: 8,
    opsets: [
      { domain: '', version: 17 },
      { domain: 'com.microsoft', version: 1 },
    ],
    producerName: 'test',
    producerVersion: '1',
    graphName: 'g',
    nodes,
    initializers: [],
    inputs: [{ name: 'q', dtype: 'float32', dims: [1, 4, 8] }],
    outputs: [{ name: 'o', dtype: 'float32', dims: [1, 4, 8] }],
  });
}

const mha = (name: string, inputs: string[]): NodeSpec => ({
  opType: 'MultiHeadAttention',
  domain: 'com.microsoft',
  name,
  inputs,
  outputs: [name],
  attrs: { num_heads: 2 },
});

describe('countAttention', () => {
  test('Softmax and masked MultiHeadAttention hold scores; q, k, v (and bias) run fused', () => {
    const count = countAttention(
      graph([
        { opType: 'Softmax', name: 's', inputs: ['q'], outputs: ['s'], attrs: { axis: -1 } },
        mha('plain', ['q', 'q', 'q']),
        mha('biased', ['q', 'q', 'q', 'b']),
        mha('masked', ['q', 'q', 'q', '', 'mask']),
        mha('past', ['q', 'q', 'q', '', '', '', 'pk', 'pv']),
        // Only ONNX's own Softmax is counted, not another domain's op of that name.
        { opType: 'Softmax', domain: 'custom', name: 'c', inputs: ['q'], outputs: ['c'] },
      ]),
    );
    expect(count).toEqual({ fused: 2, materialised: 3 });
  });

  test('a graph without attention counts none; bytes that are not a model count as unknown', () => {
    expect(
      countAttention(graph([{ opType: 'Relu', name: 'r', inputs: ['q'], outputs: ['o'] }])),
    ).toEqual({ fused: 0, materialised: 0 });
    expect(countAttention(Uint8Array.from([0xff, 0xff, 0xff]))).toBeNull();
  });
});

/**
 * The parts of a loaded SD-1.5 folder the plan reads: the UNet's weight bytes (860 M fp32
 * parameters), its conv_in (320 channels), the decoder's bytes, the family and each session's
 * attention.
 */
function sd15(attention: Partial<Record<'unet' | 'vae_decoder', AttentionCount | null>>) {
  return {
    info: {
      components: {
        unet: { bytes: 3.44e9, header: { convInWeightDims: [320, 4, 3, 3] } },
        vae_decoder: { bytes: 198e6, header: { convInWeightDims: null } },
      },
    },
    signatures: { unet: { inputs: [{ name: 'sample', type: 'float32', shape: [] }], outputs: [] } },
    family: { family: 'sd1', latentScale: 8 },
    decoderName: 'vae_decoder',
    attention,
  } as unknown as LoadedModel;
}

/** A converted SDXL folder: fp16 weights (2.57 G UNet parameters) with float32 I/O. */
function sdxl() {
  return {
    info: {
      components: {
        unet: { bytes: 5.14e9, header: { convInWeightDims: [320, 4, 3, 3] } },
        vae_decoder: { bytes: 99e6, header: { convInWeightDims: [512, 4, 3, 3] } },
      },
    },
    signatures: { unet: { inputs: [{ name: 'sample', type: 'float32', shape: [] }], outputs: [] } },
    family: { family: 'sdxl', latentScale: 8 },
    decoderName: 'vae_decoder',
    attention: { unet: fused, vae_decoder: { fused: 1, materialised: 0 } },
  } as unknown as LoadedModel;
}

const fused: AttentionCount = { fused: 32, materialised: 0 };
const exported: AttentionCount = { fused: 0, materialised: 32 };

describe('memory plan: fused or materialised attention', () => {
  test('unknown or partly exported attention is planned as materialised', () => {
    expect(materialisesAttention(sd15({}), 'unet')).toBe(true);
    expect(materialisesAttention(sd15({ unet: null }), 'unet')).toBe(true);
    expect(materialisesAttention(sd15({ unet: { fused: 31, materialised: 1 } }), 'unet')).toBe(
      true,
    );
    expect(materialisesAttention(sd15({ unet: fused }), 'unet')).toBe(false);
  });

  test('the UNet estimates are near the peaks measured at 512x512 (CFG rows 2, fp32)', () => {
    // bench:memory, SD-1.5-shaped UNet: 0.45 GiB over the loaded session rewritten, 4.38 GiB
    // exported (README "Performance").
    const f = unetCallBytes(sd15({ unet: fused }), 2, 64, 64) / GiB;
    const m = unetCallBytes(sd15({ unet: exported }), 2, 64, 64) / GiB;
    expect(f).toBeGreaterThan(0.45);
    expect(f).toBeLessThan(0.45 * 1.5);
    expect(m).toBeGreaterThan(4.38);
    expect(m).toBeLessThan(4.38 * 1.25);
  });

  test('a fused UNet and decoder run whole at 1024x1024 under a budget that tiles exported ones', () => {
    const input = { rows: 2, batch: 1, h: 128, w: 128, tilePx: 0, budgetBytes: 5 * GiB };
    const plainPlan = planMemory(sd15({ unet: fused, vae_decoder: fused }), input);
    expect(plainPlan.unetGrid).toBeNull();
    expect(plainPlan.vaeGrid).toBeNull();
    expect(plainPlan.reason).toMatch(/^UNet whole/);
    const tiled = planMemory(sd15({ unet: exported, vae_decoder: exported }), input);
    expect(tiled.unetGrid).not.toBeNull();
    expect(tiled.vaeGrid).not.toBeNull();
    expect(tiled.unetTileBytes).toBeLessThanOrEqual(input.budgetBytes);
    // The decoder's mid-block attention over 128 x 128 latents is what its exported form holds.
    const model = sd15({ vae_decoder: fused });
    expect(vaeCallBytes(sd15({ vae_decoder: exported }), 128, 128)).toBeGreaterThan(
      vaeCallBytes(model, 128, 128) + 128 ** 4 * 4 * 0.99,
    );
  });
});

describe('memory plan: SDXL at 1024x1024', () => {
  test('the estimates are near what one generation measured (bench:memory --generate)', () => {
    // Measured 2026-12-06: the UNet call (CFG rows 2) 0.71 GiB over the loaded sessions, the
    // decode 4.08 GiB. The UNet's estimate may be higher, never lower.
    const unet = unetCallBytes(sdxl(), 2, 128, 128) / GiB;
    expect(unet).toBeGreaterThan(0.71);
    expect(unet).toBeLessThan(0.71 * 1.5);
    const vae = vaeCallBytes(sdxl(), 128, 128) / GiB;
    expect(vae).toBeGreaterThan(4.08 * 0.9);
    expect(vae).toBeLessThan(4.08 * 1.2);
  });

  test('the text encoders give way when the budget is short; a decode over 1 GiB is tiled', () => {
    expect(textEncodersInTheWay(sdxl(), 2, 128, 128, 8 * GiB)).toBe(false);
    expect(textEncodersInTheWay(sdxl(), 2, 128, 128, 2 * GiB)).toBe(true);
    // Whatever the budget (DECODE_CAP_BYTES): 9 tiles of 448 px decoded as fast as the whole
    // image with a fifth of its memory.
    expect(DECODE_CAP_BYTES).toBe(GiB);
    expect(decodeGrid(sdxl(), 128, 128, 8 * GiB)!.tiles).toHaveLength(9);
    expect(decodeGrid(sdxl(), 64, 64, 8 * GiB)).toBeNull();
    const grid = decodeGrid(sdxl(), 128, 128, 1 * GiB)!;
    expect(grid.tiles.length).toBeGreaterThan(1);
    const side = Math.max(grid.tiles[0].h, grid.tiles[0].w);
    expect(vaeCallBytes(sdxl(), side, side)).toBeLessThanOrEqual(GiB);
    // Every latent pixel is covered.
    const covered = new Uint8Array(128 * 128);
    for (const t of grid.tiles)
      for (let y = t.y; y < t.y + t.h; y++)
        for (let x = t.x; x < t.x + t.w; x++) covered[y * 128 + x] = 1;
    expect(covered.every((c) => c === 1)).toBe(true);
    // Not even the smallest tile fits: decoded whole, as without a plan.
    expect(decodeGrid(sdxl(), 128, 128, 1024)).toBeNull();
  });
});

describe('memory plan: what memory to spare means for a generation', () => {
  test('without a budget a generation plans with 60% of the free memory, at most 2 GiB', () => {
    expect(SPARE_CAP_BYTES).toBe(2 * GiB);
    expect(generationBudgetBytes(undefined, 32 * GiB)).toBe(2 * GiB);
    expect(generationBudgetBytes(null, 2 * GiB)).toBe(Math.floor(2 * GiB * 0.6));
    // The user's budget is taken as given, above the cap too.
    expect(generationBudgetBytes(8000, 32 * GiB)).toBe(8000 * 2 ** 20);
    expect(generationBudgetBytes(0, 32 * GiB)).toBe(2 * GiB);
  });

  test('SDXL at 1024x1024 with memory to spare: encoders released, decode in tiles under 1 GiB', () => {
    // Before the caps, 60% of 32 GiB free kept the encoders and decoded whole (18.93 GiB peak).
    const budget = generationBudgetBytes(undefined, 32 * GiB);
    expect(textEncodersInTheWay(sdxl(), 2, 128, 128, budget)).toBe(true);
    const grid = decodeGrid(sdxl(), 128, 128, budget)!;
    expect(grid.tiles).toHaveLength(9);
    for (const t of grid.tiles) expect(vaeCallBytes(sdxl(), t.h, t.w)).toBeLessThanOrEqual(GiB);
  });

  test('SD 1.5 at 512x512 with memory to spare keeps its encoder and decodes whole', () => {
    const model = sd15({ unet: fused, vae_decoder: { fused: 1, materialised: 0 } });
    const budget = generationBudgetBytes(undefined, 32 * GiB);
    expect(textEncodersInTheWay(model, 2, 64, 64, budget)).toBe(false);
    expect(decodeGrid(model, 64, 64, budget)).toBeNull();
  });

  test('the decode takes the fewest tiles that fit, then the least work, not the largest tile', () => {
    // Under 1 GiB: tiles of 64 and of 56 both make 9 (40 makes 16, with less work); 56 decodes
    // 1.72x the latent's pixels where 64 decodes 2.25x.
    const grid = decodeGrid(sdxl(), 128, 128, GiB)!;
    const work = grid.tiles.reduce((sum, t) => sum + t.h * t.w, 0);
    expect(grid.tiles).toHaveLength(9);
    expect(grid.tiles[0]).toMatchObject({ h: 56, w: 56 });
    expect(work / 128 ** 2).toBeCloseTo(1.7227, 3);
    expect(vaeCallBytes(sdxl(), 64, 64)).toBeLessThanOrEqual(GiB);
    // Under 512 MiB: 16 tiles of 40 (320 px), 1.56x.
    const small = decodeGrid(sdxl(), 128, 128, GiB / 2)!;
    expect(small.tiles).toHaveLength(16);
    expect(small.tiles[0]).toMatchObject({ h: 40, w: 40 });
  });
});
