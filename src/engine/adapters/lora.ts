/**
 * LoRAs applied at load: which initializers of a model folder each LoRA module patches, a
 * report of what matched, and, per patched component, a builder of the patched model held in
 * memory (ONNX Runtime takes the patched external-data file through `externalData`, or the
 * patched model.onnx as a buffer), so no second copy is ever written to disk.
 */
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import type { InitializerEntry, OnnxInitializerIndex } from '../models/onnx-file';
import { readOnnxInitializerIndex } from '../models/onnx-file';
import type { ComponentName, ModelInfo } from '../models/types';
import { type LoraFile, type LoraModule, type LoraTarget, openLoraFile } from './lora-file';
import { type Contribution, Merger, fits, gatherFactors } from './lora-merge';
import { type PatchTarget, indexTargets } from './lora-names';

/** A LoRA to apply (the engine's LoraRequest). */
export interface LoraSpec {
  path: string;
  name: string;
  teWeight: number;
  unetWeight: number;
}

/** What one LoRA matched in the model: the host shows "N of M LoRA tensors matched nothing". */
export interface LoraReport {
  name: string;
  /** Tensors in the file. */
  tensors: number;
  /** Tensors that patched a weight of this model, and those that matched nothing. */
  matchedTensors: number;
  unmatchedTensors: number;
  /** Module keys (or stray tensor names) that matched nothing, at most 50. */
  unmatched: string[];
}

/** How to create a session from patched weights; `keepAlive` must outlive the session. */
export interface SessionSource {
  /** The model file's path, or the patched model.onnx bytes. */
  model: string | Uint8Array;
  /** Patched external-data files, by the location the model names them with. */
  externalData: { path: string; data: Uint8Array }[];
  /** Buffers ONNX Runtime may read from for as long as the session lives. */
  keepAlive: Uint8Array[];
}

/** A component's patched variant: sessions are cached by `id`. */
export interface SessionVariant {
  id: string;
  source(): Promise<SessionSource>;
}

export interface LoraPlan {
  /** Empty when no component is patched (then the plain sessions serve). */
  id: string;
  variants: Partial<Record<ComponentName, SessionVariant>>;
  /** The model files those variants replace (their plain sessions are not needed meanwhile). */
  patchedFiles: string[];
  reports: LoraReport[];
}

const TARGET_COMPONENT: Record<LoraTarget, ComponentName> = {
  unet: 'unet',
  te1: 'text_encoder',
  te2: 'text_encoder_2',
};

const indexCache = new Map<string, { stamp: string; index: OnnxInitializerIndex }>();

async function fileStamp(file: string): Promise<string> {
  const s = await stat(file);
  return `${s.size}:${s.mtimeMs}`;
}

/** The initializer index of a component's model.onnx, cached while the file is unchanged. */
async function indexOf(modelPath: string): Promise<OnnxInitializerIndex> {
  const stamp = await fileStamp(modelPath);
  const hit = indexCache.get(modelPath);
  if (hit?.stamp === stamp) return hit.index;
  const index = readOnnxInitializerIndex(modelPath);
  indexCache.set(modelPath, { stamp, index });
  if (indexCache.size > 8) indexCache.delete(indexCache.keys().next().value!);
  return index;
}

/** A family guess from a LoRA's text-conditioning width, for the mismatch sentence. */
function familyOfLora(file: LoraFile): string {
  if (file.modules.some((m) => m.target === 'te2')) return 'SDXL';
  const k = file.modules.find((m) => m.target === 'unet' && /attn2_to_k$/.test(m.flat));
  const width = k ? k.down.shape[1] : 0;
  if (width === 2048) return 'SDXL';
  if (width === 1024) return 'SD 2.x';
  if (width === 768) return 'SD 1.x';
  return 'another model family';
}

interface Matched {
  module: LoraModule;
  target: PatchTarget;
}

/** Matches one file's modules against the components' targets; throws on a shape that fails. */
function matchFile(
  spec: LoraSpec,
  file: LoraFile,
  targets: Partial<Record<ComponentName, Map<string, PatchTarget>>>,
): { matched: Map<ComponentName, Matched[]>; report: LoraReport } {
  const matched = new Map<ComponentName, Matched[]>();
  const unmatched: string[] = [...file.strayKeys];
  let unmatchedTensors = file.strayKeys.length;
  let matchedTensors = 0;
  for (const module of file.modules) {
    const component = TARGET_COMPONENT[module.target];
    const target = targets[component]?.get(module.flat);
    if (!target) {
      unmatched.push(module.key);
      unmatchedTensors += module.tensorCount;
      continue;
    }
    if (!fits(module, target)) {
      const t = target.torchShape;
      throw new EngineError(
        'model-unsupported',
        `The LoRA "${spec.name}" does not fit this model (it looks made for ${familyOfLora(file)}): its ${module.key} makes a weight of [${module.up.shape[0]}, ${module.down.shape.slice(1).join(', ')}] where the model's ${target.entry.name} is [${t.join(', ')}].`,
        { file: spec.path },
      );
    }
    matchedTensors += module.tensorCount;
    const list = matched.get(component) ?? [];
    list.push({ module, target });
    matched.set(component, list);
  }
  return {
    matched,
    report: {
      name: spec.name,
      tensors: file.tensorCount,
      matchedTensors,
      unmatchedTensors,
      unmatched: unmatched.slice(0, 50),
    },
  };
}

/**
 * Opens each LoRA, matches it against the model's UNet and text encoder(s) and returns the
 * per-component variants (only for components some LoRA changes with a non-zero weight) and a
 * report per LoRA. Throws an EngineError with one sentence for a file that is not a LoRA, a
 * format it does not apply, or a LoRA made for another family.
 */
export async function planLoras(
  info: ModelInfo,
  loras: readonly LoraSpec[],
  opts: { threads?: number } = {},
): Promise<LoraPlan> {
  const targets: Partial<Record<ComponentName, Map<string, PatchTarget>>> = {};
  for (const name of ['unet', 'text_encoder', 'text_encoder_2'] as const) {
    const c = info.components[name];
    if (!c) continue;
    const index = await indexOf(c.modelPath);
    targets[name] = indexTargets(index.initializers, name === 'unet' ? 'unet' : 'text');
  }
  const reports: LoraReport[] = [];
  /** Per component: [LoRA index, weight, stamp, matched modules]. */
  const perComponent = new Map<
    ComponentName,
    { spec: LoraSpec; stamp: string; weight: number; matched: Matched[] }[]
  >();
  for (const spec of loras) {
    for (const w of [spec.teWeight, spec.unetWeight]) {
      if (!Number.isFinite(w))
        throw new EngineError(
          'bad-input',
          `The LoRA "${spec.name}" has a weight that is not a number.`,
        );
    }
    const file = await openLoraFile(spec.path);
    try {
      const stamp = `${path.resolve(spec.path)}:${await fileStamp(spec.path)}`;
      const { matched, report } = matchFile(spec, file, targets);
      // Nothing matched: the LoRA would change nothing, which is never what a person asked for.
      if (report.tensors > 0 && report.matchedTensors === 0)
        throw new EngineError(
          'model-unsupported',
          `None of the ${report.tensors} tensors of the LoRA "${spec.name}" matched this model, so it would change nothing (it looks made for ${familyOfLora(file)}).`,
          { file: spec.path },
        );
      reports.push(report);
      for (const [component, list] of matched) {
        const weight = component === 'unet' ? spec.unetWeight : spec.teWeight;
        // Weight 0 leaves the component as it is: its plain session, bit for bit.
        if (weight === 0) continue;
        const entries = perComponent.get(component) ?? [];
        entries.push({ spec, stamp, weight, matched: list });
        perComponent.set(component, entries);
      }
    } finally {
      await file.source.close();
    }
  }
  const variants: Partial<Record<ComponentName, SessionVariant>> = {};
  const ids: string[] = [];
  const patchedFiles: string[] = [];
  for (const [component, entries] of perComponent) {
    const c = info.components[component]!;
    const id = JSON.stringify(entries.map((e) => [e.stamp, e.weight]));
    ids.push(`${component}=${id}`);
    patchedFiles.push(c.modelPath);
    variants[component] = {
      id,
      source: () => buildSource(c.modelPath, entries, opts.threads),
    };
  }
  return { id: ids.join(';'), variants, patchedFiles, reports };
}

/** Reads a whole file into memory (fs.readFile stops at 2 GiB; a fp32 UNet is 3.4 GB). */
async function readWhole(file: string): Promise<Uint8Array> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    const out = new Uint8Array(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await handle.read(out, done, Math.min(size - done, 1 << 28), done);
      if (bytesRead === 0) throw new Error(`${file} ended early`);
      done += bytesRead;
    }
    return out;
  } finally {
    await handle.close();
  }
}

/**
 * The component's model with every matched weight merged, from the pristine files. Inline
 * weights patch a copy of model.onnx; external ones a copy of their data file.
 */
async function buildSource(
  modelPath: string,
  entries: readonly { spec: LoraSpec; weight: number; matched: Matched[] }[],
  threads?: number,
): Promise<SessionSource> {
  const dir = path.dirname(modelPath);
  const byEntry = new Map<InitializerEntry, { target: PatchTarget; parts: Contribution[] }>();
  const opened: LoraFile[] = [];
  const merger = new Merger(threads);
  try {
    for (const e of entries) {
      const file = await openLoraFile(e.spec.path);
      opened.push(file);
      const byKey = new Map(file.modules.map((m) => [m.key, m]));
      for (const m of e.matched) {
        const module = byKey.get(m.module.key);
        if (!module) throw new EngineError('model-corrupt', `${e.spec.path} changed while in use.`);
        const slot = byEntry.get(m.target.entry) ?? { target: m.target, parts: [] };
        slot.parts.push({ source: file.source, module, weight: e.weight });
        byEntry.set(m.target.entry, slot);
      }
    }
    const index = await indexOf(modelPath);
    const inline = [...byEntry.keys()].some((k) => k.data.kind === 'inline');
    const locations = new Set<string>();
    for (const i of index.initializers)
      if (i.data.kind === 'external' && (inline || byEntry.has(i))) locations.add(i.data.location);
    const model: string | Uint8Array = inline ? await readWhole(modelPath) : modelPath;
    const files = new Map<string, Uint8Array>();
    for (const loc of locations) files.set(loc, await readWhole(path.join(dir, loc)));
    for (const [entry, { target, parts }] of byEntry) {
      const data = entry.data;
      if (data.kind === 'typed') continue; // never indexed as a target
      const buffer = data.kind === 'inline' ? (model as Uint8Array) : files.get(data.location)!;
      if (data.offset + data.length > buffer.byteLength)
        throw new EngineError(
          'model-corrupt',
          `${path.basename(modelPath)}: the weight ${entry.name} lies past the end of its file.`,
        );
      const bytes = buffer.subarray(data.offset, data.offset + data.length);
      const dtype = entry.dtype === 'float16' ? 'float16' : 'float32';
      await merger.mergeInto(bytes, dtype, await gatherFactors(target, parts));
    }
    const externalData = [...files].map(([p, data]) => ({ path: p, data }));
    return { model, externalData, keepAlive: externalData.map((f) => f.data) };
  } finally {
    await merger.release();
    for (const f of opened) await f.source.close();
  }
}
