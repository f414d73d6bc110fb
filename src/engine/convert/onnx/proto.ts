// The subset of ONNX's protobuf schema the converter writes (onnx/onnx.proto, IR version 8),
// encoded by hand: varints and length-delimited fields only. The graph itself is small (weights
// live in the external data file), so building it as byte arrays bottom-up is cheap.
//
// Field numbers are onnx.proto's: ModelProto{ir_version 1, producer_name 2, producer_version 3,
// doc_string 6, graph 7, opset_import 8}, OperatorSetIdProto{domain 1, version 2},
// GraphProto{node 1, name 2, initializer 5, input 11, output 12}, NodeProto{input 1, output 2,
// name 3, op_type 4, attribute 5, domain 7}, AttributeProto{name 1, f 2, i 3, s 4, ints 8,
// type 20}, TensorProto{dims 1, data_type 2, name 8, raw_data 9, external_data 13,
// data_location 14}, StringStringEntryProto{key 1, value 2}, ValueInfoProto{name 1, type 2},
// TypeProto{tensor_type 1}, TypeProto.Tensor{elem_type 1, shape 2}, TensorShapeProto{dim 1},
// Dimension{dim_value 1, dim_param 2}.

/** TensorProto.DataType codes. */
export const DataType = {
  float32: 1,
  uint8: 2,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
} as const;
export type ElemType = keyof typeof DataType;

/** AttributeProto.AttributeType codes. */
const AttrType = { FLOAT: 1, INT: 2, STRING: 3, INTS: 7 } as const;

const utf8 = new TextEncoder();

/** A protobuf message under construction: append fields, then `bytes()`. */
export class Message {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  private push(b: Uint8Array): void {
    this.parts.push(b);
    this.length += b.byteLength;
  }

  private varint(v: number | bigint): void {
    // Negative int64 values are written as ten-byte two's complement, as protobuf requires.
    let x = BigInt.asUintN(64, BigInt(v));
    const out: number[] = [];
    while (x >= 0x80n) {
      out.push(Number(x & 0x7fn) | 0x80);
      x >>= 7n;
    }
    out.push(Number(x));
    this.push(Uint8Array.from(out));
  }

  private key(field: number, wire: 0 | 1 | 2 | 5): void {
    this.varint((field << 3) | wire);
  }

  int(field: number, v: number | bigint): this {
    this.key(field, 0);
    this.varint(v);
    return this;
  }

  float(field: number, v: number): this {
    this.key(field, 5);
    const b = new Uint8Array(4);
    new DataView(b.buffer).setFloat32(0, v, true);
    this.push(b);
    return this;
  }

  bytesField(field: number, b: Uint8Array): this {
    this.key(field, 2);
    this.varint(b.byteLength);
    this.push(b);
    return this;
  }

  string(field: number, s: string): this {
    return this.bytesField(field, utf8.encode(s));
  }

  /** Bytes that are already encoded fields (copied from another message). */
  raw(b: Uint8Array): this {
    this.push(b);
    return this;
  }

  message(field: number, m: Message): this {
    return this.bytesField(field, m.bytes());
  }

  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
}

export type Dim = number | string;

/** An attribute value: an integer is INT, a string STRING, integers INTS, `{ f }` FLOAT. */
export type AttrValue = number | string | number[] | { f: number };

export interface NodeSpec {
  opType: string;
  domain?: string;
  name: string;
  inputs: readonly string[];
  outputs: readonly string[];
  attrs?: Readonly<Record<string, AttrValue>>;
}

export interface ValueInfoSpec {
  name: string;
  dtype: ElemType;
  dims: readonly Dim[];
}

/** An initializer: inline bytes, or a slice of the external data file. */
export type InitializerSpec =
  | { name: string; dtype: ElemType; dims: readonly number[]; raw: Uint8Array }
  | {
      name: string;
      dtype: ElemType;
      dims: readonly number[];
      external: { location: string; offset: number; length: number };
    };

function tensorMessage(name: string, t: InitializerSpec): Message {
  const m = new Message();
  for (const d of t.dims) m.int(1, d);
  m.int(2, DataType[t.dtype]);
  if (name) m.string(8, name);
  if ('external' in t) {
    for (const [k, v] of [
      ['location', t.external.location],
      ['offset', String(t.external.offset)],
      ['length', String(t.external.length)],
    ])
      m.message(13, new Message().string(1, k).string(2, v));
    m.int(14, 1); // DataLocation.EXTERNAL
  } else {
    m.bytesField(9, t.raw);
  }
  return m;
}

function attributeMessage(name: string, v: AttrValue): Message {
  const m = new Message().string(1, name);
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error(`attribute ${name}: ${v} is not an integer`);
    return m.int(3, v).int(20, AttrType.INT);
  }
  if (typeof v === 'string') return m.string(4, v).int(20, AttrType.STRING);
  if (Array.isArray(v)) {
    for (const x of v) m.int(8, x);
    return m.int(20, AttrType.INTS);
  }
  return m.float(2, v.f).int(20, AttrType.FLOAT);
}

export function nodeMessage(n: NodeSpec): Message {
  const m = new Message();
  for (const i of n.inputs) m.string(1, i);
  for (const o of n.outputs) m.string(2, o);
  m.string(3, n.name).string(4, n.opType);
  for (const [k, v] of Object.entries(n.attrs ?? {})) m.message(5, attributeMessage(k, v));
  if (n.domain) m.string(7, n.domain);
  return m;
}

function valueInfoMessage(v: ValueInfoSpec): Message {
  const shape = new Message();
  for (const d of v.dims)
    shape.message(1, typeof d === 'number' ? new Message().int(1, d) : new Message().string(2, d));
  const tensorType = new Message().int(1, DataType[v.dtype]).message(2, shape);
  return new Message().string(1, v.name).message(2, new Message().message(1, tensorType));
}

export interface ModelSpec {
  irVersion: number;
  opsets: readonly { domain: string; version: number }[];
  producerName: string;
  producerVersion: string;
  docString?: string;
  graphName: string;
  nodes: readonly NodeSpec[];
  initializers: readonly InitializerSpec[];
  inputs: readonly ValueInfoSpec[];
  outputs: readonly ValueInfoSpec[];
}

/** The serialized ModelProto. */
export function encodeModel(spec: ModelSpec): Uint8Array {
  const graph = new Message();
  for (const n of spec.nodes) graph.message(1, nodeMessage(n));
  graph.string(2, spec.graphName);
  for (const t of spec.initializers) graph.message(5, tensorMessage(t.name, t));
  for (const i of spec.inputs) graph.message(11, valueInfoMessage(i));
  for (const o of spec.outputs) graph.message(12, valueInfoMessage(o));
  const model = new Message()
    .int(1, spec.irVersion)
    .string(2, spec.producerName)
    .string(3, spec.producerVersion);
  if (spec.docString) model.string(6, spec.docString);
  model.message(7, graph);
  for (const o of spec.opsets)
    model.message(8, new Message().string(1, o.domain).int(2, o.version));
  return model.bytes();
}
