// `node scripts/run-tool.mjs tools/bench/embeddings.ts [-- --width 768 --layers 12 --vectors 8
//  --external --repeats N --provider cpu|cuda --threads N]`: what a textual-inversion embedding
// costs on a text encoder of the real shape (CLIP ViT-L/14 by default: 49408 x 768 table,
// 12 layers; random weights, built into a temp folder). One JSON document on stdout:
// - createPlainMs: ONNX Runtime session creation from model.onnx, as for a prompt without one;
// - growMs: reading model.onnx and rewriting its token table with the vectors (in memory);
// - createGrownMs: session creation from that buffer;
// - runRatio: median time of one 77-token chunk on the grown session / on the plain session,
//   the two runs paired per repeat (the machines are noisy; only the ratio carries over);
// - rssGrowMb: resident memory added by the rewrite and the second session.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { createGrownSession, growTokenTable } from '../../src/engine/adapters/embeddings-onnx';
import { sessionOptions, type ProviderName } from '../../src/engine/models/providers';
import { buildTextEncoder } from '../../tests/fixtures/components';
import { GraphBuilder } from '../../tests/fixtures/onnx-builder';

const { values: args } = parseArgs({
  options: {
    width: { type: 'string', default: '768' },
    layers: { type: 'string', default: '12' },
    vectors: { type: 'string', default: '8' },
    repeats: { type: 'string', default: '20' },
    provider: { type: 'string', default: 'cpu' },
    threads: { type: 'string' },
    external: { type: 'boolean', default: false },
  },
});
const width = Number(args.width);
const layers = Number(args.layers);
const vectors = Number(args.vectors);
const repeats = Number(args.repeats);
const provider = args.provider as ProviderName;
const threads = args.threads ? Number(args.threads) : undefined;
const log = (msg: string) => process.stderr.write(`bench-embeddings: ${msg}\n`);
const vocab = 49408;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;
const rssMb = () => process.memoryUsage().rss / 2 ** 20;

const dir = await mkdtemp(path.join(os.tmpdir(), 'bench-ti-'));
try {
  log(`building a ${layers}-layer, ${width}-wide text encoder (vocab ${vocab})`);
  const g = new GraphBuilder('text_encoder', { seed: 1 });
  buildTextEncoder(g, {
    layout: 'diffusers',
    inputIds: 'int32',
    vocabSize: vocab,
    hidden: width,
    layers,
    heads: Math.max(1, width / 64),
    hiddenStates: false,
  });
  const modelPath = path.join(dir, 'model.onnx');
  g.save(modelPath, { externalData: args.external ? 'weights.pb' : null });

  const options = sessionOptions(provider, threads ? { threads } : {});
  let t = performance.now();
  const plain = await ort.InferenceSession.create(modelPath, options);
  const createPlainMs = performance.now() - t;
  const rssBefore = rssMb();

  const rows = Float32Array.from({ length: vectors * width }, (_, i) => Math.sin(i) * 0.02);
  t = performance.now();
  const grown = await growTokenTable(modelPath, 'text_encoder/model.onnx', [
    { name: 'bench', vectors: { rows: vectors, width, data: rows } },
  ]);
  const growMs = performance.now() - t;
  t = performance.now();
  const session = await createGrownSession(
    grown,
    dir,
    'text_encoder/model.onnx',
    provider,
    threads,
  );
  const createGrownMs = performance.now() - t;
  const rssGrowMb = rssMb() - rssBefore;

  const ids = Array.from({ length: 77 }, (_, i) => (i === 0 ? 49406 : i < 20 ? 320 + i : 49407));
  const withVectors = ids.map((id, i) => (i >= 5 && i < 5 + vectors ? vocab + i - 5 : id));
  const feedsPlain = { input_ids: new ort.Tensor('int32', Int32Array.from(ids), [1, 77]) };
  const feedsGrown = {
    input_ids: new ort.Tensor(
      'int32',
      Int32Array.from(withVectors.map((id) => (id >= vocab ? 0 : id))),
      [1, 77],
    ),
    ti_token_ids: new ort.Tensor(
      'int64',
      BigInt64Array.from(withVectors.map((id) => BigInt(id))),
      [1, 77],
    ),
  };
  await plain.run(feedsPlain);
  await session.run(feedsGrown);
  const ratios: number[] = [];
  for (let r = 0; r < repeats; r++) {
    t = performance.now();
    await plain.run(feedsPlain);
    const a = performance.now() - t;
    t = performance.now();
    await session.run(feedsGrown);
    ratios.push((performance.now() - t) / a);
  }
  await plain.release();
  await session.release();
  const round = (x: number) => Math.round(x * 100) / 100;
  process.stdout.write(
    JSON.stringify(
      {
        width,
        layers,
        vectors,
        external: args.external,
        provider,
        createPlainMs: round(createPlainMs),
        growMs: round(growMs),
        createGrownMs: round(createGrownMs),
        runRatio: round(median(ratios)),
        rssGrowMb: round(rssGrowMb),
      },
      null,
      1,
    ) + '\n',
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
