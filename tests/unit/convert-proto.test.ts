// The converter's hand-written ONNX protobuf encoder, decoded with the onnx-proto package (ONNX's
// own schema compiled by protobufjs): every field we write lands where ONNX reads it.

import { describe, expect, it } from 'vitest';
import onnxProto from 'onnx-proto';
import { encodeModel } from '../../src/engine/convert/onnx/proto';

const { onnx } = onnxProto;

describe('ONNX protobuf encoder', () => {
  it('writes a model that the ONNX schema decodes field for field', () => {
    const raw = new Uint8Array(new Float32Array([1.5, -2]).buffer);
    const bytes = encodeModel({
      irVersion: 8,
      opsets: [
        { domain: '', version: 17 },
        { domain: 'com.microsoft', version: 1 },
      ],
      producerName: 'test',
      producerVersion: '1',
      docString: 'doc',
      graphName: 'g',
      nodes: [
        {
          opType: 'MultiHeadAttention',
          domain: 'com.microsoft',
          name: 'n0',
          inputs: ['q', '', 'v'],
          outputs: ['y'],
          attrs: { num_heads: 8, scale: { f: 0.125 }, axes: [-1, 2], mode: 'nearest' },
        },
      ],
      initializers: [
        { name: 'inline', dtype: 'float32', dims: [2], raw },
        {
          name: 'ext',
          dtype: 'float16',
          dims: [3, 4096],
          external: { location: 'model.onnx_data', offset: 8192, length: 24576 },
        },
      ],
      inputs: [{ name: 'q', dtype: 'float32', dims: ['batch', 77, 320] }],
      outputs: [{ name: 'y', dtype: 'float32', dims: ['batch', 77, 320] }],
    });
    const m = onnx.ModelProto.decode(bytes);
    expect(Number(m.irVersion)).toBe(8);
    expect(m.producerName).toBe('test');
    expect(m.docString).toBe('doc');
    expect(m.opsetImport.map((o) => [o.domain, Number(o.version)])).toEqual([
      ['', 17],
      ['com.microsoft', 1],
    ]);
    const g = m.graph as InstanceType<typeof onnx.GraphProto>;
    expect(g.name).toBe('g');
    const n = g.node[0] as InstanceType<typeof onnx.NodeProto>;
    expect([n.opType, n.domain, n.name, n.input, n.output]).toEqual([
      'MultiHeadAttention',
      'com.microsoft',
      'n0',
      ['q', '', 'v'],
      ['y'],
    ]);
    const attrs = Object.fromEntries(n.attribute.map((a) => [a.name, a]));
    expect(Number(attrs.num_heads.i)).toBe(8);
    expect(attrs.num_heads.type).toBe(onnx.AttributeProto.AttributeType.INT);
    expect(attrs.scale.f).toBe(0.125);
    expect(attrs.scale.type).toBe(onnx.AttributeProto.AttributeType.FLOAT);
    expect(attrs.axes.ints.map(Number)).toEqual([-1, 2]);
    expect(new TextDecoder().decode(attrs.mode.s)).toBe('nearest');
    const [inline, ext] = g.initializer as InstanceType<typeof onnx.TensorProto>[];
    expect(inline.dataType).toBe(onnx.TensorProto.DataType.FLOAT);
    expect(Array.from(new Float32Array(inline.rawData.slice().buffer))).toEqual([1.5, -2]);
    expect(ext.dims.map(Number)).toEqual([3, 4096]);
    expect(ext.dataType).toBe(onnx.TensorProto.DataType.FLOAT16);
    expect(ext.dataLocation).toBe(onnx.TensorProto.DataLocation.EXTERNAL);
    expect(
      ext.externalData.map((e: onnxProto.onnx.IStringStringEntryProto) => [e.key, e.value]),
    ).toEqual([
      ['location', 'model.onnx_data'],
      ['offset', '8192'],
      ['length', '24576'],
    ]);
    const dims = g.input[0].type!.tensorType!.shape!.dim!.map(
      (d) => d.dimParam || Number(d.dimValue),
    );
    expect(dims).toEqual(['batch', 77, 320]);
    expect(g.output[0].name).toBe('y');
  });
});
