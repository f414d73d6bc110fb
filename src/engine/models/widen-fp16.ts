/**
 * A load-time pass for the CPU provider: float16 weights that the graph widens to float32 with a
 * Cast (fp16 storage with float32 compute: the checkpoint converter's default, and its fixtures)
 * are widened here, one initializer at a time, into a float32 external-data file in a temporary
 * folder, and their Casts dropped, before ONNX Runtime reads the model.
 *
 * Why: ONNX Runtime folds those Casts at load (constant folding), so a session holds float32
 * weights either way, but while it folds it holds the float16 initializers beside the float32
 * ones it makes, and it allocates them apart from the weights it maps. Measured on the
 * SD-1.5-shaped UNet (README "Precision"): fp16 storage peaked at 5.77 GiB while loading and
 * held 3.84 GiB after, fp32 storage 3.35 GiB for both. Given the widened file, ORT loads what it
 * loads for fp32 storage. Nothing numeric changes: every binary16 value is exact in binary32
 * (IEEE 754-2008, 3.6), which is also what ORT's Cast computes, so outputs are equal.
 *
 * Only initializers whose one consumer is Cast(to: FLOAT) are widened: a float16 weight read by
 * anything else (a graph computing in float16, as the converter's CUDA variant and fp16 ONNX
 * exports do) is left as it is, and so is a model with subgraphs (If, Loop), a weight that is
 * also a graph input or output, or one whose data is in typed fields. External data is copied
 * into the new data file too (ONNX Runtime only reads external data beside the model).
 * Nothing to widen, or a temporary folder on tmpfs (the file would live in memory): null, and
 * ONNX Runtime reads the model as before.
 *
 * Field numbers are onnx/onnx.proto's: ModelProto{graph 7}, GraphProto{node 1, initializer 5,
 * input 11, output 12}, NodeProto{input 1, output 2, op_type 4, attribute 5, domain 7},
 * AttributeProto{name 1, i 3, g 6, graphs 11}, TensorProto{dims 1, data_type 2, float_data 4 ...
 * uint64_data 11, name 8, raw_data 9, external_data 13, data_location 14},
 * StringStringEntryProto{key 1, value 2}, ValueInfoProto{name 1}.
 */
import { mkdtemp, open, rm, statfs, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Message } from '../convert/onnx/proto';
import { toFloat32 } from '../convert/readers/dtype';
import {
  type Field,
  type TensorInfo,
  fields,
  parseTensor,
  text,
} from '../adapters/embeddings-proto';
import type { ProviderName } from './providers';

/** The widened model and its data file inside the temporary folder. */
export const WIDENED_MODEL = 'model.onnx';
export const WIDENED_DATA = 'model.onnx.data';
/** Prefix of the temporary folders (the optimized-graph cache prunes leftovers: `.tmp-`). */
export const WIDEN_TMP_PREFIX = 'widen-fp16.tmp-';

const FLOAT = 1;
const FLOAT16 = 10;
/** Elements widened per read: 4 MiB of float16 in, 8 MiB of float32 out. */
const CHUNK_ELEMENTS = 1 << 21;
/** statfs(2) f_type of file systems kept in memory (linux/magic.h: TMPFS_MAGIC, RAMFS_MAGIC). */
const MEMORY_FS = new Set([0x01021994, 0x858458f6]);

/**
 * Whether `dir` is on a file system held in memory (a tmpfs /tmp): there the widened file would
 * take as much memory as it saves, and stay in memory while the session maps it.
 */
export async function inMemoryFolder(dir: string): Promise<boolean> {
  try {
    return MEMORY_FS.has((await statfs(dir)).type);
  } catch {
    return false;
  }
}

/**
 * Whether sessions on `provider` get their float16-stored weights widened before ONNX Runtime
 * loads them: on the CPU provider, which computes these graphs in float32 on every CPU (the Cast
 * is in the graph). A GPU provider (CUDA, DirectML, CoreML, WebGPU) keeps the file as it is:
 * there the weights go to device memory, and float16 is what the GPU variant computes in.
 */
export function widensFloat16(provider: ProviderName): boolean {
  return provider === 'cpu';
}

/** A model with its float16 weights widened, in a temporary folder. */
export interface WidenedModel {
  /** The widened model file (its weights in WIDENED_DATA beside it): what ONNX Runtime opens. */
  path: string;
  /** The temporary folder holding it. */
  dir: string;
  /** Initializers widened (their Casts dropped). */
  widened: number;
  /** Bytes of the data file (widened weights, and the other external weights copied). */
  dataBytes: number;
  /**
   * Deletes the temporary folder. Call once ONNX Runtime has created the session: it holds what
   * it needs by then. ORT keeps the data file memory-mapped for the session's life (as it maps
   * a model's own external data), so on POSIX the unlinked file's disk space is freed when the
   * session is released; where the delete fails, as on Windows while mapped, the folder is left
   * for pruneOptimizedCache or the system's temporary-file cleanup.
   */
  dispose(): Promise<boolean>;
}

interface NodeInfo {
  field: Field;
  opType: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  /** Cast's `to`. */
  to: number | undefined;
  subgraph: boolean;
}

function readNode(b: Uint8Array, f: Field): NodeInfo {
  const n: NodeInfo = {
    field: f,
    opType: '',
    domain: '',
    inputs: [],
    outputs: [],
    to: undefined,
    subgraph: false,
  };
  for (const x of fields(b, f.payloadStart, f.end)) {
    if (x.number === 1 && x.wire === 2) n.inputs.push(text(b, x));
    else if (x.number === 2 && x.wire === 2) n.outputs.push(text(b, x));
    else if (x.number === 4 && x.wire === 2) n.opType = text(b, x);
    else if (x.number === 7 && x.wire === 2) n.domain = text(b, x);
    else if (x.number === 5 && x.wire === 2) {
      let name = '';
      let i: number | undefined;
      for (const a of fields(b, x.payloadStart, x.end)) {
        if (a.number === 1 && a.wire === 2) name = text(b, a);
        else if (a.number === 3 && a.wire === 0) i = a.value;
        else if (a.number === 6 || a.number === 11) n.subgraph = true;
      }
      if (name === 'to') n.to = i;
    }
  }
  return n;
}

/** Bytes per element of the TensorProto data types (for external data without a length). */
const ELEMENT_BYTES: Record<number, number> = {
  1: 4,
  2: 1,
  3: 1,
  4: 2,
  5: 2,
  6: 4,
  7: 8,
  9: 1,
  10: 2,
  11: 8,
  12: 4,
  13: 8,
  16: 2,
};

const numel = (dims: number[]) => dims.reduce((a, d) => a * d, 1);

/** An external-data location inside the model's folder; null for one that leaves it. */
function externalPath(folder: string, location: string | undefined): string | null {
  if (!location || path.isAbsolute(location)) return null;
  const p = path.resolve(folder, location);
  const rel = path.relative(path.resolve(folder), p);
  return rel === '' || rel.startsWith('..') || path.isAbsolute(rel) ? null : p;
}

/** What the pass will do to one model: the Casts it drops and the weights it widens. */
interface Plan {
  graph: Field;
  /** Initializer name -> the Cast output it becomes. */
  widen: Map<string, string>;
  /** Index (graph field start) of the Cast nodes dropped. */
  dropped: Set<number>;
  tensors: TensorInfo[];
}

function plan(b: Uint8Array, folder: string): Plan | null {
  let graph: Field | undefined;
  for (const f of fields(b, 0, b.byteLength)) if (f.number === 7 && f.wire === 2) graph = f;
  if (!graph) return null;
  const nodes: NodeInfo[] = [];
  const tensors: TensorInfo[] = [];
  const graphIo = new Set<string>();
  for (const f of fields(b, graph.payloadStart, graph.end)) {
    if (f.wire !== 2) continue;
    if (f.number === 1) nodes.push(readNode(b, f));
    else if (f.number === 5) tensors.push(parseTensor(b, f));
    else if (f.number === 11 || f.number === 12)
      for (const x of fields(b, f.payloadStart, f.end)) if (x.number === 1) graphIo.add(text(b, x));
  }
  // A subgraph can read any outer name: leave such a model alone.
  if (nodes.some((n) => n.subgraph)) return null;
  const uses = new Map<string, NodeInfo[]>();
  for (const n of nodes)
    for (const i of n.inputs) {
      if (!i) continue;
      const list = uses.get(i);
      if (list) list.push(n);
      else uses.set(i, [n]);
    }
  const widen = new Map<string, string>();
  const dropped = new Set<number>();
  for (const t of tensors) {
    // Outside the folder: ONNX Runtime refuses it in its own words.
    if (t.external && !externalPath(folder, t.external.get('location'))) return null;
    // External data without a length, of a type whose width is not known here: not copyable.
    if (t.external && !t.external.has('length') && !ELEMENT_BYTES[t.dataType]) return null;
    const typed = t.floatData !== null || t.int32Data !== null;
    if (t.dataType !== FLOAT16 || typed || graphIo.has(t.name)) continue;
    const bytes = numel(t.dims) * 2;
    if (t.raw ? t.raw.end - t.raw.payloadStart !== bytes : !t.external) continue;
    if (t.external?.has('length') && Number(t.external.get('length')) !== bytes) continue;
    const readers = uses.get(t.name) ?? [];
    const cast = readers[0];
    if (
      readers.length !== 1 ||
      cast.opType !== 'Cast' ||
      (cast.domain !== '' && cast.domain !== 'ai.onnx') ||
      cast.to !== FLOAT ||
      cast.outputs.length !== 1 ||
      !cast.outputs[0] ||
      graphIo.has(cast.outputs[0])
    )
      continue;
    widen.set(t.name, cast.outputs[0]);
    dropped.add(cast.field.start);
  }
  return widen.size > 0 ? { graph, widen, dropped, tensors } : null;
}

/** Appends to the data file, aligned as onnx's external-data writer and the converter do. */
class DataWriter {
  offset = 0;
  constructor(private readonly fh: FileHandle) {}

  async write(buf: Uint8Array): Promise<void> {
    let done = 0;
    while (done < buf.byteLength) {
      const { bytesWritten } = await this.fh.write(
        buf,
        done,
        buf.byteLength - done,
        this.offset + done,
      );
      done += bytesWritten;
    }
    this.offset += buf.byteLength;
  }

  /** Pads so a tensor of `length` bytes starts page-aligned (ORT can map it) or 64-aligned. */
  async align(length: number): Promise<void> {
    const to = length >= 1 << 20 ? 4096 : 64;
    const pad = (to - (this.offset % to)) % to;
    if (pad) await this.write(new Uint8Array(pad));
  }
}

/** Reads a source tensor's bytes in chunks: from the model's bytes or an external file. */
class SourceReader {
  private readonly files = new Map<string, FileHandle>();
  private readonly buf = new Uint8Array(CHUNK_ELEMENTS * 4);

  constructor(
    private readonly model: Uint8Array,
    private readonly folder: string,
  ) {}

  /** Calls `each` with consecutive chunks (multiples of `unit` bytes) of the tensor's data. */
  async chunks(
    t: TensorInfo,
    length: number,
    unit: number,
    each: (chunk: Uint8Array) => Promise<void>,
  ): Promise<void> {
    const step = Math.floor(this.buf.byteLength / unit) * unit;
    if (t.raw) {
      for (let at = 0; at < length; at += step)
        await each(
          this.model.subarray(
            t.raw.payloadStart + at,
            t.raw.payloadStart + Math.min(length, at + step),
          ),
        );
      return;
    }
    const fh = await this.file(t.external!.get('location')!);
    const base = Number(t.external!.get('offset') ?? 0);
    for (let at = 0; at < length; at += step) {
      const n = Math.min(step, length - at);
      let got = 0;
      while (got < n) {
        const { bytesRead } = await fh.read(this.buf, got, n - got, base + at + got);
        if (bytesRead === 0) throw new Error(`${t.name}: its external data ends early`);
        got += bytesRead;
      }
      await each(this.buf.subarray(0, n));
    }
  }

  private async file(location: string): Promise<FileHandle> {
    let fh = this.files.get(location);
    if (!fh) {
      fh = await open(externalPath(this.folder, location)!, 'r');
      this.files.set(location, fh);
    }
    return fh;
  }

  async close(): Promise<void> {
    for (const fh of this.files.values()) await fh.close().catch(() => undefined);
  }
}

/** A TensorProto: the kept fields of `t` (not its data), then external data at `offset`. */
function externalTensor(
  b: Uint8Array,
  t: TensorInfo,
  at: { offset: number; length: number },
  widenedName?: string,
): Message {
  const m = new Message();
  if (widenedName !== undefined) {
    for (const d of t.dims) m.int(1, d);
    m.int(2, FLOAT).string(8, widenedName);
  } else
    for (const x of fields(b, t.field.payloadStart, t.field.end))
      if (x.number !== 9 && x.number !== 13 && x.number !== 14) m.raw(b.subarray(x.start, x.end));
  for (const [k, v] of [
    ['location', WIDENED_DATA],
    ['offset', String(at.offset)],
    ['length', String(at.length)],
  ])
    m.message(13, new Message().string(1, k).string(2, v));
  return m.int(14, 1);
}

/**
 * Writes `model` (serialized ModelProto bytes; external data relative to `folder`) with its
 * Cast-widened float16 weights as float32 into a new temporary folder under `tempParent`.
 * Null when there is nothing to widen. Throws on I/O errors (the folder is removed then).
 */
export async function widenFloat16Weights(
  model: Uint8Array,
  folder: string,
  tempParent: string,
): Promise<WidenedModel | null> {
  const p = plan(model, folder);
  if (!p || (await inMemoryFolder(tempParent))) return null;
  const dir = await mkdtemp(path.join(tempParent, WIDEN_TMP_PREFIX));
  const reader = new SourceReader(model, folder);
  let data: FileHandle | undefined;
  try {
    data = await open(path.join(dir, WIDENED_DATA), 'w');
    const out = new DataWriter(data);
    const tensorAt = new Map(p.tensors.map((t) => [t.field.start, t]));
    const graph = new Message();
    for (const f of fields(model, p.graph.payloadStart, p.graph.end)) {
      if (f.number === 1 && p.dropped.has(f.start)) continue;
      const t = f.number === 5 && f.wire === 2 ? tensorAt.get(f.start) : undefined;
      const widenedName = t && p.widen.get(t.name);
      if (t && widenedName !== undefined) {
        const length = numel(t.dims) * 4;
        await out.align(length);
        const offset = out.offset;
        await reader.chunks(t, length / 2, 2, async (chunk) => {
          const wide = toFloat32(chunk, 'F16', chunk.byteLength / 2);
          await out.write(new Uint8Array(wide.buffer, wide.byteOffset, wide.byteLength));
        });
        graph.message(5, externalTensor(model, t, { offset, length }, widenedName));
      } else if (t?.external) {
        const length = Number(
          t.external.get('length') ?? numel(t.dims) * ELEMENT_BYTES[t.dataType],
        );
        await out.align(length);
        const offset = out.offset;
        await reader.chunks(t, length, 1, (chunk) => out.write(chunk));
        graph.message(5, externalTensor(model, t, { offset, length }));
      } else graph.raw(model.subarray(f.start, f.end));
    }
    const result = new Message();
    for (const f of fields(model, 0, model.byteLength)) {
      if (f.number === 7 && f.wire === 2) result.message(7, graph);
      else result.raw(model.subarray(f.start, f.end));
    }
    await data.close();
    data = undefined;
    const modelPath = path.join(dir, WIDENED_MODEL);
    const fh = await open(modelPath, 'w');
    try {
      await new DataWriter(fh).write(result.bytes());
    } finally {
      await fh.close();
    }
    return {
      path: modelPath,
      dir,
      widened: p.widen.size,
      dataBytes: out.offset,
      dispose: () =>
        rm(dir, { recursive: true, force: true }).then(
          () => true,
          () => false,
        ),
    };
  } catch (e) {
    await data?.close().catch(() => undefined);
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
    throw e;
  } finally {
    await reader.close();
  }
}

/**
 * widenFloat16Weights, or null when there is nothing to widen or the widening failed (a full or
 * read-only disk, unreadable external data): ONNX Runtime then reads the model as it is and
 * reports a broken file in its own words. The session works either way; only the load's peak
 * memory differs.
 */
export async function widenFloat16IfAny(
  model: Uint8Array,
  folder: string,
  tempParent: string,
): Promise<WidenedModel | null> {
  try {
    return await widenFloat16Weights(model, folder, tempParent);
  } catch {
    return null;
  }
}
