/**
 * A sampling plan: everything a pipeline needs to run one generation's denoising loop, from the
 * model's scheduler config, the user's sampler name, step count and (img2img) strength.
 *
 *   const plan = planSampling(cfg, 'euler_a', 20, { strength: 0.6 });
 *   let x = txt2img ? noise * plan.initNoiseSigma : initLatents + noise * plan.sigmas[0];
 *   x = await plan.sampler(makeDenoiser(predict, cfg), x, plan.sigmas,
 *                          { rng, signal, onStep, timestepOf: plan.timestepOf });
 *   // x is the clean latent: decode x / vae_scaling_factor.
 */

import { EngineError } from '../errors';
import type { SchedulerConfig } from './config';
import { makeDdimSampler } from './ddim';
import { makeDdpmSampler } from './ddpm';
import { makeDpmpp2mSampler } from './dpmpp-2m';
import { sampleEuler } from './euler';
import { sampleEulerAncestral } from './euler-ancestral';
import { sampleHeun } from './heun';
import { makeLcmSampler } from './lcm';
import {
  alphasCumprod,
  checkSteps,
  discreteTimesteps,
  dpmSolverTimesteps,
  eulerInitNoiseSigma,
  exponentialSigmas,
  eulerTimesteps,
  karrasSigmas,
  lcmTimesteps,
  roundHalfEven,
  sigmaFromAlphaCumprod,
  sigmasFromTimesteps,
  sigmaToTimestep,
  trainingSigmas,
} from './schedule';
import type { Sampler } from './types';
import {
  type SamplerName,
  type ScheduleName,
  samplerNames,
  samplerTakesSchedule,
  scheduleNames,
} from '../../shared/generation';

// The sampler and schedule ids are part of the frozen settings, so the contract declares them.
export { samplerNames, scheduleNames, type SamplerName, type ScheduleName };

export function isSamplerName(v: unknown): v is SamplerName {
  return typeof v === 'string' && (samplerNames as readonly string[]).includes(v);
}

export interface PlanOptions {
  /** The sigma schedule (default 'default': the sampler's own). */
  schedule?: ScheduleName;
  /**
   * Where Karras sigmas span for the Euler family. "training" (default): sigma at t = 0 to t = T-1, as k-diffusion,
   * A1111, ComfyUI and diffusers' DPMSolverMultistepScheduler do. "spaced": the smallest and
   * largest sigma of the spaced timesteps, as diffusers' EulerDiscreteScheduler does.
   */
  karrasRange?: 'training' | 'spaced';
  /** img2img: the fraction of the schedule to run, in [0, 1]; 1 (default) is txt2img. */
  strength?: number;
  /** DDIM only: 0 (default) deterministic, 1 the DDPM posterior variance. */
  eta?: number;
}

export interface SamplingPlan {
  samplerName: SamplerName;
  sampler: Sampler;
  /** The model timestep of each evaluated sigma: timesteps[i] belongs to sigmas[i]. */
  timesteps: number[];
  /**
   * Noise levels, descending; length = number of steps + 1. The last is 0, except for DPM++ 2M
   * with final_sigmas_type "sigma_min", whose sample ends at the smallest training sigma.
   */
  sigmas: Float64Array;
  /** txt2img: start from N(0, 1) noise times this (diffusers' init_noise_sigma, in sigma space). */
  initNoiseSigma: number;
  /** img2img: how many steps of the full schedule were skipped (diffusers' t_start). */
  tStart: number;
  /** Exact timesteps for the plan's sigmas, log-sigma interpolation for any other. */
  timestepOf: (sigma: number) => number;
}

function badInput(message: string): never {
  throw new EngineError('bad-input', message);
}

/**
 * Choose timesteps and sigmas for a sampler the way diffusers' corresponding scheduler would:
 * DDIMScheduler for ddim, DDPMScheduler for ddpm, LCMScheduler for lcm, EulerDiscreteScheduler
 * (timesteps, linear sigma interpolation, init_noise_sigma) for the Euler family.
 *
 * DPM++ 2M follows DPMSolverMultistepScheduler (dpmsolver++, order 2): its own timesteps, its
 * use_karras_sigmas / use_exponential_sigmas under the 'default' schedule, final_sigmas_type,
 * lower_order_final and euler_at_final, and init_noise_sigma 1 in its variance-preserving
 * space. Karras and exponential sigmas span the training sigmas (k-diffusion, A1111, ComfyUI and
 * that scheduler agree); their timesteps are the log-sigma inverse, rounded as diffusers rounds
 * them for DPM++ 2M (Karras: to nearest; exponential: truncated by its int64 cast) and kept
 * fractional for the Euler family, as k-diffusion does.
 *
 * img2img follows StableDiffusionImg2ImgPipeline.get_timesteps: init_timestep =
 * min(floor(N * strength), N), t_start = max(N - init_timestep, 0), and the schedule is cut
 * from t_start on, so the pipeline noises its init latents to sigmas[0]. LCM instead applies
 * strength inside its timestep selection, as LCMScheduler.set_timesteps(strength) does.
 */
export function planSampling(
  cfg: SchedulerConfig,
  samplerName: SamplerName,
  steps: number,
  options: PlanOptions = {},
): SamplingPlan {
  if (!isSamplerName(samplerName)) {
    badInput(
      `Unknown sampler ${JSON.stringify(samplerName)}; use one of ${samplerNames.join(', ')}.`,
    );
  }
  const strength = options.strength ?? 1;
  if (!(typeof strength === 'number' && strength >= 0 && strength <= 1)) {
    badInput(`Strength must be between 0 and 1 (got ${strength}).`);
  }
  if (options.eta !== undefined && !(options.eta >= 0 && options.eta <= 1)) {
    badInput(`DDIM eta must be between 0 and 1 (got ${options.eta}).`);
  }
  const schedule = options.schedule ?? 'default';
  if (!(scheduleNames as readonly string[]).includes(schedule)) {
    badInput(
      `Unknown schedule ${JSON.stringify(schedule)}; use one of ${scheduleNames.join(', ')}.`,
    );
  }
  if (!samplerTakesSchedule(samplerName, schedule)) {
    badInput(
      `The ${schedule} schedule does not apply to ${samplerName}, which runs on its own discrete timesteps; use the default schedule.`,
    );
  }

  const abar = alphasCumprod(cfg);
  const trainSigmas = trainingSigmas(abar);
  const T = cfg.num_train_timesteps;

  let timesteps: number[];
  let evalSigmas: Float64Array;
  let initNoiseSigma: number;
  let targets: Float64Array | null = null;
  let tStart = 0;
  let lastSigma = 0;
  let lowerOrderFinal = false;

  if (samplerName === 'lcm') {
    timesteps = lcmTimesteps(cfg, steps, strength);
    evalSigmas = sigmasFromTimesteps(trainSigmas, timesteps);
    // LCMScheduler starts from N(0, 1) in the variance-preserving space: x = z / sqrt(abar_T).
    initNoiseSigma = Math.sqrt(evalSigmas[0] ** 2 + 1);
  } else if (samplerName === 'ddim' || samplerName === 'ddpm') {
    timesteps = discreteTimesteps(cfg, steps);
    if (timesteps[0] > T - 1) {
      badInput(
        `${steps} steps with steps_offset ${cfg.steps_offset} run past the last training timestep (${T - 1}); use fewer steps.`,
      );
    }
    evalSigmas = sigmasFromTimesteps(trainSigmas, timesteps);
    initNoiseSigma = Math.sqrt(evalSigmas[0] ** 2 + 1);
    const ratio = Math.floor(T / steps);
    const finalSigma =
      samplerName === 'ddim' && !cfg.set_alpha_to_one ? sigmaFromAlphaCumprod(abar[0]) : 0;
    targets = Float64Array.from(timesteps, (t) =>
      t - ratio >= 0 ? trainSigmas[t - ratio] : finalSigma,
    );
  } else if (samplerName === 'dpmpp_2m') {
    const sigmaMin = trainSigmas[0];
    const sigmaMax = trainSigmas[T - 1];
    const own =
      schedule === 'default'
        ? cfg.use_karras_sigmas
          ? 'karras'
          : cfg.use_exponential_sigmas
            ? 'exponential'
            : 'default'
        : schedule;
    if (own === 'default') {
      timesteps = dpmSolverTimesteps(cfg, steps);
      evalSigmas = sigmasFromTimesteps(trainSigmas, timesteps);
    } else {
      checkSteps(cfg, steps);
      evalSigmas =
        own === 'karras'
          ? karrasSigmas(sigmaMin, sigmaMax, steps)
          : exponentialSigmas(sigmaMin, sigmaMax, steps);
      // diffusers rounds Karras timesteps (not for the cosine schedule) and truncates the rest.
      const toInt =
        own === 'karras' && cfg.beta_schedule !== 'squaredcos_cap_v2' ? roundHalfEven : Math.trunc;
      timesteps = Array.from(evalSigmas, (s) => toInt(sigmaToTimestep(s, trainSigmas)));
    }
    // DPMSolverMultistepScheduler: init_noise_sigma 1 for variance-preserving latents.
    initNoiseSigma = Math.sqrt(evalSigmas[0] ** 2 + 1);
    if (cfg.final_sigmas_type === 'sigma_min') lastSigma = sigmaMin;
    lowerOrderFinal =
      cfg.euler_at_final ||
      (cfg.lower_order_final && timesteps.length < 15) ||
      cfg.final_sigmas_type === 'zero';
  } else {
    const spaced = eulerTimesteps(cfg, steps);
    const spacedSigmas = sigmasFromTimesteps(trainSigmas, spaced);
    if (schedule !== 'default') {
      const spacedRange = options.karrasRange === 'spaced';
      const sigmaMin = spacedRange ? spacedSigmas[spacedSigmas.length - 1] : trainSigmas[0];
      const sigmaMax = spacedRange ? spacedSigmas[0] : trainSigmas[T - 1];
      evalSigmas =
        schedule === 'karras'
          ? karrasSigmas(sigmaMin, sigmaMax, steps)
          : exponentialSigmas(sigmaMin, sigmaMax, steps);
      timesteps = Array.from(evalSigmas, (s) => sigmaToTimestep(s, trainSigmas));
    } else {
      evalSigmas = spacedSigmas;
      timesteps = spaced;
    }
    initNoiseSigma = eulerInitNoiseSigma(cfg.timestep_spacing, evalSigmas);
  }

  if (samplerName !== 'lcm' && strength < 1) {
    const n = timesteps.length;
    const initTimestep = Math.min(Math.floor(n * strength), n);
    tStart = Math.max(n - initTimestep, 0);
  }
  if (tStart >= timesteps.length) {
    badInput(
      `Strength ${strength} with ${steps} steps leaves no denoising step; raise the strength or the steps.`,
    );
  }

  timesteps = timesteps.slice(tStart);
  const sigmas = new Float64Array(timesteps.length + 1);
  sigmas.set(evalSigmas.subarray(tStart));
  sigmas[timesteps.length] = lastSigma;
  if (targets) targets = targets.slice(tStart);

  const exact = new Map<number, number>();
  for (let i = 0; i < timesteps.length; i++) exact.set(sigmas[i], timesteps[i]);
  const timestepOf = (sigma: number): number =>
    exact.get(sigma) ?? sigmaToTimestep(sigma, trainSigmas);

  let sampler: Sampler;
  switch (samplerName) {
    case 'ddim':
      sampler = makeDdimSampler({ eta: options.eta ?? 0, targetSigmas: targets ?? undefined });
      break;
    case 'ddpm':
      sampler = makeDdpmSampler({ targetSigmas: targets ?? undefined });
      break;
    case 'euler':
      sampler = sampleEuler;
      break;
    case 'euler_a':
      sampler = sampleEulerAncestral;
      break;
    case 'heun':
      sampler = sampleHeun;
      break;
    case 'dpmpp_2m':
      sampler = makeDpmpp2mSampler({ lowerOrderFinal });
      break;
    case 'lcm':
      sampler = makeLcmSampler({ timestepScaling: cfg.timestep_scaling, timestepOf });
      break;
  }

  return { samplerName, sampler, timesteps, sigmas, initNoiseSigma, tStart, timestepOf };
}
