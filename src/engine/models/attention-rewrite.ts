/**
 * A load-time graph pass: exported attention (MatMul + Softmax, as diffusers' and optimum's
 * torch.onnx exports write it) becomes com.microsoft MultiHeadAttention.
 *
 * Why: ONNX Runtime runs the exported pattern as written, materialising every head's N x M
 * scores and their softmax (SD 1.5 at 512x512: 2 x 8 heads x 4096 x 4096 floats, 1 GiB, per
 * self-attention). Its CPU MultiHeadAttention (contrib_ops/cpu/bert/multihead_attention.cc, ORT
 * 1.30) takes MLAS's flash-attention path instead (Dao et al. 2022: scores in L2-sized tiles with
 * a running softmax) when the inputs are float, there is no mask, attention bias, past or present,
 * the op is not unidirectional, ORT_DISABLE_FLASH_ATTENTION is unset and the L2 size is known.
 * The emitted node meets those conditions: it has q, k and v only.
 *
 * What is matched, starting from each Softmax over the last axis:
 *
 *   scores = MatMul(Q', K'), optionally times a scalar (Mul, or Div by one) on the scores, on
 *            Q' or on K' (torch's scaled_dot_product_attention export scales both by sqrt(scale),
 *            computed at run time from Shape(Q')[-1]: evaluated here from the head size)
 *   out    = MatMul(Softmax(scores), V')
 *   heads  4-D: Q' = Transpose[0,2,1,3](Reshape(q, [b, n, H, d])), K' = Transpose[0,1,3,2] of
 *              the same for k (or Transpose[0,2,3,1](Reshape(k, ...))), V' like Q'; the result
 *              Reshape(Transpose[0,2,1,3](out), [b, n, H d]).
 *          3-D (heads folded into the batch, diffusers' head_to_batch_dim): each of the above
 *              followed by Reshape to [b H, n, d] (K' then Transpose[0,2,1]); the result
 *              Reshape(Transpose[0,2,1,3](Reshape(out, [b, H, n, d])), [b, n, H d]).
 *
 * and replaced by MultiHeadAttention(q, k, v) {num_heads: H, scale: the constants' product}.
 * Nodes left without consumers (the matched ones, the shape arithmetic that fed them) are
 * dropped. Anything else (a mask, another consumer of an intermediate, an unknown head count)
 * leaves that attention as it was, and a graph without a match is returned unchanged (null).
 *
 * The model is edited as protobuf bytes: every field but the graph's nodes is copied as it is
 * (initializers included, so inline weights pass through untouched), the kept nodes are copied
 * byte for byte, and com.microsoft is added to the opset imports when missing. Field numbers are
 * onnx/onnx.proto's (see convert/onnx/proto.ts).
 */
import { readFile, stat } from 'node:fs/promises';
import { Message, nodeMessage } from '../convert/onnx/proto';

/** Changes whenever what this pass writes changes: part of the optimized-graph cache key. */
export const ATTENTION_REWRITE_ID = 'mha-1';

const MS_DOMAIN = 'com.microsoft';
const utf8 = new TextDecoder();

/**
 * A varint at `pos` (before `to`): its value and the position after it. Values above 2^53 are
 * negative int64s in two's complement (dims of -1, axis -1), decoded through BigInt exactly.
 */
function readVarint(b: Uint8Array, pos: number, to: number): [number, number] {
  let result = 0n;
  let shift = 0n;
  for (let i = 0; i < 10; i++) {
    if (pos >= to) throw new Error('truncated varint');
    const byte = b[pos++];
    result |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) return [Number(BigInt.asIntN(64, result)), pos];
    shift += 7n;
  }
  throw new Error('varint longer than 10 bytes');
}

/** A protobuf field: number, wire type, and where its value lies in the buffer. */
export interface Field {
  no: number;
  wire: number;
  /** Start of the whole field (key included) and end of its value. */
  start: number;
  end: number;
  /** Varint value, or the start of a length-delimited value. */
  value: number;
  valueStart: number;
}

/** The fields of the message in `b` from `from` to `to`, in order (throws on malformed bytes). */
export function* fields(b: Uint8Array, from: number, to: number): Generator<Field> {
  let pos = from;
  const varint = (): number => {
    const [v, next] = readVarint(b, pos, to);
    pos = next;
    return v;
  };
  while (pos < to) {
    const start = pos;
    const key = varint();
    const no = Math.floor(key / 8);
    const wire = key % 8;
    let value = 0;
    let valueStart = pos;
    if (wire === 0) value = varint();
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      value = varint();
      valueStart = pos;
      pos += value;
    } else throw new Error(`wire type ${wire}`);
    if (pos > to) throw new Error('field runs past its message');
    yield { no, wire, start, end: pos, value, valueStart };
  }
}

/** The values of a packed repeated varint field (no keys between them). */
export function packed(b: Uint8Array, f: Field): number[] {
  const out: number[] = [];
  let pos = f.valueStart;
  while (pos < f.end) {
    const [v, next] = readVarint(b, pos, f.end);
    out.push(v);
    pos = next;
  }
  return out;
}

/** A length-delimited field as UTF-8 text. */
export const str = (b: Uint8Array, f: Field): string =>
  utf8.decode(b.subarray(f.valueStart, f.end));

/** A constant tensor's values (ints or floats), decoded only when small. */
type ConstValue = number[];

interface Node {
  index: number;
  start: number;
  end: number;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  ints: Record<string, number[]>;
  /** An attribute 't' (Constant's value) decoded, when small. */
  value?: ConstValue;
}

/** TensorProto -> its values when it is small and of a type we read (else undefined). */
function tensorValues(b: Uint8Array, from: number, to: number): ConstValue | undefined {
  let type = 0;
  let raw: Uint8Array | undefined;
  const floats: number[] = [];
  const ints: number[] = [];
  let n = 1;
  for (const f of fields(b, from, to)) {
    if (f.no === 1 && f.wire === 0) n *= f.value;
    else if (f.no === 1 && f.wire === 2) for (const d of packed(b, f)) n *= d;
    else if (f.no === 2 && f.wire === 0) type = f.value;
    else if (f.no === 9 && f.wire === 2) raw = b.subarray(f.valueStart, f.end);
    else if (f.no === 4 && f.wire === 2) {
      const v = new DataView(b.buffer, b.byteOffset + f.valueStart, f.end - f.valueStart);
      for (let i = 0; i + 4 <= v.byteLength; i += 4) floats.push(v.getFloat32(i, true));
    } else if (f.no === 4 && f.wire === 5) {
      floats.push(new DataView(b.buffer, b.byteOffset + f.start + 1, 4).getFloat32(0, true));
    } else if (f.no === 7 && f.wire === 2) {
      ints.push(...packed(b, f));
    } else if (f.no === 7 && f.wire === 0) ints.push(f.value);
    else if (f.no === 14 && f.value === 1) return undefined; // external data: a weight
  }
  if (n > 64) return undefined;
  if (!raw) return type === 1 ? floats : type === 7 || type === 6 ? ints : undefined;
  const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const out: number[] = [];
  const width = { 1: 4, 6: 4, 7: 8, 10: 2, 11: 8 }[type];
  if (!width) return undefined;
  for (let i = 0; i + width <= raw.byteLength; i += width) {
    if (type === 1) out.push(v.getFloat32(i, true));
    else if (type === 6) out.push(v.getInt32(i, true));
    else if (type === 7) out.push(Number(v.getBigInt64(i, true)));
    else if (type === 11) out.push(v.getFloat64(i, true));
    else out.push(halfToFloat(v.getUint16(i, true)));
  }
  return out;
}

/** IEEE 754 binary16 -> number. */
function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function readNode(b: Uint8Array, f: Field, index: number): Node {
  const node: Node = {
    index,
    start: f.start,
    end: f.end,
    opType: '',
    domain: '',
    inputs: [],
    outputs: [],
    ints: {},
  };
  for (const x of fields(b, f.valueStart, f.end)) {
    if (x.no === 1) node.inputs.push(str(b, x));
    else if (x.no === 2) node.outputs.push(str(b, x));
    else if (x.no === 4) node.opType = str(b, x);
    else if (x.no === 7) node.domain = str(b, x);
    else if (x.no === 5) {
      let name = '';
      const ints: number[] = [];
      let t: ConstValue | undefined;
      for (const a of fields(b, x.valueStart, x.end)) {
        if (a.no === 1) name = str(b, a);
        else if (a.no === 3 && a.wire === 0) ints.push(a.value);
        else if (a.no === 8 && a.wire === 0) ints.push(a.value);
        else if (a.no === 8 && a.wire === 2) ints.push(...packed(b, a));
        else if (a.no === 5 && a.wire === 2) t = tensorValues(b, a.valueStart, a.end);
      }
      if (name === 'value' && t) node.value = t;
      else node.ints[name] = ints;
    }
  }
  return node;
}

interface ParsedModel {
  graph: Field;
  opsets: Map<string, number>;
  nodes: Node[];
  consts: Map<string, ConstValue>;
  graphOutputs: Set<string>;
}

function parse(b: Uint8Array): ParsedModel | null {
  let graph: Field | undefined;
  const opsets = new Map<string, number>();
  for (const f of fields(b, 0, b.byteLength)) {
    if (f.no === 7 && f.wire === 2) graph = f;
    else if (f.no === 8 && f.wire === 2) {
      let domain = '';
      let version = 0;
      for (const x of fields(b, f.valueStart, f.end)) {
        if (x.no === 1) domain = str(b, x);
        else if (x.no === 2) version = x.value;
      }
      opsets.set(domain === 'ai.onnx' ? '' : domain, version);
    }
  }
  if (!graph) return null;
  const nodes: Node[] = [];
  const consts = new Map<string, ConstValue>();
  const graphOutputs = new Set<string>();
  for (const f of fields(b, graph.valueStart, graph.end)) {
    if (f.no === 1 && f.wire === 2) nodes.push(readNode(b, f, nodes.length));
    else if (f.no === 5 && f.wire === 2) {
      let name = '';
      for (const x of fields(b, f.valueStart, f.end)) if (x.no === 8) name = str(b, x);
      const v = tensorValues(b, f.valueStart, f.end);
      if (v) consts.set(name, v);
    } else if (f.no === 12 && f.wire === 2) {
      for (const x of fields(b, f.valueStart, f.end)) if (x.no === 1) graphOutputs.add(str(b, x));
    }
  }
  for (const n of nodes)
    if (n.opType === 'Constant' && n.domain === '' && n.value) consts.set(n.outputs[0], n.value);
  return { graph, opsets, nodes, consts, graphOutputs };
}

/** `parse`, with bytes it cannot read as null: ONNX Runtime reports a damaged file itself. */
function parseOrNull(b: Uint8Array): ParsedModel | null {
  try {
    return parse(b);
  } catch {
    return null;
  }
}

const samePerm = (a: number[] | undefined, b: readonly number[]): boolean =>
  !!a && a.length === b.length && a.every((x, i) => x === b[i]);

/** One attention found: its q, k, v inputs, head count, scale, output and matched nodes. */
interface Match {
  q: string;
  k: string;
  v: string;
  heads: number;
  scale: number;
  output: string;
  last: Node;
  nodes: Node[];
}

class Matcher {
  readonly producer = new Map<string, Node>();
  readonly uses = new Map<string, number>();

  constructor(private readonly m: ParsedModel) {
    for (const n of m.nodes) {
      for (const o of n.outputs) this.producer.set(o, n);
      // A Shape only reads dims (SDPA's export takes its scale from Shape(q)); if it is still
      // needed after the rewrite, the final check in rewriteAttention refuses the rewrite.
      if (n.opType === 'Shape') continue;
      for (const i of n.inputs) if (i) this.uses.set(i, (this.uses.get(i) ?? 0) + 1);
    }
    for (const o of m.graphOutputs) this.uses.set(o, (this.uses.get(o) ?? 0) + 1);
  }

  /** The node making `name` if it is `op` (default domain) and `name` has one consumer. */
  private only(name: string, op: string): Node | undefined {
    const n = this.producer.get(name);
    if (!n || n.opType !== op || n.domain !== '' || this.uses.get(name) !== 1) return undefined;
    return n;
  }

  /** A Reshape's target shape, as far as constants say (NaN where computed at run time). */
  private shapeOf(reshape: Node): number[] | undefined {
    const s = reshape.inputs[1];
    const c = this.m.consts.get(s);
    if (c) return c;
    const concat = this.producer.get(s);
    if (!concat || concat.opType !== 'Concat') return undefined;
    const out: number[] = [];
    for (const i of concat.inputs) {
      const v = this.m.consts.get(i);
      if (v) out.push(...v);
      else out.push(NaN); // one element computed at run time (exporters unsqueeze scalars)
    }
    return out;
  }

  /** A scalar input of `n` (the other being `other`), constant or computable, or undefined. */
  private scalar(n: Node, other: string): number | undefined {
    const c = n.inputs.find((i) => i !== other);
    const v = c === undefined ? undefined : this.evaluate(c, 0);
    return v && v.length === 1 && Number.isFinite(v[0]) ? v[0] : undefined;
  }

  /**
   * The value of a small tensor computed from constants and the last dim of a head-split tensor:
   * torch's scaled_dot_product_attention export computes its scale at run time as
   * sqrt(1 / sqrt(float(Shape(q)[-1]))). Undefined for anything else.
   */
  private evaluate(name: string, depth: number): number[] | undefined {
    const c = this.m.consts.get(name);
    if (c) return c;
    const n = this.producer.get(name);
    if (!n || n.domain !== '' || depth > 8) return undefined;
    const arg = (i: number) => this.evaluate(n.inputs[i], depth + 1);
    const binary = (f: (a: number, b: number) => number) => {
      const a = arg(0);
      const b = arg(1);
      if (!a || !b || (a.length !== 1 && b.length !== 1)) return undefined;
      return a.length >= b.length ? a.map((x) => f(x, b[0])) : b.map((y) => f(a[0], y));
    };
    switch (n.opType) {
      case 'Cast':
      case 'Identity':
        return arg(0);
      case 'Sqrt':
        return arg(0)?.map(Math.sqrt);
      case 'Reciprocal':
        return arg(0)?.map((x) => 1 / x);
      case 'Mul':
        return binary((a, b) => a * b);
      case 'Div':
        return binary((a, b) => a / b);
      case 'Slice':
      case 'Gather': {
        // Shape(x)[-1:] (Slice starts) or Shape(x)[-1] (Gather index): the head size.
        const at = this.m.consts.get(n.inputs[1]);
        const shape = this.producer.get(n.inputs[0]);
        if (shape?.opType !== 'Shape' || at?.length !== 1 || at[0] !== -1) return undefined;
        const d = this.lastDim(shape.inputs[0]);
        return d === undefined ? undefined : [d];
      }
      default:
        return undefined;
    }
  }

  /** The last dim of a head-split tensor, Transpose[0,2,1,3](Reshape(x, [., ., H, d])): d. */
  private lastDim(name: string): number | undefined {
    const t = this.producer.get(name);
    if (t?.opType !== 'Transpose' || !samePerm(t.ints.perm, [0, 2, 1, 3])) return undefined;
    const r = this.producer.get(t.inputs[0]);
    const shape = r?.opType === 'Reshape' ? this.shapeOf(r) : undefined;
    return shape && shape.length === 4 && shape[3] > 0 ? shape[3] : undefined;
  }

  /** Strip a scaling Mul/Div by a scalar: [input, factor]. */
  private unscale(name: string, nodes: Node[]): [string, number] {
    const n = this.producer.get(name);
    if (!n || n.domain !== '' || this.uses.get(name) !== 1) return [name, 1];
    if (n.opType === 'Mul') {
      for (const x of n.inputs) {
        const s = this.scalar(n, x);
        if (s !== undefined && this.evaluate(x, 0) === undefined) {
          nodes.push(n);
          return [x, s];
        }
      }
    } else if (n.opType === 'Div' && this.evaluate(n.inputs[0], 0) === undefined) {
      const s = this.scalar(n, n.inputs[0]);
      if (s !== undefined && s !== 0) {
        nodes.push(n);
        return [n.inputs[0], 1 / s];
      }
    }
    return [name, 1];
  }

  /**
   * Reshape(x, [., ., H, d]) then Transpose `perm`: [x, H]. 3-D layout: followed by
   * Reshape([b H, n, d]) (and Transpose[0,2,1] for K).
   */
  private heads(name: string, perm4: readonly number[], nodes: Node[]): [string, number] | null {
    const t = this.only(name, 'Transpose');
    if (!t || !samePerm(t.ints.perm, perm4)) return null;
    const r = this.only(t.inputs[0], 'Reshape');
    if (!r) return null;
    const shape = this.shapeOf(r);
    if (!shape || shape.length !== 4 || !(shape[2] > 0)) return null;
    nodes.push(t, r);
    return [r.inputs[0], shape[2]];
  }

  private side(
    name: string,
    layout: 3 | 4,
    isKey: boolean,
    nodes: Node[],
  ): [string, number] | null {
    if (layout === 4) {
      if (!isKey) return this.heads(name, [0, 2, 1, 3], nodes);
      const t = this.only(name, 'Transpose');
      if (t && samePerm(t.ints.perm, [0, 2, 3, 1])) {
        const r = this.only(t.inputs[0], 'Reshape');
        const shape = r && this.shapeOf(r);
        if (!r || !shape || shape.length !== 4 || !(shape[2] > 0)) return null;
        nodes.push(t, r);
        return [r.inputs[0], shape[2]];
      }
      if (!t || !samePerm(t.ints.perm, [0, 1, 3, 2])) return null;
      nodes.push(t);
      return this.heads(t.inputs[0], [0, 2, 1, 3], nodes);
    }
    let at = name;
    if (isKey) {
      const t = this.only(name, 'Transpose');
      if (!t || !samePerm(t.ints.perm, [0, 2, 1])) return null;
      nodes.push(t);
      at = t.inputs[0];
    }
    const r = this.only(at, 'Reshape');
    const shape = r && this.shapeOf(r);
    if (!r || !shape || shape.length !== 3) return null;
    nodes.push(r);
    return this.heads(r.inputs[0], [0, 2, 1, 3], nodes);
  }

  /** The attention whose Softmax is `sm`, or null. */
  match(sm: Node, opset: number): Match | null {
    const axis = sm.ints.axis?.[0];
    const nodes: Node[] = [sm];
    const out = this.m.nodes.filter((n) => n.inputs[0] === sm.outputs[0]);
    const pv = out.length === 1 && out[0].opType === 'MatMul' ? out[0] : undefined;
    if (!pv || pv.domain !== '' || this.uses.get(sm.outputs[0]) !== 1) return null;
    nodes.push(pv);
    const [scoresIn, s0] = this.unscale(sm.inputs[0], nodes);
    const qk = this.only(scoresIn, 'MatMul');
    if (!qk) return null;
    nodes.push(qk);
    const [qIn, s1] = this.unscale(qk.inputs[0], nodes);
    const [kIn, s2] = this.unscale(qk.inputs[1], nodes);
    // The layout follows from what the query side is: a 4-D head split or a 3-D batch of heads.
    const t4 = this.producer.get(qIn);
    const layout: 3 | 4 = t4?.opType === 'Transpose' ? 4 : 3;
    const rank = layout;
    // Softmax before opset 13 flattens from `axis` (default 1): the last axis only when explicit.
    const lastAxis = axis === undefined ? opset >= 13 : axis === -1 || axis === rank - 1;
    if (!lastAxis) return null;
    const q = this.side(qIn, layout, false, nodes);
    const k = this.side(kIn, layout, true, nodes);
    const v = this.side(pv.inputs[1], layout, false, nodes);
    if (!q || !k || !v || q[1] !== k[1] || q[1] !== v[1]) return null;
    // Back to [b, n, H d].
    let at = pv.outputs[0];
    if (layout === 3) {
      const r = this.consumer(at, 'Reshape');
      const shape = r && this.shapeOf(r);
      if (!r || !shape || shape.length !== 4) return null;
      nodes.push(r);
      at = r.outputs[0];
    }
    const t = this.consumer(at, 'Transpose');
    if (!t || !samePerm(t.ints.perm, [0, 2, 1, 3])) return null;
    const r = this.consumer(t.outputs[0], 'Reshape');
    const shape = r && this.shapeOf(r);
    if (!r || !shape || shape.length !== 3) return null;
    nodes.push(t, r);
    return {
      q: q[0],
      k: k[0],
      v: v[0],
      heads: q[1],
      scale: s0 * s1 * s2,
      output: r.outputs[0],
      last: r,
      nodes,
    };
  }

  /** The one consumer of `name`, if it is `op`. */
  private consumer(name: string, op: string): Node | undefined {
    if (this.uses.get(name) !== 1) return undefined;
    const n = this.m.nodes.find((x) => x.inputs.includes(name));
    return n && n.opType === op && n.domain === '' ? n : undefined;
  }
}

export interface AttentionRewrite {
  /** The rewritten ModelProto. */
  model: Uint8Array;
  /** Attentions replaced. */
  replaced: number;
}

/**
 * Rewrite the exported attention of a serialized ModelProto into MultiHeadAttention; null when
 * no attention matched (the caller keeps the original bytes) or the bytes are not a model this
 * pass can read.
 */
export function rewriteAttention(model: Uint8Array): AttentionRewrite | null {
  const parsed = parseOrNull(model);
  if (!parsed) return null;
  const opset = parsed.opsets.get('') ?? 0;
  const msOpset = parsed.opsets.get(MS_DOMAIN);
  if (msOpset !== undefined && msOpset !== 1) return null;
  const matcher = new Matcher(parsed);
  const replaced: Replacements = new Map();
  const removed = new Set<number>();
  for (const n of parsed.nodes) {
    if (n.opType !== 'Softmax' || n.domain !== '' || removed.has(n.index)) continue;
    const m = matcher.match(n, opset);
    if (!m || m.nodes.some((x) => removed.has(x.index))) continue;
    for (const x of m.nodes) removed.add(x.index);
    const mha = nodeMessage({
      opType: 'MultiHeadAttention',
      domain: MS_DOMAIN,
      name: `${m.output}/MultiHeadAttention`,
      inputs: [m.q, m.k, m.v],
      outputs: [m.output],
      attrs: { num_heads: m.heads, scale: { f: m.scale } },
    });
    replaced.set(m.last.index, { bytes: mha.bytes(), inputs: [m.q, m.k, m.v] });
  }
  if (replaced.size === 0) return null;
  const kept = dropDead(parsed, removed, replaced);
  // Every input a kept node reads must still be made by someone (a Shape of a removed tensor
  // whose result is still used would not be): else keep the model as it was.
  const made = new Set<string>();
  for (const n of kept) for (const o of n.outputs) made.add(o);
  for (const n of parsed.nodes) if (replaced.has(n.index)) made.add(n.outputs[0]);
  const lost = (name: string) =>
    name !== '' && !made.has(name) && matcher.producer.has(name) && !parsed.consts.has(name);
  if (kept.some((n) => n.inputs.some(lost))) return null;
  return { model: encode(model, parsed, kept, replaced), replaced: replaced.size };
}

type Replacements = Map<number, { bytes: Uint8Array; inputs: string[] }>;

/** Nodes kept: not matched, and some output still used (iterated to a fixed point). */
function dropDead(m: ParsedModel, removed: Set<number>, replaced: Replacements): Node[] {
  let kept = m.nodes.filter((n) => !removed.has(n.index));
  for (;;) {
    const used = new Set<string>(m.graphOutputs);
    for (const n of kept) for (const i of n.inputs) used.add(i);
    for (const r of replaced.values()) for (const i of r.inputs) used.add(i);
    const next = kept.filter((n) => n.outputs.some((o) => o && used.has(o)));
    if (next.length === kept.length) return kept;
    kept = next;
  }
}

function encode(src: Uint8Array, m: ParsedModel, kept: Node[], replaced: Replacements): Uint8Array {
  const keptSet = new Set(kept.map((n) => n.index));
  const graph = new Message();
  for (const n of m.nodes) {
    const mha = replaced.get(n.index);
    if (mha) graph.bytesField(1, mha.bytes);
    else if (keptSet.has(n.index)) graph.raw(src.subarray(n.start, n.end));
  }
  for (const f of fields(src, m.graph.valueStart, m.graph.end))
    if (f.no !== 1) graph.raw(src.subarray(f.start, f.end));
  const model = new Message();
  for (const f of fields(src, 0, src.byteLength)) {
    if (f.no === 7 && f.wire === 2) model.message(7, graph);
    else model.raw(src.subarray(f.start, f.end));
  }
  if (!m.opsets.has(MS_DOMAIN)) model.message(8, new Message().string(1, MS_DOMAIN).int(2, 1));
  return model.bytes();
}

/**
 * How a graph computes attention, for the memory plan (pipelines/memory.ts): whether a call
 * holds every head's N x N scores or not.
 */
export interface AttentionCount {
  /**
   * com.microsoft MultiHeadAttention nodes with q, k, v (and at most a projection bias): ONNX
   * Runtime's CPU kernel takes its flash-attention path for them, scores never held whole.
   */
  fused: number;
  /**
   * Attention whose scores are materialised: Softmax nodes (in a UNet or VAE, only attention
   * has one), and MultiHeadAttention with a mask, attention bias or past (no flash path).
   */
  materialised: number;
}

/** Counts the attention of a serialized ModelProto; null when it cannot be read. */
export function countAttention(model: Uint8Array): AttentionCount | null {
  const parsed = parseOrNull(model);
  if (!parsed) return null;
  const count: AttentionCount = { fused: 0, materialised: 0 };
  for (const n of parsed.nodes) {
    if (n.opType === 'Softmax' && n.domain === '') count.materialised++;
    else if (n.opType === 'MultiHeadAttention' && n.domain === MS_DOMAIN) {
      // Inputs after q, k, v and bias: key_padding_mask, attention_bias, past key and value.
      if (n.inputs.slice(4).some((i) => i !== '')) count.materialised++;
      else count.fused++;
    }
  }
  return count;
}

/** The files up to this size are read for the rewrite (protobuf cannot hold more anyway). */
const MAX_MODEL_BYTES = 2 ** 31;

/** A model file's bytes (or bytes already read); null when unreadable or too big to be a ModelProto. */
async function modelBytes(model: string | Uint8Array): Promise<Uint8Array | null> {
  if (typeof model !== 'string') return model;
  try {
    if ((await stat(model)).size > MAX_MODEL_BYTES) return null;
    return await readFile(model);
  } catch {
    return null; // ORT reports an unreadable file in its own words, with our wrapping
  }
}

/**
 * A model file (or bytes already read) as ONNX Runtime will get it: with `rewrite`, its exported
 * attention rewritten (`rewrite` null when nothing matched: ORT reads the original), the
 * attention of the graph ORT gets, and that graph's bytes (both null when the file is too big to
 * be a ModelProto or cannot be read: ONNX Runtime reads such a file as it is). The bytes let the
 * next pass (widen-fp16.ts) go on without reading the file again.
 */
export async function prepareAttention(
  model: string | Uint8Array,
  folder: string,
  opts: { rewrite: boolean },
): Promise<{
  rewrite: (AttentionRewrite & { folder: string }) | null;
  attention: AttentionCount | null;
  bytes: Uint8Array | null;
}> {
  const bytes = await modelBytes(model);
  if (!bytes) return { rewrite: null, attention: null, bytes: null };
  const r = opts.rewrite ? rewriteAttention(bytes) : null;
  return {
    rewrite: r ? { ...r, folder } : null,
    attention: countAttention(r?.model ?? bytes),
    bytes: r?.model ?? bytes,
  };
}

/** The attention of a model file (an optimized-graph cache entry); null when unreadable. */
export async function countAttentionFile(path: string): Promise<AttentionCount | null> {
  const bytes = await modelBytes(path);
  return bytes ? countAttention(bytes) : null;
}
