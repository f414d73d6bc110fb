// The load-time attention rewrite (src/engine/models/attention-rewrite.ts) with real
// onnxruntime-node: exported MatMul + Softmax attention in the layouts torch.onnx exports write
// (diffusers' 4-D head split with the scale on the scores, scaled_dot_product_attention's scale
// on q and k with shapes computed at run time, the 3-D batch of heads, a Div) becomes
// MultiHeadAttention and computes the same; a masked or shared pattern is left alone; a fixture
// UNet (fp32 and fp16 storage) loads rewritten through createSession, with and without the
// optimized-graph cache, and matches the unrewritten graph within 1e-4.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createSession } from '../../src/engine/models';
import { rewriteAttention } from '../../src/engine/models/attention-rewrite';
import type { FixtureInfo } from '../fixtures/models';
import { GraphBuilder, Nn, Prng } from '../fixtures/onnx-builder';
import { buildTinyUNet, runTinyUNet } from '../fixtures/tiny-unet-run';

let root: string;

beforeAll(async () => {
  root = await mkdtemp(path.join(tmpdir(), 'latent-attn-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const N = 16;
const M = 7;
const C = 32;
const CTX = 24;
const HEADS = 4;
const DH = C / HEADS;

type Layout = 'diffusers' | 'sdpa' | 'sdpa-runtime-scale' | 'batch-heads' | 'div';

/**
 * One attention block: x [b, N, C] attends over itself (self) or ctx [b, M, CTX] (cross), in
 * the given exported layout; `mask` adds a constant to the scores, `leak` also outputs them.
 */
function attentionModel(
  layout: Layout,
  opts: { cross?: boolean; mask?: boolean; leak?: boolean; shapeOut?: boolean } = {},
): string {
  const g = new GraphBuilder(`attn-${layout}`, { seed: 7 });
  const nn = new Nn(g);
  const x = g.input('x', 'float32', ['batch', N, C]);
  const kvIn = opts.cross ? g.input('ctx', 'float32', ['batch', M, CTX]) : x;
  const kvDim = opts.cross ? CTX : C;
  const q = nn.linear(x, C, C, 'to_q', false);
  const k = nn.linear(kvIn, kvDim, C, 'to_k', false);
  const v = nn.linear(kvIn, kvDim, C, 'to_v', false);
  const scale = 1 / Math.sqrt(DH);
  // [b, n, H, d] target: constant, or computed from the input's shape as torch exports it.
  const dynamic = (t: string, tail: number[]): string => {
    const dims = g.op('Shape', [t]);
    const pick = (i: number) =>
      g.op('Unsqueeze', [g.op('Gather', [dims, g.i64(i, [])], { axis: 0 }), g.i64([0])]);
    return g.op('Concat', [pick(0), pick(1), g.i64(tail)], { axis: 0 });
  };
  const split = (t: string): string => {
    const shape = layout.startsWith('sdpa') ? dynamic(t, [HEADS, DH]) : g.i64([0, 0, HEADS, DH]);
    return g.op('Transpose', [g.op('Reshape', [t, shape])], { perm: [0, 2, 1, 3] });
  };
  let scores: string;
  let probsTo: (p: string) => string;
  if (layout === 'batch-heads') {
    const fold = (t: string, n: number) => g.op('Reshape', [split(t), g.i64([-1, n, DH])]);
    const kt = g.op('Transpose', [fold(k, opts.cross ? M : N)], { perm: [0, 2, 1] });
    scores = g.op('Mul', [g.op('MatMul', [fold(q, N), kt]), g.f32(scale)]);
    probsTo = (p) => {
      const out = g.op('MatMul', [p, fold(v, opts.cross ? M : N)]);
      const unfold = g.op('Reshape', [out, g.i64([-1, HEADS, N, DH])]);
      const t = g.op('Transpose', [unfold], { perm: [0, 2, 1, 3] });
      return g.op('Reshape', [t, g.i64([0, 0, C])]);
    };
  } else {
    const kt = g.op('Transpose', [split(k)], { perm: [0, 1, 3, 2] });
    if (layout.startsWith('sdpa')) {
      const qh = split(q);
      // torch's export: sqrt(1 / sqrt(float(Shape(q)[-1]))), computed at run time.
      const runtime = () => {
        const last = g.op('Slice', [g.op('Shape', [qh]), g.i64([-1]), g.i64([2 ** 62])]);
        const d = g.op('Cast', [last], { to: 1 });
        return g.op('Sqrt', [g.op('Div', [g.f32([1]), g.op('Sqrt', [d])])]);
      };
      const root = layout === 'sdpa' ? g.f32(Math.sqrt(scale)) : runtime();
      if (opts.shapeOut) g.output(g.op('Shape', [qh]), 'q_shape', 'int64', [4]);
      scores = g.op('MatMul', [g.op('Mul', [qh, root]), g.op('Mul', [kt, root])]);
    } else if (layout === 'div')
      scores = g.op('Div', [g.op('MatMul', [split(q), kt]), g.f32(Math.sqrt(DH))]);
    else scores = g.op('Mul', [g.op('MatMul', [split(q), kt]), g.f32(scale)]);
    probsTo = (p) => {
      const t = g.op('Transpose', [g.op('MatMul', [p, split(v)])], { perm: [0, 2, 1, 3] });
      return g.op('Reshape', [t, g.i64([0, 0, C])]);
    };
  }
  if (opts.mask) scores = g.op('Add', [scores, g.f32(0.5)]);
  const probs = g.op('Softmax', [scores], { axis: -1 });
  const y = nn.linear(probsTo(probs), C, C, 'to_out', true);
  g.output(y, 'y', 'float32', ['batch', N, C]);
  if (opts.leak) g.output(scores, 'scores', 'float32', null);
  const file = path.join(
    root,
    `${layout}-${opts.cross ? 'x' : 's'}${opts.mask ? 'm' : ''}${opts.leak ? 'l' : ''}${opts.shapeOut ? 'o' : ''}.onnx`,
  );
  g.save(file);
  return file;
}

function random(n: number, seed: number): Float32Array {
  const rng = new Prng(seed);
  return Float32Array.from({ length: n }, () => rng.normal());
}

async function runBoth(original: Uint8Array, rewritten: Uint8Array, cross: boolean) {
  const feeds: Record<string, ort.Tensor> = {
    x: new ort.Tensor('float32', random(2 * N * C, 1), [2, N, C]),
  };
  if (cross) feeds.ctx = new ort.Tensor('float32', random(2 * M * CTX, 2), [2, M, CTX]);
  const outs: Float32Array[] = [];
  for (const bytes of [original, rewritten]) {
    const s = await ort.InferenceSession.create(bytes);
    outs.push((await s.run(feeds)).y.data as Float32Array);
    await s.release();
  }
  return outs;
}

const maxAbs = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
};

const has = (bytes: Uint8Array, text: string) => Buffer.from(bytes).includes(text);

describe('attention rewrite: exported layouts', () => {
  for (const layout of ['diffusers', 'sdpa', 'sdpa-runtime-scale', 'batch-heads', 'div'] as const) {
    for (const cross of [false, true]) {
      test(`${layout}, ${cross ? 'cross' : 'self'}-attention becomes MultiHeadAttention with equal outputs`, async () => {
        const original = await readFile(attentionModel(layout, { cross }));
        const r = rewriteAttention(original);
        expect(r?.replaced).toBe(1);
        const model = r!.model;
        expect(has(model, 'MultiHeadAttention')).toBe(true);
        expect(has(model, 'Softmax')).toBe(false);
        // Nothing left to rewrite, and the dead shape arithmetic went with the pattern.
        expect(rewriteAttention(model)).toBeNull();
        if (layout.startsWith('sdpa')) expect(has(model, 'Gather')).toBe(false);
        if (layout === 'sdpa-runtime-scale') expect(has(model, 'Sqrt')).toBe(false);
        const [a, b] = await runBoth(original, model, cross);
        expect(maxAbs(a, b)).toBeLessThan(1e-4);
      });
    }
  }

  test('a masked attention, or one whose scores are used elsewhere, is left unchanged', async () => {
    expect(
      rewriteAttention(await readFile(attentionModel('diffusers', { mask: true }))),
    ).toBeNull();
    expect(
      rewriteAttention(await readFile(attentionModel('diffusers', { leak: true }))),
    ).toBeNull();
  });

  test('bytes that are not a model are not rewritten (ONNX Runtime reports them itself)', () => {
    expect(rewriteAttention(Uint8Array.from([0xff, 0xff, 0xff]))).toBeNull();
    expect(rewriteAttention(new Uint8Array(0))).toBeNull();
  });
});

describe('attention rewrite: fixture UNets through createSession', () => {
  const models: Record<string, FixtureInfo> = {};
  beforeAll(async () => {
    for (const dtype of ['float32', 'float16'] as const)
      models[dtype] = await buildTinyUNet(root, dtype);
  }, 120_000);

  async function unetOut(dtype: 'float32' | 'float16', rewrite: boolean, cacheDir?: string) {
    const file = path.join(models[dtype].dir, 'unet', 'model.onnx');
    const created = await createSession(file, 'unet/model.onnx', 'cpu', {
      rewriteAttention: rewrite,
      ...(cacheDir ? { optimizedCacheDir: cacheDir } : {}),
    });
    try {
      return {
        out: await runTinyUNet(created.session, dtype),
        rewrites: created.attentionRewrites,
        cache: created.cache,
        attention: created.attention,
      };
    } finally {
      await created.session.release();
    }
  }

  for (const dtype of ['float32', 'float16'] as const) {
    test(`${dtype} storage: every transformer's two attentions are rewritten, outputs equal`, async () => {
      const plain = await unetOut(dtype, false);
      expect(plain.rewrites).toBe(0);
      const fused = await unetOut(dtype, true);
      // Every Softmax of the UNet is an attention's (op_type field: 0x22, length 7, "Softmax").
      const file = await readFile(path.join(models[dtype].dir, 'unet', 'model.onnx'));
      const softmaxes = file.toString('latin1').split('\x22\x07Softmax').length - 1;
      expect(softmaxes).toBeGreaterThanOrEqual(8);
      expect(fused.rewrites).toBe(softmaxes);
      // What the memory plan reads: the exported graph holds its scores, the rewritten one not.
      expect(plain.attention).toEqual({ fused: 0, materialised: softmaxes });
      expect(fused.attention).toEqual({ fused: softmaxes, materialised: 0 });
      // fp16 I/O: compared in float16's own resolution at the output's scale.
      const tol = dtype === 'float16' ? 2e-3 * Math.max(1, ...plain.out.map(Math.abs)) : 1e-4;
      expect(maxAbs(plain.out, fused.out)).toBeLessThan(tol);
    }, 120_000);
  }

  test('with the optimized-graph cache: written rewritten once, then opened as it is', async () => {
    const cacheDir = path.join(root, 'cache');
    const plain = await unetOut('float32', false);
    const first = await unetOut('float32', true, cacheDir);
    expect(first.cache).toBe('written');
    expect(first.rewrites).toBeGreaterThan(0);
    const second = await unetOut('float32', true, cacheDir);
    expect(second.cache).toBe('hit');
    expect(second.rewrites).toBe(0);
    expect(maxAbs(plain.out, second.out)).toBeLessThan(1e-4);
    // A cache hit reads its attention from the optimized graph ONNX Runtime wrote.
    expect(second.attention).toEqual(first.attention);
    expect(first.attention).toEqual({ fused: first.rewrites, materialised: 0 });
    // Keyed apart: without the rewrite the same file gets its own entry.
    const off = await unetOut('float32', false, cacheDir);
    expect(off.cache).toBe('written');
    const offAgain = await unetOut('float32', false, cacheDir);
    expect(offAgain.cache).toBe('hit');
    expect(offAgain.attention).toEqual({ fused: 0, materialised: first.rewrites });
  }, 120_000);
});
