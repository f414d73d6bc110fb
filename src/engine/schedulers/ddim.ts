/**
 * DDIM: Song et al. 2021, "Denoising Diffusion Implicit Models", eq. 12 with sigma_t(eta) of
 * eq. 16, written in sigma space.
 *
 * diffusers' DDIMScheduler.step, in the variance-preserving parameterisation
 * (x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, a = alpha-bar), computes
 *   std    = eta * sqrt((1 - a_p) / (1 - a_t) * (1 - a_t / a_p))
 *   x_prev = sqrt(a_p) x0 + sqrt(1 - a_p - std^2) eps + std z.
 * Put s = sqrt((1 - a) / a) (so a = 1 / (1 + s^2)) and x = x_t / sqrt(a_t) = x0 + s_t eps. Then
 *   std^2 / a_p = eta^2 s_p^2 (s_t^2 - s_p^2) / s_t^2 =: up^2
 *   (1 - a_p - std^2) / a_p = s_p^2 - up^2 =: down^2
 * and x_prev / sqrt(a_p) = x0 + down * eps + up * z with eps = (x - x0) / s_t: exactly the
 * ancestral step of k-diffusion (eta = 0: the Euler step) between the sigmas of t and
 * t - T//N. So DDIM is the shared ancestral step run on DDIM's own timesteps (planSampling gives
 * them). eps is re-derived from the (possibly clipped) x0, i.e. diffusers with
 * use_clipped_model_output=True; the two differ only when clip_sample is on.
 *
 * Where diffusers' step and ours part ways is the target of each step. diffusers steps from t to
 * t - T//N whatever the spacing, then starts the next step from that latent as if it were at the
 * next timestep of its list (the two differ by one or so for "trailing" and "linspace"); and its
 * last step lands on final_alpha_cumprod: 1 with set_alpha_to_one, else abar_0 (sigma ~0.029 for
 * SD), returning that still slightly noisy latent. `targetSigmas` (one per step; planSampling
 * computes them) reproduce both: step i targets targetSigmas[i], and the variance-preserving
 * latent it gives is carried over unchanged, i.e. in sigma space rescaled by
 * sqrt(1 + sigmas[i+1]^2) / sqrt(1 + target^2). Without them each step targets sigmas[i+1] and
 * DDIM ends on the clean x0 like every sampler.
 */

import { ancestralSplit, ancestralStep, evaluate, report, sigmaAt } from './common';
import type { Sampler } from './types';

export interface DdimOptions {
  /** 0: deterministic DDIM; 1: the DDPM posterior variance. */
  eta?: number;
  /** The noise level each step lands on (length = steps); defaults to the next sigma. */
  targetSigmas?: ArrayLike<number>;
}

export function makeDdimSampler(options: DdimOptions = {}): Sampler {
  const eta = options.eta ?? 0;
  const targets = options.targetSigmas;
  if (!(eta >= 0 && eta <= 1))
    throw new RangeError(`DDIM eta must be between 0 and 1 (got ${eta}).`);
  return async (denoise, x0, sigmas, opts) => {
    let x: Float32Array = Float32Array.from(x0);
    const total = sigmas.length - 1;
    if (targets && targets.length !== total) {
      throw new Error(
        `DDIM was planned for ${targets.length} steps but got a schedule of ${total}.`,
      );
    }
    for (let i = 0; i < total; i++) {
      const sigma = sigmaAt(sigmas, i);
      const next = sigmaAt(sigmas, i + 1);
      const target = targets ? targets[i] : next;
      const denoised = await evaluate(denoise, x, sigma, i, opts);
      const { down, up } = ancestralSplit(sigma, target, eta);
      x = ancestralStep(x, denoised, sigma, down, up, opts.rng);
      if (target !== next) {
        const carry = Math.sqrt(1 + next * next) / Math.sqrt(1 + target * target);
        for (let j = 0; j < x.length; j++) x[j] *= carry;
      }
      report(opts, { step: i, total, x, denoised, sigma });
    }
    return x;
  };
}

/** Deterministic DDIM (eta = 0), each step landing on the next sigma. */
export const sampleDdim: Sampler = makeDdimSampler();
