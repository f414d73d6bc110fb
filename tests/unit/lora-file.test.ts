// LoRA files: module names of every naming, formats that are not LoRA, and where an ldm-named
// initializer sits in diffusers' module tree.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type LoraModule, openLoraFile, parseModuleKey } from '../../src/engine/adapters/lora-file';
import { fits, gatherFactors } from '../../src/engine/adapters/lora-merge';
import {
  type PatchTarget,
  type WeightLayout,
  diffusersUnetToLdm,
  indexTargets,
  ldmUnetToDiffusers,
  textModuleOf,
  unetLayoutFromDiffusers,
  unetLayoutFromLdmKeys,
} from '../../src/engine/adapters/lora-names';
import type { TensorInfo } from '../../src/engine/convert/types';
import type { InitializerEntry } from '../../src/engine/models/onnx-file';
import { type TensorSpec, writeSafetensors } from '../fixtures/checkpoint';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'lora-file-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
async function file(specs: TensorSpec[]): Promise<string> {
  const f = path.join(tmp, `f${n++}.safetensors`);
  await writeSafetensors(f, specs, (t) => new Uint8Array(t.shape.reduce((a, b) => a * b, 1) * 4));
  return f;
}
const pair = (key: string, down: string, up: string, r = 2, out = 4, inF = 4): TensorSpec[] => [
  { name: `${key}.${down}`, dtype: 'F32', shape: [r, inF] },
  { name: `${key}.${up}`, dtype: 'F32', shape: [out, r] },
];

describe('module names', () => {
  it.each([
    ['lora_unet_down_blocks_0_attentions_0_proj_in', 'unet', 'down_blocks_0_attentions_0_proj_in'],
    ['lora_te_text_model_encoder_layers_0_mlp_fc1', 'te1', 'text_model_encoder_layers_0_mlp_fc1'],
    ['lora_te1_text_model_encoder_layers_0_mlp_fc1', 'te1', 'text_model_encoder_layers_0_mlp_fc1'],
    [
      'lora_te2_text_model_encoder_layers_3_self_attn_k_proj',
      'te2',
      'text_model_encoder_layers_3_self_attn_k_proj',
    ],
    [
      'unet.up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0',
      'unet',
      'up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_out_0',
    ],
    [
      'unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora',
      'unet',
      'mid_block_attentions_0_transformer_blocks_0_attn1_to_q',
    ],
    [
      'unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora',
      'unet',
      'mid_block_attentions_0_transformer_blocks_0_attn1_to_out_0',
    ],
    [
      'text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj',
      'te2',
      'text_model_encoder_layers_0_self_attn_q_proj',
    ],
    [
      'base_model.model.down_blocks.1.attentions.0.proj_out',
      'unet',
      'down_blocks_1_attentions_0_proj_out',
    ],
  ])('%s', (key, target, flat) => {
    expect(parseModuleKey(key)).toEqual({ target, flat });
  });

  it('an unknown prefix is not a module', () => {
    expect(parseModuleKey('model.diffusion_model.x')).toBeNull();
  });
});

describe('reading LoRA files', () => {
  it('groups kohya, PEFT and diffusers-processor tensors; strays are kept for the report', async () => {
    const f = await file([
      ...pair('lora_unet_a_to_q', 'lora_down.weight', 'lora_up.weight'),
      { name: 'lora_unet_a_to_q.alpha', dtype: 'F32', shape: [] },
      ...pair('unet.b.to_k', 'lora_A.weight', 'lora_B.weight'),
      ...pair('unet.c.attn1.processor.to_v_lora', 'down.weight', 'up.weight'),
      ...pair(
        'text_encoder.text_model.encoder.layers.0.self_attn.q_proj',
        'lora_linear_layer.down.weight',
        'lora_linear_layer.up.weight',
      ),
      { name: 'lora_unet_lonely.lora_down.weight', dtype: 'F32', shape: [2, 4] },
      { name: 'bundle_emb.tok.string_to_param.*', dtype: 'F32', shape: [1, 4] },
    ]);
    const lora = await openLoraFile(f);
    try {
      expect(lora.modules.map((m) => [m.target, m.flat, m.alphaKey !== null])).toEqual([
        ['unet', 'a_to_q', true],
        ['unet', 'b_to_k', false],
        ['unet', 'c_attn1_to_v', false],
        ['te1', 'text_model_encoder_layers_0_self_attn_q_proj', false],
      ]);
      expect(lora.tensorCount).toBe(11);
      expect(lora.strayKeys.sort()).toEqual([
        'bundle_emb.tok.string_to_param.*',
        'lora_unet_lonely.lora_down.weight',
      ]);
    } finally {
      await lora.source.close();
    }
  });

  it.each([
    ['lora_unet_x.hada_w1_a', /is a LoHa \(LyCORIS Hadamard-product\) network/],
    ['lora_unet_x.lokr_w1', /is a LoKr \(LyCORIS Kronecker-product\) network/],
    ['lora_unet_x.dora_scale', /is a DoRA \(weight-decomposed LoRA\)/],
    ['lora_unet_x.on_input', /is an \(IA\)³ network/],
    ['lora_unet_x.oft_blocks', /is an OFT \(orthogonal fine-tuning\) network/],
    ['lora_unet_x.diff', /is a LyCORIS full \(difference\) network/],
  ])('%s: one sentence naming the format', async (name, message) => {
    const f = await file([
      ...pair('lora_unet_y', 'lora_down.weight', 'lora_up.weight'),
      { name, dtype: 'F32', shape: [2, 2] },
    ]);
    await expect(openLoraFile(f)).rejects.toThrow(message);
  });

  it('a file without LoRA modules, and factors that do not fit, are refused', async () => {
    const none = await file([
      { name: 'model.diffusion_model.out.2.weight', dtype: 'F32', shape: [4] },
    ]);
    await expect(openLoraFile(none)).rejects.toThrow(/holds no LoRA modules/);
    const bad = await file(
      pair('lora_unet_z', 'lora_down.weight', 'lora_up.weight', 2, 4, 4).map((t, i) =>
        i === 1 ? { ...t, shape: [4, 3] } : t,
      ),
    );
    await expect(openLoraFile(bad)).rejects.toThrow(/factors of "lora_unet_z" do not fit together/);
  });
});

const SD15_PAIRS: [string, string][] = [
  ['input_blocks.0.0', 'conv_in'],
  [
    'input_blocks.1.1.transformer_blocks.0.attn1.to_q',
    'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q',
  ],
  ['input_blocks.2.0.in_layers.2', 'down_blocks.0.resnets.1.conv1'],
  ['input_blocks.3.0.op', 'down_blocks.0.downsamplers.0.conv'],
  ['input_blocks.4.0.skip_connection', 'down_blocks.1.resnets.0.conv_shortcut'],
  ['input_blocks.8.1.proj_out', 'down_blocks.2.attentions.1.proj_out'],
  ['input_blocks.11.0.emb_layers.1', 'down_blocks.3.resnets.1.time_emb_proj'],
  ['middle_block.1.proj_in', 'mid_block.attentions.0.proj_in'],
  ['middle_block.2.out_layers.3', 'mid_block.resnets.1.conv2'],
  ['output_blocks.2.1.conv', 'up_blocks.0.upsamplers.0.conv'],
  [
    'output_blocks.3.1.transformer_blocks.0.ff.net.2',
    'up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2',
  ],
  ['output_blocks.5.2.conv', 'up_blocks.1.upsamplers.0.conv'],
  ['output_blocks.11.1.proj_in', 'up_blocks.3.attentions.2.proj_in'],
  ['time_embed.0', 'time_embedding.linear_1'],
  ['out.2', 'conv_out'],
];

describe('ldm names <-> diffusers module paths (SD 1.5: 2 res blocks, 4 levels)', () => {
  const layout = { resBlocks: 2, levels: 4 };
  it.each(SD15_PAIRS)('%s -> %s', (ldm, diffusers) => {
    expect(ldmUnetToDiffusers(ldm, layout)).toBe(diffusers);
  });

  it.each(SD15_PAIRS)('back: %s <- %s', (ldm, diffusers) => {
    const d = { resBlocks: 2, levels: 4, upWithAttention: new Set([1, 2, 3]) };
    expect(diffusersUnetToLdm(diffusers, d)).toBe(ldm);
  });

  it('SDXL: kohya ldm names reach a diffusers export (no attention at level 0)', () => {
    const modules = [
      'down_blocks.0.resnets.1.conv1',
      'down_blocks.1.attentions.0.proj_in',
      'up_blocks.0.attentions.2.proj_out',
      'up_blocks.2.resnets.2.conv2',
    ];
    const layout = unetLayoutFromDiffusers(modules)!;
    expect(layout).toEqual({ resBlocks: 2, levels: 3, upWithAttention: new Set([0]) });
    layout.upWithAttention.add(1);
    expect(
      diffusersUnetToLdm('down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q', layout),
    ).toBe('input_blocks.4.1.transformer_blocks.0.attn1.to_q');
    expect(diffusersUnetToLdm('up_blocks.1.upsamplers.0.conv', layout)).toBe(
      'output_blocks.5.2.conv',
    );
    expect(diffusersUnetToLdm('mid_block.attentions.0.transformer_blocks.9.ff.net.2', layout)).toBe(
      'middle_block.1.transformer_blocks.9.ff.net.2',
    );
  });

  it('the layout is read from the keys', () => {
    const keys = [
      'input_blocks.3.0.op',
      'input_blocks.11.0.in_layers.2',
      'output_blocks.11.0.in_layers.2',
    ];
    expect(unetLayoutFromLdmKeys(keys)).toEqual({ resBlocks: 2, levels: 4 });
  });

  it('OpenCLIP fused in_proj rows are q, k, v', () => {
    const pre = 'conditioner.embedders.1.model.transformer.resblocks.5.attn.in_proj_weight';
    expect(textModuleOf(`${pre}[1280:2560]`)).toBe('text_model.encoder.layers.5.self_attn.k_proj');
    expect(textModuleOf('cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.weight')).toBe(
      'text_model.encoder.layers.0.mlp.fc1',
    );
  });

  it('a converted UNet is indexed by both names; Gemm with transB keeps [out, in]', () => {
    const entry = (
      name: string,
      dims: number[],
      op = 'MatMul',
      transB?: number,
    ): InitializerEntry => ({
      name,
      dims,
      dtype: 'float16',
      data: { kind: 'external', location: 'model.onnx_data', offset: 0, length: 0 },
      consumers: [{ node: '', opType: op, input: 1, ...(transB === undefined ? {} : { transB }) }],
    });
    const pre = 'model.diffusion_model.';
    const targets = indexTargets(
      [
        entry(`${pre}input_blocks.3.0.op.weight`, [320, 320, 3, 3], 'Conv'),
        entry(`${pre}input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight`, [768, 640]),
        entry(`${pre}output_blocks.11.0.in_layers.2.weight`, [320, 640, 3, 3], 'Conv'),
      ],
      'unet',
    );
    const t = targets.get('down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k')!;
    expect(t.layout).toBe('in-out');
    expect(t.torchShape).toEqual([640, 768]);
    expect(targets.get('input_blocks_4_1_transformer_blocks_0_attn2_to_k')).toEqual(t);
    const gemm = indexTargets(
      [entry('time_embedding.linear_1.weight', [1280, 320], 'Gemm', 1)],
      'unet',
    );
    expect(gemm.get('time_embedding_linear_1')!).toMatchObject({
      layout: 'out-in',
      torchShape: [1280, 320],
    });
  });
});

describe('factors in the target layout', () => {
  const info = (name: string, shape: number[]): TensorInfo => ({
    name,
    dtype: 'F32',
    shape,
    byteLength: shape.reduce((a, b) => a * b, 1) * 4,
  });
  const module = (down: number[], up: number[], mid?: number[]): LoraModule => ({
    key: 'm',
    target: 'unet',
    flat: 'm',
    down: info('d', down),
    up: info('u', up),
    mid: mid ? info('mid', mid) : null,
    alphaKey: 'a',
    tensorCount: 3,
  });
  const target = (dims: number[], layout: WeightLayout): PatchTarget => ({
    entry: {
      name: 'w',
      dims,
      dtype: 'float32',
      data: { kind: 'inline', offset: 0, length: 0 },
      consumers: [],
    },
    layout,
    torchShape: layout === 'in-out' ? [dims[1], dims[0]] : dims,
  });

  it('a Linear LoRA fits a 1x1 conv and a 1x1-conv LoRA a Linear; a 3x3 one only a 3x3 conv', () => {
    expect(fits(module([2, 8], [8, 2]), target([8, 8, 1, 1], 'conv'))).toBe(true);
    expect(fits(module([2, 8, 1, 1], [6, 2, 1, 1]), target([8, 6], 'in-out'))).toBe(true);
    expect(fits(module([2, 8, 3, 3], [6, 2, 1, 1]), target([6, 8, 3, 3], 'conv'))).toBe(true);
    expect(fits(module([2, 8, 3, 3], [6, 2, 1, 1]), target([6, 72], 'out-in'))).toBe(false);
    expect(fits(module([2, 8], [6, 2]), target([6, 8], 'in-out'))).toBe(false); // [out, in] vs [in, out]
  });

  it('two LoRAs on one MatMul weight: [in, out] = sum of s (up . down)^T, ranks concatenated', async () => {
    const values: Record<string, Float32Array> = {
      d: Float32Array.of(1, 2, 3, 4, 5, 6), // [2, 3]
      u: Float32Array.of(1, 0, 0, 1, 1, 1, 2, -1), // [4, 2]
      a: Float32Array.of(1), // alpha 1, rank 2: scale 0.5
    };
    const source = {
      path: 'x',
      list: () => [],
      info: () => undefined,
      readFloat32: async (n: string) => values[n]!,
      close: async () => {},
    };
    const m = module([2, 3], [4, 2]);
    const t = target([3, 4], 'in-out');
    const f = await gatherFactors(t, [
      { source, module: m, weight: 2 },
      { source, module: m, weight: -1 },
    ]);
    expect([f.m, f.n, f.rank]).toEqual([3, 4, 4]);
    const product = new Float32Array(f.m * f.n);
    for (let i = 0; i < f.m; i++)
      for (let j = 0; j < f.n; j++)
        for (let r = 0; r < f.rank; r++)
          product[i * f.n + j] += f.a[i * f.rank + r] * f.b[r * f.n + j];
    // up . down = [[1,2,3],[4,5,6],[5,7,9],[-2,-1,0]]; total scale (2 - 1) * 0.5; transposed.
    const ud = [
      [1, 2, 3],
      [4, 5, 6],
      [5, 7, 9],
      [-2, -1, 0],
    ];
    const want = Array.from({ length: 12 }, (_, k) => 0.5 * ud[k % 4][Math.floor(k / 4)]);
    expect(Array.from(product)).toEqual(want);
  });
});
