/**
 * A text encoder whose token embedding table is grown by textual-inversion vectors for one run,
 * built in memory: model.onnx is read, its table (the `data` initializer of the Gather that looks
 * up `input_ids`, [V, D]) is rewritten as [V + n, D] with the embeddings' rows appended, and a
 * session is created from the buffer. Placeholder ids V..V+n-1 then stand for the vectors.
 *
 * CLIP pools its output at the highest id of `input_ids` (the EOS token, CLIP's
 * `text.argmax(dim=-1)`), so placeholder ids above EOS would move the pooled vector. The rewrite
 * therefore feeds the Gather from a new graph input, `ti_token_ids` (int64), while `input_ids`
 * keeps its role for pooling and gets 0 at placeholder positions, as AUTOMATIC1111 does
 * (modules/sd_hijack_clip.py: the ids of an embedding's positions are 0 and its vectors replace
 * the looked-up rows, modules/sd_hijack.py `EmbeddingsWithFixes`).
 *
 * Only the changed messages are rebuilt; every other byte of the file is copied. Field numbers
 * are from onnx/onnx.proto (ModelProto.graph = 7; GraphProto node 1, initializer 5, input 11;
 * NodeProto input 1, output 2, op_type 4; TensorProto dims 1, data_type 2, float_data 4,
 * int32_data 5, name 8, raw_data 9, external_data 13, data_location 14; ValueInfoProto name 1,
 * type 2; TypeProto tensor_type 1; TypeProto.Tensor elem_type 1, shape 2; TensorShapeProto dim 1;
 * Dimension dim_param 2). Weights kept in external files stay there: the table is written inline
 * and ONNX Runtime reads the rest from the model's folder
 * (`session.model_external_initializers_file_folder_path`).
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { EngineError, wrapSessionCreateError } from '../errors';
import { sessionOptions, type ProviderName } from '../models/providers';
import { float32ToFloat16Bits } from '../tensor';
import type { EmbeddingVectors } from './embeddings-file';
import {
  ProtoError,
  fields,
  lenField,
  parseNode,
  parseTensor,
  readVarint,
  stringField,
  text,
  varint,
  varintField,
  type Field,
  type NodeInfo,
  type TensorInfo,
} from './embeddings-proto';

/** The graph input the grown table's Gather reads (int64 [batch, sequence]). */
export const TI_TOKEN_IDS = 'ti_token_ids';

/** Bytes per element of the table types we can grow: float32, float16, bfloat16. */
const ELEMENT_BYTES: Record<number, number> = { 1: 4, 10: 2, 16: 2 };

/** Where the table sits in a text encoder's model.onnx, before any change. */
export interface TokenTable {
  /** Rows of the table: the first placeholder id. */
  vocabRows: number;
  width: number;
}

/** External-data files held in memory, by the location the model names them with. */
type ExternalData = readonly { path: string; data: Uint8Array }[];

/**
 * A text encoder's model.onnx with its token table grown; `bytes` is what ORT creates from, with
 * `externalData` (patched weight files held in memory) when the encoder came from a LoRA variant.
 */
export interface GrownTextEncoder extends TokenTable {
  bytes: Uint8Array;
  externalData: ExternalData;
}

/**
 * The text encoder to grow when it is not the file on disk: a LoRA variant's patched model
 * (adapters/lora.ts SessionSource): its model.onnx bytes or path, and its patched data files.
 */
export interface TextEncoderSource {
  model: string | Uint8Array;
  externalData: ExternalData;
}

/**
 * Reads `modelPath` (a text encoder; `file` names it in messages), or `source` when given (the
 * LoRA-patched encoder, so its merged weights stay applied), and appends `rows` (each [n, width],
 * in placeholder order) to its token table. Rows are narrowed to the table's type.
 */
export async function growTokenTable(
  modelPath: string,
  file: string,
  rows: readonly { name: string; vectors: EmbeddingVectors }[],
  source?: TextEncoderSource,
): Promise<GrownTextEncoder> {
  // Room for the new rows in front of the file's bytes, so the grown model is assembled in the
  // same allocation (a full SD 1.x text encoder is 490 MB; a second copy costs seconds).
  const slack = 4 * rows.reduce((s, r) => s + r.vectors.data.length, 0) + 65536;
  const model = source?.model ?? modelPath;
  const externalData = source?.externalData ?? [];
  const whole =
    typeof model === 'string' ? await readWhole(model, file, slack) : withSlack(model, slack);
  const buf = whole.subarray(slack);
  try {
    const dir = path.dirname(modelPath);
    const { parts, vocabRows, width } = await rewrite(buf, dir, file, rows, externalData);
    return { bytes: assemble(whole, parts), vocabRows, width, externalData };
  } catch (e) {
    if (e instanceof ProtoError)
      throw new EngineError(
        'model-corrupt',
        `${file} is not a readable ONNX model (${e.message}).`,
        {
          file,
          cause: e,
        },
      );
    throw e;
  }
}

/**
 * Joins `parts` (views into `whole`, in file order, or new bytes) at the start of `whole` when
 * no part would overwrite a view not yet copied; otherwise into a new buffer.
 */
function assemble(whole: Buffer, parts: readonly Uint8Array[]): Uint8Array {
  const sourceOf = (p: Uint8Array) =>
    p.buffer === whole.buffer ? p.byteOffset - whole.byteOffset : -1;
  let fits = true;
  let nextSource = whole.length;
  let end = parts.reduce((s, p) => s + p.length, 0);
  for (let i = parts.length - 1; i >= 0 && fits; i--) {
    const part = parts[i]!;
    const start = end - part.length;
    // A part's copy may overlap its own source (copyWithin moves like memmove), never a later one.
    if (end > nextSource) fits = false;
    const source = sourceOf(part);
    if (source >= 0) nextSource = Math.min(nextSource, source);
    end = start;
  }
  if (!fits) return Buffer.concat(parts);
  let at = 0;
  for (const part of parts) {
    const source = sourceOf(part);
    if (source >= 0) whole.copyWithin(at, source, source + part.length);
    else whole.set(part, at);
    at += part.length;
  }
  return whole.subarray(0, at);
}

/** `bytes` copied behind `slack` free bytes (the patched model belongs to its variant). */
function withSlack(bytes: Uint8Array, slack: number): Buffer {
  const whole = Buffer.allocUnsafeSlow(slack + bytes.length);
  whole.set(bytes, slack);
  return whole;
}

async function readWhole(modelPath: string, file: string, slack: number): Promise<Buffer> {
  try {
    const handle = await open(modelPath, 'r');
    try {
      const { size } = await handle.stat();
      const whole = Buffer.allocUnsafeSlow(slack + size);
      let done = 0;
      while (done < size) {
        const { bytesRead } = await handle.read(whole, slack + done, size - done, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return whole.subarray(0, slack + done);
    } finally {
      await handle.close();
    }
  } catch (e) {
    throw new EngineError('model-missing-file', `Cannot read ${file}: ${(e as Error).message}.`, {
      file,
      cause: e,
    });
  }
}

function unsupported(file: string, why: string): EngineError {
  return new EngineError('model-unsupported', `Embeddings cannot be used with ${file}: ${why}.`, {
    file,
  });
}

/** Typical widths, to say in a message which family an embedding was trained for. */
function familyOfWidth(width: number): string {
  if (width === 768) return ' (SD 1.x)';
  if (width === 1024) return ' (SD 2.x)';
  if (width === 1280) return ' (SDXL clip_g)';
  return '';
}

async function rewrite(
  buf: Buffer,
  dir: string,
  file: string,
  rows: readonly { name: string; vectors: EmbeddingVectors }[],
  externalData: ExternalData,
): Promise<TokenTable & { parts: Uint8Array[] }> {
  let graphField: Field | null = null;
  for (const f of fields(buf, 0, buf.length)) if (f.number === 7 && f.wire === 2) graphField = f;
  if (!graphField) throw new ProtoError('it has no graph');

  const nodes: NodeInfo[] = [];
  const tensors = new Map<string, TensorInfo>();
  const inputs: { name: string; field: Field }[] = [];
  for (const f of fields(buf, graphField.payloadStart, graphField.end)) {
    if (f.wire !== 2) continue;
    if (f.number === 1) nodes.push(parseNode(buf, f));
    else if (f.number === 5) {
      const t = parseTensor(buf, f);
      tensors.set(t.name, t);
    } else if (f.number === 11) {
      for (const g of fields(buf, f.payloadStart, f.end))
        if (g.number === 1 && g.wire === 2) inputs.push({ name: text(buf, g), field: f });
    }
  }

  // Values that are input_ids, possibly cast or reshaped (diffusers' export casts int32 to int64).
  const idsInput =
    inputs.find((i) => i.name === 'input_ids') ?? inputs.find((i) => !tensors.has(i.name));
  if (!idsInput) throw unsupported(file, 'it has no input_ids input');
  const idValues = new Set([idsInput.name]);
  const passThrough = new Set(['Cast', 'Reshape', 'Flatten', 'Squeeze', 'Unsqueeze', 'Identity']);
  for (const n of nodes)
    if (passThrough.has(n.op) && idValues.has(n.inputs[0] ?? '')) idValues.add(n.outputs[0]!);
  // The table is an initializer, read directly or through Casts (fp16 weights in fp32 graphs).
  const producer = new Map<string, NodeInfo>();
  for (const n of nodes) for (const o of n.outputs) producer.set(o, n);
  const tableOf = (name: string): { table: TensorInfo; via: string[] } | null => {
    const via: string[] = [];
    while (!tensors.has(name)) {
      const p = producer.get(name);
      if (p?.op !== 'Cast') return null;
      via.push(name);
      name = p.inputs[0] ?? '';
    }
    return { table: tensors.get(name)!, via };
  };
  const lookups = nodes.filter(
    (n) => n.op === 'Gather' && idValues.has(n.inputs[1] ?? '') && tableOf(n.inputs[0] ?? ''),
  );
  if (lookups.length !== 1)
    throw unsupported(
      file,
      lookups.length === 0
        ? 'its input_ids do not index a plain weight table (a quantized or unusual export)'
        : 'its input_ids index more than one weight table',
    );
  const gather = lookups[0]!;
  const { table, via } = tableOf(gather.inputs[0]!)!;
  for (const value of [table.name, ...via])
    if (nodes.reduce((count, n) => count + n.inputs.filter((i) => i === value).length, 0) !== 1)
      throw unsupported(file, 'its token table is shared with another layer');
  const itemBytes = ELEMENT_BYTES[table.dataType];
  if (table.dims.length !== 2 || itemBytes === undefined)
    throw unsupported(file, 'its token table is not a 2-D float32, float16 or bfloat16 tensor');
  const [vocabRows, width] = table.dims as [number, number];
  for (const { name, vectors } of rows)
    if (vectors.width !== width)
      throw new EngineError(
        'bad-input',
        `Embedding ${name} has ${vectors.width}-wide vectors${familyOfWidth(vectors.width)}, but ${file} takes ${width}-wide ones${familyOfWidth(width)}; it was made for another model family.`,
        { file },
      );

  const oldBytes = await tableBytes(
    buf,
    dir,
    file,
    table,
    vocabRows * width * itemBytes,
    externalData,
  );
  const added = rows.reduce((s, r) => s + r.vectors.rows, 0);
  const newRows = encodeRows(rows, table.dataType, added * width);
  const newTable = lenField(5, [
    ...lenField(1, [Uint8Array.from([...varint(vocabRows + added), ...varint(width)])]),
    varintField(2, table.dataType),
    ...stringField(8, table.name),
    ...lenField(9, [oldBytes, newRows]),
  ]);

  // The Gather reads the new input; everything else of the node is copied.
  const nodeParts: Uint8Array[] = [];
  let inputIndex = 0;
  for (const g of fields(buf, gather.field.payloadStart, gather.field.end)) {
    if (g.number === 1 && g.wire === 2 && inputIndex++ === 1)
      nodeParts.push(...stringField(1, TI_TOKEN_IDS));
    else nodeParts.push(buf.subarray(g.start, g.end));
  }
  const dim = (name: string) => lenField(1, stringField(2, name));
  const newInput = lenField(11, [
    ...stringField(1, TI_TOKEN_IDS),
    ...lenField(
      2,
      lenField(1, [varintField(1, 7), ...lenField(2, [...dim('batch'), ...dim('sequence')])]),
    ),
  ]);

  const graphParts: Uint8Array[] = [];
  for (const f of fields(buf, graphField.payloadStart, graphField.end)) {
    if (f.start === table.field.start) graphParts.push(...newTable);
    else if (f.start === gather.field.start) graphParts.push(...lenField(1, nodeParts));
    // Old exports list initializers as inputs too; that entry would carry the old shape.
    else if (
      f.number === 11 &&
      inputs.some((i) => i.field.start === f.start && i.name === table.name)
    )
      continue;
    else graphParts.push(buf.subarray(f.start, f.end));
  }
  graphParts.push(...newInput);

  const modelParts: Uint8Array[] = [];
  for (const f of fields(buf, 0, buf.length)) {
    if (f.start === graphField.start) modelParts.push(...lenField(7, graphParts));
    else modelParts.push(buf.subarray(f.start, f.end));
  }
  return { parts: modelParts, vocabRows, width };
}

/** The table's current contents as little-endian bytes of its own type. */
async function tableBytes(
  buf: Buffer,
  dir: string,
  file: string,
  t: TensorInfo,
  expected: number,
  externalData: ExternalData,
): Promise<Uint8Array> {
  let bytes: Uint8Array;
  const location = t.external?.get('location') ?? '';
  const held = t.external ? externalData.find((f) => f.path === location) : undefined;
  if (t.external && held) {
    // The LoRA variant's data file, in memory (patched or not, it is what the session reads).
    const offset = Number(t.external.get('offset') ?? 0);
    const length = Number(t.external.get('length') ?? expected);
    if (length !== expected || offset + length > held.data.length)
      throw new EngineError(
        'model-corrupt',
        `The external weights of ${file} are truncated or do not match it (${location}).`,
        { file },
      );
    bytes = held.data.subarray(offset, offset + length);
  } else if (t.external) {
    const offset = Number(t.external.get('offset') ?? 0);
    const length = Number(t.external.get('length') ?? expected);
    const resolved = path.resolve(dir, location);
    if (
      !location ||
      path.isAbsolute(location) ||
      !resolved.startsWith(path.resolve(dir) + path.sep)
    )
      throw unsupported(file, `its token table points outside the model folder (${location})`);
    const handle = await open(resolved, 'r').catch((e: unknown) => {
      throw new EngineError(
        'model-missing-file',
        `${location}, the weights file ${file} refers to, cannot be opened: ${(e as Error).message}.`,
        { file, cause: e },
      );
    });
    try {
      // The length the file states must be the table's; a larger one is never allocated.
      const out = Buffer.alloc(length === expected ? length : 0);
      let done = 0;
      while (done < out.length) {
        const { bytesRead } = await handle.read(out, done, out.length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      if (done !== length)
        throw new EngineError(
          'model-corrupt',
          `The external weights of ${file} are truncated or do not match it (${location}).`,
          { file },
        );
      bytes = out;
    } finally {
      await handle.close();
    }
  } else if (t.raw) bytes = buf.subarray(t.raw.payloadStart, t.raw.end);
  else if (t.floatData && t.dataType === 1)
    bytes = buf.subarray(t.floatData.payloadStart, t.floatData.end);
  else if (t.int32Data && (t.dataType === 10 || t.dataType === 16)) {
    // float16/bfloat16 in int32_data: one varint per element holding its 16 bits.
    const out = new Uint16Array(expected / 2);
    let pos = t.int32Data.payloadStart;
    for (let i = 0; pos < t.int32Data.end && i < out.length; i++) {
      let v: number;
      [v, pos] = readVarint(buf, pos);
      out[i] = v;
    }
    bytes = new Uint8Array(out.buffer);
  } else bytes = new Uint8Array(0);
  if (bytes.length !== expected)
    throw new EngineError(
      'model-corrupt',
      `The token table of ${file} holds ${bytes.length} bytes, not the ${expected} its shape needs.`,
      { file },
    );
  return bytes;
}

function encodeRows(
  rows: readonly { vectors: EmbeddingVectors }[],
  dataType: number,
  count: number,
): Uint8Array {
  const values = new Float32Array(count);
  let at = 0;
  for (const r of rows) {
    values.set(r.vectors.data, at);
    at += r.vectors.data.length;
  }
  if (dataType === 1) return new Uint8Array(values.buffer);
  const halves = new Uint16Array(count);
  if (dataType === 10) for (let i = 0; i < count; i++) halves[i] = float32ToFloat16Bits(values[i]!);
  else {
    // bfloat16: the top half of the float32, rounded to nearest even.
    const bits = new Uint32Array(values.buffer);
    for (let i = 0; i < count; i++) {
      const b = bits[i]!;
      halves[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
  return new Uint8Array(halves.buffer);
}

/**
 * Creates a session from a grown text encoder on `provider` (CPU when that fails), with the
 * same options as the model's own sessions; external weights are read from `dir`.
 */
export async function createGrownSession(
  grown: GrownTextEncoder,
  dir: string,
  file: string,
  provider: ProviderName,
  threads: number | undefined,
): Promise<ort.InferenceSession> {
  const attempt = (p: ProviderName) => {
    const options = sessionOptions(p, threads ? { threads } : {});
    // Added to the session entries sessionOptions sets (intra-op spinning), not in their place.
    const session = (options.extra as { session?: Record<string, unknown> } | undefined)?.session;
    return ort.InferenceSession.create(grown.bytes, {
      ...options,
      // A LoRA variant's data files come from memory: ORT 1.30 then reads no external file from
      // disk, which is why a variant holds every data file its patched weights live in.
      ...(grown.externalData.length > 0 ? { externalData: [...grown.externalData] } : {}),
      extra: { session: { ...session, model_external_initializers_file_folder_path: dir } },
    });
  };
  try {
    return await attempt(provider);
  } catch (e) {
    if (provider === 'cpu') throw wrapSessionCreateError(e, file, { baseDir: dir, provider });
    try {
      return await attempt('cpu');
    } catch (e2) {
      throw wrapSessionCreateError(e2, file, { baseDir: dir, provider: 'cpu' });
    }
  }
}
