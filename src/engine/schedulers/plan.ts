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
import { sampleDpmpp2m } from './dpmpp-2m';
import { sampleEuler } from './euler';
import { sampleEulerAncestral } from './euler-ancestral';
import { sampleHeun } from './heun';
import { makeLcmSampler } from './lcm';
import {
  alphasCumprod,
  discreteTimesteps,
  eulerInitNoiseSigma,
  eulerTimesteps,
  karrasSigmas,
  lcmTimesteps,
  sigmaFromAlphaCumprod,
  sigmasFromTimesteps,
  sigmaToTimestep,
  trainingSigmas,
} from './schedule';
import type { Sampler } from './types';
import { type SamplerName, samplerNames } from '../../shared/generation';

// The sampler ids are part of the frozen settings, so the contract declares them.
export { samplerNames, type SamplerName };

export function isSamplerName(v: unknown): v is SamplerName {
  return typeof v === 'string' && (samplerNames as readonly string[]).includes(v);
}

export interface PlanOptions {
  /** Karras sigmas (rho 7) for the Euler family; implied by dpmpp_2m_karras. */
  karras?: boolean;
  /**
   * Where Karras sigmas span. "training" (default): sigma at t = 0 to t = T-1, as k-diffusion,
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
  /** Noise levels, descending, ending in 0; length = number of steps + 1. */
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
  const karras = samplerName === 'dpmpp_2m_karras' || options.karras === true;
  const discrete = samplerName === 'ddim' || samplerName === 'ddpm' || samplerName === 'lcm';
  if (karras && discrete) {
    badInput(
      `Karras sigmas do not apply to ${samplerName}, which runs on its own discrete timesteps.`,
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
  } else {
    const spaced = eulerTimesteps(cfg, steps);
    const spacedSigmas = sigmasFromTimesteps(trainSigmas, spaced);
    if (karras) {
      const spacedRange = options.karrasRange === 'spaced';
      const sigmaMin = spacedRange ? spacedSigmas[spacedSigmas.length - 1] : trainSigmas[0];
      const sigmaMax = spacedRange ? spacedSigmas[0] : trainSigmas[T - 1];
      evalSigmas = karrasSigmas(sigmaMin, sigmaMax, steps);
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
  sigmas[timesteps.length] = 0;
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
    case 'dpmpp_2m_karras':
      sampler = sampleDpmpp2m;
      break;
    case 'lcm':
      sampler = makeLcmSampler({ timestepScaling: cfg.timestep_scaling, timestepOf });
      break;
  }

  return { samplerName, sampler, timesteps, sigmas, initNoiseSigma, tStart, timestepOf };
}
