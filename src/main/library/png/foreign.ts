/**
 * Settings from other tools' PNG metadata: A1111 `parameters` and InvokeAI `invokeai_metadata`
 * (JSON), ComfyUI's sampler names (its graphs are read in comfyui.ts), and the field helpers all
 * of these readers share. Everything here takes untrusted input: values of the wrong type are
 * skipped, every field is checked against the GenerationSettings schema, and nothing throws.
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
export function put<K extends keyof GenerationSettings>(
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

/** An empty raw-field record (see setRaw). */
export function newRaw(): Record<string, string> {
  return {};
}

/** raw[key] = v as text (strings capped), as an own property even for keys like `__proto__`. */
export function setRaw(raw: Record<string, string>, key: string, v: unknown): void {
  const s = rawValue(v);
  if (s !== null)
    Object.defineProperty(raw, key, {
      value: s,
      enumerable: true,
      writable: true,
      configurable: true,
    });
}

/** A finite number from a number or a short numeric string; undefined otherwise. */
export function num(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string' && v.trim() !== '' && v.length < 40) {
    const n = Number(v.trim());
    return Number.isFinite(n) ? n : undefined;
  }
  return undefined;
}

/** A plain object (not null, not an array). */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** o[key] only when it is o's own property (never the prototype's). */
export function own(o: Record<string, unknown>, key: string): unknown {
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
// ComfyUI sampler names (the graphs themselves are read in comfyui.ts)

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
