// The optimized-graph cache (src/engine/models/optimized-cache.ts) with real onnxruntime-node on
// a fixture UNet with external weights: the first session writes an entry, the second opens it
// and computes what an uncached session computes; a changed source, a damaged or partial entry,
// and an unwritable cache folder are each rebuilt or bypassed, never loaded stale.
import {
  cp,
  mkdir,
  mkdtemp,
  open,
  readFile,
  readdir,
  rm,
  stat,
  truncate,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createSession, signatureFromSession } from '../../src/engine/models';
import { fixtureModel } from '../fixtures/models';

let root: string;
let modelDir: string;
let unet: string;

beforeAll(async () => {
  const src = await fixtureModel('ortcache', { externalWeights: true });
  root = await mkdtemp(path.join(tmpdir(), 'latent-ortcache-'));
  modelDir = path.join(root, 'model');
  await cp(src, modelDir, { recursive: true });
  unet = path.join(modelDir, 'unet', 'model.onnx');
}, 120_000);

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Deterministic feeds for the fixture UNet (4 latent channels, 8x8, 77 tokens). */
function feedsFor(session: ort.InferenceSession): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  let seed = 1;
  const fixed: Record<string, number> = {
    batch: 1,
    channels: 4,
    height: 8,
    width: 8,
    sequence: 77,
  };
  for (const io of signatureFromSession(session).inputs) {
    const dims = io.shape.map((d) => (typeof d === 'number' ? d : (fixed[d] ?? 1)));
    const n = dims.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.sin(seed++ * 12.9898) * 0.5;
    if (io.name === 'timestep') data.fill(500);
    feeds[io.name] = new ort.Tensor('float32', data, dims);
  }
  return feeds;
}

async function output(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>) {
  const out = await session.run(feeds);
  return Float32Array.from(out[session.outputNames[0]].data as Float32Array);
}

/** Create with the cache, run, release; the cache use and the first output. */
async function cachedRun(cacheDir: string, feeds?: Record<string, ort.Tensor>) {
  const created = await createSession(unet, 'unet/model.onnx', 'cpu', {
    optimizedCacheDir: cacheDir,
  });
  try {
    const out = await output(created.session, feeds ?? feedsFor(created.session));
    return { cache: created.cache, out };
  } finally {
    await created.session.release();
  }
}

async function plainRun(feeds?: Record<string, ort.Tensor>) {
  const created = await createSession(unet, 'unet/model.onnx', 'cpu');
  try {
    expect(created.cache).toBe('off');
    return await output(created.session, feeds ?? feedsFor(created.session));
  } finally {
    await created.session.release();
  }
}

function maxRelErr(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / Math.max(den, 1e-12);
}

async function onlyEntry(cacheDir: string): Promise<string> {
  const names = (await readdir(cacheDir)).filter((n) => !n.includes('.tmp-'));
  expect(names).toHaveLength(1);
  return path.join(cacheDir, names[0]);
}

describe('optimized-graph cache', () => {
  test('the first load writes an entry with external weights; the second opens it and computes the same', async () => {
    const cacheDir = path.join(root, 'cache-a');
    const plain = await plainRun();
    const first = await cachedRun(cacheDir);
    expect(first.cache).toBe('written');
    const entry = await onlyEntry(cacheDir);
    expect((await readdir(entry)).sort()).toEqual(['entry.json', 'model.onnx', 'model.onnx.data']);
    // The weights went to the data file, not into the graph.
    expect((await stat(path.join(entry, 'model.onnx.data'))).size).toBeGreaterThan(
      (await stat(path.join(entry, 'model.onnx'))).size,
    );
    const second = await cachedRun(cacheDir);
    expect(second.cache).toBe('hit');
    expect(maxRelErr(first.out, plain)).toBeLessThan(1e-5);
    expect(maxRelErr(second.out, plain)).toBeLessThan(1e-5);
  }, 120_000);

  test('a changed source file (same size and time) is never answered from the stale entry', async () => {
    const cacheDir = path.join(root, 'cache-b');
    const weights = path.join(modelDir, 'unet', 'weights.pb');
    const before = await cachedRun(cacheDir);
    expect(before.cache).toBe('written');
    const st = await stat(weights);
    const original = await readFile(weights);
    try {
      // Rewrite the first weights in place and put the modification time back.
      const fh = await open(weights, 'r+');
      const buf = Buffer.alloc(4096);
      for (let i = 0; i < buf.length; i += 4) buf.writeFloatLE(0.25, i);
      await fh.write(buf, 0, buf.length, 0);
      await fh.close();
      await utimes(weights, st.atime, st.mtime);
      const after = await cachedRun(cacheDir);
      expect(after.cache).toBe('written');
      expect(maxRelErr(after.out, await plainRun())).toBeLessThan(1e-5);
      expect(maxRelErr(after.out, before.out)).toBeGreaterThan(1e-3);
    } finally {
      await writeFile(weights, original);
    }
  }, 120_000);

  test('a truncated data file is ignored and the entry rebuilt', async () => {
    const cacheDir = path.join(root, 'cache-c');
    expect((await cachedRun(cacheDir)).cache).toBe('written');
    const entry = await onlyEntry(cacheDir);
    const data = path.join(entry, 'model.onnx.data');
    await truncate(data, Math.floor((await stat(data)).size / 2));
    const again = await cachedRun(cacheDir);
    expect(again.cache).toBe('written');
    expect(maxRelErr(again.out, await plainRun())).toBeLessThan(1e-5);
    expect((await cachedRun(cacheDir)).cache).toBe('hit');
  }, 120_000);

  test('an entry ONNX Runtime cannot open (recorded as valid) is deleted and rebuilt', async () => {
    const cacheDir = path.join(root, 'cache-d');
    expect((await cachedRun(cacheDir)).cache).toBe('written');
    const entry = await onlyEntry(cacheDir);
    const graph = path.join(entry, 'model.onnx');
    const size = (await stat(graph)).size;
    await writeFile(graph, Buffer.alloc(size, 0x5a));
    // Make entry.json agree with the damaged file, as if it had been damaged before recording.
    const record = JSON.parse(await readFile(path.join(entry, 'entry.json'), 'utf8'));
    const { createHash } = await import('node:crypto');
    const sha = createHash('sha256')
      .update(await readFile(graph))
      .digest('hex');
    for (const w of record.written) if (w.name === 'model.onnx') w.sha256 = sha;
    await writeFile(path.join(entry, 'entry.json'), JSON.stringify(record));
    const again = await cachedRun(cacheDir);
    expect(again.cache).toBe('written');
    expect(maxRelErr(again.out, await plainRun())).toBeLessThan(1e-5);
  }, 120_000);

  test('a dead build left behind is not used, and is cleaned up once old', async () => {
    const cacheDir = path.join(root, 'cache-e');
    await mkdir(cacheDir, { recursive: true });
    const stale = path.join(cacheDir, 'deadbeef.tmp-1-abc');
    await mkdir(stale);
    await writeFile(path.join(stale, 'model.onnx'), 'partial');
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(stale, old, old);
    expect((await cachedRun(cacheDir)).cache).toBe('written');
    expect(await readdir(cacheDir)).toHaveLength(1);
  }, 120_000);

  test('a cache folder that cannot be created loads without the cache', async () => {
    const blocker = path.join(root, 'not-a-folder');
    await writeFile(blocker, 'x');
    const run = await cachedRun(path.join(blocker, 'cache'));
    expect(run.cache).toBe('off');
    expect(maxRelErr(run.out, await plainRun())).toBeLessThan(1e-5);
  }, 120_000);
});
