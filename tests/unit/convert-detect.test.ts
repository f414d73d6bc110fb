import { beforeAll, describe, expect, it } from 'vitest';
import { detectArchitecture } from '../../src/engine/convert/detect';
import type { TensorInfo } from '../../src/engine/convert/types';
import { type KeySet, readKeySet } from '../fixtures/checkpoint';

const sets: Record<string, KeySet> = {};
beforeAll(async () => {
  for (const name of ['sd15', 'sd21', 'sdxl'] as const) sets[name] = await readKeySet(name);
});

function tensors(
  name: string,
  edit: (entries: Array<[string, number[]]>) => Array<[string, number[]]> = (e) => e,
): TensorInfo[] {
  return edit(sets[name]!.tensors.map(([k, s]) => [k, [...s]])).map(([k, shape]) => ({
    name: k,
    dtype: 'F16',
    shape,
    byteLength: shape.reduce((a, b) => a * b, 1) * 2,
  }));
}

const withInChannels =
  (n: number) =>
  (entries: Array<[string, number[]]>): Array<[string, number[]]> =>
    entries.map(([k, s]) =>
      k === 'model.diffusion_model.input_blocks.0.0.weight' ? [k, [s[0]!, n, 3, 3]] : [k, s],
    );

describe('checkpoint architecture detection on the full-size key sets', () => {
  it('SD 1.5 (CompVis v1-inference.yaml)', () => {
    const arch = detectArchitecture(tensors('sd15'), 'sd15.safetensors');
    expect(arch).toMatchObject({
      family: 'sd1',
      inpainting: false,
      prediction: 'epsilon',
      sampleSize: 512,
      unetPrefix: 'model.diffusion_model.',
      vaePrefix: 'first_stage_model.',
      unet: {
        inChannels: 4,
        outChannels: 4,
        modelChannels: 320,
        channelMult: [1, 2, 4, 4],
        numResBlocks: 2,
        attentionLevels: [true, true, true, false],
        transformerDepth: [1, 1, 1, 0],
        numHeads: 8,
        headChannels: null,
        contextDim: 768,
        linearProjection: false,
        admInChannels: null,
      },
      vae: {
        inChannels: 3,
        outChannels: 3,
        ch: 128,
        chMult: [1, 2, 4, 4],
        numResBlocks: 2,
        zChannels: 4,
        embedDim: 4,
        scalingFactor: 0.18215,
      },
    });
    expect(arch.textEncoders).toEqual([
      {
        naming: 'hf',
        prefix: 'cond_stage_model.transformer.text_model.',
        width: 768,
        layers: 12,
        heads: 12,
        vocabSize: 49408,
        maxPositions: 77,
        activation: 'quick_gelu',
        projectionDim: null,
      },
    ]);
    expect(arch.reasons.join('\n')).toMatch(/CLIP ViT-L.*SD 1\.x/);
  });

  it('SD 1.x whose CLIP keys lack text_model.', () => {
    const arch = detectArchitecture(
      tensors('sd15', (e) =>
        e.map(([k, s]) => [
          k.replace('cond_stage_model.transformer.text_model.', 'cond_stage_model.transformer.'),
          s,
        ]),
      ),
      'old.ckpt',
    );
    expect(arch.family).toBe('sd1');
    expect(arch.textEncoders[0]!.prefix).toBe('cond_stage_model.transformer.');
    expect(arch.reasons.join(' ')).toContain('without text_model.');
  });

  it('SD 2.1 (768-v): v or epsilon decided as diffusers does, else asked', () => {
    const plain = detectArchitecture(tensors('sd21'), 'sd21.safetensors');
    expect(plain).toMatchObject({
      family: 'sd2',
      prediction: null,
      sampleSize: 768,
      unet: {
        channelMult: [1, 2, 4, 4],
        attentionLevels: [true, true, true, false],
        numHeads: null,
        headChannels: 64,
        contextDim: 1024,
        linearProjection: true,
      },
    });
    expect(plain.textEncoders).toEqual([
      {
        naming: 'openclip',
        prefix: 'cond_stage_model.model.',
        width: 1024,
        layers: 24,
        heads: 16,
        vocabSize: 49408,
        maxPositions: 77,
        activation: 'gelu',
        projectionDim: null,
      },
    ]);
    const base = detectArchitecture(tensors('sd21'), 'sd2-base.ckpt', { globalStep: 875000 });
    expect([base.prediction, base.sampleSize]).toEqual(['epsilon', 512]);
    const v = detectArchitecture(tensors('sd21'), 'sd21.ckpt', { globalStep: 110000 });
    expect([v.prediction, v.sampleSize]).toEqual(['v_prediction', 768]);
    const marked = detectArchitecture(
      tensors('sd21', (e) => [...e, ['v_pred', []]]),
      'sd21-marked.safetensors',
    );
    expect(marked.prediction).toBe('v_prediction');
    const declared = detectArchitecture(tensors('sd21'), 'sd21.safetensors', {
      metadata: { 'modelspec.prediction_type': 'epsilon' },
    });
    expect([declared.prediction, declared.sampleSize]).toEqual(['epsilon', 512]);
  });

  it('SDXL base (generative-models sd_xl_base.yaml)', () => {
    const arch = detectArchitecture(tensors('sdxl'), 'sdxl.safetensors');
    expect(arch).toMatchObject({
      family: 'sdxl',
      inpainting: false,
      prediction: 'epsilon',
      sampleSize: 1024,
      unet: {
        channelMult: [1, 2, 4],
        numResBlocks: 2,
        attentionLevels: [false, true, true],
        transformerDepth: [0, 2, 10],
        headChannels: 64,
        contextDim: 2048,
        linearProjection: true,
        admInChannels: 2816,
      },
      vae: { scalingFactor: 0.13025, chMult: [1, 2, 4, 4] },
    });
    expect(
      arch.textEncoders.map((t) => [
        t.naming,
        t.prefix,
        t.width,
        t.layers,
        t.heads,
        t.projectionDim,
      ]),
    ).toEqual([
      ['hf', 'conditioner.embedders.0.transformer.text_model.', 768, 12, 12, null],
      ['openclip', 'conditioner.embedders.1.model.', 1280, 32, 20, 1280],
    ]);
  });

  it('the 9-channel inpainting variant of each family', () => {
    expect(detectArchitecture(tensors('sd15', withInChannels(9)), 'a')).toMatchObject({
      family: 'sd1',
      inpainting: true,
      prediction: 'epsilon',
    });
    // SD 2 inpainting is an epsilon model at 512 (stabilityai/stable-diffusion-2-inpainting).
    expect(detectArchitecture(tensors('sd21', withInChannels(9)), 'b')).toMatchObject({
      family: 'sd2',
      inpainting: true,
      prediction: 'epsilon',
      sampleSize: 512,
    });
    expect(detectArchitecture(tensors('sdxl', withInChannels(9)), 'c')).toMatchObject({
      family: 'sdxl',
      inpainting: true,
    });
  });

  it('a checkpoint without a VAE is still recognised, and says a replacement is needed', () => {
    const arch = detectArchitecture(
      tensors('sd15', (e) => e.filter(([k]) => !k.startsWith('first_stage_model.'))),
      'novae.safetensors',
    );
    expect(arch.family).toBe('sd1');
    expect(arch.reasons.join(' ')).toContain('no VAE in the file');
  });
});

/**
 * Key names of diffusers' UNet2DConditionModel (a sample of each kind of block: SD 1.x/2.x have
 * attention in the first down block, SDXL does not and adds add_embedding).
 */
function diffusersUnet(sdxl: boolean): string[] {
  const keys = [
    'conv_in.weight',
    'time_embedding.linear_1.weight',
    'down_blocks.0.resnets.0.conv1.weight',
    'down_blocks.0.downsamplers.0.conv.weight',
    'down_blocks.1.attentions.0.proj_in.weight',
    'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight',
    'mid_block.resnets.0.conv1.weight',
    'up_blocks.0.resnets.0.conv1.weight',
    'conv_norm_out.weight',
    'conv_out.weight',
  ];
  if (sdxl) return [...keys, 'add_embedding.linear_1.weight'];
  return [...keys, 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight'];
}

/** A whole diffusers pipeline's state dicts under component prefixes, as some tools save them. */
function diffusersPipeline(o: { textLayers: number; sdxl?: boolean }): string[] {
  const text = (prefix: string): string[] => [
    `${prefix}.text_model.embeddings.token_embedding.weight`,
    ...Array.from(
      { length: o.textLayers },
      (_, i) => `${prefix}.text_model.encoder.layers.${i}.self_attn.q_proj.weight`,
    ),
  ];
  return [
    ...diffusersUnet(o.sdxl ?? false).map((k) => `unet.${k}`),
    ...text('text_encoder'),
    ...(o.sdxl ? [...text('text_encoder_2'), 'text_encoder_2.text_projection.weight'] : []),
    'vae.encoder.down_blocks.0.resnets.0.conv1.weight',
    'vae.decoder.up_blocks.0.resnets.0.conv1.weight',
    'vae.quant_conv.weight',
  ];
}

describe('files that are not SD 1/2/XL checkpoints get a sentence saying what they are', () => {
  const info = (names: string[], shape: number[] = [4, 4]): TensorInfo[] =>
    names.map((name) => ({ name, dtype: 'F16', shape, byteLength: 32 }));
  const cases: Array<[string, TensorInfo[], RegExp]> = [
    [
      'LoRA (kohya)',
      info([
        'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight',
        'lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight',
      ]),
      /is a LoRA/,
    ],
    [
      'LoRA (peft)',
      info(['unet.down.0.to_q.lora_A.weight', 'unet.down.0.to_q.lora_B.weight']),
      /is a LoRA/,
    ],
    ['embedding', info(['emb_params'], [2, 768]), /textual-inversion embedding/],
    ['SDXL embedding', info(['clip_l', 'clip_g']), /textual-inversion embedding/],
    [
      'SD3',
      info(['model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight']),
      /Stable Diffusion 3/,
    ],
    ['Flux', info(['double_blocks.0.img_attn.qkv.weight']), /Flux/],
    [
      'Cascade',
      info(['clip_txt_mapper.weight', 'down_blocks.0.0.channelwise.0.weight']),
      /Stable Cascade/,
    ],
    ['ControlNet', info(['control_model.input_hint_block.0.weight']), /ControlNet/],
    ['VAE (ldm)', info(['encoder.conv_in.weight', 'decoder.conv_out.weight']), /a VAE on its own/],
    [
      'VAE (diffusers)',
      info([
        'encoder.down_blocks.0.resnets.0.conv1.weight',
        'decoder.up_blocks.0.resnets.0.conv1.weight',
      ]),
      /VAE in diffusers naming/,
    ],
    [
      'SD 1.x pipeline in diffusers naming in one file',
      info(diffusersPipeline({ textLayers: 12 })),
      /is an SD 1\.x pipeline in diffusers naming saved as one file \(unet\., text_encoder\., vae\. keys; the converter reads the original ldm naming, so use the model's single-file release, or export its diffusers folder to ONNX with `optimum-cli export onnx` and open that folder\)/,
    ],
    [
      'SD 2.x pipeline in diffusers naming in one file',
      info(diffusersPipeline({ textLayers: 23 })),
      /is an SD 2\.x pipeline in diffusers naming/,
    ],
    [
      'SDXL pipeline in diffusers naming in one file',
      info(diffusersPipeline({ textLayers: 12, sdxl: true })),
      /is an SDXL pipeline in diffusers naming saved as one file \(unet\., text_encoder\., text_encoder_2\., vae\. keys;/,
    ],
    [
      'a bare diffusers UNet (diffusion_pytorch_model.safetensors)',
      info(diffusersUnet(false)),
      /is a UNet in diffusers naming on its own \(the converter reads the original ldm naming, .*optimum-cli export onnx/,
    ],
    [
      'a bare diffusers SDXL UNet (no attention in its first down block)',
      info(diffusersUnet(true)),
      /is a UNet in diffusers naming on its own/,
    ],
    ['random', info(['foo.bar']), /not a diffusion model we recognise/],
  ];
  for (const [label, listing, pattern] of cases) {
    it(label, () => {
      expect(() => detectArchitecture(listing, 'thing.safetensors')).toThrow(pattern);
      expect(() => detectArchitecture(listing, 'thing.safetensors')).toThrow(
        /^thing\.safetensors is .*, not a Stable Diffusion 1\.x, 2\.x or SDXL checkpoint that can be converted\.$/,
      );
    });
  }

  it('the SDXL refiner and the x4 upscaler are named', () => {
    const refiner = tensors('sdxl', (e) =>
      e
        .filter(([k]) => !k.startsWith('conditioner.embedders.0.'))
        .map(([k, s]) => [k.replace('conditioner.embedders.1.', 'conditioner.embedders.0.'), s]),
    );
    expect(() => detectArchitecture(refiner, 'refiner.safetensors')).toThrow(/SDXL refiner/);
    expect(() => detectArchitecture(tensors('sd21', withInChannels(7)), 'x4.ckpt')).toThrow(
      /x4 upscaler/,
    );
  });
});
