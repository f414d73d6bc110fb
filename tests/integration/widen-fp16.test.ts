// The CPU provider's float16 widening (src/engine/models/widen-fp16.ts) with real
// onnxruntime-node: a weight stored float16 behind Cast(to: float) becomes a float32 weight in
// a temporary external-data file, its Cast dropped, its values exactly the float16 ones; a
// float16 weight the graph computes with is kept; the session computes exactly what the
// unwidened graph computes (fixture UNet, fp16 storage and I/O; a UNet the checkpoint converter
// wrote in its default fp16, every weight widened); the temporary folder is gone
// after the load; an optimized-graph cache entry holds float32 weights and a cache hit widens
// nothing; other providers keep float16.
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { createSession } from '../../src/engine/models';
import { readOnnxInitializerIndex } from '../../src/engine/models/onnx-file';
import {
  WIDENED_DATA,
  WIDEN_TMP_PREFIX,
  inMemoryFolder,
  widenFloat16IfAny,
  widenFloat16Weights,
  widensFloat16,
} from '../../src/engine/models/widen-fp16';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { type FixtureInfo, fixtureCacheDir } from '../fixtures/models';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { buildTinyUNet, runTinyUNet } from '../fixtures/tiny-unet-run';
import { GraphBuilder, Prng, fromHalfArray, toHalfArray } from '../fixtures/onnx-builder';

let root: string;
const savedTmp = process.env.TMPDIR;

beforeAll(async () => {
  // Beside the fixture models, not in the system's temporary folder: a tmpfs /tmp is never
  // widened into (the widened file would live in memory).
  await mkdir(fixtureCacheDir(), { recursive: true });
  root = await mkdtemp(path.join(fixtureCacheDir(), 'widen-test-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

afterEach(() => {
  if (savedTmp === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = savedTmp;
});

function random(n: number, seed: number): Float32Array {
  const rng = new Prng(seed);
  return Float32Array.from({ length: n }, () => rng.uniform(-1, 1));
}

const D = 64;

/**
 * y = x W1 + b + Cast(Cast(x, f16) W16, f32): W1 stored float16 behind a Cast (widened), b a
 * small float32 initializer (inline), W16 a float16 weight computed with (kept as it is).
 */
function mixedModel(dir: string, externalData: string | null): string {
  const g = new GraphBuilder('mixed', { seed: 3, weightDtype: 'float16' });
  const x = g.input('x', 'float32', [2, D]);
  const w1 = g.weight('w1', [D, D], { kind: 'uniform', bound: 0.5 });
  const b = g.tensor('b', 'float32', [D], random(D, 5));
  const w16 = g.tensor('w16', 'float16', [D, D], toHalfArray(random(D * D, 6)));
  const half = g.op('MatMul', [g.op('Cast', [x], { to: 10 }), w16]);
  const y = g.op('Add', [
    g.op('Add', [g.op('MatMul', [x, w1]), b]),
    g.op('Cast', [half], { to: 1 }),
  ]);
  g.output(y, 'y', 'float32', [2, D]);
  const file = path.join(dir, 'model.onnx');
  g.save(file, { externalData, sizeThreshold: 1024 });
  return file;
}

async function run(model: string, x: Float32Array): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(model);
  try {
    return (await s.run({ x: new ort.Tensor('float32', x, [2, D]) })).y.data as Float32Array;
  } finally {
    await s.release();
  }
}

const casts = async (file: string) =>
  (await readFile(file)).toString('latin1').split('\x22\x04Cast').length - 1;

describe('widenFloat16Weights', () => {
  for (const external of [true, false]) {
    test(`${external ? 'external' : 'inline'} weights: the Cast-widened weight becomes float32, the rest is kept`, async () => {
      const dir = path.join(root, `mixed-${external}`);
      const file = mixedModel(dir, external ? 'weights.pb' : null);
      const before = readOnnxInitializerIndex(file).initializers;
      const w1 = before.find((i) => i.name === 'w1')!;
      expect(w1.dtype).toBe('float16');
      const temp = path.join(root, `tmp-${external}`);
      await mkdir(temp);
      const w = await widenFloat16Weights(await readFile(file), dir, temp);
      expect(w).not.toBeNull();
      expect(w!.widened).toBe(1);
      expect(path.dirname(w!.path)).toBe(w!.dir);
      expect(path.basename(w!.dir).startsWith(WIDEN_TMP_PREFIX)).toBe(true);

      const after = readOnnxInitializerIndex(w!.path).initializers;
      expect(after.find((i) => i.name === 'w1')).toBeUndefined();
      const wide = after.find((i) => i.dims.join() === `${D},${D}` && i.dtype === 'float32')!;
      expect(wide.data).toMatchObject({ kind: 'external', location: WIDENED_DATA });
      // The fp16-computing weight and the float32 bias are still there, as they were.
      expect(after.find((i) => i.name === 'w16')?.dtype).toBe('float16');
      expect(after.find((i) => i.name === 'b')?.dtype).toBe('float32');
      expect(await casts(w!.path)).toBe((await casts(file)) - 1);

      // The widened values are exactly the float16 ones.
      const src = await readFile(external ? path.join(dir, 'weights.pb') : file);
      const d = w1.data as { offset: number; length: number };
      const halves = new Uint16Array(
        src.buffer.slice(src.byteOffset + d.offset, src.byteOffset + d.offset + d.length),
      );
      const data = await readFile(path.join(w!.dir, WIDENED_DATA));
      const e = wide.data as { offset: number; length: number };
      expect(e.offset % 4096).toBe(0);
      const floats = new Float32Array(
        data.buffer.slice(data.byteOffset + e.offset, data.byteOffset + e.offset + e.length),
      );
      expect(floats).toEqual(fromHalfArray(halves));

      // The widened model computes exactly what the original computes.
      const x = random(2 * D, 9);
      expect(await run(w!.path, x)).toEqual(await run(file, x));

      expect(await w!.dispose()).toBe(true);
      expect(await readdir(temp)).toEqual([]);
    });
  }

  test('a float32 model has nothing to widen', async () => {
    const g = new GraphBuilder('f32', { seed: 1 });
    const x = g.input('x', 'float32', [2, D]);
    g.output(
      g.op('MatMul', [x, g.weight('w', [D, D], { kind: 'uniform', bound: 1 })]),
      'y',
      'float32',
      [2, D],
    );
    const file = path.join(root, 'f32', 'model.onnx');
    g.save(file, { externalData: 'weights.pb' });
    const temp = path.join(root, 'tmp-f32');
    await mkdir(temp);
    expect(await widenFloat16Weights(await readFile(file), path.dirname(file), temp)).toBeNull();
    expect(await readdir(temp)).toEqual([]);
  });

  test('external data outside the model folder is left to ONNX Runtime to refuse', async () => {
    const dir = path.join(root, 'escape', 'inner');
    const file = mixedModel(dir, '../weights.pb');
    const temp = path.join(root, 'tmp-escape');
    await mkdir(temp);
    expect(await widenFloat16Weights(await readFile(file), dir, temp)).toBeNull();
    expect(await readdir(temp)).toEqual([]);
  });

  test('a temporary folder that cannot be written: no widening, nothing left', async () => {
    const dir = path.join(root, 'mixed-ro');
    const file = mixedModel(dir, 'weights.pb');
    const notADir = path.join(root, 'a-file');
    await writeFile(notADir, 'x');
    await expect(widenFloat16Weights(await readFile(file), dir, notADir)).rejects.toThrow();
    expect(await widenFloat16IfAny(await readFile(file), dir, notADir)).toBeNull();
  });

  test.skipIf(process.platform !== 'linux')(
    'a temporary folder on tmpfs is not used: the model loads unwidened',
    async () => {
      expect(await inMemoryFolder('/dev/shm')).toBe(true);
      expect(await inMemoryFolder(root)).toBe(false);
      const dir = path.join(root, 'mixed-shm');
      const file = mixedModel(dir, 'weights.pb');
      const before = (await readdir('/dev/shm')).filter((n) => n.startsWith(WIDEN_TMP_PREFIX));
      expect(await widenFloat16Weights(await readFile(file), dir, '/dev/shm')).toBeNull();
      const after = (await readdir('/dev/shm')).filter((n) => n.startsWith(WIDEN_TMP_PREFIX));
      expect(after).toEqual(before);
    },
  );

  test('only the CPU provider widens; GPU providers keep float16', () => {
    expect(widensFloat16('cpu')).toBe(true);
    for (const p of ['cuda', 'dml', 'coreml', 'webgpu'] as const)
      expect(widensFloat16(p)).toBe(false);
  });
});

describe('createSession widens float16 storage on the CPU provider', () => {
  const models: Partial<Record<'float32' | 'float16', FixtureInfo>> = {};
  beforeAll(async () => {
    for (const dtype of ['float32', 'float16'] as const)
      models[dtype] = await buildTinyUNet(root, dtype);
  }, 120_000);

  const unetFile = (dtype: 'float32' | 'float16') =>
    path.join(models[dtype]!.dir, 'unet', 'model.onnx');

  async function unetOut(
    dtype: 'float32' | 'float16',
    opts: { widenFloat16?: boolean; optimizedCacheDir?: string } = {},
  ) {
    const created = await createSession(unetFile(dtype), 'unet/model.onnx', 'cpu', opts);
    try {
      return {
        out: await runTinyUNet(created.session, dtype),
        widened: created.widenedWeights,
        cache: created.cache,
      };
    } finally {
      await created.session.release();
    }
  }

  test('every Cast-widened weight is widened, the temporary folder is gone, outputs are equal', async () => {
    process.env.TMPDIR = path.join(root, 'tmpdir');
    await mkdir(process.env.TMPDIR);
    const fp16Weights = readOnnxInitializerIndex(unetFile('float16')).initializers.filter(
      (i) => i.dtype === 'float16',
    ).length;
    expect(fp16Weights).toBeGreaterThan(20);
    const kept = await unetOut('float16', { widenFloat16: false });
    expect(kept.widened).toBe(0);
    const widened = await unetOut('float16');
    expect(widened.widened).toBe(fp16Weights);
    // ORT's folded Cast and the widening compute the same float32 weights: the same outputs.
    expect(widened.out).toEqual(kept.out);
    expect(await readdir(process.env.TMPDIR)).toEqual([]);
    // fp32 storage: nothing to widen.
    expect((await unetOut('float32')).widened).toBe(0);
  }, 120_000);

  test('with the optimized-graph cache: the entry holds float32 weights, a hit widens nothing', async () => {
    const cacheDir = path.join(root, 'cache');
    const plain = await unetOut('float16', { widenFloat16: false });
    const first = await unetOut('float16', { optimizedCacheDir: cacheDir });
    expect(first.cache).toBe('written');
    expect(first.widened).toBeGreaterThan(0);
    const entries = await readdir(cacheDir);
    expect(entries).toHaveLength(1);
    expect(entries[0]).not.toContain('.tmp-');
    const cached = readOnnxInitializerIndex(path.join(cacheDir, entries[0], 'model.onnx'));
    expect(cached.initializers.some((i) => i.dtype === 'float16')).toBe(false);
    const second = await unetOut('float16', { optimizedCacheDir: cacheDir });
    expect(second.cache).toBe('hit');
    expect(second.widened).toBe(0);
    expect(await readdir(cacheDir)).toEqual(entries);
    expect(second.out).toEqual(plain.out);
    expect(first.out).toEqual(plain.out);
  }, 120_000);
});

describe("the converter's fp16 storage", () => {
  test('a converted UNet (fp16 by default) is widened whole and computes the same', async () => {
    const dir = path.join(root, 'converted');
    await mkdir(dir);
    const { file, arch } = await smallCheckpoint(dir, 'sd1');
    await convertCheckpoint(file, path.join(dir, 'model'), {
      vocabularyFile: VOCABULARY,
      architecture: arch,
    });
    const unet = path.join(dir, 'model', 'unet', 'model.onnx');
    const stored = readOnnxInitializerIndex(unet).initializers;
    const fp16 = stored.filter((i) => i.dtype === 'float16').length;
    expect(fp16).toBeGreaterThan(100);
    const outputs = [];
    for (const widenFloat16 of [false, true]) {
      const created = await createSession(unet, 'unet/model.onnx', 'cpu', { widenFloat16 });
      expect(created.widenedWeights).toBe(widenFloat16 ? fp16 : 0);
      const feeds: Record<string, ort.Tensor> = {};
      let seed = 11;
      for (const meta of created.session.inputMetadata) {
        if (!meta.isTensor) continue;
        const dims =
          meta.name === 'sample'
            ? [2, arch.unet.inChannels, 8, 8]
            : meta.name === 'encoder_hidden_states'
              ? [2, 77, arch.unet.contextDim]
              : meta.shape.map((d) => (typeof d === 'number' ? d : 2));
        const data = random(
          dims.reduce((a, b) => a * b, 1),
          seed++,
        );
        if (meta.name === 'timestep') data.fill(500);
        feeds[meta.name] = new ort.Tensor('float32', data, dims);
      }
      try {
        const out = await created.session.run(feeds);
        outputs.push(Float32Array.from(out[created.session.outputNames[0]].data as Float32Array));
      } finally {
        await created.session.release();
      }
    }
    expect(outputs[1]).toEqual(outputs[0]);
  }, 300_000);
});
