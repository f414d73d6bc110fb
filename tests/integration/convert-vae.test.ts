// Replacement VAEs converted on their own (issue 11 item 4): a VAE-only file becomes
// vae_encoder/ and vae_decoder/ with exactly the weights and graphs that converting a checkpoint
// with that VAE gives, once per file in the data folder's cache (keyed by its sha256); a file
// that is not a VAE, or a cancel, leaves nothing.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { convertVae } from '../../src/engine/convert/convert-vae';
import { openCheckpoint } from '../../src/engine/convert/readers/index';
import { ensureVaeConverted, shortHash } from '../../src/main/models/checkpoint-cache';
import { encodeFloats, writeLoraFile, writeSafetensors } from '../fixtures/checkpoint';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { tempDir } from './library-helpers';

let dir: string;
let vaeFile: string;
let checkpoint: Awaited<ReturnType<typeof smallCheckpoint>>;

beforeAll(async () => {
  dir = tempDir('ls-convert-vae-');
  checkpoint = await smallCheckpoint(dir, 'sd1');
  // The checkpoint's VAE, changed, without the first_stage_model. prefix (as ft-MSE ships).
  const { source } = await openCheckpoint(checkpoint.file);
  vaeFile = path.join(dir, 'vae-ft-test.safetensors');
  await writeSafetensors(
    vaeFile,
    source
      .list()
      .filter((t) => t.name.startsWith('first_stage_model.'))
      .map((t) => ({
        name: t.name.slice('first_stage_model.'.length),
        dtype: 'F32' as const,
        shape: t.shape,
      })),
    async (t) =>
      encodeFloats(
        (await source.readFloat32(`first_stage_model.${t.name}`)).map((v) => v * 0.5 + 0.01),
        'F32',
      ),
  );
  await source.close();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const read = (m: string, f: string): Promise<Buffer> => readFile(path.join(m, f));

describe('convertVae', () => {
  it('writes the same VAE graphs and weights as a checkpoint converted with that VAE', async () => {
    const whole = path.join(dir, 'whole');
    await convertCheckpoint(checkpoint.file, whole, {
      vocabularyFile: VOCABULARY,
      architecture: checkpoint.arch,
      precision: 'fp32',
      vae: vaeFile,
    });
    const alone = path.join(dir, 'alone');
    const record = await convertVae(vaeFile, alone, { precision: 'fp32' });
    expect(record).toMatchObject({
      dir: alone,
      source: 'vae-ft-test.safetensors',
      precision: 'fp32',
      sha256: null,
      vae: { zChannels: checkpoint.arch.vae.zChannels, ch: checkpoint.arch.vae.ch },
    });
    for (const f of [
      'vae_encoder/model.onnx',
      'vae_encoder/model.onnx_data',
      'vae_decoder/model.onnx',
      'vae_decoder/model.onnx_data',
    ]) {
      expect((await read(alone, f)).equals(await read(whole, f)), f).toBe(true);
    }
    expect(fs.readdirSync(dir).filter((e) => e.startsWith('.'))).toEqual([]);
  });

  it('says when a file is not a VAE, and a cancel leaves nothing', async () => {
    const lora = path.join(dir, 'detail.safetensors');
    await writeLoraFile(lora);
    const out = path.join(dir, 'refused');
    await expect(convertVae(lora, path.join(out, 'lora'))).rejects.toThrow(
      'detail.safetensors is not a VAE (it has no encoder.conv_in.weight).',
    );
    const controller = new AbortController();
    controller.abort();
    await expect(
      convertVae(vaeFile, path.join(out, 'cancelled'), { signal: controller.signal }),
    ).rejects.toMatchObject({ code: 'cancelled' });
    expect(fs.existsSync(out) ? fs.readdirSync(out) : []).toEqual([]);
  });
});

describe('ensureVaeConverted', () => {
  it('converts a VAE file once into the cache under its sha256 and reuses it', async () => {
    const dataDir = path.join(dir, 'data');
    const sha256 = createHash('sha256').update(fs.readFileSync(vaeFile)).digest('hex');
    const first = await ensureVaeConverted(vaeFile, { dataDir });
    expect(first).toMatchObject({ sha256, converted: true });
    expect(first.record).toMatchObject({ source: 'vae-ft-test.safetensors', sha256 });
    expect(path.relative(dataDir, first.dir)).toBe(
      path.join('converted', `vae-${sha256.slice(0, 16)}-fp16`, 'vae-ft-test'),
    );
    expect(shortHash(first.record.sha256!)).toBe(sha256.slice(0, 10));
    const again = await ensureVaeConverted(vaeFile, { dataDir });
    expect(again).toMatchObject({ dir: first.dir, sha256, converted: false });

    const lora = path.join(dir, 'detail.safetensors');
    await expect(ensureVaeConverted(lora, { dataDir })).rejects.toThrow(/is not a VAE/);
    expect(fs.readdirSync(path.join(dataDir, 'converted'))).toEqual([
      `vae-${sha256.slice(0, 16)}-fp16`,
    ]);
  });
});
