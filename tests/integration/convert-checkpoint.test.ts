// End to end: a single-file checkpoint (the small ldm-named configurations of
// tests/fixtures/reference/convert-*.safetensors, recorded against the PyTorch references) is
// converted by convertCheckpoint into a diffusers ONNX folder, which the unchanged loader opens
// and the engine generates from. Also: cancel and a full disk leave nothing behind, a
// replacement VAE is used, and an SD 2.x file that cannot tell its prediction type is asked.
import { readFile, readdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine, detectFamily, openModelFolder } from '../../src/engine';
import {
  CONVERSION_RECORD,
  type ConvertProgress,
  convertCheckpoint,
} from '../../src/engine/convert/convert';
import { openCheckpoint } from '../../src/engine/convert/readers/index';
import { GenerationSettings } from '../../src/shared/generation';
import { encodeFloats, writeSafetensors } from '../fixtures/checkpoint';
import { FULL_VOCAB, VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';

let dir: string;
let engine: DiffusionEngine;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'convert-checkpoint-'));
  engine = new DiffusionEngine({ previewEvery: 0 });
});
afterAll(async () => {
  await engine.release();
  await rm(dir, { recursive: true, force: true });
});

async function generateFrom(modelDir: string, size: number): Promise<ArrayLike<number>> {
  const result = await engine.generate({
    modelDir,
    settings: GenerationSettings.parse({
      model: 'converted',
      prompt: 'a red house on a hill',
      seed: 3,
      sampler: 'euler',
      steps: 2,
      guidance: 5,
      width: size,
      height: size,
    }),
  });
  const image = result.images[0]!.image;
  // The small VAEs downsample less than 8x, so the picture is smaller than asked; its pixels
  // must still be a whole image and not flat.
  expect(image.data.length).toBe(image.width * image.height * image.channels);
  return image.data;
}

describe('convertCheckpoint', () => {
  it('converts an SD 1.x checkpoint into a folder the loader opens and the engine generates from', async () => {
    const { file, arch } = await smallCheckpoint(dir, 'sd1');
    const out = path.join(dir, 'sd1-model');
    const progress: ConvertProgress[] = [];
    const result = await convertCheckpoint(file, out, {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      precision: 'fp32',
      onProgress: (p) => progress.push(p),
    });
    expect(result.unusedKeys).toEqual([]);
    expect(result).toMatchObject({
      family: 'sd1',
      prediction: 'epsilon',
      precision: 'fp32',
      vae: null,
    });

    const info = { family: detectFamily(await openModelFolder(out)) };
    expect(info.family.family).toBe('sd1');
    expect(info.family.predictionType).toBe('epsilon');
    const vocab = JSON.parse(await readFile(path.join(out, 'tokenizer', 'vocab.json'), 'utf8'));
    expect(Object.keys(vocab)).toHaveLength(FULL_VOCAB);
    expect([vocab['<|startoftext|>'], vocab['<|endoftext|>'], vocab['!'], vocab['a</w>']]).toEqual([
      49406, 49407, 0, 320,
    ]);
    const special = JSON.parse(
      await readFile(path.join(out, 'tokenizer', 'special_tokens_map.json'), 'utf8'),
    );
    expect(special.pad_token.content).toBe('<|endoftext|>');
    const scheduler = JSON.parse(
      await readFile(path.join(out, 'scheduler', 'scheduler_config.json'), 'utf8'),
    );
    expect(scheduler).toMatchObject({
      beta_schedule: 'scaled_linear',
      beta_start: 0.00085,
      beta_end: 0.012,
      steps_offset: 1,
      prediction_type: 'epsilon',
    });
    const record = JSON.parse(await readFile(path.join(out, CONVERSION_RECORD), 'utf8'));
    expect(record.source).toBe(path.basename(file));

    // Progress: monotone tensors and bytes, ending with everything written.
    expect(progress.length).toBeGreaterThan(10);
    const last = progress[progress.length - 1]!;
    expect(last.phase).toBe('finishing');
    expect(last.tensorsDone).toBe(last.tensorsTotal);
    for (let i = 1; i < progress.length; i++) {
      expect(progress[i]!.tensorsDone).toBeGreaterThanOrEqual(progress[i - 1]!.tensorsDone);
    }
    expect(last.bytesDone).toBe(result.bytesWritten);

    const pixels = await generateFrom(out, 64);
    expect(new Set(Array.from(pixels)).size).toBeGreaterThan(8);
  });

  it('converts SDXL with two tokenizers (pad <|endoftext|> and !) and generates', async () => {
    const { file, arch } = await smallCheckpoint(dir, 'sdxl');
    const out = path.join(dir, 'sdxl-model');
    const result = await convertCheckpoint(file, out, {
      vocabularyFile: VOCABULARY,
      architecture: arch,
    });
    expect(result.unusedKeys).toEqual([]);
    const info = { family: detectFamily(await openModelFolder(out)) };
    expect(info.family.family).toBe('sdxl');
    const pad = async (folder: string): Promise<unknown> =>
      JSON.parse(await readFile(path.join(out, folder, 'special_tokens_map.json'), 'utf8'))
        .pad_token;
    expect(await pad('tokenizer')).toMatchObject({ content: '<|endoftext|>' });
    expect(await pad('tokenizer_2')).toBe('!');
    const pixels = await generateFrom(out, 64);
    expect(new Set(Array.from(pixels)).size).toBeGreaterThan(8);
  });

  it('asks for the prediction type of an SD 2.x file that cannot tell, and uses the answer', async () => {
    const { file, arch } = await smallCheckpoint(dir, 'sd2');
    const undecided = { ...arch, inpainting: false, prediction: null };
    await expect(
      convertCheckpoint(file, path.join(dir, 'sd2-undecided'), {
        vocabularyFile: VOCABULARY,
        architecture: undecided,
      }),
    ).rejects.toThrow(/does not say whether it predicts epsilon .* or v .*; choose one\./);
    expect(await readdir(dir)).not.toContain('sd2-undecided');
    const out = path.join(dir, 'sd2-v');
    await convertCheckpoint(file, out, {
      vocabularyFile: VOCABULARY,
      architecture: undecided,
      prediction: 'v_prediction',
    });
    const info = { family: detectFamily(await openModelFolder(out)) };
    expect(info.family.predictionType).toBe('v_prediction');
    expect(info.family.nativeSize.width).toBe(768);
    const special = JSON.parse(
      await readFile(path.join(out, 'tokenizer', 'special_tokens_map.json'), 'utf8'),
    );
    expect(special.pad_token).toBe('!');
  });

  it('a cancelled conversion leaves nothing behind', async () => {
    const { file, arch } = await smallCheckpoint(dir, 'sd1');
    const parent = path.join(dir, 'cancel');
    const out = path.join(parent, 'model');
    const controller = new AbortController();
    let seen = 0;
    await expect(
      convertCheckpoint(file, out, {
        vocabularyFile: VOCABULARY,
        architecture: arch,
        signal: controller.signal,
        onProgress: (p) => {
          if (p.phase === 'unet' && ++seen === 5) controller.abort();
        },
      }),
    ).rejects.toMatchObject({ code: 'cancelled' });
    expect(seen).toBeGreaterThanOrEqual(5);
    expect(await readdir(parent)).toEqual([]);
  });

  it('refuses to start without enough disk space, writing nothing', async () => {
    const { file, arch } = await smallCheckpoint(dir, 'sd1');
    const parent = path.join(dir, 'full-disk');
    await expect(
      convertCheckpoint(file, path.join(parent, 'model'), {
        vocabularyFile: VOCABULARY,
        architecture: arch,
        freeBytes: async () => 10_000_000,
      }),
    ).rejects.toThrow(
      /^Not enough disk space in .*: the converted model needs about [\d.]+ GB and 0\.0 GB are free\.$/,
    );
    expect(await readdir(parent)).toEqual([]);
  });

  it('uses a replacement VAE file and records it; a checkpoint without a VAE needs one', async () => {
    const { file, arch } = await smallCheckpoint(dir, 'sd1');
    // A VAE-only file in ldm naming without the first_stage_model. prefix (as ft-MSE ships).
    const { source } = await openCheckpoint(file);
    const vaeFile = path.join(dir, 'vae-ft-test.safetensors');
    const vaeTensors = source.list().filter((t) => t.name.startsWith('first_stage_model.'));
    await writeSafetensors(
      vaeFile,
      vaeTensors.map((t) => ({
        name: t.name.slice('first_stage_model.'.length),
        dtype: 'F32',
        shape: t.shape,
      })),
      async (t) => {
        const values = await source.readFloat32(`first_stage_model.${t.name}`);
        return encodeFloats(
          values.map((v) => v * 0.5),
          'F32',
        );
      },
    );
    await source.close();
    const own = path.join(dir, 'own-vae');
    const replaced = path.join(dir, 'replaced-vae');
    await convertCheckpoint(file, own, {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      precision: 'fp32',
    });
    const result = await convertCheckpoint(file, replaced, {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      precision: 'fp32',
      vae: vaeFile,
    });
    expect(result.vae).toBe('vae-ft-test.safetensors');
    const data = (m: string): Promise<Buffer> =>
      readFile(path.join(m, 'vae_decoder', 'model.onnx_data'));
    expect((await data(own)).equals(await data(replaced))).toBe(false);
    const unet = (m: string): Promise<Buffer> => readFile(path.join(m, 'unet', 'model.onnx_data'));
    expect((await unet(own)).equals(await unet(replaced))).toBe(true);

    const { file: noVae } = await smallCheckpoint(dir, 'sd1', (n) =>
      n.startsWith('first_stage_model.') ? null : n,
    );
    await expect(
      convertCheckpoint(noVae, path.join(dir, 'no-vae'), {
        vocabularyFile: VOCABULARY,
        architecture: arch,
      }),
    ).rejects.toThrow(/has no VAE inside; choose a replacement VAE file for it\./);
    await convertCheckpoint(noVae, path.join(dir, 'no-vae'), {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      vae: vaeFile,
    });
  });
});
