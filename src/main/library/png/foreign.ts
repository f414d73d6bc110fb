/**
 * Settings from other tools' PNG metadata: A1111 `parameters`, ComfyUI `prompt` (API-format graph
 * JSON) and InvokeAI `invokeai_metadata` (JSON). Everything here takes untrusted input: values of
 * the wrong type are skipped, every field is checked against the GenerationSettings schema, graph
 * walks are bounded, and nothing throws.
 */
import {
  GenerationFields,
  type GenerationSettings,
  type SamplerName,
  type ScheduleName,
  a1111SamplerNames,
  a1111ScheduleNames,
  samplerTakesSchedule,
} from '../../../shared/generation';
import { type A1111Parameters } from './a1111';

export type PartialSettings = Partial<GenerationSettings>;

export interface ForeignResult {
  settings: PartialSettings;
  raw: Record<string, string>;
}

/** Longest raw value kept, in characters (a hostile file can hold megabytes in one field). */
const MAX_RAW_VALUE = 64 * 1024;

const shape = GenerationFields.shape;

/** Set settings[key] = value only when the schema accepts it. */
function put<K extends keyof GenerationSettings>(
  settings: PartialSettings,
  key: K,
  value: unknown,
): void {
  if (value === undefined || value === null) return;
  const parsed = (
    shape[key] as { safeParse(v: unknown): { success: boolean; data?: unknown } }
  ).safeParse(value);
  if (parsed.success && parsed.data !== undefined)
    settings[key] = parsed.data as GenerationSettings[K];
}

/** A sampler with the schedule it runs on. */
export interface SamplerChoice {
  sampler: SamplerName;
  schedule: ScheduleName;
}

/** Sets settings.sampler and settings.schedule from a choice (nothing when undefined). */
export function putSampler(settings: PartialSettings, choice: SamplerChoice | undefined): void {
  if (!choice) return;
  put(settings, 'sampler', choice.sampler);
  put(settings, 'schedule', choice.schedule);
}

function rawValue(v: unknown): string | null {
  if (typeof v === 'string') return v.length > MAX_RAW_VALUE ? v.slice(0, MAX_RAW_VALUE) : v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  return null;
}

function newRaw(): Record<string, string> {
  return {};
}

function setRaw(raw: Record<string, string>, key: string, v: unknown): void {
  const s = rawValue(v);
  if (s !== null)
    Object.defineProperty(raw, key, {
      value: s,
      enumerable: true,
      writable: true,
      configurable: true,
    });
}

function num(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string' && v.trim() !== '' && v.length < 40) {
    const n = Number(v.trim());
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function own(o: Record<string, unknown>, key: string): unknown {
  return Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;
}

// ---------------------------------------------------------------------------------------------
// A1111

const byA1111Name = new Map<string, SamplerName>(
  (Object.entries(a1111SamplerNames) as Array<[SamplerName, string]>).map(([id, name]) => [
    name.toLowerCase(),
    id,
  ]),
);

const byA1111Schedule = new Map<string, ScheduleName>(
  (Object.entries(a1111ScheduleNames) as Array<[ScheduleName, string]>).map(([id, name]) => [
    name.toLowerCase(),
    id,
  ]),
);

/**
 * Our sampler and schedule for an A1111 `Sampler` and `Schedule type`: webui 1.9+ writes them
 * apart ("DPM++ 2M", "Karras"), older versions as one name ("DPM++ 2M Karras"). Only exact
 * matches: anything else stays in raw.
 */
export function samplerFromA1111(name: string, scheduleType?: string): SamplerChoice | undefined {
  let base = name.trim().toLowerCase();
  let schedule = byA1111Schedule.get((scheduleType ?? '').trim().toLowerCase() || 'automatic');
  if (!schedule) return undefined;
  if (!byA1111Name.has(base) && schedule === 'default') {
    const suffix = /^(.*) (karras|exponential)$/.exec(base);
    if (suffix) {
      base = suffix[1];
      schedule = byA1111Schedule.get(suffix[2]);
    }
  }
  const sampler = byA1111Name.get(base);
  if (!sampler || !schedule || !samplerTakesSchedule(sampler, schedule)) return undefined;
  return { sampler, schedule };
}

export function settingsFromA1111(parsed: A1111Parameters): ForeignResult {
  const settings: PartialSettings = {};
  const raw = newRaw();
  for (const [k, v] of Object.entries(parsed.params)) setRaw(raw, k, v);
  put(settings, 'prompt', parsed.prompt);
  put(settings, 'negativePrompt', parsed.negativePrompt);
  const p = parsed.params;
  if (p.Sampler !== undefined)
    putSampler(settings, samplerFromA1111(p.Sampler, p['Schedule type']));
  put(settings, 'steps', num(p.Steps));
  put(settings, 'guidance', num(p['CFG scale']));
  put(settings, 'seed', num(p.Seed));
  const size = /^\s*(\d{1,6})x(\d{1,6})\s*$/.exec(p.Size ?? '');
  if (size) {
    put(settings, 'width', Number(size[1]));
    put(settings, 'height', Number(size[2]));
  }
  put(settings, 'strength', num(p['Denoising strength']));
  return { settings, raw };
}

// ---------------------------------------------------------------------------------------------
// ComfyUI (API-format graph: { "<id>": { "class_type": "...", "inputs": { name: literal | [id, out] } } })

const COMFY_SAMPLERS: Record<string, SamplerName> = {
  euler: 'euler',
  euler_ancestral: 'euler_a',
  heun: 'heun',
  dpmpp_2m: 'dpmpp_2m',
  ddim: 'ddim',
  ddpm: 'ddpm',
  lcm: 'lcm',
};
/** ComfyUI schedulers: the sampler's own schedule, or one of ours. */
const COMFY_SCHEDULES: Record<string, ScheduleName> = {
  normal: 'default',
  simple: 'default',
  sgm_uniform: 'default',
  ddim_uniform: 'default',
  karras: 'karras',
  exponential: 'exponential',
};

export function samplerFromComfy(
  samplerName: unknown,
  scheduler: unknown,
): SamplerChoice | undefined {
  if (typeof samplerName !== 'string') return undefined;
  const id = Object.prototype.hasOwnProperty.call(COMFY_SAMPLERS, samplerName)
    ? COMFY_SAMPLERS[samplerName]
    : undefined;
  if (!id) return undefined;
  const name = typeof scheduler === 'string' ? scheduler : 'normal';
  const schedule = Object.hasOwn(COMFY_SCHEDULES, name) ? COMFY_SCHEDULES[name] : undefined;
  if (!schedule || !samplerTakesSchedule(id, schedule)) return undefined;
  return { sampler: id, schedule };
}

const KSAMPLERS = new Set(['KSampler', 'KSamplerAdvanced']);
const EMPTY_LATENTS = new Set(['EmptyLatentImage', 'EmptySD3LatentImage']);
const MAX_NODES = 10_000;
const MAX_HOPS = 32;

type ComfyNode = { class_type: string; inputs: Record<string, unknown> };

function comfyNodes(graph: unknown): Map<string, ComfyNode> {
  const nodes = new Map<string, ComfyNode>();
  if (!isRecord(graph)) return nodes;
  for (const [id, node] of Object.entries(graph)) {
    if (nodes.size >= MAX_NODES) break;
    if (!isRecord(node)) continue;
    const cls = own(node, 'class_type');
    const inputs = own(node, 'inputs');
    if (typeof cls === 'string' && isRecord(inputs)) nodes.set(id, { class_type: cls, inputs });
  }
  return nodes;
}

/** The node a link input ([id, outputIndex]) points at. */
function linked(nodes: Map<string, ComfyNode>, v: unknown): ComfyNode | undefined {
  if (!Array.isArray(v) || v.length !== 2) return undefined;
  const id = v[0];
  if (typeof id !== 'string' && typeof id !== 'number') return undefined;
  return nodes.get(String(id));
}

/** A string input, following links through primitive/string nodes. */
function stringInput(
  nodes: Map<string, ComfyNode>,
  node: ComfyNode,
  names: string[],
): string | undefined {
  let current: ComfyNode | undefined = node;
  let keys = names;
  for (let hop = 0; current && hop < MAX_HOPS; hop++) {
    let next: ComfyNode | undefined;
    for (const k of keys) {
      const v = own(current.inputs, k);
      if (typeof v === 'string') return v;
      next ??= linked(nodes, v);
    }
    current = next;
    keys = ['text', 'string', 'value', 'text_g', 'prompt'];
  }
  return undefined;
}

/** The prompt text of a conditioning link, following conditioning pass-through nodes. */
function conditioningText(nodes: Map<string, ComfyNode>, link: unknown): string | undefined {
  let node = linked(nodes, link);
  for (let hop = 0; node && hop < MAX_HOPS; hop++) {
    if (
      node.class_type.startsWith('CLIPTextEncode') ||
      typeof own(node.inputs, 'text') === 'string'
    ) {
      const text = stringInput(nodes, node, ['text', 'text_g', 'prompt']);
      if (text !== undefined) return text;
    }
    node = linked(nodes, own(node.inputs, 'conditioning') ?? own(node.inputs, 'conditioning_1'));
  }
  return undefined;
}

function latentSize(
  nodes: Map<string, ComfyNode>,
  link: unknown,
): { width?: unknown; height?: unknown } | undefined {
  let node = linked(nodes, link);
  for (let hop = 0; node && hop < MAX_HOPS; hop++) {
    if (EMPTY_LATENTS.has(node.class_type))
      return { width: own(node.inputs, 'width'), height: own(node.inputs, 'height') };
    node = linked(nodes, own(node.inputs, 'samples') ?? own(node.inputs, 'latent_image'));
  }
  return undefined;
}

export function settingsFromComfy(promptJson: unknown): ForeignResult | null {
  const nodes = comfyNodes(promptJson);
  const samplers = [...nodes.entries()].filter(([, n]) => KSAMPLERS.has(n.class_type));
  if (samplers.length === 0) return null;
  // The first pass: the sampler that starts from an empty latent, else the lowest node id.
  samplers.sort(([a], [b]) => (Number(a) || 0) - (Number(b) || 0) || (a < b ? -1 : a > b ? 1 : 0));
  const fromEmpty = samplers.find(
    ([, n]) => latentSize(nodes, own(n.inputs, 'latent_image')) !== undefined,
  );
  const [id, ks] = fromEmpty ?? samplers[0];
  const inp = ks.inputs;
  const settings: PartialSettings = {};
  const raw = newRaw();
  setRaw(raw, 'node', id);
  setRaw(raw, 'class_type', ks.class_type);
  setRaw(raw, 'sampler count', samplers.length);
  const seed =
    own(inp, ks.class_type === 'KSamplerAdvanced' ? 'noise_seed' : 'seed') ?? own(inp, 'seed');
  for (const [k, v] of [
    ['seed', seed],
    ['steps', own(inp, 'steps')],
    ['cfg', own(inp, 'cfg')],
    ['sampler_name', own(inp, 'sampler_name')],
    ['scheduler', own(inp, 'scheduler')],
    ['denoise', own(inp, 'denoise')],
  ] as Array<[string, unknown]>)
    setRaw(raw, k, v);
  put(settings, 'seed', num(seed));
  put(settings, 'steps', num(own(inp, 'steps')));
  put(settings, 'guidance', num(own(inp, 'cfg')));
  putSampler(settings, samplerFromComfy(own(inp, 'sampler_name'), own(inp, 'scheduler')));
  put(settings, 'strength', num(own(inp, 'denoise')));
  put(settings, 'prompt', conditioningText(nodes, own(inp, 'positive')));
  put(settings, 'negativePrompt', conditioningText(nodes, own(inp, 'negative')));
  let size = latentSize(nodes, own(inp, 'latent_image'));
  if (!size) {
    const empty = [...nodes.values()].find((n) => EMPTY_LATENTS.has(n.class_type));
    if (empty) size = { width: own(empty.inputs, 'width'), height: own(empty.inputs, 'height') };
  }
  if (size) {
    put(settings, 'width', num(size.width));
    put(settings, 'height', num(size.height));
  }
  for (const n of nodes.values()) {
    if (n.class_type === 'CheckpointLoaderSimple' || n.class_type === 'CheckpointLoader') {
      setRaw(raw, 'ckpt_name', own(n.inputs, 'ckpt_name'));
      break;
    }
  }
  return { settings, raw };
}

// ---------------------------------------------------------------------------------------------
// InvokeAI (`invokeai_metadata`: the core metadata of the graph that made the image)

/** InvokeAI scheduler names (SCHEDULER_NAME_VALUES) that are one of ours exactly. */
const INVOKE_SCHEDULERS: Record<string, SamplerChoice> = {
  ddim: { sampler: 'ddim', schedule: 'default' },
  ddpm: { sampler: 'ddpm', schedule: 'default' },
  euler: { sampler: 'euler', schedule: 'default' },
  euler_k: { sampler: 'euler', schedule: 'karras' },
  euler_a: { sampler: 'euler_a', schedule: 'default' },
  heun: { sampler: 'heun', schedule: 'default' },
  heun_k: { sampler: 'heun', schedule: 'karras' },
  dpmpp_2m: { sampler: 'dpmpp_2m', schedule: 'default' },
  dpmpp_2m_k: { sampler: 'dpmpp_2m', schedule: 'karras' },
  lcm: { sampler: 'lcm', schedule: 'default' },
};

export function settingsFromInvoke(meta: unknown): ForeignResult | null {
  if (!isRecord(meta)) return null;
  const settings: PartialSettings = {};
  const raw = newRaw();
  for (const [k, v] of Object.entries(meta).slice(0, 200)) setRaw(raw, k, v);
  const model = own(meta, 'model');
  if (isRecord(model)) setRaw(raw, 'model', own(model, 'model_name') ?? own(model, 'name'));
  put(settings, 'prompt', own(meta, 'positive_prompt'));
  put(settings, 'negativePrompt', own(meta, 'negative_prompt'));
  put(settings, 'seed', num(own(meta, 'seed')));
  put(settings, 'steps', num(own(meta, 'steps')));
  put(settings, 'guidance', num(own(meta, 'cfg_scale')));
  put(settings, 'width', num(own(meta, 'width')));
  put(settings, 'height', num(own(meta, 'height')));
  put(settings, 'strength', num(own(meta, 'strength')));
  const scheduler = own(meta, 'scheduler');
  if (
    typeof scheduler === 'string' &&
    Object.prototype.hasOwnProperty.call(INVOKE_SCHEDULERS, scheduler)
  )
    putSampler(settings, INVOKE_SCHEDULERS[scheduler]);
  return { settings, raw };
}
