/**
 * DDPM ancestral sampling: Ho et al. 2020, "Denoising Diffusion Probabilistic Models",
 * Algorithm 2 with the posterior q(x_prev | x_t, x0) of eq. 6-7 (variance "fixed_small"),
 * generalised to skipped timesteps as diffusers' DDPMScheduler.step does.
 *
 * diffusers, variance-preserving (a = alpha-bar, a_p at t - T//N, 1 below 0):
 *   mean = sqrt(a_p) (1 - a_t/a_p) / (1 - a_t) * x0 + sqrt(a_t/a_p) (1 - a_p) / (1 - a_t) * x_t
 *   var  = (1 - a_p) / (1 - a_t) * (1 - a_t/a_p)
 * With s = sqrt((1 - a) / a) and x = x_t / sqrt(a_t), dividing by sqrt(a_p) gives
 *   mean / sqrt(a_p) = x0 + (s_p^2 / s_t^2) (x - x0) = x0 + down * (x - x0) / s_t,  down = s_p^2 / s_t
 *   var / a_p       = s_p^2 (s_t^2 - s_p^2) / s_t^2 = up^2
 * which is the ancestral step with eta = 1 (down^2 + up^2 = s_p^2), i.e. DDIM with eta = 1.
 * DDPM's last step always lands on a_p = 1 (sigma 0); like DDIM, its previous timestep is
 * t - T//N, which planSampling passes as targetSigmas (see ddim.ts).
 * Noise is drawn on every step but the last; diffusers draws it whenever t > 0, which differs
 * only on the last step, where it is multiplied by 0 anyway.
 */

import { makeDdimSampler } from './ddim';
import type { Sampler } from './types';

export interface DdpmOptions {
  /** The noise level each step lands on (length = steps); defaults to the next sigma. */
  targetSigmas?: ArrayLike<number>;
}

export function makeDdpmSampler(options: DdpmOptions = {}): Sampler {
  return makeDdimSampler({ eta: 1, targetSigmas: options.targetSigmas });
}

export const sampleDdpm: Sampler = makeDdpmSampler();
