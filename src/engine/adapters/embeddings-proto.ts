/**
 * The few protobuf pieces the token-table rewrite (embeddings-onnx.ts) needs: walking the fields
 * of a message in a buffer without decoding what it skips, and writing new fields. Wire format
 * from protobuf's encoding guide (varints, wire types 0, 1, 2 and 5); field numbers of the ONNX
 * messages read here from onnx/onnx.proto (NodeProto input 1, output 2, op_type 4; TensorProto
 * dims 1, data_type 2, float_data 4, int32_data 5, name 8, raw_data 9, external_data 13,
 * data_location 14; StringStringEntryProto key 1, value 2).
 */

/** One field of a message: where it lies in the buffer and, for varints, its value. */
export interface Field {
  number: number;
  wire: number;
  /** The whole field, tag included. */
  start: number;
  end: number;
  /** Length-delimited payload (wire type 2). */
  payloadStart: number;
  /** Varint value (wire type 0). */
  value: number;
}

/** The bytes are not protobuf (a field or number runs past its end, an unknown wire type). */
export class ProtoError extends Error {}

/** The varint at `pos` and the position after it (values up to 2^53 stay exact). */
export function readVarint(buf: Uint8Array, pos: number): [number, number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 10; i++) {
    if (pos >= buf.length) throw new ProtoError('the file ends inside a number');
    const byte = buf[pos++]!;
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, pos];
    scale *= 128;
  }
  throw new ProtoError('a number is longer than protobuf allows');
}

/** The fields of the message in `buf[start, end)`, in order; payloads are skipped, not read. */
export function* fields(buf: Uint8Array, start: number, end: number): Generator<Field> {
  let pos = start;
  while (pos < end) {
    const fieldStart = pos;
    let tag: number;
    [tag, pos] = readVarint(buf, pos);
    const wire = tag % 8;
    const number = Math.floor(tag / 8);
    let value = 0;
    let payloadStart = pos;
    if (wire === 0) [value, pos] = readVarint(buf, pos);
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      let length: number;
      [length, payloadStart] = readVarint(buf, pos);
      pos = payloadStart + length;
    } else throw new ProtoError(`wire type ${wire} is not protobuf`);
    if (pos > end) throw new ProtoError('a field runs past the end of its message');
    yield { number, wire, start: fieldStart, end: pos, payloadStart, value };
  }
}

/** A length-delimited field's payload as UTF-8 text. */
export function text(buf: Uint8Array, f: Field): string {
  return Buffer.from(buf.buffer, buf.byteOffset + f.payloadStart, f.end - f.payloadStart).toString(
    'utf8',
  );
}

/** `value` as varint bytes. */
export function varint(value: number): number[] {
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value % 128) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

/** A length-delimited field holding `parts` (the tag and length, then the parts as they are). */
export function lenField(number: number, parts: Uint8Array[]): Uint8Array[] {
  const length = parts.reduce((s, p) => s + p.length, 0);
  return [Uint8Array.from([...varint(number * 8 + 2), ...varint(length)]), ...parts];
}

/** A length-delimited field holding `value` as UTF-8. */
export function stringField(number: number, value: string): Uint8Array[] {
  return lenField(number, [Buffer.from(value, 'utf8')]);
}

/** A varint field. */
export function varintField(number: number, value: number): Uint8Array {
  return Uint8Array.from([...varint(number * 8), ...varint(value)]);
}

/** What the rewrite needs of a NodeProto. */
export interface NodeInfo {
  field: Field;
  op: string;
  inputs: string[];
  outputs: string[];
}

/** What the rewrite needs of a TensorProto: its name, shape, type and where its data is. */
export interface TensorInfo {
  field: Field;
  name: string;
  dims: number[];
  dataType: number;
  raw: Field | null;
  floatData: Field | null;
  int32Data: Field | null;
  external: Map<string, string> | null;
}

/** Reads a NodeProto field's inputs, outputs and op type. */
export function parseNode(buf: Uint8Array, f: Field): NodeInfo {
  const node: NodeInfo = { field: f, op: '', inputs: [], outputs: [] };
  for (const g of fields(buf, f.payloadStart, f.end)) {
    if (g.number === 1 && g.wire === 2) node.inputs.push(text(buf, g));
    else if (g.number === 2 && g.wire === 2) node.outputs.push(text(buf, g));
    else if (g.number === 4 && g.wire === 2) node.op = text(buf, g);
  }
  return node;
}

/** Reads a TensorProto field's header; `external` is set for data_location EXTERNAL. */
export function parseTensor(buf: Uint8Array, f: Field): TensorInfo {
  const t: TensorInfo = {
    field: f,
    name: '',
    dims: [],
    dataType: 0,
    raw: null,
    floatData: null,
    int32Data: null,
    external: null,
  };
  let location = 0;
  const external = new Map<string, string>();
  for (const g of fields(buf, f.payloadStart, f.end)) {
    if (g.number === 1 && g.wire === 0) t.dims.push(g.value);
    else if (g.number === 1 && g.wire === 2) {
      let pos = g.payloadStart;
      while (pos < g.end) {
        let d: number;
        [d, pos] = readVarint(buf, pos);
        t.dims.push(d);
      }
    } else if (g.number === 2 && g.wire === 0) t.dataType = g.value;
    else if (g.number === 8 && g.wire === 2) t.name = text(buf, g);
    else if (g.number === 9 && g.wire === 2) t.raw = g;
    else if (g.number === 4 && g.wire === 2) t.floatData = g;
    else if (g.number === 5 && g.wire === 2) t.int32Data = g;
    else if (g.number === 14 && g.wire === 0) location = g.value;
    else if (g.number === 13 && g.wire === 2) {
      let key = '';
      let value = '';
      for (const e of fields(buf, g.payloadStart, g.end)) {
        if (e.number === 1) key = text(buf, e);
        else if (e.number === 2) value = text(buf, e);
      }
      external.set(key, value);
    }
  }
  if (location === 1) t.external = external;
  return t;
}
