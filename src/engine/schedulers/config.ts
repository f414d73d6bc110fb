/**
 * The subset of a diffusers `scheduler_config.json` that the noise schedules and samplers use.
 *
 * Field names are the JSON's own (snake_case), so a config reads the same here as on the Hub.
 * Defaults are those of diffusers' DDIMScheduler / EulerDiscreteScheduler, except where noted.
 */

import { EngineError } from '../errors';

export const betaSchedules = ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const;
export type BetaSchedule = (typeof betaSchedules)[number];

export const predictionTypes = ['epsilon', 'v_prediction', 'sample'] as const;
export type PredictionType = (typeof predictionTypes)[number];

export const timestepSpacings = ['leading', 'trailing', 'linspace'] as const;
export type TimestepSpacing = (typeof timestepSpacings)[number];

export interface SchedulerConfig {
  /** `_class_name` of the file, for display only; the sampler is chosen by the user. */
  class_name: string | null;
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: BetaSchedule;
  /** Explicit betas; when present they replace beta_start/beta_end/beta_schedule. */
  trained_betas: readonly number[] | null;
  prediction_type: PredictionType;
  /** Absent in SD 1.x configs, which diffusers then treats as "leading". */
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
  /** DDIM only: the alpha-bar its last step lands on is 1 (true) or alphas_cumprod[0] (false). */
  set_alpha_to_one: boolean;
  /**
   * Clamp the x0 estimate to +-clip_sample_range. diffusers' DDIM/DDPM default this to true when
   * the key is absent; latent models never want it and their configs all say false explicitly,
   * so an absent key means false here.
   */
  clip_sample: boolean;
  clip_sample_range: number;
  /** LCM: length of the distillation schedule its timesteps are picked from. */
  original_inference_steps: number;
  /** LCM: scale of the timestep inside the consistency boundary condition. */
  timestep_scaling: number;
  /** Lin et al. 2023 ("Common Diffusion Noise Schedules and Sample Steps are Flawed"), Alg. 1. */
  rescale_betas_zero_snr: boolean;
  /**
   * DPM++ 2M (diffusers' DPMSolverMultistepScheduler options): where the last step lands,
   * sigma 0 ("zero", the default) or the smallest training sigma ("sigma_min").
   */
  final_sigmas_type: FinalSigmasType;
  /** DPM++ 2M: a first-order last step when the schedule has fewer than 15 steps. */
  lower_order_final: boolean;
  /** DPM++ 2M: a first-order (Euler) last step always. */
  euler_at_final: boolean;
  /** DPM++ 2M: Karras sigmas under the 'default' schedule. */
  use_karras_sigmas: boolean;
  /** DPM++ 2M: exponential sigmas under the 'default' schedule. */
  use_exponential_sigmas: boolean;
  /**
   * DPM++ 2M: timesteps whose lambda = -log(sigma) is below this are left out of its schedule
   * (diffusers sets -5.1 for the cosine schedule); -Infinity (the default) keeps them all.
   */
  lambda_min_clipped: number;
}

export const finalSigmasTypes = ['zero', 'sigma_min'] as const;
export type FinalSigmasType = (typeof finalSigmasTypes)[number];

export const CONFIG_FILE = 'scheduler/scheduler_config.json';

function bad(message: string): never {
  throw new EngineError('model-corrupt', message, { file: CONFIG_FILE });
}

function describe(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    if (s === undefined) return String(v);
    return s.length > 60 ? s.slice(0, 59) + '…' : s;
  } catch {
    return String(v);
  }
}

type Json = Record<string, unknown>;

/** A present, non-null key; diffusers writes `null` for "not set". */
function has(obj: Json, key: string): boolean {
  return Object.hasOwn(obj, key) && obj[key] !== null && obj[key] !== undefined;
}

function num(
  obj: Json,
  key: string,
  fallback: number,
  check: { integer?: boolean; min?: number; max?: number; exclusiveMin?: boolean } = {},
): number {
  if (!has(obj, key)) return fallback;
  const v = obj[key];
  const ok =
    typeof v === 'number' &&
    Number.isFinite(v) &&
    (!check.integer || Number.isInteger(v)) &&
    (check.min === undefined || (check.exclusiveMin ? v > check.min : v >= check.min)) &&
    (check.max === undefined || v <= check.max);
  if (!ok) {
    const kind = check.integer ? 'an integer' : 'a number';
    const range =
      check.min !== undefined && check.max !== undefined
        ? ` between ${check.min} and ${check.max}`
        : check.min !== undefined
          ? check.exclusiveMin
            ? ` greater than ${check.min}`
            : ` of at least ${check.min}`
          : '';
    bad(`Scheduler config: ${key} must be ${kind}${range} (got ${describe(v)}).`);
  }
  return v as number;
}

/** A number or -Infinity (diffusers writes -inf as -Infinity, json.ts reads it); default -Infinity. */
function lowerBound(obj: Json, key: string): number {
  if (!has(obj, key)) return -Infinity;
  const v = obj[key];
  if (typeof v !== 'number' || Number.isNaN(v) || v === Infinity)
    bad(`Scheduler config: ${key} must be a number or -Infinity (got ${describe(v)}).`);
  return v;
}

function bool(obj: Json, key: string, fallback: boolean): boolean {
  if (!has(obj, key)) return fallback;
  const v = obj[key];
  if (typeof v !== 'boolean')
    bad(`Scheduler config: ${key} must be true or false (got ${describe(v)}).`);
  return v;
}

function oneOf<T extends string>(obj: Json, key: string, allowed: readonly T[], fallback: T): T {
  if (!has(obj, key)) return fallback;
  const v = obj[key];
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new EngineError(
      'model-unsupported',
      `Scheduler config: ${key} must be one of ${allowed.join(', ')} (got ${describe(v)}).`,
      { file: CONFIG_FILE },
    );
  }
  return v as T;
}

/**
 * Read a parsed `scheduler_config.json`. Unknown keys are ignored (configs carry many that only
 * other schedulers use); a known key with an unusable value throws an EngineError whose message
 * is one sentence naming the key.
 */
export function parseSchedulerConfig(json: unknown): SchedulerConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    bad(`Scheduler config must be a JSON object (got ${describe(json)}).`);
  }
  const obj = json as Json;

  const num_train_timesteps = num(obj, 'num_train_timesteps', 1000, {
    integer: true,
    min: 2,
    max: 100_000,
  });

  let trained_betas: number[] | null = null;
  if (has(obj, 'trained_betas')) {
    const tb = obj['trained_betas'];
    if (!Array.isArray(tb) || tb.length !== num_train_timesteps) {
      bad(
        `Scheduler config: trained_betas must be a list of ${num_train_timesteps} numbers (one per training timestep).`,
      );
    }
    if (!tb.every((b) => typeof b === 'number' && Number.isFinite(b) && b > 0 && b < 1)) {
      bad('Scheduler config: every entry of trained_betas must be a number between 0 and 1.');
    }
    trained_betas = tb.slice() as number[];
  }

  const beta_start = num(obj, 'beta_start', 0.0001, { min: 0, max: 1, exclusiveMin: true });
  const beta_end = num(obj, 'beta_end', 0.02, { min: 0, max: 1, exclusiveMin: true });

  const cfg: SchedulerConfig = {
    class_name: typeof obj['_class_name'] === 'string' ? obj['_class_name'] : null,
    num_train_timesteps,
    beta_start,
    beta_end,
    beta_schedule: oneOf(obj, 'beta_schedule', betaSchedules, 'linear'),
    trained_betas,
    prediction_type: oneOf(obj, 'prediction_type', predictionTypes, 'epsilon'),
    timestep_spacing: oneOf(obj, 'timestep_spacing', timestepSpacings, 'leading'),
    steps_offset: num(obj, 'steps_offset', 0, {
      integer: true,
      min: 0,
      max: num_train_timesteps - 1,
    }),
    set_alpha_to_one: bool(obj, 'set_alpha_to_one', true),
    clip_sample: bool(obj, 'clip_sample', false),
    clip_sample_range: num(obj, 'clip_sample_range', 1, { min: 0, exclusiveMin: true }),
    original_inference_steps: num(obj, 'original_inference_steps', 50, {
      integer: true,
      min: 1,
      max: num_train_timesteps,
    }),
    timestep_scaling: num(obj, 'timestep_scaling', 10, { min: 0, exclusiveMin: true }),
    rescale_betas_zero_snr: bool(obj, 'rescale_betas_zero_snr', false),
    final_sigmas_type: oneOf(obj, 'final_sigmas_type', finalSigmasTypes, 'zero'),
    lower_order_final: bool(obj, 'lower_order_final', true),
    euler_at_final: bool(obj, 'euler_at_final', false),
    use_karras_sigmas: bool(obj, 'use_karras_sigmas', false),
    use_exponential_sigmas: bool(obj, 'use_exponential_sigmas', false),
    lambda_min_clipped: lowerBound(obj, 'lambda_min_clipped'),
  };
  if (cfg.use_karras_sigmas && cfg.use_exponential_sigmas)
    bad('Scheduler config: use_karras_sigmas and use_exponential_sigmas cannot both be true.');
  return cfg;
}

/** The defaults, as a config with no keys gives them (handy for tests and fixture models). */
export function defaultSchedulerConfig(overrides: Partial<SchedulerConfig> = {}): SchedulerConfig {
  return { ...parseSchedulerConfig({}), ...overrides };
}
