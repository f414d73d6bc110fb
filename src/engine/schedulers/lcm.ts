/**
 * LCM multistep sampling: Luo et al. 2023, "Latent Consistency Models", Algorithm 3 (after Song
 * et al. 2023, "Consistency Models", Algorithm 1): at each step take the model's x0 estimate
 * through the consistency boundary condition, then re-noise it to the next sigma with fresh
 * noise. The last step returns the estimate itself.
 *
 * Equivalence with diffusers' LCMScheduler.step: it computes, in the variance-preserving
 * parameterisation (x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps),
 *   denoised = c_out * x0_pred + c_skip * x_t
 *   x_prev   = sqrt(abar_prev) * denoised + sqrt(1 - abar_prev) * z
 * with c_skip = s^2 / ((k t)^2 + s^2), c_out = k t / sqrt((k t)^2 + s^2), s = 0.5 (sigma_data),
 * k = timestep_scaling. Divide x_prev by sqrt(abar_prev) and it is denoised + sigma_prev * z, the
 * update below, with x_t = x / sqrt(sigma^2 + 1). Noise is drawn on every step but the last, as
 * LCMScheduler draws it.
 */

import { evaluate, report, sigmaAt } from './common';
import type { Sampler } from './types';

export interface LcmOptions {
  /**
   * LCMScheduler's timestep_scaling (10 in LCM configs). Omit for the plain consistency update
   * (c_skip = 0, c_out = 1); with it, `timestepOf` must give the model timestep of each sigma.
   */
  timestepScaling?: number;
  timestepOf?: (sigma: number) => number;
}

const SIGMA_DATA = 0.5;

export function makeLcmSampler(options: LcmOptions = {}): Sampler {
  const { timestepScaling, timestepOf } = options;
  if (timestepScaling !== undefined && !timestepOf) {
    throw new Error('The LCM boundary condition needs timestepOf to know each step’s timestep.');
  }
  return async (denoise, x0, sigmas, opts) => {
    let x: Float32Array = Float32Array.from(x0);
    const n = x.length;
    const total = sigmas.length - 1;
    for (let i = 0; i < total; i++) {
      const sigma = sigmaAt(sigmas, i);
      const next = sigmaAt(sigmas, i + 1);
      const predicted = await evaluate(denoise, x, sigma, i, opts);
      let denoised = predicted;
      if (timestepScaling !== undefined && timestepOf) {
        const st = timestepOf(sigma) * timestepScaling;
        const cSkip = SIGMA_DATA ** 2 / (st * st + SIGMA_DATA ** 2);
        const cOut = st / Math.sqrt(st * st + SIGMA_DATA ** 2);
        const toVp = 1 / Math.sqrt(sigma * sigma + 1);
        denoised = new Float32Array(n);
        for (let j = 0; j < n; j++) denoised[j] = cOut * predicted[j] + cSkip * x[j] * toVp;
      }
      const out = Float32Array.from(denoised);
      if (next > 0) {
        const noise = opts.rng.randn(n);
        if (noise.length !== n)
          throw new Error(`The noise source returned ${noise.length} values, not ${n}.`);
        for (let j = 0; j < n; j++) out[j] += next * noise[j];
      }
      x = out;
      report(opts, { step: i, total, x, denoised, sigma });
    }
    return x;
  };
}

/** The consistency update without the boundary condition. */
export const sampleLcm: Sampler = makeLcmSampler();
