// Pure parts of the model manager (issue 13): what a Hub search result loads as, what a single
// file's header says it is, and which folders a remove may move (symlinks included).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { FileHeader } from '../../src/main/adapters/header';
import { fileKindOf } from '../../src/main/downloads/file-kind';
import { isOwnedModelFolder } from '../../src/main/downloads/model-trash';
import { searchHitOf } from '../../src/main/downloads/search';

const hubFiles = {
  fileUrl: (repo: string, rev: string, file: string) => `H/${repo}/${rev}/${file}`,
};
const result = (siblings: string[]) => ({
  id: 'o/r',
  downloads: 5,
  likes: 2,
  tags: [],
  pipelineTag: null,
  lastModified: null,
  siblings,
});

describe('search results', () => {
  it('load as they are only with model_index.json beside unet/model.onnx', () => {
    const onnx = searchHitOf(
      result(['model_index.json', 'unet/model.onnx', 'v1-5.safetensors']),
      hubFiles,
    );
    expect(onnx).toMatchObject({ layout: 'onnx', checkpoints: [] });
    expect(searchHitOf(result(['unet/model.onnx']), hubFiles).layout).toBe('unknown');
    expect(searchHitOf(result(['model_index.json', 'unet/model.onnx_data']), hubFiles).layout).toBe(
      'unknown',
    );
  });

  it('list top-level checkpoints with their URLs at main, not the per-part weights of diffusers folders', () => {
    const hit = searchHitOf(
      result(['a.safetensors', 'b.CKPT', 'unet/diffusion_pytorch_model.safetensors', 'x.bin']),
      hubFiles,
    );
    expect(hit.layout).toBe('checkpoint');
    expect(hit.checkpoints).toEqual([
      { file: 'a.safetensors', url: 'H/o/r/main/a.safetensors' },
      { file: 'b.CKPT', url: 'H/o/r/main/b.CKPT' },
    ]);
  });
});

function header(
  tensors: Record<string, number[]>,
  metadata: Record<string, string> = {},
): FileHeader {
  return {
    tensors: new Map(Object.entries(tensors).map(([k, shape]) => [k, { dtype: 'F16', shape }])),
    metadata,
    dataOffset: null,
  };
}

describe('the kind of a downloaded file, from its header', () => {
  it('tells checkpoints, LoRAs (kohya, PEFT, LyCORIS), VAEs (ldm, diffusers), embeddings and ControlNets apart', () => {
    expect(
      fileKindOf(header({ 'model.diffusion_model.input_blocks.0.0.weight': [320, 4, 3, 3] }), 'x')
        .kind,
    ).toBe('checkpoint');
    for (const key of [
      'lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight',
      'unet.down_blocks.0.attentions.0.to_q.lora_A.weight',
      'lora_te_text_model_encoder_layers_0_mlp_fc1.hada_w1_a',
    ])
      expect(fileKindOf(header({ [key]: [4, 8] }), 'x').kind, key).toBe('lora');
    expect(
      fileKindOf(
        header({
          'first_stage_model.encoder.conv_in.weight': [128, 3, 3, 3],
          'first_stage_model.decoder.conv_out.weight': [3, 128, 3, 3],
        }),
        'x',
      ).kind,
    ).toBe('vae');
    expect(
      fileKindOf(
        header({
          'encoder.down_blocks.0.resnets.0.conv1.weight': [1],
          'decoder.up_blocks.0.resnets.0.conv1.weight': [1],
        }),
        'x',
      ).kind,
    ).toBe('vae');
    expect(fileKindOf(header({ emb_params: [4, 768] }), 'x').kind).toBe('embedding');
    expect(fileKindOf(header({ 'string_to_param.*': [2, 1024] }), 'x').kind).toBe('embedding');
    expect(fileKindOf(header({ clip_l: [2, 768], clip_g: [2, 1280] }), 'x').kind).toBe('embedding');
    // diffusers' learned_embeds.bin: one token of a known text width.
    expect(fileKindOf(header({ '<cat-toy>': [768] }), 'x').kind).toBe('embedding');
    // ControlNets in ldm naming (with and without `control_model.`) and in diffusers' naming.
    for (const key of [
      'control_model.input_hint_block.0.weight',
      'input_hint_block.0.weight',
      'controlnet_cond_embedding.conv_in.weight',
    ])
      expect(fileKindOf(header({ [key]: [16, 3, 3, 3] }), 'x').kind, key).toBe('controlnet');
  });

  it('says in a sentence what a file it cannot use is', () => {
    expect(
      fileKindOf(header({ 'double_blocks.0.img_attn.qkv.weight': [4, 4] }), 'flux.safetensors'),
    ).toEqual({
      kind: null,
      problem:
        'flux.safetensors is a Flux model, not a checkpoint, LoRA, VAE, embedding or ControlNet, so the studio cannot use it.',
    });
    expect(fileKindOf(header({ '<odd>': [7] }), 'odd.bin')).toEqual({
      kind: null,
      problem:
        'odd.bin is not a diffusion model we recognise (it has no model.diffusion_model.* weights), not a checkpoint, LoRA, VAE, embedding or ControlNet, so the studio cannot use it.',
    });
    expect(fileKindOf(header({}), 'empty.safetensors')).toEqual({
      kind: null,
      problem:
        'empty.safetensors holds no tensors; it is not a checkpoint, LoRA, VAE, embedding or ControlNet, so the studio cannot use it.',
    });
  });
});

describe('the folders a remove may move', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  it('are real folders strictly inside the models folder, links resolved on both sides', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-owned-'));
    dirs.push(root);
    const models = path.join(root, 'models');
    const outside = path.join(root, 'elsewhere');
    fs.mkdirSync(path.join(models, 'mine'), { recursive: true });
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(models, 'file.onnx'), '');
    fs.symlinkSync(outside, path.join(models, 'link'), 'dir');
    fs.symlinkSync(path.join(models, 'mine'), path.join(outside, 'back'), 'dir');

    expect(isOwnedModelFolder(models, path.join(models, 'mine'))).toBe(true);
    expect(isOwnedModelFolder(models, models)).toBe(false);
    expect(isOwnedModelFolder(models, outside)).toBe(false);
    expect(isOwnedModelFolder(models, path.join(models, 'link'))).toBe(false);
    expect(isOwnedModelFolder(models, path.join(models, 'file.onnx'))).toBe(false);
    expect(isOwnedModelFolder(models, path.join(models, 'missing'))).toBe(false);
    expect(isOwnedModelFolder(models, path.join(models, '..', 'elsewhere'))).toBe(false);
    // A path outside that links back in is not named inside: refused too.
    expect(isOwnedModelFolder(models, path.join(outside, 'back'))).toBe(false);
  });
});
