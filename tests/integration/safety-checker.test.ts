// The safety checker against its PyTorch reference (tools/convert-reference/make_safety.py): a
// small-config StableDiffusionSafetyChecker with diffusers' key names, converted here and run in
// onnxruntime-node, must reproduce the reference's image embeddings and cosines (relative error
// max |ours - reference| / max |reference|) and diffusers' decisions for the same inputs.

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { detectArchitecture, detectSafetyChecker } from '../../src/engine/convert/detect';
import { type AttentionKind, emitSafetyChecker } from '../../src/engine/convert/emit';
import type { SafetyCheckerArchitecture } from '../../src/engine/convert/types';
import { SafetyChecker, clipImageInput, safetyVerdicts } from '../../src/engine/safety';
import { ensureSafetyCheckerConverted } from '../../src/main/models/checkpoint-cache';
import { FixtureSafetensors } from '../fixtures/safetensors-fixture';

const REF = path.join(__dirname, '../fixtures/reference');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'safety-checker-'));
const source = new FixtureSafetensors(path.join(REF, 'safety-checker.safetensors'));
const expected = new FixtureSafetensors(path.join(REF, 'safety-checker.expected.safetensors'));
const recorded = JSON.parse(readFileSync(path.join(REF, 'safety-checker.json'), 'utf8')) as {
  arch: SafetyCheckerArchitecture;
  decisions: { flagged: boolean; specialScores: number[]; conceptScores: number[] }[];
};
afterAll(async () => {
  await Promise.all([source.close(), expected.close()]);
  rmSync(tmp, { recursive: true, force: true });
});

async function relErr(got: Float32Array, name: string): Promise<number> {
  const want = await expected.readFloat32(name);
  expect(got.length, name).toBe(want.length);
  let err = 0;
  let scale = 0;
  for (let i = 0; i < want.length; i++) {
    err = Math.max(err, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return err / scale;
}

let dirs = 0;
async function convertAndRun(precision: 'fp16' | 'fp32', attention: AttentionKind) {
  const arch = detectSafetyChecker(source.list());
  if (!arch) throw new Error('not detected');
  const result = await emitSafetyChecker(source, arch, {
    dir: path.join(tmp, `c${dirs++}`),
    precision,
    attention,
  });
  const session = await ort.InferenceSession.create(result.model, { executionProviders: ['cpu'] });
  try {
    const input = await expected.readFloat32('clip_input');
    const out = await session.run({
      clip_input: new ort.Tensor('float32', input, [3, 3, arch.imageSize, arch.imageSize]),
    });
    const f = (name: string): Float32Array => out[name].data as Float32Array;
    return { result, f };
  } finally {
    await session.release();
  }
}

describe('safety checker detection', () => {
  it("reads the architecture from diffusers' key names and shapes", () => {
    expect(detectSafetyChecker(source.list())).toEqual(recorded.arch);
  });

  it('names the file as a safety checker when it is opened as a diffusion checkpoint', () => {
    expect(() => detectArchitecture(source.list(), 'checker.safetensors')).toThrow(
      /checker\.safetensors is Stable Diffusion's safety checker \(choose it as the content filter's model in Settings\)/,
    );
  });
});

describe('converted safety checker vs the PyTorch reference', () => {
  for (const attention of ['fused', 'matmul'] as const) {
    it(`fp32, ${attention} attention: embeddings and cosines within 1e-4, same decisions`, async () => {
      const { result, f } = await convertAndRun('fp32', attention);
      // Every tensor of the file is used or knowingly skipped (position_ids).
      expect([...result.consumed].sort()).toEqual(
        source
          .list()
          .map((t) => t.name)
          .sort(),
      );
      for (const name of ['image_embeds', 'special_cos_dist', 'cos_dist'])
        expect(await relErr(f(name), name), name).toBeLessThan(1e-4);
      const verdicts = safetyVerdicts(
        {
          specialCos: f('special_cos_dist'),
          conceptCos: f('cos_dist'),
          specialThresholds: f('special_care_embeds_weights'),
          conceptThresholds: f('concept_embeds_weights'),
        },
        3,
      );
      expect(verdicts.map((v) => v.flagged)).toEqual([true, true, false]);
      verdicts.forEach((v, i) => {
        const want = recorded.decisions[i];
        expect(v.flagged).toBe(want.flagged);
        // Scores are rounded to 3 decimals on both sides; a 1e-4 difference may cross a rounding
        // boundary, never more than one step.
        v.specialScores.forEach((s, k) =>
          expect(Math.abs(s - want.specialScores[k])).toBeLessThan(0.0011),
        );
        v.conceptScores.forEach((s, k) =>
          expect(Math.abs(s - want.conceptScores[k])).toBeLessThan(0.0011),
        );
      });
      // Image 1 is flagged only through the special-care adjustment.
      expect(verdicts[1].badConcepts).toEqual([9]);
    });
  }

  it('fp16 storage keeps the thresholds and concept embeddings exact (float32)', async () => {
    const { result, f } = await convertAndRun('fp16', 'fused');
    const thresholds = await source.readFloat32('concept_embeds_weights');
    expect(Array.from(f('concept_embeds_weights'))).toEqual(Array.from(thresholds));
    expect(await relErr(f('cos_dist'), 'cos_dist')).toBeLessThan(1e-2);
    expect(result.bytes).toBeLessThan(4 * 484133);
  });
});

describe('SafetyChecker on images', () => {
  it("preprocesses as CLIPImageProcessor does (Pillow bicubic, centre crop, CLIP's mean/std)", async () => {
    const ref = new FixtureSafetensors(path.join(REF, 'safety-preprocess.expected.safetensors'));
    try {
      const pixels = Uint8Array.from(await ref.readFloat32('image'));
      const got = clipImageInput([{ width: 80, height: 60, channels: 3, data: pixels }], 56);
      const want = await ref.readFloat32('clip_input');
      expect(got.dims).toEqual([1, 3, 56, 56]);
      let worst = 0;
      for (let i = 0; i < want.length; i++)
        worst = Math.max(worst, Math.abs(got.data[i] - want[i]));
      // Pillow rounds to 8 bits between its two passes; we round once: at most one level apart.
      expect(worst).toBeLessThanOrEqual(1.01 / 255 / 0.26130258);
    } finally {
      await ref.close();
    }
  });

  it('checks decoded images with a converted checker and gives one verdict each', async () => {
    const arch = detectSafetyChecker(source.list());
    if (!arch) throw new Error('not detected');
    const dir = path.join(tmp, 'runner');
    const { model } = await emitSafetyChecker(source, arch, { dir, precision: 'fp32' });
    const checker = await SafetyChecker.open(model);
    try {
      expect(checker.imageSize).toBe(56);
      const img = (v: number) => ({
        width: 64,
        height: 96,
        channels: 4 as const,
        data: new Uint8Array(64 * 96 * 4).fill(v),
      });
      const verdicts = await checker.check([img(0), img(200)]);
      expect(verdicts).toHaveLength(2);
      expect(verdicts[0].conceptScores).toHaveLength(17);
      expect(verdicts[0].specialScores).toHaveLength(3);
      expect(verdicts[0].conceptScores).not.toEqual(verdicts[1].conceptScores);
    } finally {
      await checker.release();
    }
  });

  it('refuses a file that is not a converted checker with one sentence', async () => {
    const bad = path.join(tmp, 'bad.onnx');
    writeFileSync(bad, 'not onnx');
    await expect(SafetyChecker.open(bad)).rejects.toThrow(
      /bad\.onnx could not be loaded; convert the safety checker again\./,
    );
  });
});

describe('the converted checker in the data folder', () => {
  it('converts once into converted/safety-*, reuses it, and the result checks images', async () => {
    const dataDir = path.join(tmp, 'data');
    const file = path.join(REF, 'safety-checker.safetensors');
    const first = await ensureSafetyCheckerConverted(file, { dataDir, precision: 'fp32' });
    expect(first.converted).toBe(true);
    expect(path.relative(dataDir, first.dir)).toMatch(/^converted\/safety-[0-9a-f]{16}-fp32\//);
    expect(first.record.checker).toEqual(recorded.arch);
    const again = await ensureSafetyCheckerConverted(file, { dataDir, precision: 'fp32' });
    expect(again.converted).toBe(false);
    expect(again.model).toBe(first.model);
    const checker = await SafetyChecker.open(again.model);
    try {
      const [v] = await checker.check([
        { width: 56, height: 56, channels: 3, data: new Uint8Array(56 * 56 * 3).fill(90) },
      ]);
      expect(v.conceptScores).toHaveLength(17);
    } finally {
      await checker.release();
    }
  });

  it('refuses a diffusion checkpoint with a sentence and leaves nothing in the cache', async () => {
    const dataDir = path.join(tmp, 'data-refused');
    const file = path.join(REF, 'convert-sd1.safetensors');
    await expect(ensureSafetyCheckerConverted(file, { dataDir })).rejects.toThrow(
      "convert-sd1.safetensors is a diffusion checkpoint, not Stable Diffusion's safety checker.",
    );
    const converted = path.join(dataDir, 'converted');
    expect(existsSync(converted) ? readdirSync(converted) : []).toEqual([]);
  });
});
