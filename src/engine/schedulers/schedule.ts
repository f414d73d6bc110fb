/**
 * Noise schedules: pure functions from a SchedulerConfig to betas, alpha-bars, timesteps and
 * sigmas, following diffusers' DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler and
 * LCMScheduler `set_timesteps`.
 *
 * Everything is computed in float64. diffusers keeps betas and alphas_cumprod in torch float32,
 * so its sigmas differ from these by about 1e-6 relative; the recorded reference vectors
 * (tests/unit/schedulers.test.ts) are float64 too.
 *
 * Sigma here is the variance-exploding noise level of k-diffusion (Karras et al. 2022):
 * sigma_t = sqrt((1 - abar_t) / abar_t), so that x_t / sqrt(abar_t) = x0 + sigma_t * eps.
 */

import { EngineError } from '../errors';
import type { SchedulerConfig, TimestepSpacing } from './config';

/** numpy.linspace(start, stop, num) (endpoint included), in float64. */
export function linspace(start: number, stop: number, num: number): Float64Array {
  const out = new Float64Array(num);
  if (num === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (num - 1);
  for (let i = 0; i < num; i++) out[i] = start + i * step;
  out[num - 1] = stop;
  return out;
}

/** numpy.round / torch.round: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round sends .5 up; numpy sends it to the even neighbour.
  if (Math.abs(x - Math.trunc(x)) === 0.5) return 2 * Math.round(x / 2);
  return r;
}

/**
 * The cosine schedule of Nichol & Dhariwal 2021 ("Improved DDPM", eq. 17), discretised as
 * diffusers' betas_for_alpha_bar: beta_i = min(1 - abar((i+1)/T) / abar(i/T), 0.999).
 */
function cosineBetas(T: number): Float64Array {
  const alphaBar = (t: number): number => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  const out = new Float64Array(T);
  for (let i = 0; i < T; i++) out[i] = Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), 0.999);
  return out;
}

/**
 * Rescale betas so the final timestep has zero SNR: Lin et al. 2023, "Common Diffusion Noise
 * Schedules and Sample Steps are Flawed", Algorithm 1 (shift and scale sqrt(abar) so that its
 * last value is 0 and its first unchanged).
 */
function rescaleZeroTerminalSnr(betas: Float64Array): Float64Array {
  const T = betas.length;
  const sqrtAbar = new Float64Array(T);
  let prod = 1;
  for (let i = 0; i < T; i++) {
    prod *= 1 - betas[i];
    sqrtAbar[i] = Math.sqrt(prod);
  }
  const first = sqrtAbar[0];
  const last = sqrtAbar[T - 1];
  for (let i = 0; i < T; i++) sqrtAbar[i] = ((sqrtAbar[i] - last) * first) / (first - last);
  const out = new Float64Array(T);
  out[0] = 1 - sqrtAbar[0] ** 2;
  for (let i = 1; i < T; i++) out[i] = 1 - sqrtAbar[i] ** 2 / sqrtAbar[i - 1] ** 2;
  return out;
}

/** beta_t for t = 0..T-1. */
export function betas(cfg: SchedulerConfig): Float64Array {
  const T = cfg.num_train_timesteps;
  let b: Float64Array;
  if (cfg.trained_betas) {
    b = Float64Array.from(cfg.trained_betas);
  } else if (cfg.beta_schedule === 'linear') {
    b = linspace(cfg.beta_start, cfg.beta_end, T);
  } else if (cfg.beta_schedule === 'scaled_linear') {
    // Linear in sqrt(beta): the latent-diffusion schedule.
    b = linspace(Math.sqrt(cfg.beta_start), Math.sqrt(cfg.beta_end), T).map((v) => v * v);
  } else {
    b = cosineBetas(T);
  }
  return cfg.rescale_betas_zero_snr ? rescaleZeroTerminalSnr(b) : b;
}

/**
 * abar_t = prod_{s<=t} (1 - beta_s). With rescale_betas_zero_snr the last value would be 0
 * (infinite sigma); like diffusers' EulerDiscreteScheduler we set it to 2^-24 instead, for every
 * sampler, since all of them work in sigma space here.
 */
export function alphasCumprod(cfg: SchedulerConfig): Float64Array {
  const b = betas(cfg);
  const out = new Float64Array(b.length);
  let prod = 1;
  for (let i = 0; i < b.length; i++) {
    prod *= 1 - b[i];
    out[i] = prod;
  }
  if (cfg.rescale_betas_zero_snr) out[out.length - 1] = 2 ** -24;
  return out;
}

/** sigma_t = sqrt((1 - abar_t) / abar_t): the variance-exploding noise level of timestep t. */
export function sigmaFromAlphaCumprod(abar: number): number {
  return Math.sqrt((1 - abar) / abar);
}

/** The inverse of sigmaFromAlphaCumprod. */
export function alphaCumprodFromSigma(sigma: number): number {
  return 1 / (sigma * sigma + 1);
}

/** sigma_t for every training timestep t = 0..T-1 (ascending). */
export function trainingSigmas(abar: Float64Array): Float64Array {
  return abar.map(sigmaFromAlphaCumprod);
}

/** Refuses a step count the schedule cannot take (1 .. num_train_timesteps, whole). */
export function checkSteps(cfg: SchedulerConfig, steps: number): void {
  if (!Number.isInteger(steps) || steps < 1 || steps > cfg.num_train_timesteps) {
    throw new EngineError(
      'bad-input',
      `The number of steps must be a whole number from 1 to ${cfg.num_train_timesteps} (got ${steps}).`,
    );
  }
}

/**
 * numpy.round(numpy.arange(T, 0, -T/N)) - 1, the "trailing" spacing. numpy's arange can return
 * N+1 values here through float error (e.g. N=61); we always take exactly N.
 */
function trailing(T: number, steps: number): number[] {
  const step = -T / steps;
  // numpy fills arange as start + i * delta, with delta measured from the first two values.
  const delta = T + step - T;
  const out: number[] = [];
  for (let i = 0; i < steps; i++) out.push(roundHalfEven(T + i * delta) - 1);
  return out;
}

/** "leading": arange(N) * (T // N), reversed, plus steps_offset. */
function leading(T: number, steps: number, offset: number): number[] {
  const ratio = Math.floor(T / steps);
  const out: number[] = [];
  for (let i = steps - 1; i >= 0; i--) out.push(i * ratio + offset);
  return out;
}

/**
 * Integer timesteps, descending, as DDIMScheduler / DDPMScheduler `set_timesteps` choose them
 * for the config's timestep_spacing ("linspace" rounds to the nearest integer).
 */
export function discreteTimesteps(cfg: SchedulerConfig, steps: number): number[] {
  checkSteps(cfg, steps);
  const T = cfg.num_train_timesteps;
  switch (cfg.timestep_spacing) {
    case 'leading':
      return leading(T, steps, cfg.steps_offset);
    case 'trailing':
      return trailing(T, steps);
    case 'linspace':
      return Array.from(linspace(0, T - 1, steps), roundHalfEven).reverse();
  }
}

/**
 * Timesteps of EulerDiscreteScheduler `set_timesteps`, descending. "linspace" keeps them
 * fractional; the model wrapper passes them on and the pipeline casts per the UNet's input dtype.
 */
export function eulerTimesteps(cfg: SchedulerConfig, steps: number): number[] {
  checkSteps(cfg, steps);
  if (cfg.timestep_spacing === 'linspace') {
    return Array.from(linspace(0, cfg.num_train_timesteps - 1, steps)).reverse();
  }
  return discreteTimesteps(cfg, steps);
}

/** numpy.interp(x, 0..len-1, table): linear interpolation, clamped at both ends. */
function interpTable(x: number, table: Float64Array): number {
  const last = table.length - 1;
  if (!(x > 0)) return table[0];
  if (x >= last) return table[last];
  const i = Math.floor(x);
  const w = x - i;
  return w === 0 ? table[i] : table[i] + w * (table[i + 1] - table[i]);
}

/**
 * Sigmas at (possibly fractional) timesteps: linear interpolation of sigma over t = 0..T-1,
 * EulerDiscreteScheduler's `interpolation_type="linear"`. No trailing 0.
 */
export function sigmasFromTimesteps(
  trainSigmas: Float64Array,
  timesteps: readonly number[],
): Float64Array {
  return Float64Array.from(timesteps, (t) => interpTable(t, trainSigmas));
}

/**
 * The (fractional) timestep of a sigma: invert the training sigmas by linear interpolation in
 * log sigma, clamped to [0, T-1]. This is k-diffusion's DiscreteSchedule.sigma_to_t and
 * diffusers' `_sigma_to_t`, used wherever sigmas are not on the timestep grid (Karras).
 */
export function sigmaToTimestep(sigma: number, trainSigmas: Float64Array): number {
  const n = trainSigmas.length;
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  // Largest index whose log sigma is <= logSigma (sigmas ascend with t), capped at n-2.
  let lo = 0;
  let hi = n - 1;
  if (logSigma < Math.log(trainSigmas[0])) return 0;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (Math.log(trainSigmas[mid]) <= logSigma) lo = mid;
    else hi = mid - 1;
  }
  const low = Math.min(lo, n - 2);
  const logLow = Math.log(trainSigmas[low]);
  const logHigh = Math.log(trainSigmas[low + 1]);
  const w = Math.min(1, Math.max(0, (logLow - logSigma) / (logLow - logHigh)));
  return (1 - w) * low + w * (low + 1);
}

/**
 * Karras et al. 2022 ("Elucidating the Design Space of Diffusion-Based Generative Models"),
 * eq. 5: sigma_i = (sigma_max^(1/rho) + i/(n-1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
 * i = 0..n-1, rho = 7. No trailing 0.
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, n: number, rho = 7): Float64Array {
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  const ramp = linspace(0, 1, n);
  return ramp.map((r) => (maxInv + r * (minInv - maxInv)) ** rho);
}

/**
 * Sigmas evenly spaced in log sigma from sigmaMax down to sigmaMin, n values, no trailing 0:
 * k-diffusion's get_sigmas_exponential (diffusers' _convert_to_exponential).
 */
export function exponentialSigmas(sigmaMin: number, sigmaMax: number, n: number): Float64Array {
  return linspace(Math.log(sigmaMax), Math.log(sigmaMin), n).map(Math.exp);
}

/**
 * Integer timesteps, descending, as DPMSolverMultistepScheduler.set_timesteps chooses them for
 * the config's timestep_spacing (its own rules, not Euler's) over the timesteps left after
 * lambda_min_clipped: "linspace" rounds N+1 points over [0, last-1] and drops the last;
 * "leading" takes multiples of last // (N+1) plus steps_offset; "trailing" steps down from last
 * by T/N (fewer than N steps when clipped), minus 1.
 */
export function dpmSolverTimesteps(cfg: SchedulerConfig, steps: number): number[] {
  checkSteps(cfg, steps);
  const T = cfg.num_train_timesteps;
  // diffusers: last_timestep = T - searchsorted(flip(lambda_t), lambda_min_clipped), with
  // lambda_t = log(alpha_t) - log(sigma_t) = -log(sigma), falling with t.
  let clipped = 0;
  if (cfg.lambda_min_clipped > -Infinity) {
    const sigmas = trainingSigmas(alphasCumprod(cfg));
    for (let t = T - 1; t >= 0 && -Math.log(sigmas[t]) < cfg.lambda_min_clipped; t--) clipped++;
  }
  const last = T - clipped;
  switch (cfg.timestep_spacing) {
    case 'linspace':
      return Array.from(linspace(0, last - 1, steps + 1), roundHalfEven)
        .reverse()
        .slice(0, steps);
    case 'leading': {
      const ratio = Math.floor(last / (steps + 1));
      const out: number[] = [];
      for (let i = steps; i >= 1; i--) out.push(i * ratio + cfg.steps_offset);
      return out;
    }
    case 'trailing': {
      if (last === T) return trailing(T, steps);
      // numpy.arange(last, 0, -T/N): ceil(last / (T/N)) values.
      const step = T / steps;
      const out: number[] = [];
      for (let i = 0; last - i * step > 0; i++) out.push(roundHalfEven(last - i * step) - 1);
      return out;
    }
  }
}

/**
 * EulerDiscreteScheduler's init_noise_sigma: the largest sigma for "linspace" and "trailing",
 * sqrt(max^2 + 1) for "leading" (the latter matches the variance-preserving start x_T ~ N(0, 1)
 * divided by sqrt(abar_T)).
 */
export function eulerInitNoiseSigma(spacing: TimestepSpacing, sigmas: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < sigmas.length; i++) max = Math.max(max, sigmas[i]);
  return spacing === 'leading' ? Math.sqrt(max * max + 1) : max;
}

/** Per-step alpha-bars of DDIMScheduler.step, for inspection and tests. */
export interface DdimSchedule {
  timesteps: number[];
  /** abar at each timestep. */
  alphaProdT: number[];
  /**
   * abar at t - T//N (the previous timestep whatever the spacing); where that is negative, the
   * final alpha-bar: 1 with set_alpha_to_one, else abar_0.
   */
  alphaProdPrev: number[];
  finalAlphaCumprod: number;
}

export function ddimSchedule(
  cfg: SchedulerConfig,
  steps: number,
  abar = alphasCumprod(cfg),
): DdimSchedule {
  const timesteps = discreteTimesteps(cfg, steps);
  const ratio = Math.floor(cfg.num_train_timesteps / steps);
  const finalAlphaCumprod = cfg.set_alpha_to_one ? 1 : abar[0];
  return {
    timesteps,
    alphaProdT: timesteps.map((t) => abar[t]),
    alphaProdPrev: timesteps.map((t) => (t - ratio >= 0 ? abar[t - ratio] : finalAlphaCumprod)),
    finalAlphaCumprod,
  };
}

/**
 * LCMScheduler.set_timesteps (Luo et al. 2023, "Latent Consistency Models", sec. 4.3 "skipping
 * step"): the distillation schedule is k*i - 1 for i = 1..floor(original_steps * strength), with
 * k = T // original_steps; `steps` of those are taken, descending, at indices
 * floor(linspace(0, len, steps, endpoint=False)).
 */
export function lcmTimesteps(cfg: SchedulerConfig, steps: number, strength = 1): number[] {
  checkSteps(cfg, steps);
  const original = cfg.original_inference_steps;
  const k = Math.floor(cfg.num_train_timesteps / original);
  const count = Math.floor(original * strength);
  if (steps > original) {
    throw new EngineError(
      'bad-input',
      `LCM can take at most ${original} steps with this model (its original_inference_steps); got ${steps}.`,
    );
  }
  if (count < steps) {
    throw new EngineError(
      'bad-input',
      `LCM with strength ${strength} leaves ${count} of its ${original} distillation timesteps, fewer than the ${steps} steps asked for; raise the strength or lower the steps.`,
    );
  }
  const origin: number[] = [];
  for (let i = count; i >= 1; i--) origin.push(i * k - 1);
  // numpy.linspace(0, count, steps, endpoint=False) is j * (count / steps); keep that rounding.
  const spacing = count / steps;
  const out: number[] = [];
  for (let j = 0; j < steps; j++) out.push(origin[Math.floor(j * spacing)]);
  return out;
}
