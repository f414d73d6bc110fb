// The converter's graph emitters against the PyTorch references (tools/convert-reference):
// tiny checkpoints with the real key structure of SD 1.x, SD 2.x and SDXL, converted here and
// run in onnxruntime-node, must reproduce the outputs recorded from reference.py for the same
// inputs. Relative error is max |ours - reference| / max |reference| over each output.

import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import {
  type AttentionKind,
  type EmitOptions,
  type EmitResult,
  emitTextEncoder,
  emitUnet,
  emitVaeDecoder,
  emitVaeEncoder,
} from '../../src/engine/convert/emit';
import type { CheckpointFamily, TensorInfo, TensorSource } from '../../src/engine/convert/types';
import { signatureFromSession, validateSignature } from '../../src/engine/models/signature';
import type { ComponentName } from '../../src/engine/models/types';
import { DiffusionEngine } from '../../src/engine';
import { GenerationSettings, type GenerationInput } from '../../src/shared/generation';
import { fixtureModel } from '../fixtures/models';
import { FixtureSafetensors, type ReferenceArch } from '../fixtures/safetensors-fixture';

const REF = path.join(__dirname, '../fixtures/reference');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'convert-emit-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const fixtures = new Map<CheckpointFamily, ReturnType<typeof openFixture>>();
afterAll(async () => {
  for (const f of fixtures.values()) await Promise.all([f.source.close(), f.expected.close()]);
});

function fixture(family: CheckpointFamily): ReturnType<typeof openFixture> {
  let f = fixtures.get(family);
  if (!f) fixtures.set(family, (f = openFixture(family)));
  return f;
}

function openFixture(family: CheckpointFamily) {
  const arch = JSON.parse(
    readFileSync(path.join(REF, `convert-${family}.json`), 'utf8'),
  ) as ReferenceArch;
  const source = new FixtureSafetensors(path.join(REF, `convert-${family}.safetensors`));
  const expected = new FixtureSafetensors(path.join(REF, `convert-${family}.expected.safetensors`));
  return { arch, source, expected };
}

let dirCount = 0;
function outDir(): string {
  return path.join(tmp, `c${dirCount++}`);
}

async function f32(src: FixtureSafetensors, name: string): Promise<ort.Tensor> {
  const info = src.info(name);
  if (!info) throw new Error(`expected file has no ${name}`);
  return new ort.Tensor('float32', await src.readFloat32(name), [...info.shape]);
}

async function run(
  result: EmitResult,
  component: ComponentName,
  feeds: Record<string, ort.Tensor>,
): Promise<ort.InferenceSession.OnnxValueMapType> {
  const session = await ort.InferenceSession.create(result.model, {
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
  });
  try {
    // The engine's own loader checks must accept what we wrote.
    validateSignature(component, signatureFromSession(session), result.model);
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

async function relErr(
  got: ort.Tensor | undefined,
  expected: FixtureSafetensors,
  name: string,
): Promise<number> {
  if (!got) throw new Error(`no output for ${name}`);
  const want = await expected.readFloat32(name);
  expect([...got.dims]).toEqual([...expected.info(name)!.shape]);
  const data = got.data as Float32Array;
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < want.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(data[i] - want[i]));
    maxRef = Math.max(maxRef, Math.abs(want[i]));
  }
  expect(maxRef).toBeGreaterThan(0);
  return maxDiff / maxRef;
}

const FP32_TOLERANCE = 1e-4;

async function checkTextEncoders(
  family: CheckpointFamily,
  opts: Omit<EmitOptions, 'dir'>,
  tolerance: number,
): Promise<Set<string>> {
  const { arch, source, expected } = fixture(family);
  const consumed = new Set<string>();
  for (const [i, te] of arch.textEncoders.entries()) {
    const result = await emitTextEncoder(source, te, family, { ...opts, dir: outDir() });
    result.consumed.forEach((k) => consumed.add(k));
    const ids = expected.int64(`text${i}.input_ids`);
    const out = await run(result, i === 0 ? 'text_encoder' : 'text_encoder_2', {
      input_ids: new ort.Tensor('int32', Int32Array.from(ids, Number), [2, 77]),
    });
    const names = expected
      .list()
      .map((t: TensorInfo) => t.name)
      .filter((n) => n.startsWith(`text${i}.`) && n !== `text${i}.input_ids`);
    expect(names.length).toBeGreaterThanOrEqual(2);
    for (const name of names) {
      const output = name.slice(`text${i}.`.length);
      expect(await relErr(out[output], expected, name), `${family} ${name}`).toBeLessThan(
        tolerance,
      );
    }
  }
  return consumed;
}

async function checkUnet(
  family: CheckpointFamily,
  opts: Omit<EmitOptions, 'dir'>,
  tolerance: number,
): Promise<Set<string>> {
  const { arch, source, expected } = fixture(family);
  const result = await emitUnet(source, arch.unet, arch.unetPrefix, { ...opts, dir: outDir() });
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids'])
    if (expected.info(`unet.${name}`)) feeds[name] = await f32(expected, `unet.${name}`);
  const out = await run(result, 'unet', feeds);
  expect(await relErr(out.out_sample, expected, 'unet.out_sample'), family).toBeLessThan(tolerance);
  return result.consumed;
}

async function checkVae(
  family: CheckpointFamily,
  opts: Omit<EmitOptions, 'dir'>,
  tolerance: number,
): Promise<Set<string>> {
  const { arch, source, expected } = fixture(family);
  const enc = await emitVaeEncoder(source, arch.vae, arch.vaePrefix, { ...opts, dir: outDir() });
  const encOut = await run(enc, 'vae_encoder', {
    sample: await f32(expected, 'vae_encoder.sample'),
  });
  expect(
    await relErr(encOut.latent_parameters, expected, 'vae_encoder.latent_parameters'),
  ).toBeLessThan(tolerance);
  const dec = await emitVaeDecoder(source, arch.vae, arch.vaePrefix, { ...opts, dir: outDir() });
  const decOut = await run(dec, 'vae_decoder', {
    latent_sample: await f32(expected, 'vae_decoder.latent_sample'),
  });
  expect(await relErr(decOut.sample, expected, 'vae_decoder.sample')).toBeLessThan(tolerance);
  return new Set([...enc.consumed, ...dec.consumed]);
}

const FAMILIES: CheckpointFamily[] = ['sd1', 'sd2', 'sdxl'];
const ATTENTION: AttentionKind[] = ['fused', 'matmul'];

describe.each(FAMILIES)('%s components match the PyTorch reference (fp32 weights)', (family) => {
  it.each(ATTENTION)('text encoders, %s attention', async (attention) => {
    await checkTextEncoders(family, { precision: 'fp32', attention }, FP32_TOLERANCE);
  });
  it.each(ATTENTION)('UNet, %s attention', async (attention) => {
    await checkUnet(family, { precision: 'fp32', attention }, FP32_TOLERANCE);
  });
  it.each(ATTENTION)('VAE encoder and decoder, %s attention', async (attention) => {
    await checkVae(family, { precision: 'fp32', attention }, FP32_TOLERANCE);
  });
  it('consumes every key of the checkpoint', async () => {
    const opts = { precision: 'fp32' as const };
    const all = new Set([
      ...(await checkTextEncoders(family, opts, FP32_TOLERANCE)),
      ...(await checkUnet(family, opts, FP32_TOLERANCE)),
      ...(await checkVae(family, opts, FP32_TOLERANCE)),
    ]);
    const missing = fixture(family)
      .source.list()
      .map((t) => t.name)
      .filter((k) => !all.has(k));
    expect(missing).toEqual([]);
  });
});

// sd1's fixture stores float32 weights, so fp16 storage rounds them (relative 2^-11 each); the
// bound is what that rounding costs through the whole network, with margin.
const FP16_TOLERANCE = 5e-3;

describe('fp16 weight storage (computed in float32)', () => {
  it('text encoder, UNet and VAE stay within the fp16 bound', async () => {
    const opts = { precision: 'fp16' as const };
    await checkTextEncoders('sd1', opts, FP16_TOLERANCE);
    await checkUnet('sd1', opts, FP16_TOLERANCE);
    await checkVae('sd1', opts, FP16_TOLERANCE);
  });

  it('writes half the bytes of fp32 storage, as a dry run predicts, with byte progress', async () => {
    const { arch, source } = fixture('sd1');
    const dir = outDir();
    const plan = await emitUnet(source, arch.unet, arch.unetPrefix, { dir, dryRun: true });
    expect(existsSync(dir)).toBe(false);
    let last = { bytesDone: 0, bytesTotal: -1 };
    const a = await emitUnet(source, arch.unet, arch.unetPrefix, {
      dir,
      onTensor: (p) => (last = p),
    });
    expect(last.bytesDone).toBe(last.bytesTotal);
    expect(last.bytesTotal).toBe(plan.bytes);
    // Written: the weights, alignment padding and the graph itself.
    expect(statSync(a.data).size).toBeGreaterThanOrEqual(plan.bytes);
    expect(statSync(a.data).size).toBeLessThan(plan.bytes * 1.1);
    const b = await emitUnet(source, arch.unet, arch.unetPrefix, {
      dir: outDir(),
      precision: 'fp32',
    });
    const planFp32 = await emitUnet(source, arch.unet, arch.unetPrefix, {
      dir: outDir(),
      dryRun: true,
      precision: 'fp32',
    });
    expect(planFp32.bytes).toBe(2 * plan.bytes);
    // The weight files, alignment padding included (the graphs beside them are the same size
    // either way, a large share of a model this small, so they are left out of the ratio).
    const ratio = statSync(a.data).size / statSync(b.data).size;
    expect(ratio).toBeGreaterThan(0.45);
    expect(ratio).toBeLessThan(0.52);
  });
});

/** A source that hides one key, or reports another shape for it. */
function tampered(source: TensorSource, key: string, shape?: number[]): TensorSource {
  return {
    path: source.path,
    list: () => source.list().filter((t) => shape || t.name !== key),
    info: (name) => {
      const info = source.info(name);
      if (name !== key || !info) return info;
      return shape ? { ...info, shape } : undefined;
    },
    readFloat32: (name) => source.readFloat32(name),
    close: () => source.close(),
  };
}

/** The same tensors under other names: `rename(original) -> new`. */
function renamed(source: TensorSource, rename: (name: string) => string): TensorSource {
  const back = new Map(source.list().map((t) => [rename(t.name), t.name]));
  const list = source.list().map((t) => ({ ...t, name: rename(t.name) }));
  return {
    path: source.path,
    list: () => list,
    info: (name) => {
      const orig = back.get(name);
      const info = orig === undefined ? undefined : source.info(orig);
      return info && { ...info, name };
    },
    readFloat32: (name) => source.readFloat32(back.get(name) ?? name),
    close: () => source.close(),
  };
}

describe('naming variants', () => {
  it('CLIP keys without `text_model.` (older SD 1.x files) give the same encoder', async () => {
    const { arch, source, expected } = fixture('sd1');
    const flat = renamed(source, (n) => n.replace('.transformer.text_model.', '.transformer.'));
    expect(flat.info('cond_stage_model.transformer.final_layer_norm.weight')).toBeDefined();
    const result = await emitTextEncoder(flat, arch.textEncoders[0], 'sd1', {
      dir: outDir(),
      precision: 'fp32',
    });
    const out = await run(result, 'text_encoder', {
      input_ids: new ort.Tensor(
        'int32',
        Int32Array.from(expected.int64('text0.input_ids'), Number),
        [2, 77],
      ),
    });
    expect(await relErr(out.last_hidden_state, expected, 'text0.last_hidden_state')).toBeLessThan(
      FP32_TOLERANCE,
    );
    expect(result.consumed.size).toBe(
      flat.list().filter((t) => t.name.startsWith('cond_stage_model.')).length,
    );
  });
});

describe('bad checkpoints', () => {
  it('a missing key is an error naming it and the file', async () => {
    const { arch, source } = fixture('sd2');
    const key = 'model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight';
    await expect(
      emitUnet(tampered(source, key), arch.unet, arch.unetPrefix, { dir: outDir() }),
    ).rejects.toThrow(`has no tensor "${key}", which the UNet needs.`);
    const teKey = 'cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight';
    await expect(
      emitTextEncoder(tampered(source, teKey), arch.textEncoders[0], 'sd2', { dir: outDir() }),
    ).rejects.toThrow(`"${teKey}"`);
  });

  it('a tensor of the wrong shape is an error with both shapes', async () => {
    const { arch, source } = fixture('sd1');
    const key = 'first_stage_model.decoder.conv_in.weight';
    await expect(
      emitVaeDecoder(tampered(source, key, [32, 4, 3, 1]), arch.vae, arch.vaePrefix, {
        dir: outDir(),
      }),
    ).rejects.toThrow(`"${key}" shaped [32, 4, 3, 1] where the VAE decoder needs [32, 4, 3, 3]`);
  });

  it('an aborted signal stops the writing with a cancelled error', async () => {
    const { arch, source } = fixture('sd1');
    const controller = new AbortController();
    let seen = 0;
    await expect(
      emitUnet(source, arch.unet, arch.unetPrefix, {
        dir: outDir(),
        signal: controller.signal,
        onTensor: (p) => {
          seen = p.done;
          if (p.done === 3) controller.abort();
        },
      }),
    ).rejects.toMatchObject({ code: 'cancelled' });
    expect(seen).toBe(3);
  });
});

describe('a converted SD 1.x folder runs in the engine unchanged', () => {
  it('txt2img and img2img through DiffusionEngine, with the loader checks passing', async () => {
    // The folder: a fixture model's tokenizer, scheduler and model_index.json (part A's
    // orchestration writes those for real checkpoints), and the four converted components.
    const base = await fixtureModel('convert-emit-base', { family: 'sd15' });
    const dir = outDir();
    for (const part of ['model_index.json', 'scheduler', 'tokenizer'])
      cpSync(path.join(base, part), path.join(dir, part), { recursive: true });
    const { arch, source } = fixture('sd1');
    const opts = (sub: string): EmitOptions => ({ dir: path.join(dir, sub) });
    await emitTextEncoder(source, arch.textEncoders[0], 'sd1', opts('text_encoder'));
    await emitUnet(source, arch.unet, arch.unetPrefix, opts('unet'));
    await emitVaeEncoder(source, arch.vae, arch.vaePrefix, opts('vae_encoder'));
    await emitVaeDecoder(source, arch.vae, arch.vaePrefix, opts('vae_decoder'));

    const engine = new DiffusionEngine({ previewEvery: 0 });
    try {
      const settings = (over: Partial<GenerationInput>) =>
        GenerationSettings.parse({
          model: 'converted',
          prompt: 'a red house on a hill',
          seed: 7,
          sampler: 'euler',
          steps: 3,
          guidance: 5,
          width: 64,
          height: 72,
          ...over,
        });
      const txt = await engine.generate({ settings: settings({}), modelDir: dir });
      expect(txt.family).toBe('sd1');
      const img = txt.images[0].image;
      expect([img.width, img.height]).toEqual([64, 72]);
      // Random weights paint noise, but it is a picture: many distinct values.
      expect(new Set(img.data).size).toBeGreaterThan(50);
      expect(txt.timings.denoiseMs).toBeGreaterThan(0);

      const again = await engine.generate({
        settings: settings({ mode: 'img2img', strength: 0.5 }),
        modelDir: dir,
        initImage: img,
      });
      expect(again.timings.encodeMs).toBeGreaterThan(0);
      expect(again.images[0].image.width).toBe(64);
    } finally {
      await engine.release();
    }
  });
});
