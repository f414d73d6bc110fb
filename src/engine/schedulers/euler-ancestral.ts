/**
 * Euler ancestral (k-diffusion sample_euler_ancestral, eta = 1; diffusers'
 * EulerAncestralDiscreteScheduler): each step is an Euler step of the probability flow ODE down
 * to sigma_down followed by fresh noise of size sigma_up, the split of sigma_next given by the
 * DDPM posterior (Ho et al. 2020, eq. 7; Song et al. 2021 "DDIM", eq. 16 with eta = 1).
 *
 * Noise is drawn (n values) on every step but the last, in step order, so a torch-compatible
 * NoiseSource seeded like the initial latents reproduces diffusers' noise stream.
 */

import { ancestralSplit, ancestralStep, evaluate, report, sigmaAt } from './common';
import type { Sampler } from './types';

export function makeEulerAncestralSampler(eta = 1): Sampler {
  if (!(eta >= 0 && eta <= 1)) throw new RangeError(`eta must be between 0 and 1 (got ${eta}).`);
  return async (denoise, x0, sigmas, opts) => {
    let x: Float32Array = Float32Array.from(x0);
    const total = sigmas.length - 1;
    for (let i = 0; i < total; i++) {
      const sigma = sigmaAt(sigmas, i);
      const next = sigmaAt(sigmas, i + 1);
      const denoised = await evaluate(denoise, x, sigma, i, opts);
      const { down, up } = ancestralSplit(sigma, next, eta);
      x = ancestralStep(x, denoised, sigma, down, up, opts.rng);
      report(opts, { step: i, total, x, denoised, sigma });
    }
    return x;
  };
}

export const sampleEulerAncestral: Sampler = makeEulerAncestralSampler(1);
