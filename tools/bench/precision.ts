// `npm run bench:precision [-- --repeats N --threads N --out FILE]`: what compute precision ONNX
// Runtime's CPU provider offers on this machine, for the two operators that are nearly all of a
// UNet's time: MatMul (attention projections and feed-forward, an SD-1.5 64x64 level: 2 x 4096
// tokens x 320 -> 1280) and Conv (3x3, 320 -> 320 channels at 64x64, batch 2).
//
// Each operator is run with float32, float16 and bfloat16 tensors. ORT's optimized graph (saved
// per case) tells whether it ran the type itself or wrapped the node in Casts to float32 (its
// InsertCastTransformer does that for float16 nodes the CPU provider has no kernel for); a type
// with no kernel and no fallback fails to load, and is reported so. One JSON document on stdout,
// also written to bench-results/precision-<date>.json.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { Message } from '../../src/engine/convert/onnx/proto';
import { getRuntimeInfo } from '../../src/engine';
import { physicalCoreCount } from '../../src/engine/models/providers';
import { writeResult } from './fixture';

const log = (msg: string) => process.stderr.write(`bench:precision: ${msg}\n`);

/** onnx.proto TensorProto.DataType. */
const TYPES = { float32: 1, float16: 10, bfloat16: 16 } as const;
type Precision = keyof typeof TYPES;

interface OpCase {
  name: string;
  op: 'MatMul' | 'Conv';
  a: number[];
  b: number[];
  attrs?: Message[];
}

const CASES: OpCase[] = [
  { name: 'MatMul 8192x320 @ 320x1280', op: 'MatMul', a: [8192, 320], b: [320, 1280] },
  {
    name: 'Conv 3x3 320->320 at 64x64, batch 2',
    op: 'Conv',
    a: [2, 320, 64, 64],
    b: [320, 320, 3, 3],
    attrs: [new Message().string(1, 'pads').int(8, 1).int(8, 1).int(8, 1).int(8, 1).int(20, 7)],
  },
];

function valueInfo(name: string, type: number, dims: number[]): Message {
  const shape = new Message();
  for (const d of dims) shape.message(1, new Message().int(1, d));
  const tensor = new Message().int(1, type).message(2, shape);
  return new Message().string(1, name).message(2, new Message().message(1, tensor));
}

/** A one-node model: y = op(a, b), all of `type`, b an input too (no weight folding). */
function model(c: OpCase, type: number): Uint8Array {
  const node = new Message().string(1, 'a').string(1, 'b').string(2, 'y').string(3, 'n');
  node.string(4, c.op);
  for (const a of c.attrs ?? []) node.message(5, a);
  const graph = new Message().message(1, node).string(2, 'g');
  graph.message(11, valueInfo('a', type, c.a)).message(11, valueInfo('b', type, c.b));
  graph.message(12, new Message().string(1, 'y').message(2, new Message()));
  return new Message()
    .int(1, 8)
    .string(2, 'latent-studio-bench')
    .message(7, graph)
    .message(8, new Message().string(1, '').int(2, 17))
    .bytes();
}

function tensor(p: Precision, dims: number[], seed: number): ort.Tensor {
  const n = dims.reduce((x, y) => x * y, 1);
  const f = new Float32Array(n);
  for (let i = 0; i < n; i++) f[i] = Math.sin((i + seed) * 0.7) * 0.5;
  if (p === 'float32') return new ort.Tensor('float32', f, dims);
  const u = new Uint16Array(n);
  const bits = new Uint32Array(f.buffer);
  if (p === 'bfloat16') {
    for (let i = 0; i < n; i++) u[i] = (bits[i] + 0x7fff + ((bits[i] >> 16) & 1)) >>> 16;
    return new ort.Tensor('bfloat16' as 'float16', u, dims);
  }
  // float16: these values are in its normal range, so rounding the mantissa is enough.
  for (let i = 0; i < n; i++) {
    const x = bits[i];
    const sign = (x >>> 16) & 0x8000;
    const e = ((x >>> 23) & 0xff) - 127 + 15;
    u[i] = e <= 0 ? sign : sign | (e << 10) | (((x & 0x7fffff) + 0x1000) >>> 13);
  }
  return new ort.Tensor('float16', u, dims);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      repeats: { type: 'string', default: '5' },
      threads: { type: 'string' },
      out: { type: 'string' },
    },
  });
  const repeats = Math.max(1, Number(values.repeats));
  const threads = values.threads ? Number(values.threads) : physicalCoreCount();
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'latent-precision-'));
  const results = [];
  try {
    for (const c of CASES) {
      for (const p of Object.keys(TYPES) as Precision[]) {
        const optimized = path.join(tmp, `${c.op}-${p}.onnx`);
        let session: ort.InferenceSession;
        try {
          session = await ort.InferenceSession.create(model(c, TYPES[p]), {
            executionProviders: ['cpu'],
            intraOpNumThreads: threads,
            graphOptimizationLevel: 'all',
            optimizedModelFilePath: optimized,
          });
        } catch (e) {
          const reason = e instanceof Error ? e.message.split('\n')[0] : String(e);
          log(`${c.name} ${p}: does not load (${reason})`);
          results.push({ case: c.name, precision: p, loads: false, reason });
          continue;
        }
        // Casts ORT inserted around the node: the type was computed in float32.
        const graph = (await readFile(optimized)).toString('latin1');
        const casts = graph.split('\x22\x04Cast').length - 1;
        let feeds: Record<string, ort.Tensor>;
        try {
          feeds = { a: tensor(p, c.a, 1), b: tensor(p, c.b, 2) };
          await session.run(feeds);
        } catch (e) {
          // onnxruntime-node's JS tensors have no bfloat16 type: the node loads, JS cannot feed it.
          const reason = e instanceof Error ? e.message.split('\n')[0] : String(e);
          log(`${c.name} ${p}: loads (${casts} casts inserted), does not run (${reason})`);
          results.push({ case: c.name, precision: p, loads: true, castsInserted: casts, reason });
          await session.release();
          continue;
        }
        const ms: number[] = [];
        for (let i = 0; i < repeats; i++) {
          const t0 = performance.now();
          await session.run(feeds);
          ms.push(performance.now() - t0);
        }
        await session.release();
        ms.sort((x, y) => x - y);
        const median = Number(ms[ms.length >> 1].toFixed(1));
        log(`${c.name} ${p}: ${median} ms, ${casts} casts inserted`);
        results.push({
          case: c.name,
          precision: p,
          loads: true,
          castsInserted: casts,
          medianMs: median,
        });
      }
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  const doc = {
    runtime: getRuntimeInfo(),
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    cpus: os.cpus().length,
    threads,
    loadAvg: os.loadavg().map((x) => Number(x.toFixed(2))),
    results,
  };
  await writeResult('precision', doc, values.out);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:precision: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
