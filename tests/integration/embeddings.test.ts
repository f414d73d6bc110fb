// Textual-inversion embeddings reach the text encoder as their vectors (issue 12, item 7).
//
// The expectation comes from the same fixture model with the table rows of three ordinary
// tokens overwritten by the embedding's vectors, written here with onnx-proto (and, for external
// weights, by patching the copied weights file), and run on the model's own session with those
// three tokens in the prompt. That path shares nothing with the one under test (the in-memory
// table growth, the placeholder ids, the `ti_token_ids` input, input_ids with 0 where the vectors
// go), so a wrong row, a wrong id, a wrong dtype or a moved pooling position shows as a
// difference. Only the tokenizer's chunking and emphasis are shared, and those are checked
// against A1111's rules in tests/unit/tokenizer-embeddings.test.ts.

import { createHash } from 'node:crypto';
import { cp, mkdtemp, open, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine, EngineClient, EngineError } from '../../src/engine';
import { EmbeddingFiles, EmbeddingSessions } from '../../src/engine/adapters/embeddings';
import { planLoras, type LoraPlan } from '../../src/engine/adapters/lora';
import {
  SessionCache,
  loadModel,
  openModelFolder,
  type LoadedModel,
} from '../../src/engine/models';
import { emptyTimings } from '../../src/engine/pipelines/stats';
import { TextConditioner, type PromptEmbedding } from '../../src/engine/pipelines/text';
import { ClipTokenizer } from '../../src/engine/tokenizer';
import { GenerationSettings } from '../../src/shared/generation';
import { encodeFloats, writeSafetensors } from '../fixtures/checkpoint';
import { fixtureModel } from '../fixtures/models';
import { VOCABULARY, smallCheckpoint } from '../fixtures/small-checkpoint';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { bundleEntry } from './bundle';

const { onnx } = onnxProto;
const TABLE = 'embeddings.token_embedding.weight';

let tmp: string;
const loaded: LoadedModel[] = [];
const conditioners: TextConditioner[] = [];

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'ti-int-'));
});

afterAll(async () => {
  for (const t of conditioners) await t.release();
  for (const m of loaded) await m.release();
  await rm(tmp, { recursive: true, force: true });
});

async function conditioner(dir: string, plan?: LoraPlan): Promise<TextConditioner> {
  const model = await loadModel(dir, {
    provider: 'cpu',
    threads: 1,
    cache: new SessionCache(),
    ...(plan ? { variants: plan.variants } : {}),
  });
  loaded.push(model);
  const text = new TextConditioner(model, { threads: 1 });
  conditioners.push(text);
  return text;
}

function vectors(rows: number, width: number, seed: number): Float32Array {
  return Float32Array.from({ length: rows * width }, (_, i) => Math.sin(seed + i * 1.7) * 2);
}

async function embeddingFile(
  name: string,
  tensors: { name: string; rows: number; width: number; values: Float32Array }[],
): Promise<string> {
  const file = path.join(tmp, name);
  await writeSafetensors(
    file,
    tensors.map((t) => ({ name: t.name, shape: [t.rows, t.width], dtype: 'F32' as const })),
    (t) => encodeFloats(tensors.find((x) => x.name === t.name)!.values, 'F32'),
  );
  return file;
}

/**
 * A copy of the model folder `src` whose text encoder(s) have the rows `ids` of the token table
 * set to `values` ([ids.length, width], narrowed to the table's type).
 */
async function withRows(
  src: string,
  name: string,
  edits: { component: string; ids: number[]; values: Float32Array }[],
): Promise<string> {
  const dst = path.join(tmp, name);
  await cp(src, dst, { recursive: true });
  for (const { component, ids, values } of edits) {
    const file = path.join(dst, component, 'model.onnx');
    const model = onnx.ModelProto.decode(await readFile(file));
    const table = model.graph!.initializer!.find((t) => t.name!.endsWith(TABLE))!;
    const width = Number(table.dims![1]);
    const dtype = table.dataType === onnx.TensorProto.DataType.FLOAT16 ? 'F16' : 'F32';
    const rowBytes = width * (dtype === 'F16' ? 2 : 4);
    const rows = encodeFloats(values, dtype);
    expect(rows.length).toBe(ids.length * rowBytes);
    if (table.externalData && table.externalData.length > 0) {
      const entry = (k: string) => table.externalData!.find((e) => e.key === k)?.value;
      const handle = await open(path.join(dst, component, entry('location')!), 'r+');
      const offset = Number(entry('offset') ?? 0);
      for (let r = 0; r < ids.length; r++)
        await handle.write(rows, r * rowBytes, rowBytes, offset + ids[r]! * rowBytes);
      await handle.close();
    } else {
      const raw = Uint8Array.from(table.rawData!);
      for (let r = 0; r < ids.length; r++)
        raw.set(rows.subarray(r * rowBytes, (r + 1) * rowBytes), ids[r]! * rowBytes);
      table.rawData = raw;
      await writeFile(file, onnx.ModelProto.encode(model).finish());
    }
  }
  return dst;
}

/** Three words that are one token each in the fixture vocabulary, and their ids. */
async function standIns(dir: string, folder = 'tokenizer'): Promise<number[]> {
  const tok = await ClipTokenizer.fromFolder(path.join(dir, folder));
  return ['red', 'blue', 'green'].map((w) => {
    const ids = tok.encode(w);
    expect(ids).toHaveLength(1);
    return ids[0]!;
  });
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function expectSame(got: PromptEmbedding, want: PromptEmbedding, tolerance: number): void {
  expect(got.chunks).toBe(want.chunks);
  expect(maxDiff(got.hidden, want.hidden)).toBeLessThanOrEqual(tolerance);
  if (want.pooled) expect(maxDiff(got.pooled!, want.pooled)).toBeLessThanOrEqual(tolerance);
}

const PROMPT = 'a house on a hill, (mystyle:1.3), at night';
const STANDIN_PROMPT = 'a house on a hill, (red blue green:1.3), at night';

for (const variant of [
  { name: 'sd15-ka', spec: { unet: 'known-answer' as const }, tolerance: 1e-6 },
  // fp16 weights behind a Cast: the table grows in fp16.
  { name: 'sd15-fp16', spec: { dtype: 'float16' as const }, tolerance: 1e-3 },
]) {
  describe(`SD 1.x text encoder (${variant.name})`, () => {
    let dir: string;
    let width: number;
    let style: Float32Array;
    let stylePath: string;

    beforeAll(async () => {
      dir = await fixtureModel(variant.name, variant.spec);
      const model = onnx.ModelProto.decode(
        await readFile(path.join(dir, 'text_encoder/model.onnx')),
      );
      width = Number(model.graph!.initializer!.find((t) => t.name === TABLE)!.dims![1]);
      style = vectors(3, width, 1);
      stylePath = await embeddingFile(`mystyle-${variant.name}.safetensors`, [
        { name: 'emb_params', rows: 3, width, values: style },
      ]);
    });

    it('a prompt naming an embedding encodes as if its vectors were table rows', async () => {
      const text = await conditioner(dir);
      text.useEmbeddings([{ token: 'mystyle', path: stylePath }], [PROMPT]);
      const got = await text.encode(PROMPT, emptyTimings());
      const expectation = await conditioner(
        await withRows(dir, `${variant.name}-rows`, [
          { component: 'text_encoder', ids: await standIns(dir), values: style },
        ]),
      );
      const want = await expectation.encode(STANDIN_PROMPT, emptyTimings());
      expectSame(got, want, variant.tolerance);
      // The check can fail: the name as plain text gives something else.
      const plain = await (await conditioner(dir)).encode(PROMPT, emptyTimings());
      expect(maxDiff(got.hidden, plain.hidden)).toBeGreaterThan(0.01);
      expect(text.usedEmbeddings()).toEqual([
        expect.objectContaining({ token: 'mystyle', path: stylePath, vectors: 3 }),
      ]);
    });

    it('prompts that name no embedding are bit for bit what they were', async () => {
      const withEmbeddings = await conditioner(dir);
      withEmbeddings.useEmbeddings([{ token: 'mystyle', path: stylePath }], [PROMPT]);
      const without = await conditioner(dir);
      for (const prompt of ['a house on a hill, at night', '']) {
        const a = await withEmbeddings.encode(prompt, emptyTimings());
        const b = await without.encode(prompt, emptyTimings());
        expect(a.hidden).toEqual(b.hidden);
      }
      expect(withEmbeddings.usedEmbeddings()).toEqual([]);
    });

    it('cached prompt embeddings are keyed by the vectors too: a changed file is re-encoded', async () => {
      const file = path.join(tmp, `changing-${variant.name}.safetensors`);
      await cp(stylePath, file);
      const text = await conditioner(dir);
      text.useEmbeddings([{ token: 'mystyle', path: file }]);
      const first = await text.encode(PROMPT, emptyTimings());
      const timings = emptyTimings();
      expect(await text.encode(PROMPT, timings)).toBe(first); // cached: no encoder run
      expect(timings.sessionRuns).toBe(0);
      await embeddingFile(path.basename(file), [
        { name: 'emb_params', rows: 3, width, values: vectors(3, width, 9) },
      ]);
      await utimes(file, new Date(), new Date(Date.now() + 5000));
      const changed = await text.encode(PROMPT, emptyTimings());
      expect(maxDiff(changed.hidden, first.hidden)).toBeGreaterThan(0.01);
    });
  });
}

describe('a model converted by our checkpoint converter (fp16, CLIP vocabulary)', () => {
  it('encodes an embedding as if its vectors were table rows', async () => {
    const { file, arch } = await smallCheckpoint(tmp, 'sd1');
    const dir = path.join(tmp, 'converted-sd1');
    await convertCheckpoint(file, dir, {
      vocabularyFile: VOCABULARY,
      architecture: arch,
      precision: 'fp16',
    });
    const model = onnx.ModelProto.decode(await readFile(path.join(dir, 'text_encoder/model.onnx')));
    const table = model.graph!.initializer!.find((t) => t.name!.endsWith(TABLE))!;
    expect(table.dataType).toBe(onnx.TensorProto.DataType.FLOAT16);
    expect(Number(table.dims![0])).toBe(49408);
    const width = Number(table.dims![1]);
    const style = vectors(3, width, 13);
    const stylePath = await embeddingFile('converted-style.safetensors', [
      { name: 'emb_params', rows: 3, width, values: style },
    ]);
    const text = await conditioner(dir);
    text.useEmbeddings([{ token: 'mystyle', path: stylePath }], [PROMPT]);
    const got = await text.encode(PROMPT, emptyTimings());
    const expectation = await conditioner(
      await withRows(dir, 'converted-rows', [
        { component: 'text_encoder', ids: await standIns(dir), values: style },
      ]),
    );
    expectSame(got, await expectation.encode(STANDIN_PROMPT, emptyTimings()), 1e-3);
  });
});

describe('SDXL text encoders (optimum, text_encoder_2 with external weights)', () => {
  it('clip_l rows reach text_encoder and clip_g rows text_encoder_2, pooled output included', async () => {
    const dir = await fixtureModel('sdxl', {
      family: 'sdxl',
      layout: 'optimum',
      externalWeights: true,
    });
    const widthOf = async (c: string) =>
      Number(
        onnx.ModelProto.decode(
          await readFile(path.join(dir, c, 'model.onnx')),
        ).graph!.initializer!.find((t) => t.name === TABLE)!.dims![1],
      );
    const [wl, wg] = [await widthOf('text_encoder'), await widthOf('text_encoder_2')];
    const l = vectors(3, wl, 2);
    const g = vectors(3, wg, 3);
    const file = await embeddingFile('mystyle-xl.safetensors', [
      { name: 'clip_g', rows: 3, width: wg, values: g },
      { name: 'clip_l', rows: 3, width: wl, values: l },
    ]);
    const text = await conditioner(dir);
    text.useEmbeddings([{ token: 'mystyle', path: file }], [PROMPT]);
    const got = await text.encode(PROMPT, emptyTimings());
    const expectation = await conditioner(
      await withRows(dir, 'sdxl-rows', [
        { component: 'text_encoder', ids: await standIns(dir), values: l },
        { component: 'text_encoder_2', ids: await standIns(dir, 'tokenizer_2'), values: g },
      ]),
    );
    const want = await expectation.encode(STANDIN_PROMPT, emptyTimings());
    expect(want.pooled).not.toBeNull();
    expectSame(got, want, 1e-5);
  });
});

describe('grown text-encoder sessions', () => {
  it('are kept for one embedding set; another set releases them first', async () => {
    const dir = await fixtureModel('sd15-ka', { unet: 'known-answer' });
    const model = await loadModel(dir, { provider: 'cpu', threads: 1, cache: new SessionCache() });
    loaded.push(model);
    const width = Number(
      onnx.ModelProto.decode(
        await readFile(path.join(dir, 'text_encoder/model.onnx')),
      ).graph!.initializer!.find((t) => t.name === TABLE)!.dims![1],
    );
    const files = new EmbeddingFiles();
    const a = await files.read(
      await embeddingFile('set-a.safetensors', [
        { name: 'emb_params', rows: 2, width, values: vectors(2, width, 11) },
      ]),
    );
    const b = await files.read(
      await embeddingFile('set-b.safetensors', [
        { name: 'emb_params', rows: 1, width, values: vectors(1, width, 12) },
      ]),
    );
    const tokenizer = await ClipTokenizer.fromFolder(path.join(dir, 'tokenizer'));
    const sessions = new EmbeddingSessions(model, 1);
    const [first] = await sessions.encoders([{ token: 'a', file: a }], [tokenizer]);
    const [again] = await sessions.encoders([{ token: 'a', file: a }], [tokenizer]);
    expect(again).toBe(first);
    // Placeholders follow the table: the fixture vocabulary's size, then one id per vector.
    expect(first!.placeholderBase).toBe(tokenizer.vocabSize);
    expect(first!.tokens[0]!.ids).toEqual([tokenizer.vocabSize, tokenizer.vocabSize + 1]);
    const chunk = tokenizer.tokenizeWeighted('a house').chunks[0]!.ids;
    const feeds = {
      input_ids: new ort.Tensor('int32', Int32Array.from(chunk), [1, chunk.length]),
      ti_token_ids: new ort.Tensor('int64', BigInt64Array.from(chunk.map((id) => BigInt(id))), [
        1,
        chunk.length,
      ]),
    };
    await first!.session.session.run(feeds);
    const [second] = await sessions.encoders(
      [
        { token: 'a', file: a },
        { token: 'b', file: b },
      ],
      [tokenizer],
    );
    expect(second!.tokens[1]!.ids).toEqual([tokenizer.vocabSize + 2]);
    // The first set's session was released: running it fails; the new one runs.
    await expect(first!.session.session.run(feeds)).rejects.toThrow();
    await second!.session.session.run(feeds);
    await sessions.release();
  });
});

describe('an embedding with a text-encoder LoRA', () => {
  /** A kohya LoRA of random rank-2 factors on the first layer's q projection only. */
  async function teLora(file: string, width: number): Promise<void> {
    const rank = 2;
    const down = vectors(rank, width, 21).map((v) => v * 0.3);
    const up = vectors(width, rank, 22).map((v) => v * 0.3);
    const m = 'lora_te_text_model_encoder_layers_0_self_attn_to_q';
    const tensors = [
      { name: `${m}.lora_down.weight`, shape: [rank, width], values: down },
      { name: `${m}.lora_up.weight`, shape: [width, rank], values: up },
      { name: `${m}.alpha`, shape: [], values: Float32Array.of(1) },
    ];
    await writeSafetensors(
      file,
      tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: 'F32' as const })),
      (t) => encodeFloats(tensors.find((x) => x.name === t.name)!.values, 'F32'),
    );
  }

  /** A copy of `dir` whose text encoder is the LoRA-merged one the plan builds, on disk. */
  async function mergedCopy(dir: string, name: string, plan: LoraPlan): Promise<string> {
    const dst = path.join(tmp, name);
    await cp(dir, dst, { recursive: true });
    const source = await plan.variants.text_encoder!.source();
    if (typeof source.model !== 'string')
      await writeFile(path.join(dst, 'text_encoder', 'model.onnx'), source.model);
    for (const f of source.externalData)
      await writeFile(path.join(dst, 'text_encoder', f.path), f.data);
    return dst;
  }

  it.each([
    ['inline fp32', 'lora-ti-inline', { family: 'sd15' as const }, 1e-5],
    [
      'external fp16',
      'lora-ti-external',
      { family: 'sd15' as const, dtype: 'float16' as const, externalWeights: true },
      2e-3,
    ],
  ])('%s: the grown encoder keeps the LoRA merged', async (_, name, fixture, tolerance) => {
    const dir = await fixtureModel(name, fixture);
    const info = await openModelFolder(dir);
    const te = await readFile(info.components.text_encoder!.modelPath);
    const table = onnx.ModelProto.decode(te).graph!.initializer!.find((t) => t.name === TABLE)!;
    const width = Number(table.dims![1]);
    const loraPath = path.join(tmp, `${name}-te.safetensors`);
    await teLora(loraPath, width);
    const plan = await planLoras(info, [
      { path: loraPath, name: 'te', teWeight: 1, unetWeight: 1 },
    ]);
    expect(Object.keys(plan.variants)).toEqual(['text_encoder']);
    const style = vectors(3, width, 31);
    const stylePath = await embeddingFile(`${name}-style.safetensors`, [
      { name: 'emb_params', rows: 3, width, values: style },
    ]);
    const withBoth = await conditioner(dir, plan);
    withBoth.useEmbeddings([{ token: 'mystyle', path: stylePath }], [PROMPT]);
    const got = await withBoth.encode(PROMPT, emptyTimings());

    // The reference: the LoRA-merged encoder written to disk, the vectors written into its rows.
    const merged = await mergedCopy(dir, `${name}-merged`, plan);
    const reference = await conditioner(
      await withRows(merged, `${name}-merged-rows`, [
        { component: 'text_encoder', ids: await standIns(dir), values: style },
      ]),
    );
    expectSame(got, await reference.encode(STANDIN_PROMPT, emptyTimings()), tolerance);

    // The check can fail: the base encoder with the embedding gives something else.
    const baseOnly = await conditioner(dir);
    baseOnly.useEmbeddings([{ token: 'mystyle', path: stylePath }], [PROMPT]);
    const base = await baseOnly.encode(PROMPT, emptyTimings());
    expect(maxDiff(got.hidden, base.hidden)).toBeGreaterThan(0.01);
    // And without the embedding the LoRA conditioner is the LoRA-merged encoder, as before.
    const plain = 'a house on a hill, at night';
    expectSame(
      await withBoth.encode(plain, emptyTimings()),
      await (await conditioner(merged)).encode(plain, emptyTimings()),
      tolerance,
    );
  });
});

describe('embeddings that do not fit the model', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await fixtureModel('sd15-ka', { unet: 'known-answer' });
  });

  async function failure(file: string): Promise<EngineError> {
    const text = await conditioner(dir);
    text.useEmbeddings([{ token: 'mystyle', path: file }]);
    const err = await text.encode('a mystyle house', emptyTimings()).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('bad-input');
    // Prompts without it still work.
    expect((await text.encode('a house', emptyTimings())).chunks).toBe(1);
    return err as EngineError;
  }

  it('a wider embedding (another family) is one sentence naming both widths', async () => {
    const e = await failure(
      await embeddingFile('wide.safetensors', [
        { name: 'emb_params', rows: 2, width: 1024, values: vectors(2, 1024, 4) },
      ]),
    );
    expect(e.message).toMatch(
      /^Embedding mystyle has 1024-wide vectors \(SD 2\.x\), but .* takes \d+-wide ones/,
    );
  });

  it('a malformed embedding list is one sentence', async () => {
    const text = await conditioner(dir);
    expect(() =>
      text.useEmbeddings([{ token: ' ', path: 'x.pt' }, { token: 'a' } as never]),
    ).toThrow(/^Each embedding needs a token/);
  });

  it('an SDXL embedding on a single-encoder model says so', async () => {
    const e = await failure(
      await embeddingFile('xl-on-sd15.safetensors', [
        { name: 'clip_g', rows: 1, width: 1280, values: vectors(1, 1280, 5) },
        { name: 'clip_l', rows: 1, width: 768, values: vectors(1, 768, 6) },
      ]),
    );
    expect(e.message).toMatch(/is an SDXL embedding/);
  });
});

describe('through the engine', () => {
  it('reports the embeddings the prompts used, each once, with their hashes', async () => {
    const dir = await fixtureModel('sd15-ka', { unet: 'known-answer' });
    const model = onnx.ModelProto.decode(await readFile(path.join(dir, 'text_encoder/model.onnx')));
    const width = Number(model.graph!.initializer!.find((t) => t.name === TABLE)!.dims![1]);
    const style = await embeddingFile('engine-style.safetensors', [
      { name: 'emb_params', rows: 2, width, values: vectors(2, width, 7) },
    ]);
    const negative = await embeddingFile('engine-neg.safetensors', [
      { name: 'emb_params', rows: 1, width, values: vectors(1, width, 8) },
    ]);
    const engine = new DiffusionEngine({ provider: 'cpu', threads: 1, previewEvery: 0 });
    try {
      const settings = GenerationSettings.parse({
        model: 'fixture',
        prompt: 'a red house, mystyle',
        negativePrompt: 'badthing, blurry',
        seed: 1,
        sampler: 'euler',
        steps: 2,
        width: 64,
        height: 64,
      });
      const embeddings = [
        { token: 'mystyle', path: style },
        { token: 'badthing', path: negative },
        { token: 'unused', path: path.join(tmp, 'missing.safetensors') },
      ];
      const r = await engine.generate({ settings, modelDir: dir, embeddings });
      const sha = async (f: string) =>
        createHash('sha256')
          .update(await readFile(f))
          .digest('hex');
      expect(r.embeddings).toEqual([
        { token: 'mystyle', path: style, sha256: await sha(style), vectors: 2 },
        { token: 'badthing', path: negative, sha256: await sha(negative), vectors: 1 },
      ]);
      const plain = await engine.generate({ settings, modelDir: dir });
      expect(plain.embeddings).toEqual([]);
    } finally {
      await engine.release();
    }
  });
});

describe('through the engine worker', () => {
  it('carries the embeddings to the worker and the used ones back', async () => {
    const workerPath = await bundleEntry('src/engine/worker.ts', 'engine-worker');
    const dir = await fixtureModel('sd15-ka', { unet: 'known-answer' });
    const model = onnx.ModelProto.decode(await readFile(path.join(dir, 'text_encoder/model.onnx')));
    const width = Number(model.graph!.initializer!.find((t) => t.name === TABLE)!.dims![1]);
    const style = await embeddingFile('worker-style.safetensors', [
      { name: 'emb_params', rows: 4, width, values: vectors(4, width, 10) },
    ]);
    const client = new EngineClient(workerPath, { provider: 'cpu', threads: 1, previewEvery: 0 });
    try {
      const settings = GenerationSettings.parse({
        model: 'fixture',
        prompt: '(mystyle:1.1) house',
        seed: 2,
        steps: 2,
        width: 64,
        height: 64,
      });
      const r = await client.generate({
        settings,
        modelDir: dir,
        embeddings: [{ token: 'mystyle', path: style }],
      });
      expect(r.embeddings).toEqual([expect.objectContaining({ token: 'mystyle', vectors: 4 })]);
    } finally {
      await client.close();
    }
  });
});
