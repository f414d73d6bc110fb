/**
 * A minimal reader of the header of an ONNX file (a protobuf `ModelProto`): graph inputs and
 * outputs, initializer names and where their weights live, opsets, producer.
 *
 * It never reads weights. Length-delimited fields it does not need (raw_data, nodes, doc
 * strings) are skipped by seeking, so a multi-gigabyte model.onnx with inline weights costs a
 * few thousand small reads. This lets a model folder be inspected (family, external weights,
 * truncation) without creating an ONNX Runtime session, which for an SD UNet takes seconds and
 * gigabytes. The session's own metadata stays the authority once a session exists.
 *
 * Field numbers are from onnx/onnx.proto (ModelProto, GraphProto, TensorProto, ValueInfoProto,
 * TypeProto, TensorShapeProto, StringStringEntryProto, OperatorSetIdProto).
 */
import { closeSync, readSync } from 'node:fs';
import type { Dim, IoSpec, TensorType } from '../tensor';
import { openRegularFileSync } from './safe-read';

export interface ExternalDataRef {
  /** Path relative to the folder of the .onnx file, as written in the model. */
  location: string;
  /** The smallest size the file must have: max(offset + length) over the tensors using it. */
  bytesNeeded: number;
  /** Number of initializers stored there. */
  tensors: number;
}

export interface OnnxHeader {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  /** Opset version per domain ('' is the default ONNX domain). */
  opsets: Record<string, number>;
  /** Graph inputs that are real inputs (initializers listed as inputs are left out, as ORT does). */
  inputs: IoSpec[];
  outputs: IoSpec[];
  initializers: number;
  externalData: ExternalDataRef[];
  /** ModelProto.metadata_props. */
  metadata: Record<string, string>;
  /**
   * Dims of the UNet's first convolution weight (`conv_in.weight`, [out, in_channels, k, k]) when
   * an initializer has that name: exporters mark the `sample` channel dim dynamic, so this is
   * where the file itself says how many channels the UNet takes.
   */
  convInWeightDims: number[] | null;
}

/** Thrown by the reader; `kind` says whether the file ended early or is not protobuf/ONNX. */
export class OnnxFormatError extends Error {
  constructor(
    readonly kind: 'truncated' | 'not-onnx',
    message: string,
  ) {
    super(message);
  }
}

/** ONNX TensorProto.DataType -> ORT's type names. */
const ELEM_TYPES: Record<number, TensorType> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  4: 'uint16',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  8: 'string',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  12: 'uint32',
  13: 'uint64',
  16: 'bfloat16',
  21: 'uint4',
  22: 'int4',
};

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/** Strings longer than this are skipped, not decoded (doc strings can be huge). */
const MAX_STRING = 1 << 20;

/**
 * Fields the reader decodes before it gives up. Nodes and weights are skipped whole, so a real
 * header decodes a few per initializer and input: an SD UNet about 20,000. The cap bounds the
 * time a crafted file (a gigabyte of one-byte fields) can keep this synchronous reader busy.
 */
const MAX_FIELDS = 5_000_000;

class FileCursor {
  private readonly buf = Buffer.allocUnsafe(1 << 16);
  private bufStart = 0;
  private bufEnd = 0;
  private fields = 0;
  pos = 0;

  constructor(
    private readonly fd: number,
    readonly size: number,
  ) {}

  private fill(): void {
    this.bufStart = this.pos;
    const n = readSync(this.fd, this.buf, 0, this.buf.length, this.pos);
    this.bufEnd = this.pos + n;
  }

  byte(limit: number): number {
    if (this.pos >= limit) {
      throw limit >= this.size
        ? new OnnxFormatError('truncated', 'the file ends in the middle of a field')
        : new OnnxFormatError('not-onnx', 'a field runs past the end of its message');
    }
    if (this.pos < this.bufStart || this.pos >= this.bufEnd) this.fill();
    const b = this.buf[this.pos - this.bufStart];
    this.pos++;
    return b;
  }

  /** A varint as a JS number (exact up to 2^53, plenty for lengths, dims and enums). */
  varint(limit: number): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.byte(limit);
      result += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) {
        // Negative int64 values (e.g. dim -1) arrive as 10-byte two's complement varints.
        if (i === 9 && result >= 2 ** 63) return result - 2 ** 64;
        return result;
      }
      mul *= 128;
    }
    throw new OnnxFormatError('not-onnx', 'a varint is longer than 10 bytes');
  }

  skip(n: number, limit: number): void {
    if (this.pos + n > limit) {
      throw limit >= this.size
        ? new OnnxFormatError('truncated', `a ${n}-byte field runs past the end of the file`)
        : new OnnxFormatError('not-onnx', 'a field runs past the end of its message');
    }
    this.pos += n;
  }

  bytes(n: number, limit: number): Buffer {
    if (this.pos + n > limit) {
      throw limit >= this.size
        ? new OnnxFormatError('truncated', 'the file ends in the middle of a field')
        : new OnnxFormatError('not-onnx', 'a field runs past the end of its message');
    }
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const got = readSync(this.fd, out, done, n - done, this.pos + done);
      if (got === 0)
        throw new OnnxFormatError('truncated', 'the file ends in the middle of a field');
      done += got;
    }
    this.pos += n;
    return out;
  }

  string(n: number, limit: number): string {
    if (n > MAX_STRING) {
      this.skip(n, limit);
      return '';
    }
    return this.bytes(n, limit).toString('utf8');
  }

  /** Read a field key; returns [field, wireType]. */
  key(limit: number): [number, number] {
    if (++this.fields > MAX_FIELDS)
      throw new OnnxFormatError(
        'not-onnx',
        `its header has more than ${MAX_FIELDS.toLocaleString('en-US')} fields`,
      );
    const k = this.varint(limit);
    const field = Math.floor(k / 8);
    const wire = k % 8;
    if (field === 0) throw new OnnxFormatError('not-onnx', 'a field has number 0');
    return [field, wire];
  }

  /** Skip the value of a field of this wire type. */
  skipValue(wire: number, limit: number): void {
    switch (wire) {
      case WIRE_VARINT:
        this.varint(limit);
        return;
      case WIRE_I64:
        this.skip(8, limit);
        return;
      case WIRE_LEN:
        this.skip(this.varint(limit), limit);
        return;
      case WIRE_I32:
        this.skip(4, limit);
        return;
      default:
        throw new OnnxFormatError('not-onnx', `wire type ${wire} is not used by ONNX`);
    }
  }

  /** For a length-delimited field: its end position, checked against `limit`. */
  lenEnd(limit: number): number {
    const n = this.varint(limit);
    const end = this.pos + n;
    if (end > limit) {
      throw limit >= this.size
        ? new OnnxFormatError('truncated', `a ${n}-byte field runs past the end of the file`)
        : new OnnxFormatError('not-onnx', 'a field runs past the end of its message');
    }
    return end;
  }
}

function expectWire(actual: number, expected: number, what: string): void {
  if (actual !== expected) throw new OnnxFormatError('not-onnx', `${what} has the wrong wire type`);
}

function readStringEntry(c: FileCursor, end: number): [string, string] {
  let k = '';
  let v = '';
  while (c.pos < end) {
    const [f, w] = c.key(end);
    if (f === 1 && w === WIRE_LEN) k = c.string(c.varint(end), end);
    else if (f === 2 && w === WIRE_LEN) v = c.string(c.varint(end), end);
    else c.skipValue(w, end);
  }
  return [k, v];
}

function readDimension(c: FileCursor, end: number): Dim {
  let dim: Dim = '?';
  while (c.pos < end) {
    const [f, w] = c.key(end);
    if (f === 1 && w === WIRE_VARINT) dim = c.varint(end);
    else if (f === 2 && w === WIRE_LEN) dim = c.string(c.varint(end), end) || '?';
    else c.skipValue(w, end);
  }
  return dim;
}

function readShape(c: FileCursor, end: number): Dim[] {
  const dims: Dim[] = [];
  while (c.pos < end) {
    const [f, w] = c.key(end);
    if (f === 1 && w === WIRE_LEN) dims.push(readDimension(c, c.lenEnd(end)));
    else c.skipValue(w, end);
  }
  return dims;
}

/** TypeProto -> [type, shape]. Only tensor types matter to us. */
function readType(c: FileCursor, end: number): { type: TensorType; shape: Dim[] } {
  let type: TensorType = 'non-tensor';
  let shape: Dim[] = [];
  while (c.pos < end) {
    const [f, w] = c.key(end);
    if (f === 1 && w === WIRE_LEN) {
      const tEnd = c.lenEnd(end);
      let elem = 0;
      while (c.pos < tEnd) {
        const [tf, tw] = c.key(tEnd);
        if (tf === 1 && tw === WIRE_VARINT) elem = c.varint(tEnd);
        else if (tf === 2 && tw === WIRE_LEN) shape = readShape(c, c.lenEnd(tEnd));
        else c.skipValue(tw, tEnd);
      }
      type = ELEM_TYPES[elem] ?? 'non-tensor';
    } else c.skipValue(w, end);
  }
  return { type, shape };
}

function readValueInfo(c: FileCursor, end: number): IoSpec {
  let name = '';
  let t: { type: TensorType; shape: Dim[] } = { type: 'non-tensor', shape: [] };
  while (c.pos < end) {
    const [f, w] = c.key(end);
    if (f === 1 && w === WIRE_LEN) name = c.string(c.varint(end), end);
    else if (f === 2 && w === WIRE_LEN) t = readType(c, c.lenEnd(end));
    else c.skipValue(w, end);
  }
  return { name, type: t.type, shape: t.shape };
}

interface InitializerInfo {
  name: string;
  dims: number[];
  external?: { location: string; offset: number; length: number };
}

function readTensorHeader(c: FileCursor, end: number): InitializerInfo {
  const { entry, declaredLength } = readTensorEntry(c, end);
  const info: InitializerInfo = { name: entry.name, dims: entry.dims };
  if (entry.data.kind === 'external') {
    // Only a length the file states counts towards the size its external file must have.
    const { location, offset } = entry.data;
    info.external = { location, offset, length: Math.max(declaredLength, 0) };
  }
  return info;
}

function readGraph(c: FileCursor, end: number) {
  const rawInputs: IoSpec[] = [];
  const outputs: IoSpec[] = [];
  const initNames = new Set<string>();
  const external = new Map<string, ExternalDataRef>();
  let initializers = 0;
  let convIn: number[] | null = null;
  while (c.pos < end) {
    const [f, w] = c.key(end);
    if (f === 5 && w === WIRE_LEN) {
      const t = readTensorHeader(c, c.lenEnd(end));
      initializers++;
      initNames.add(t.name);
      if (convIn === null && t.dims.length === 4 && /(^|[./])conv_in\.weight$/.test(t.name))
        convIn = t.dims;
      if (t.external) {
        const ref = external.get(t.external.location) ?? {
          location: t.external.location,
          bytesNeeded: 0,
          tensors: 0,
        };
        ref.tensors++;
        if (t.external.length > 0)
          ref.bytesNeeded = Math.max(ref.bytesNeeded, t.external.offset + t.external.length);
        external.set(t.external.location, ref);
      }
    } else if (f === 11 && w === WIRE_LEN) rawInputs.push(readValueInfo(c, c.lenEnd(end)));
    else if (f === 12 && w === WIRE_LEN) outputs.push(readValueInfo(c, c.lenEnd(end)));
    else c.skipValue(w, end); // nodes (1), value_info (13), doc strings, sparse initializers...
  }
  return {
    inputs: rawInputs.filter((i) => !initNames.has(i.name)),
    outputs,
    initializers,
    externalData: [...external.values()],
    convInWeightDims: convIn,
  };
}

/** Where an initializer's bytes are: inside model.onnx (raw_data) or in an external file. */
export type InitializerData =
  | { kind: 'inline'; offset: number; length: number }
  /** `location` is relative to the folder of the .onnx file, as written in the model. */
  | { kind: 'external'; location: string; offset: number; length: number }
  /** float_data/int32_data... (values in typed protobuf fields) or no data: not patchable here. */
  | { kind: 'typed' };

/** A node that takes an initializer as an input. */
export interface InitializerConsumer {
  /** NodeProto.name ('' when the exporter left it empty). */
  node: string;
  opType: string;
  /** Which input of the node it is (MatMul's 1 is the weight). */
  input: number;
  /** Gemm's transB attribute (0 when absent), for telling [out, in] from [in, out]. */
  transB?: number;
}

export interface InitializerEntry {
  name: string;
  dims: number[];
  /** ORT's name for TensorProto.data_type ('float32', 'float16', ...). */
  dtype: TensorType;
  data: InitializerData;
  /** Nodes reading it, directly or through one Cast (a weight stored fp16 before a Cast to fp32). */
  consumers: InitializerConsumer[];
}

export interface OnnxInitializerIndex {
  /** Every initializer of the main graph, in file order. */
  initializers: InitializerEntry[];
  /** The model file's size (inline offsets index into it). */
  fileSize: number;
}

interface NodeInfo {
  name: string;
  opType: string;
  inputs: string[];
  outputs: string[];
  transB: number | undefined;
}

function readNode(c: FileCursor, end: number): NodeInfo {
  const node: NodeInfo = { name: '', opType: '', inputs: [], outputs: [], transB: undefined };
  while (c.pos < end) {
    const [f, w] = c.key(end);
    if (f === 1 && w === WIRE_LEN) node.inputs.push(c.string(c.varint(end), end));
    else if (f === 2 && w === WIRE_LEN) node.outputs.push(c.string(c.varint(end), end));
    else if (f === 3 && w === WIRE_LEN) node.name = c.string(c.varint(end), end);
    else if (f === 4 && w === WIRE_LEN) node.opType = c.string(c.varint(end), end);
    else if (f === 5 && w === WIRE_LEN) {
      // AttributeProto: name (1), i (3). Only Gemm's transB matters here.
      const aEnd = c.lenEnd(end);
      let attr = '';
      let value: number | undefined;
      while (c.pos < aEnd) {
        const [af, aw] = c.key(aEnd);
        if (af === 1 && aw === WIRE_LEN) attr = c.string(c.varint(aEnd), aEnd);
        else if (af === 3 && aw === WIRE_VARINT) value = c.varint(aEnd);
        else c.skipValue(aw, aEnd);
      }
      if (attr === 'transB') node.transB = value ?? 0;
    } else c.skipValue(w, end);
  }
  return node;
}

/** A TensorProto's header (raw_data is skipped, its position recorded); -1: no stated length. */
function readTensorEntry(
  c: FileCursor,
  end: number,
): { entry: Omit<InitializerEntry, 'consumers'>; declaredLength: number } {
  let name = '';
  const dims: number[] = [];
  let elem = 0;
  let raw: { offset: number; length: number } | null = null;
  let location: string | undefined;
  let offset = 0;
  let length = -1;
  let dataLocation = 0;
  while (c.pos < end) {
    const [f, w] = c.key(end);
    if (f === 8 && w === WIRE_LEN) name = c.string(c.varint(end), end);
    else if (f === 1 && w === WIRE_VARINT) dims.push(c.varint(end));
    else if (f === 1 && w === WIRE_LEN) {
      const dEnd = c.lenEnd(end);
      while (c.pos < dEnd) dims.push(c.varint(dEnd));
    } else if (f === 2 && w === WIRE_VARINT) elem = c.varint(end);
    else if (f === 9 && w === WIRE_LEN) {
      const n = c.varint(end);
      raw = { offset: c.pos, length: n };
      c.skip(n, end);
    } else if (f === 13 && w === WIRE_LEN) {
      const [k, v] = readStringEntry(c, c.lenEnd(end));
      if (k === 'location') location = v;
      else if (k === 'offset') offset = Number(v) || 0;
      else if (k === 'length') length = Number(v);
    } else if (f === 14 && w === WIRE_VARINT) dataLocation = c.varint(end);
    else c.skipValue(w, end);
  }
  const dtype = ELEM_TYPES[elem] ?? 'non-tensor';
  let data: InitializerData = { kind: 'typed' };
  if (dataLocation === 1 && location !== undefined) {
    // A missing length means "to the end of the file"; for a float tensor it is numel * width.
    const width = dtype === 'float16' || dtype === 'bfloat16' ? 2 : dtype === 'float32' ? 4 : 0;
    const bytes = length >= 0 ? length : dims.reduce((a, b) => a * b, 1) * width;
    data = { kind: 'external', location, offset, length: bytes };
  } else if (raw) data = { kind: 'inline', ...raw };
  return { entry: { name, dims, dtype, data }, declaredLength: length };
}

/**
 * Read every initializer's name, dims, dtype and byte location, plus the nodes that consume
 * each (to resolve exporters' anonymous `onnx::MatMul_1234` weights through the consuming node's
 * name, and to tell a MatMul's [in, out] weight from a Gemm's). Weights are skipped, never read.
 * Errors as readOnnxHeader.
 */
export function readOnnxInitializerIndex(path: string): OnnxInitializerIndex {
  const { fd, size } = openRegularFileSync(path, 'onnx');
  try {
    const c = new FileCursor(fd, size);
    const initializers: InitializerEntry[] = [];
    const nodes: NodeInfo[] = [];
    while (c.pos < size) {
      const [f, w] = c.key(size);
      if (f !== 7 || w !== WIRE_LEN) {
        c.skipValue(w, size);
        continue;
      }
      const end = c.lenEnd(size);
      while (c.pos < end) {
        const [gf, gw] = c.key(end);
        if (gf === 5 && gw === WIRE_LEN)
          initializers.push({ ...readTensorEntry(c, c.lenEnd(end)).entry, consumers: [] });
        else if (gf === 1 && gw === WIRE_LEN) nodes.push(readNode(c, c.lenEnd(end)));
        else c.skipValue(gw, end);
      }
    }
    const byName = new Map(initializers.map((i) => [i.name, i]));
    // Outputs of Casts whose input is an initializer: their consumers count as the weight's.
    const castOf = new Map<string, InitializerEntry>();
    for (const n of nodes) {
      if (n.opType === 'Cast' && n.inputs.length === 1 && n.outputs.length === 1) {
        const init = byName.get(n.inputs[0]);
        if (init) castOf.set(n.outputs[0], init);
      }
    }
    for (const n of nodes) {
      n.inputs.forEach((input, i) => {
        const init = n.opType === 'Cast' ? undefined : (byName.get(input) ?? castOf.get(input));
        if (!init) return;
        const consumer: InitializerConsumer = { node: n.name, opType: n.opType, input: i };
        if (n.opType === 'Gemm') consumer.transB = n.transB ?? 0;
        init.consumers.push(consumer);
      });
    }
    return { initializers, fileSize: size };
  } finally {
    closeSync(fd);
  }
}

/**
 * Read the header of an ONNX model file. Throws OnnxFormatError when the file is truncated or
 * is not an ONNX ModelProto, UnreadableFileError (safe-read.ts) when it is not a regular file or
 * is over protobuf's 2 GiB; fs errors (ENOENT...) pass through.
 */
export function readOnnxHeader(path: string): OnnxHeader {
  const { fd, size } = openRegularFileSync(path, 'onnx');
  try {
    if (size === 0) throw new OnnxFormatError('truncated', 'the file is empty');
    const c = new FileCursor(fd, size);
    const header: OnnxHeader = {
      irVersion: 0,
      producerName: '',
      producerVersion: '',
      opsets: {},
      inputs: [],
      outputs: [],
      initializers: 0,
      externalData: [],
      metadata: {},
      convInWeightDims: null,
    };
    let sawGraph = false;
    while (c.pos < size) {
      const [f, w] = c.key(size);
      switch (f) {
        case 1:
          expectWire(w, WIRE_VARINT, 'ir_version');
          header.irVersion = c.varint(size);
          break;
        case 2:
          expectWire(w, WIRE_LEN, 'producer_name');
          header.producerName = c.string(c.varint(size), size);
          break;
        case 3:
          expectWire(w, WIRE_LEN, 'producer_version');
          header.producerVersion = c.string(c.varint(size), size);
          break;
        case 7: {
          expectWire(w, WIRE_LEN, 'graph');
          const g = readGraph(c, c.lenEnd(size));
          header.inputs = g.inputs;
          header.outputs = g.outputs;
          header.initializers = g.initializers;
          header.externalData = g.externalData;
          header.convInWeightDims = g.convInWeightDims;
          sawGraph = true;
          break;
        }
        case 8: {
          expectWire(w, WIRE_LEN, 'opset_import');
          const end = c.lenEnd(size);
          let domain = '';
          let version = 0;
          while (c.pos < end) {
            const [of, ow] = c.key(end);
            if (of === 1 && ow === WIRE_LEN) domain = c.string(c.varint(end), end);
            else if (of === 2 && ow === WIRE_VARINT) version = c.varint(end);
            else c.skipValue(ow, end);
          }
          header.opsets[domain] = version;
          break;
        }
        case 14: {
          expectWire(w, WIRE_LEN, 'metadata_props');
          const [k, v] = readStringEntry(c, c.lenEnd(size));
          header.metadata[k] = v;
          break;
        }
        default:
          c.skipValue(w, size);
      }
    }
    if (header.irVersion <= 0 || !sawGraph) {
      throw new OnnxFormatError(
        'not-onnx',
        header.irVersion <= 0 ? 'it has no ir_version' : 'it has no graph',
      );
    }
    return header;
  } finally {
    closeSync(fd);
  }
}
