// The fixture model builders: every variant loads in onnxruntime-node by file path, declares
// the signature real exports have (names, dtypes, ranks as ORT reports them), runs, and the
// known-answer pieces (VAE codec, exact denoiser) compute what they promise.

import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { vaeRoundTrip } from '../fixtures/components';
import {
  type FixtureInfo,
  type FixtureSpec,
  MID_UNET_CONFIG,
  SD15_UNET_CONFIG,
  alphasCumprod,
  fixtureModel,
  fixtureModelInfo,
  loadFixtureInfo,
  resizeLatentNearest,
  unetGraph,
} from '../fixtures/models';
import { Prng, fromHalfArray, toHalfArray } from '../fixtures/onnx-builder';

type Sig = Record<string, { type: string; shape: (number | string)[] }>;

async function open(dir: string, sub: string): Promise<ort.InferenceSession> {
  // logSeverityLevel 3: the failures this file provokes on purpose still throw, without log noise.
  return ort.InferenceSession.create(path.join(dir, sub, 'model.onnx'), {
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  });
}

function sig(list: readonly ort.InferenceSession.ValueMetadata[]): Sig {
  const out: Sig = {};
  for (const m of list) {
    if (!m.isTensor) throw new Error(`${m.name} is not a tensor`);
    out[m.name] = { type: m.type, shape: [...m.shape] };
  }
  return out;
}

function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = new Prng(seed);
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r.normal() * scale;
  return a;
}

/** A float tensor of the dtype the session asks for. */
function floatTensor(type: string, data: Float32Array, dims: number[]): ort.Tensor {
  return type === 'float16'
    ? new ort.Tensor('float16', toHalfArray(data), dims)
    : new ort.Tensor('float32', data, dims);
}

function f32(t: ort.Tensor): Float32Array {
  if (t.type === 'float16') return fromHalfArray(t.data as Uint16Array);
  expect(t.type).toBe('float32');
  return t.data as Float32Array;
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function allFinite(a: ArrayLike<number>): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

/** Token ids like the CLIP tokenizer makes: BOS, a few ids, EOS, padding to 77. */
function tokenIds(
  info: FixtureInfo,
  batch: number,
  pad: number,
  type: 'int32' | 'int64',
): ort.Tensor {
  const V = info.vocabSize;
  const ids: number[] = [];
  for (let b = 0; b < batch; b++) {
    const row = [V - 2];
    for (let i = 0; i < 3 + 2 * b; i++) row.push(300 + 17 * i + b);
    row.push(V - 1);
    while (row.length < 77) row.push(pad);
    ids.push(...row);
  }
  return type === 'int64'
    ? new ort.Tensor(
        'int64',
        BigInt64Array.from(ids, (x) => BigInt(x)),
        [batch, 77],
      )
    : new ort.Tensor('int32', Int32Array.from(ids), [batch, 77]);
}

/** UNet feeds built from the session's own input metadata (as the engine must do). */
function unetFeeds(
  s: Sig,
  o: {
    batch: number;
    channels: number;
    h: number;
    w: number;
    t: number | number[];
    ctx: number;
    sample?: Float32Array;
    seed?: number;
  },
): Record<string, ort.Tensor> {
  const B = o.batch;
  const feeds: Record<string, ort.Tensor> = {};
  const sample = o.sample ?? randn(B * o.channels * o.h * o.w, o.seed ?? 1);
  feeds.sample = floatTensor(s.sample.type, sample, [B, o.channels, o.h, o.w]);
  const ts = Array.isArray(o.t) ? o.t : new Array(B).fill(o.t);
  const tsig = s.timestep;
  if (tsig.shape.length === 0) feeds.timestep = floatTensor(tsig.type, Float32Array.of(ts[0]), []);
  else if (tsig.type === 'int64')
    feeds.timestep = new ort.Tensor(
      'int64',
      BigInt64Array.from(ts, (x) => BigInt(Math.round(x))),
      [B],
    );
  else feeds.timestep = floatTensor(tsig.type, Float32Array.from(ts), [B]);
  feeds.encoder_hidden_states = floatTensor(
    s.encoder_hidden_states.type,
    randn(B * 77 * o.ctx, 2),
    [B, 77, o.ctx],
  );
  if (s.text_embeds) {
    const d = s.text_embeds.shape[1] as number;
    feeds.text_embeds = floatTensor(s.text_embeds.type, randn(B * d, 3), [B, d]);
    const ids = new Float32Array(B * 6);
    for (let b = 0; b < B; b++) ids.set([64, 64, 0, 0, 64, 64], b * 6);
    feeds.time_ids = floatTensor(s.time_ids.type, ids, [B, 6]);
  }
  if (s.timestep_cond)
    feeds.timestep_cond = floatTensor(s.timestep_cond.type, randn(B * 256, 4), [B, 256]);
  if (s.class_labels)
    feeds.class_labels = new ort.Tensor(
      'int64',
      BigInt64Array.from({ length: B }, () => 20n),
      [B],
    );
  return feeds;
}

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(file, 'utf8'));
}

const F = 'float32';

describe('fixture models: signatures and runs', () => {
  it('sd15, diffusers layout: int32 input_ids, float [B] timestep, whole folder runs', async () => {
    const dir = await fixtureModel('sd15', {});
    const info = await loadFixtureInfo(dir);
    for (const f of [
      'model_index.json',
      'scheduler/scheduler_config.json',
      'tokenizer/vocab.json',
      'tokenizer/merges.txt',
    ])
      expect(existsSync(path.join(dir, f)), f).toBe(true);
    const idx = readJson(path.join(dir, 'model_index.json'));
    expect(idx._class_name).toBe('OnnxStableDiffusionPipeline');
    expect(idx.vae_decoder).toEqual(['diffusers', 'OnnxRuntimeModel']);
    const sched = readJson(path.join(dir, 'scheduler/scheduler_config.json'));
    expect(sched).toMatchObject({
      beta_schedule: 'scaled_linear',
      beta_start: 0.00085,
      beta_end: 0.012,
      steps_offset: 1,
      set_alpha_to_one: false,
    });
    expect(sched.timestep_spacing).toBeUndefined();
    expect(existsSync(path.join(dir, 'unet', 'config.json'))).toBe(false);

    const te = await open(dir, 'text_encoder');
    expect(sig(te.inputMetadata)).toEqual({
      input_ids: { type: 'int32', shape: ['batch', 'sequence'] },
    });
    expect(sig(te.outputMetadata)).toEqual({
      last_hidden_state: { type: F, shape: ['batch', 'sequence', 32] },
      pooler_output: { type: F, shape: ['batch', 32] },
    });
    const vocabIds = Object.values(readJson(path.join(dir, 'tokenizer/vocab.json'))) as number[];
    expect(info.vocabSize).toBe(Math.max(...vocabIds) + 1);
    const teOut = await te.run({ input_ids: tokenIds(info, 2, info.vocabSize - 1, 'int32') });
    expect(teOut.last_hidden_state.dims).toEqual([2, 77, 32]);
    expect(teOut.pooler_output.dims).toEqual([2, 32]);
    // CLIP pooling: the hidden state at the first EOS (sample b has EOS at 4 + 2b).
    const lhs = f32(teOut.last_hidden_state);
    const pooled = f32(teOut.pooler_output);
    for (let b = 0; b < 2; b++) {
      const pos = 4 + 2 * b;
      expect(
        maxAbsDiff(
          pooled.subarray(b * 32, b * 32 + 32),
          lhs.subarray((b * 77 + pos) * 32, (b * 77 + pos + 1) * 32),
        ),
      ).toBe(0);
    }
    // The highest ids (the special tokens) are inside the embedding table.
    await te.run({
      input_ids: new ort.Tensor('int32', new Int32Array(77).fill(info.vocabSize - 1), [1, 77]),
    });
    await expect(
      te.run({
        input_ids: new ort.Tensor('int32', new Int32Array(77).fill(info.vocabSize), [1, 77]),
      }),
    ).rejects.toThrow();
    // A shorter sequence runs too (the sequence dim is dynamic, as exported).
    expect(
      (
        await te.run({
          input_ids: new ort.Tensor(
            'int32',
            Int32Array.of(info.vocabSize - 2, info.vocabSize - 1),
            [1, 2],
          ),
        })
      ).last_hidden_state.dims,
    ).toEqual([1, 2, 32]);

    const unet = await open(dir, 'unet');
    const us = sig(unet.inputMetadata);
    expect(us).toEqual({
      sample: { type: F, shape: ['batch', 'channels', 'height', 'width'] },
      timestep: { type: F, shape: ['batch'] },
      encoder_hidden_states: { type: F, shape: ['batch', 'sequence', 32] },
    });
    expect(sig(unet.outputMetadata)).toEqual({
      out_sample: { type: F, shape: ['batch', 4, 'height', 'width'] },
    });
    // Any batch, any latent size (odd too), fractional timesteps.
    for (const [B, h, w] of [
      [2, 8, 8],
      [1, 12, 20],
      [3, 5, 7],
    ]) {
      const out = await unet.run(
        unetFeeds(us, { batch: B, channels: 4, h, w, t: 999.5 - 100 * B, ctx: 32 }),
      );
      expect(out.out_sample.dims).toEqual([B, 4, h, w]);
      const v = f32(out.out_sample);
      expect(allFinite(v)).toBe(true);
      const rms = Math.sqrt(v.reduce((a, x) => a + x * x, 0) / v.length);
      expect(rms).toBeGreaterThan(1e-3);
      expect(rms).toBeLessThan(100);
    }
    // The timestep and the text condition both change the output.
    const a = f32(
      (await unet.run(unetFeeds(us, { batch: 1, channels: 4, h: 8, w: 8, t: 10, ctx: 32 })))
        .out_sample,
    );
    const b = f32(
      (await unet.run(unetFeeds(us, { batch: 1, channels: 4, h: 8, w: 8, t: 900, ctx: 32 })))
        .out_sample,
    );
    expect(maxAbsDiff(a, b)).toBeGreaterThan(1e-3);

    const enc = await open(dir, 'vae_encoder');
    const dec = await open(dir, 'vae_decoder');
    expect(sig(enc.inputMetadata)).toEqual({
      sample: { type: F, shape: ['batch', 'channels', 'height', 'width'] },
    });
    expect(Object.keys(sig(enc.outputMetadata))).toEqual(['latent_sample']);
    expect(sig(dec.inputMetadata)).toEqual({
      latent_sample: { type: F, shape: ['batch', 'channels', 'height', 'width'] },
    });
    expect(Object.keys(sig(dec.outputMetadata))).toEqual(['sample']);
    const lat = await enc.run({
      sample: new ort.Tensor('float32', randn(2 * 3 * 64 * 48, 5, 0.5), [2, 3, 64, 48]),
    });
    expect(lat.latent_sample.dims).toEqual([2, 4, 8, 6]);
    const img = await dec.run({ latent_sample: lat.latent_sample });
    expect(img.sample.dims).toEqual([2, 3, 64, 48]);
  });

  it('optimum layout: int64 input_ids and timestep, per-folder config.json, PyTorch class names', async () => {
    const dir = await fixtureModel('sd15-optimum', { layout: 'optimum' });
    expect(readJson(path.join(dir, 'model_index.json'))._class_name).toBe(
      'StableDiffusionPipeline',
    );
    expect(readJson(path.join(dir, 'vae_decoder/config.json')).scaling_factor).toBe(0.18215);
    expect(readJson(path.join(dir, 'vae_encoder/config.json')).scaling_factor).toBe(0.18215);
    expect(readJson(path.join(dir, 'unet/config.json'))).toMatchObject({
      in_channels: 4,
      cross_attention_dim: 32,
      block_out_channels: [32, 64],
    });
    expect(readJson(path.join(dir, 'text_encoder/config.json'))).toMatchObject({ hidden_size: 32 });
    const te = await open(dir, 'text_encoder');
    expect(sig(te.inputMetadata)).toEqual({
      input_ids: { type: 'int64', shape: ['batch_size', 'sequence_length'] },
    });
    const unet = await open(dir, 'unet');
    const us = sig(unet.inputMetadata);
    expect(us.timestep).toEqual({ type: 'int64', shape: ['steps'] });
    expect(us.sample.shape).toEqual(['batch_size', 'num_channels', 'height', 'width']);
    const info = await loadFixtureInfo(dir);
    const ehs = (await te.run({ input_ids: tokenIds(info, 2, info.vocabSize - 1, 'int64') }))
      .last_hidden_state;
    const feeds = unetFeeds(us, { batch: 2, channels: 4, h: 8, w: 8, t: 981, ctx: 32 });
    feeds.encoder_hidden_states = ehs;
    expect((await unet.run(feeds)).out_sample.dims).toEqual([2, 4, 8, 8]);
  });

  it('optimum >= 1.24: rank-0 float timestep broadcasts over the batch', async () => {
    const dir = await fixtureModel('sd15-scalar-t', { layout: 'optimum', timestep: 'scalar' });
    const unet = await open(dir, 'unet');
    const us = sig(unet.inputMetadata);
    expect(us.timestep).toEqual({ type: F, shape: [] });
    const sample = randn(2 * 4 * 8 * 8, 9);
    const out = f32(
      (
        await unet.run(
          unetFeeds(us, { batch: 2, channels: 4, h: 8, w: 8, t: 500, ctx: 32, sample }),
        )
      ).out_sample,
    );
    // Same weights as the int64-timestep model (same family/seed): per-sample results agree.
    const ref = await open(await fixtureModel('sd15-optimum', { layout: 'optimum' }), 'unet');
    const refOut = f32(
      (
        await ref.run(
          unetFeeds(sig(ref.inputMetadata), {
            batch: 2,
            channels: 4,
            h: 8,
            w: 8,
            t: 500,
            ctx: 32,
            sample,
          }),
        )
      ).out_sample,
    );
    expect(maxAbsDiff(out, refOut)).toBeLessThan(1e-4);
  });

  it('fp16 export: every float input and output is float16, integers stay integers, same network', async () => {
    const dir = await fixtureModel('sd15-fp16', { dtype: 'float16' });
    const te = await open(dir, 'text_encoder');
    expect(sig(te.inputMetadata).input_ids.type).toBe('int32');
    expect(sig(te.outputMetadata).last_hidden_state.type).toBe('float16');
    expect(sig(te.outputMetadata).pooler_output.type).toBe('float16');
    const unet = await open(dir, 'unet');
    const us = sig(unet.inputMetadata);
    expect(us.sample.type).toBe('float16');
    expect(us.timestep.type).toBe('float16');
    expect(us.encoder_hidden_states.type).toBe('float16');
    expect(sig(unet.outputMetadata).out_sample.type).toBe('float16');
    for (const sub of ['vae_encoder', 'vae_decoder']) {
      const s = await open(dir, sub);
      for (const m of [
        ...Object.values(sig(s.inputMetadata)),
        ...Object.values(sig(s.outputMetadata)),
      ])
        expect(m.type).toBe('float16');
    }
    // fp16 weights on disk: the UNet file is about half the fp32 one.
    const dir32 = await fixtureModel('sd15', {});
    const size16 = statSync(path.join(dir, 'unet/model.onnx')).size;
    const size32 = statSync(path.join(dir32, 'unet/model.onnx')).size;
    expect(size16 / size32).toBeLessThan(0.6);
    // Same weights up to fp16 rounding: outputs agree closely with the fp32 model.
    const sample = randn(4 * 8 * 8, 11);
    const o16 = f32(
      (
        await unet.run(
          unetFeeds(us, { batch: 1, channels: 4, h: 8, w: 8, t: 300, ctx: 32, sample }),
        )
      ).out_sample,
    );
    const u32 = await open(dir32, 'unet');
    const o32 = f32(
      (
        await u32.run(
          unetFeeds(sig(u32.inputMetadata), {
            batch: 1,
            channels: 4,
            h: 8,
            w: 8,
            t: 300,
            ctx: 32,
            sample,
          }),
        )
      ).out_sample,
    );
    const scale = Math.max(...o32.map(Math.abs));
    expect(maxAbsDiff(o16, o32) / scale).toBeLessThan(0.02);
  });

  it.each([
    ['diffusers', 'weights.pb'],
    ['optimum', 'model.onnx_data'],
  ] as const)(
    'external weights, %s layout (%s), load by path and equal the inline model',
    async (layout, file) => {
      const dir = await fixtureModel(`sd15-ext-${layout}`, { layout, externalWeights: true });
      const ext = path.join(dir, 'unet', file);
      expect(existsSync(ext)).toBe(true);
      expect(statSync(ext).size).toBeGreaterThan(2_000_000);
      expect(statSync(path.join(dir, 'unet/model.onnx')).size).toBeLessThan(400_000);
      const inline = await fixtureModel(layout === 'diffusers' ? 'sd15' : 'sd15-optimum', {
        layout,
      });
      const a = await open(dir, 'unet');
      const b = await open(inline, 'unet');
      const sample = randn(2 * 4 * 8 * 8, 12);
      const opts = { batch: 2, channels: 4, h: 8, w: 8, t: 400, ctx: 32, sample };
      const oa = f32((await a.run(unetFeeds(sig(a.inputMetadata), opts))).out_sample);
      const ob = f32((await b.run(unetFeeds(sig(b.inputMetadata), opts))).out_sample);
      expect(maxAbsDiff(oa, ob)).toBeLessThan(1e-6);
    },
  );

  it('inpainting: 9-channel UNet, inpaint pipeline class', async () => {
    const dir = await fixtureModel('inpaint', { family: 'inpaint' });
    expect(readJson(path.join(dir, 'model_index.json'))._class_name).toBe(
      'OnnxStableDiffusionInpaintPipeline',
    );
    const unet = await open(dir, 'unet');
    const us = sig(unet.inputMetadata);
    const out = await unet.run(
      unetFeeds(us, { batch: 2, channels: 9, h: 8, w: 8, t: 500, ctx: 32 }),
    );
    expect(out.out_sample.dims).toEqual([2, 4, 8, 8]);
    await expect(
      unet.run(unetFeeds(us, { batch: 1, channels: 4, h: 8, w: 8, t: 500, ctx: 32 })),
    ).rejects.toThrow();
    const opt = await fixtureModel('inpaint-optimum', { family: 'inpaint', layout: 'optimum' });
    expect(readJson(path.join(opt, 'unet/config.json')).in_channels).toBe(9);
  });

  it('x4 upscaler: 7-channel UNet with int64 class_labels, 4x decoder in vae/, low_res_scheduler', async () => {
    const dir = await fixtureModel('x4', { family: 'x4' });
    const idx = readJson(path.join(dir, 'model_index.json'));
    expect(idx).toMatchObject({
      _class_name: 'OnnxStableDiffusionUpscalePipeline',
      max_noise_level: 350,
    });
    expect(existsSync(path.join(dir, 'vae_encoder'))).toBe(false);
    expect(readJson(path.join(dir, 'scheduler/scheduler_config.json')).prediction_type).toBe(
      'v_prediction',
    );
    expect(readJson(path.join(dir, 'low_res_scheduler/scheduler_config.json'))).toMatchObject({
      _class_name: 'DDPMScheduler',
      clip_sample: true,
      beta_start: 0.0001,
      beta_end: 0.02,
    });
    expect(
      JSON.parse(readFileSync(path.join(dir, 'tokenizer/special_tokens_map.json'), 'utf8'))
        .pad_token,
    ).toBe('!');
    const unet = await open(dir, 'unet');
    const us = sig(unet.inputMetadata);
    expect(Object.keys(us)).toEqual([
      'sample',
      'timestep',
      'encoder_hidden_states',
      'class_labels',
    ]);
    expect(us.class_labels).toEqual({ type: 'int64', shape: ['batch'] });
    const out = await unet.run(
      unetFeeds(us, { batch: 2, channels: 7, h: 8, w: 8, t: 500, ctx: 32 }),
    );
    expect(out.out_sample.dims).toEqual([2, 4, 8, 8]);
    const dec = await open(dir, 'vae');
    const img = await dec.run({
      latent_sample: new ort.Tensor('float32', randn(4 * 8 * 8, 3), [1, 4, 8, 8]),
    });
    expect(img.sample.dims).toEqual([1, 3, 32, 32]);
  });

  it('sdxl (optimum): two text encoders with hidden_states.N, UNet text_embeds and time_ids', async () => {
    const dir = await fixtureModel('sdxl', {
      family: 'sdxl',
      layout: 'optimum',
      externalWeights: true,
    });
    const idx = readJson(path.join(dir, 'model_index.json'));
    expect(idx).toMatchObject({
      _class_name: 'StableDiffusionXLPipeline',
      force_zeros_for_empty_prompt: true,
    });
    expect(readJson(path.join(dir, 'vae_decoder/config.json')).scaling_factor).toBe(0.13025);
    expect(
      JSON.parse(readFileSync(path.join(dir, 'tokenizer_2/special_tokens_map.json'), 'utf8'))
        .pad_token,
    ).toBe('!');
    expect(existsSync(path.join(dir, 'text_encoder_2/model.onnx_data'))).toBe(true);
    const info = await loadFixtureInfo(dir);
    const te1 = await open(dir, 'text_encoder');
    const te2 = await open(dir, 'text_encoder_2');
    const o1 = sig(te1.outputMetadata);
    const o2 = sig(te2.outputMetadata);
    expect(Object.keys(o1)).toEqual([
      'last_hidden_state',
      'pooler_output',
      ...Array.from({ length: 13 }, (_, i) => `hidden_states.${i}`),
    ]);
    expect(Object.keys(o2)).toEqual([
      'text_embeds',
      'last_hidden_state',
      ...Array.from({ length: 33 }, (_, i) => `hidden_states.${i}`),
    ]);
    const D1 = info.hiddenSize;
    const D2 = info.hiddenSize2!;
    expect(o1['hidden_states.11'].shape).toEqual(['batch_size', 'sequence_length', D1]);
    expect(o2['hidden_states.31'].shape).toEqual(['batch_size', 'sequence_length', D2]);
    expect(o2.text_embeds.shape).toEqual(['batch_size', D2]);
    const r1 = await te1.run({ input_ids: tokenIds(info, 2, info.vocabSize - 1, 'int64') });
    const r2 = await te2.run({ input_ids: tokenIds(info, 2, 0, 'int64') });
    const unet = await open(dir, 'unet');
    const us = sig(unet.inputMetadata);
    expect(Object.keys(us)).toEqual([
      'sample',
      'timestep',
      'encoder_hidden_states',
      'text_embeds',
      'time_ids',
    ]);
    expect(us.text_embeds).toEqual({ type: F, shape: ['batch_size', D2] });
    expect(us.time_ids).toEqual({ type: F, shape: ['batch_size', 6] });
    expect(us.encoder_hidden_states.shape).toEqual(['batch_size', 'sequence_length', D1 + D2]);
    // Prompt embeds as diffusers makes them: concat(hidden_states.11, hidden_states.31).
    const h1 = f32(r1['hidden_states.11']);
    const h2 = f32(r2['hidden_states.31']);
    const ehs = new Float32Array(2 * 77 * (D1 + D2));
    for (let t = 0; t < 2 * 77; t++) {
      ehs.set(h1.subarray(t * D1, (t + 1) * D1), t * (D1 + D2));
      ehs.set(h2.subarray(t * D2, (t + 1) * D2), t * (D1 + D2) + D1);
    }
    const feeds = unetFeeds(us, { batch: 2, channels: 4, h: 8, w: 8, t: 999, ctx: D1 + D2 });
    feeds.encoder_hidden_states = new ort.Tensor('float32', ehs, [2, 77, D1 + D2]);
    feeds.text_embeds = r2.text_embeds;
    const out = await unet.run(feeds);
    expect(out.out_sample.dims).toEqual([2, 4, 8, 8]);
    // time_ids matter.
    feeds.time_ids = new ort.Tensor('float32', new Float32Array(12).fill(512), [2, 6]);
    expect(
      maxAbsDiff(f32((await unet.run(feeds)).out_sample), f32(out.out_sample)),
    ).toBeGreaterThan(1e-4);
  });

  it('lcm: timestep_cond [B, 256], LCM scheduler config', async () => {
    const dir = await fixtureModel('lcm', { family: 'lcm' });
    expect(readJson(path.join(dir, 'scheduler/scheduler_config.json'))).toMatchObject({
      _class_name: 'LCMScheduler',
      set_alpha_to_one: true,
      original_inference_steps: 50,
      timestep_scaling: 10,
    });
    const unet = await open(dir, 'unet');
    const us = sig(unet.inputMetadata);
    expect(us.timestep_cond).toEqual({ type: F, shape: ['batch', 256] });
    const feeds = unetFeeds(us, { batch: 2, channels: 4, h: 8, w: 8, t: 999, ctx: 32 });
    const a = f32((await unet.run(feeds)).out_sample);
    feeds.timestep_cond = new ort.Tensor('float32', new Float32Array(512), [2, 256]);
    expect(maxAbsDiff(f32((await unet.run(feeds)).out_sample), a)).toBeGreaterThan(1e-5);
  });

  it('family facts: schedulers, pad tokens, scaling factors', async () => {
    const v = await fixtureModelInfo('sd21v-ka', { family: 'sd21v', unet: 'known-answer' });
    expect(v.prediction).toBe('v_prediction');
    expect(
      JSON.parse(readFileSync(path.join(v.dir, 'tokenizer/special_tokens_map.json'), 'utf8'))
        .pad_token,
    ).toBe('!');
    const t = await fixtureModel('sdturbo', { family: 'sdturbo' });
    expect(readJson(path.join(t, 'scheduler/scheduler_config.json'))).toMatchObject({
      _class_name: 'EulerDiscreteScheduler',
      timestep_spacing: 'trailing',
    });
    // alphas_cumprod of SD's schedule, as diffusers computes it (reference/scheduler-vectors.json).
    const abar = alphasCumprod();
    expect(abar[0]).toBeCloseTo(0.99915, 6);
    expect(abar[1]).toBeCloseTo(0.9982960278, 6);
    expect(abar[499]).toBeCloseTo(0.2776696505, 6);
    expect(abar[999]).toBeCloseTo(0.0046600985, 7);
    // The known-answer UNet's sigma(t) interpolation is Euler's: linspace 25 steps, t = 957.375.
    const sig = (i: number) => Math.sqrt((1 - abar[i]) / abar[i]);
    expect(sig(957) + (sig(958) - sig(957)) * 0.375).toBeCloseTo(11.435937881, 4);
    expect(sig(999)).toBeCloseTo(14.614641189, 4);
  });
});

describe('VAE: an exact linear 8x8 patch codec', () => {
  it('decode(encode(x)) is the patch projection; blockwise-constant images come back exactly', async () => {
    const dir = await fixtureModel('sd15', {});
    const enc = await open(dir, 'vae_encoder');
    const dec = await open(dir, 'vae_decoder');
    const H = 32;
    const W = 48;
    // An image constant on each aligned 8x8 block.
    const blocky = new Float32Array(3 * H * W);
    const r = new Prng(7);
    const colors = Array.from({ length: 3 * (H / 8) * (W / 8) }, () => r.uniform(-1, 1));
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++)
          blocky[c * H * W + y * W + x] = colors[(c * (H / 8) + (y >> 3)) * (W / 8) + (x >> 3)];
    const lat = await enc.run({ sample: new ort.Tensor('float32', blocky, [1, 3, H, W]) });
    const z = f32(lat.latent_sample);
    // Raw latent of a constant patch (r, g, b) = (8r, 8g, 8b, 0).
    expect(z[0]).toBeCloseTo(8 * colors[0], 4);
    expect(z[3 * (H / 8) * (W / 8)]).toBeCloseTo(0, 5);
    const back = f32((await dec.run({ latent_sample: lat.latent_sample })).sample);
    expect(maxAbsDiff(back, blocky)).toBeLessThan(1e-5);
    // Any image: the round trip is the orthogonal projection computed in JS.
    const noisy = randn(3 * H * W, 8, 0.5);
    const z2 = await enc.run({ sample: new ort.Tensor('float32', noisy, [1, 3, H, W]) });
    const back2 = f32((await dec.run({ latent_sample: z2.latent_sample })).sample);
    expect(maxAbsDiff(back2, vaeRoundTrip(noisy, H, W, 8))).toBeLessThan(1e-5);
  });

  it('optimum >= 1.23 variant outputs latent_parameters (mean, logvar)', async () => {
    const dir = await fixtureModel('sd15-latent-params', {
      layout: 'optimum',
      vaeLatentParameters: true,
    });
    const enc = await open(dir, 'vae_encoder');
    expect(sig(enc.outputMetadata)).toEqual({
      latent_parameters: { type: F, shape: ['batch_size', 8, 'height_latent', 'width_latent'] },
    });
    const out = f32(
      (
        await enc.run({
          sample: new ort.Tensor(
            'float32',
            new Float32Array(3 * 16 * 16).fill(0.5),
            [1, 3, 16, 16],
          ),
        })
      ).latent_parameters,
    );
    expect(out[0]).toBeCloseTo(4, 4); // mean of R = 8 * 0.5
    // [1, 8, 2, 2]: channel stride 4.
    expect(out[4]).toBeCloseTo(4, 4); // G
    expect(out[8]).toBeCloseTo(4, 4); // B
    expect(out[12]).toBeCloseTo(0, 5); // ramp
    expect(out.slice(16)).toEqual(new Float32Array(16).fill(-20)); // logvar
  });

  it('fp16 VAE round trip', async () => {
    const dir = await fixtureModel('sd15-fp16', { dtype: 'float16' });
    const enc = await open(dir, 'vae_encoder');
    const dec = await open(dir, 'vae_decoder');
    const img = new Float32Array(3 * 16 * 16).fill(-0.25);
    const z = await enc.run({
      sample: new ort.Tensor('float16', toHalfArray(img), [1, 3, 16, 16]),
    });
    expect(z.latent_sample.type).toBe('float16');
    const back = f32((await dec.run({ latent_sample: z.latent_sample })).sample);
    expect(maxAbsDiff(back, img)).toBeLessThan(2e-3);
  });
});

describe('known-answer UNet: the exact denoiser for {x_k}', () => {
  const noised = (
    info: FixtureInfo,
    t: number,
    ks: number[],
    seed: number,
    h = info.latentSize,
    w = info.latentSize,
  ) => {
    const abar = info.alphasCumprod[t];
    const N = 4 * h * w;
    const x = new Float32Array(ks.length * N);
    const noise = randn(x.length, seed);
    ks.forEach((k, b) => {
      const xk =
        h === info.latentSize && w === info.latentSize
          ? info.knownLatents![k]
          : resizeLatentNearest(info.knownLatents![k], info.latentSize, info.latentSize, h, w);
      for (let i = 0; i < N; i++)
        x[b * N + i] = Math.sqrt(abar) * xk[i] + Math.sqrt(1 - abar) * noise[b * N + i];
    });
    return x;
  };

  it('at small noise, eps reconstructs the x_k each sample came from (per-sample, any batch)', async () => {
    const info = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
    expect(info.knownLatents).toHaveLength(4);
    const unet = await open(info.dir, 'unet');
    const us = sig(unet.inputMetadata);
    const t = 100;
    const ks = [2, 0, 3, 1, 2];
    const x = noised(info, t, ks, 21);
    const eps = f32(
      (
        await unet.run(
          unetFeeds(us, { batch: ks.length, channels: 4, h: 8, w: 8, t, ctx: 32, sample: x }),
        )
      ).out_sample,
    );
    const abar = info.alphasCumprod[t];
    const N = 4 * 64;
    ks.forEach((k, b) => {
      const x0 = new Float32Array(N);
      for (let i = 0; i < N; i++)
        x0[i] = (x[b * N + i] - Math.sqrt(1 - abar) * eps[b * N + i]) / Math.sqrt(abar);
      expect(maxAbsDiff(x0, info.knownLatents![k])).toBeLessThan(1e-3);
      // ...and eps is the noise that was added.
    });
  });

  it('at large noise the estimate is a blend (the softmax is not a hard argmax)', async () => {
    const info = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
    const unet = await open(info.dir, 'unet');
    const t = 999;
    const x = randn(4 * 64, 30); // pure noise: x_T
    const eps = f32(
      (
        await unet.run(
          unetFeeds(sig(unet.inputMetadata), {
            batch: 1,
            channels: 4,
            h: 8,
            w: 8,
            t,
            ctx: 32,
            sample: x,
          }),
        )
      ).out_sample,
    );
    const abar = info.alphasCumprod[t];
    const x0 = x.map((v, i) => (v - Math.sqrt(1 - abar) * eps[i]) / Math.sqrt(abar));
    const dists = info.knownLatents!.map((xk) => maxAbsDiff(x0, xk));
    expect(Math.min(...dists)).toBeGreaterThan(1e-3);
  });

  it('an Euler sampler from pure noise lands on one of the x_k; float16 and int64-timestep variants agree', async () => {
    const sampleEuler = async (info: FixtureInfo, seed: number) => {
      const unet = await open(info.dir, 'unet');
      const us = sig(unet.inputMetadata);
      const abar = info.alphasCumprod;
      const steps = 20;
      // linspace timesteps, sigmas interpolated, final 0 (ENGINE-NOTES §3).
      const ts = Array.from({ length: steps }, (_, i) => 999 - (999 * i) / (steps - 1));
      const sigmaAt = (t: number) => {
        const i0 = Math.floor(t);
        const i1 = Math.min(i0 + 1, 999);
        const s = (i: number) => Math.sqrt((1 - abar[i]) / abar[i]);
        return s(i0) + (s(i1) - s(i0)) * (t - i0);
      };
      const sigmas = [...ts.map(sigmaAt), 0];
      let x = randn(4 * 64, seed, sigmas[0]);
      for (let i = 0; i < steps; i++) {
        const s = sigmas[i];
        const scaled = x.map((v) => v / Math.sqrt(s * s + 1));
        const out = f32(
          (
            await unet.run(
              unetFeeds(us, {
                batch: 1,
                channels: info.unetChannels,
                h: 8,
                w: 8,
                t: ts[i],
                ctx: info.ctx,
                sample: info.unetChannels === 4 ? scaled : pad9(scaled),
              }),
            )
          ).out_sample,
        );
        let eps = out;
        if (info.prediction === 'v_prediction') {
          // eps = sqrt(abar) v + sqrt(1 - abar) x_in  (x_in = scaled input)
          const a = 1 / (s * s + 1);
          eps = out.map((v, j) => Math.sqrt(a) * v + Math.sqrt(1 - a) * scaled[j]);
        }
        const next = sigmas[i + 1];
        x = x.map((v, j) => v + (next - s) * eps[j]);
      }
      const d = info.knownLatents!.map((xk) => maxAbsDiff(x, xk));
      return { k: d.indexOf(Math.min(...d)), d: Math.min(...d) };
    };
    const pad9 = (x: Float32Array) => {
      const o = new Float32Array(9 * 64);
      o.set(x);
      return o;
    };
    const hits = new Set<number>();
    const eps32 = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
    let base = -1;
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const r = await sampleEuler(eps32, seed);
      expect(r.d).toBeLessThan(0.05);
      hits.add(r.k);
      if (seed === 1) base = r.k;
    }
    expect(hits.size).toBeGreaterThan(1); // different seeds reach different x_k
    // The same noise through the same exact denoiser in another export form (fp16 I/O, int64
    // timesteps, v-prediction: the same ODE), or with inpainting's extra channels, lands on
    // the same x_k.
    for (const spec of [
      { unet: 'known-answer', dtype: 'float16' },
      { unet: 'known-answer', layout: 'optimum', timestep: 'int64' },
      { unet: 'known-answer', family: 'sd21v' },
      { unet: 'known-answer', family: 'inpaint' },
    ] as FixtureSpec[]) {
      const info = await fixtureModelInfo(
        `ka-${spec.family ?? 'sd15'}-${spec.dtype ?? spec.layout ?? 'x'}`,
        spec,
      );
      const r = await sampleEuler(info, 1);
      expect(r.d, JSON.stringify(spec)).toBeLessThan(info.dtype === 'float16' ? 0.1 : 0.08);
      expect(r.k, JSON.stringify(spec)).toBe(base);
    }
  });

  it('v-prediction (sd21v): v = sqrt(abar) eps - sqrt(1-abar) x0 of the nearest x_k', async () => {
    const info = await fixtureModelInfo('sd21v-ka', { family: 'sd21v', unet: 'known-answer' });
    const unet = await open(info.dir, 'unet');
    const t = 50;
    const x = noised(info, t, [1, 3], 40);
    const v = f32(
      (
        await unet.run(
          unetFeeds(sig(unet.inputMetadata), {
            batch: 2,
            channels: 4,
            h: 8,
            w: 8,
            t,
            ctx: 32,
            sample: x,
          }),
        )
      ).out_sample,
    );
    const a = info.alphasCumprod[t];
    const N = 256;
    [1, 3].forEach((k, b) => {
      // x0 = sqrt(abar) x_t - sqrt(1 - abar) v
      const x0 = new Float32Array(N);
      for (let i = 0; i < N; i++)
        x0[i] = Math.sqrt(a) * x[b * N + i] - Math.sqrt(1 - a) * v[b * N + i];
      expect(maxAbsDiff(x0, info.knownLatents![k])).toBeLessThan(1e-3);
    });
  });

  it('other latent sizes: the set is the nearest-resized x_k', async () => {
    const info = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
    const unet = await open(info.dir, 'unet');
    const [h, w] = [12, 20];
    const t = 80;
    const x = noised(info, t, [3], 50, h, w);
    const eps = f32(
      (
        await unet.run(
          unetFeeds(sig(unet.inputMetadata), {
            batch: 1,
            channels: 4,
            h,
            w,
            t,
            ctx: 32,
            sample: x,
          }),
        )
      ).out_sample,
    );
    const a = info.alphasCumprod[t];
    const x0 = x.map((v, i) => (v - Math.sqrt(1 - a) * eps[i]) / Math.sqrt(a));
    expect(maxAbsDiff(x0, resizeLatentNearest(info.knownLatents![3], 8, 8, h, w))).toBeLessThan(
      1e-3,
    );
  });

  it('decoding x_k gives its four colour quadrants', async () => {
    const info = await fixtureModelInfo('sd15-ka', { unet: 'known-answer' });
    const dec = await open(info.dir, 'vae_decoder');
    const z = info.knownLatents![1].map((v) => v / info.vaeScale);
    const img = f32(
      (await dec.run({ latent_sample: new ort.Tensor('float32', z, [1, 4, 8, 8]) })).sample,
    );
    const S = 64;
    const quads = [
      [8, 8],
      [8, 56],
      [56, 8],
      [56, 56],
    ];
    quads.forEach(([y, x], q) => {
      for (let c = 0; c < 3; c++)
        expect(img[c * S * S + y * S + x]).toBeCloseTo(info.knownColors![1][q][c], 4);
    });
  });
});

describe('config-driven UNet', () => {
  it('emits the SD 1.5 shape: 859,520,964 parameters, as diffusers counts them', () => {
    const g = unetGraph(SD15_UNET_CONFIG);
    expect(g.paramCount).toBe(859_520_964);
  });

  it('builds and runs the mid-size benchmark UNet', async () => {
    const info = await fixtureModelInfo('mid', { unet: MID_UNET_CONFIG, externalWeights: true });
    expect(info.unetParams).toBeGreaterThan(10e6);
    expect(info.unetParams).toBeLessThan(30e6);
    expect(info.hiddenSize).toBe(256);
    const unet = await open(info.dir, 'unet');
    const us = sig(unet.inputMetadata);
    expect(us.encoder_hidden_states.shape).toEqual(['batch', 'sequence', 256]);
    const out = f32(
      (await unet.run(unetFeeds(us, { batch: 2, channels: 4, h: 16, w: 16, t: 500, ctx: 256 })))
        .out_sample,
    );
    expect(out.length).toBe(2 * 4 * 16 * 16);
    expect(allFinite(out)).toBe(true);
  });
});
