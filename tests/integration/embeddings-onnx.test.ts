// Growing a token table in the forms ONNX files store it, checked by running the grown model in
// ONNX Runtime: the model is `Gather(table, ids)` (plus, in one case, a Cast), written here with
// onnx-proto, so each row the session returns can be compared with the row that was stored or
// appended. Models whose ids do not index a plain table are refused with one sentence.

import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  TI_TOKEN_IDS,
  createGrownSession,
  growTokenTable,
} from '../../src/engine/adapters/embeddings-onnx';
import { EngineError } from '../../src/engine/errors';
import { float16BitsToFloat32, toFloat16 } from '../../src/engine/tensor';
import * as ort from 'onnxruntime-node';

const { onnx } = onnxProto;
type ITensor = onnxProto.onnx.ITensorProto;
type INode = onnxProto.onnx.INodeProto;

const V = 6;
const D = 4;
const table = Float32Array.from({ length: V * D }, (_, i) => i / 4 - 2);
const added = Float32Array.from({ length: 2 * D }, (_, i) => 10 + i);

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'ti-onnx-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function writeModel(
  name: string,
  init: ITensor[],
  nodes: INode[],
  out = 'out',
  extraInputs: onnxProto.onnx.IValueInfoProto[] = [],
): Promise<string> {
  const model = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name,
      node: nodes,
      initializer: init,
      input: [
        {
          name: 'input_ids',
          type: {
            tensorType: {
              elemType: 7,
              shape: { dim: [{ dimParam: 'batch' }, { dimParam: 'sequence' }] },
            },
          },
        },
        ...extraInputs,
      ],
      output: [{ name: out, type: { tensorType: { elemType: 1 } } }],
    },
  });
  const file = path.join(dir, `${name}.onnx`);
  await writeFile(file, onnx.ModelProto.encode(model).finish());
  return file;
}

/** Runs the grown model on ids 0..V+1 (the last two are the appended rows). */
async function rowsOf(file: string): Promise<Float32Array> {
  const grown = await growTokenTable(file, path.basename(file), [
    { name: 'emb', vectors: { rows: 2, width: D, data: added } },
  ]);
  expect(grown.vocabRows).toBe(V);
  const session = await createGrownSession(grown, dir, path.basename(file), 'cpu', 1);
  try {
    const ids = Array.from({ length: V + 2 }, (_, i) => BigInt(i));
    const r = await session.run({
      input_ids: new ort.Tensor('int64', new BigInt64Array(ids.length), [1, ids.length]),
      [TI_TOKEN_IDS]: new ort.Tensor('int64', BigInt64Array.from(ids), [1, ids.length]),
    });
    const out = r.out!;
    expect(out.dims).toEqual([1, V + 2, D]);
    return out.data as Float32Array;
  } finally {
    await session.release();
  }
}

const gather: INode = { opType: 'Gather', input: ['table', 'input_ids'], output: ['out'] };

describe('growing the table', () => {
  it('raw_data float32: old rows kept, new rows appended', async () => {
    const file = await writeModel(
      'raw',
      [{ name: 'table', dataType: 1, dims: [V, D], rawData: new Uint8Array(table.buffer) }],
      [gather],
    );
    expect(Array.from(await rowsOf(file))).toEqual([...table, ...added]);
  });

  it('float_data float32 (the packed-floats form)', async () => {
    const file = await writeModel(
      'floats',
      [{ name: 'table', dataType: 1, dims: [V, D], floatData: Array.from(table) }],
      [gather],
    );
    expect(Array.from(await rowsOf(file))).toEqual([...table, ...added]);
  });

  it('float16 in int32_data behind a Cast, listed as a graph input by an old exporter', async () => {
    const halves = toFloat16(table);
    const file = await writeModel(
      'half',
      [{ name: 'table', dataType: 10, dims: [V, D], int32Data: Array.from(halves) }],
      [
        {
          opType: 'Cast',
          input: ['table'],
          output: ['table32'],
          attribute: [{ name: 'to', type: 2, i: 1 }],
        },
        { opType: 'Gather', input: ['table32', 'input_ids'], output: ['out'] },
      ],
      'out',
      [
        {
          name: 'table',
          type: {
            tensorType: { elemType: 10, shape: { dim: [{ dimValue: V }, { dimValue: D }] } },
          },
        },
      ],
    );
    const want = [...halves, ...toFloat16(added)].map(float16BitsToFloat32);
    expect(Array.from(await rowsOf(file))).toEqual(want);
  });
});

describe('refusing what cannot be grown', () => {
  async function refused(file: string): Promise<string> {
    const err = await growTokenTable(file, 'text_encoder/model.onnx', [
      { name: 'emb', vectors: { rows: 2, width: D, data: added } },
    ]).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(EngineError);
    return (err as EngineError).message;
  }

  it('a table that another layer also reads (tied weights)', async () => {
    const file = await writeModel(
      'tied',
      [{ name: 'table', dataType: 1, dims: [V, D], rawData: new Uint8Array(table.buffer) }],
      [gather, { opType: 'Identity', input: ['table'], output: ['copy'] }],
    );
    expect(await refused(file)).toMatch(
      /^Embeddings cannot be used with text_encoder\/model\.onnx: its token table is shared/,
    );
  });

  it('a quantized table (ids index the output of DequantizeLinear)', async () => {
    const file = await writeModel(
      'quantized',
      [
        { name: 'q', dataType: 3, dims: [V, D], rawData: new Uint8Array(V * D) },
        { name: 'scale', dataType: 1, dims: [], floatData: [0.1] },
      ],
      [{ opType: 'DequantizeLinear', input: ['q', 'scale'], output: ['table'] }, gather],
    );
    expect(await refused(file)).toMatch(/do not index a plain weight table/);
  });

  const external = (location: string, length: number): ITensor => ({
    name: 'table',
    dataType: 1,
    dims: [V, D],
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [
      { key: 'location', value: location },
      { key: 'offset', value: '0' },
      { key: 'length', value: String(length) },
    ],
  });

  it('external weights that end early, or that lie about their length', async () => {
    await writeFile(path.join(dir, 'short.bin'), new Uint8Array(table.buffer).subarray(0, 40));
    const short = await writeModel('short', [external('short.bin', table.byteLength)], [gather]);
    expect(await refused(short)).toMatch(/truncated or do not match/);
    const huge = await writeModel('huge', [external('short.bin', 2 ** 50)], [gather]);
    expect(await refused(huge)).toMatch(/truncated or do not match/);
  });

  it('external weights outside the model folder', async () => {
    const file = await writeModel(
      'outside',
      [external('../table.bin', table.byteLength)],
      [gather],
    );
    expect(await refused(file)).toMatch(/points outside the model folder/);
  });

  it('a file that is not ONNX', async () => {
    const file = path.join(dir, 'junk.onnx');
    await writeFile(file, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2]));
    expect(await refused(file)).toMatch(/is not a readable ONNX model/);
  });
});
