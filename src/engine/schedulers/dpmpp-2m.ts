/**
 * DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
 * Probabilistic Models", Algorithm 2 (multistep, second order, data prediction), in the
 * sigma-space form of k-diffusion's sample_dpmpp_2m. With lambda = -log(sigma) and
 * h = lambda_next - lambda:
 *   first step and the step to sigma = 0:  x' = (sigma_next/sigma) x - expm1(-h) D_i
 *   otherwise, r = h_last / h:             x' = (sigma_next/sigma) x - expm1(-h) *
 *                                               ((1 + 1/(2r)) D_i - (1/(2r)) D_{i-1})
 * A final step to sigma = 0 returns D_i (the first-order update's limit).
 */

import { evaluate, report, sigmaAt } from './common';
import type { Sampler } from './types';

export const sampleDpmpp2m: Sampler = async (denoise, x0, sigmas, opts) => {
  let x: Float32Array = Float32Array.from(x0);
  const n = x.length;
  const total = sigmas.length - 1;
  let previous: Float32Array | null = null;
  for (let i = 0; i < total; i++) {
    const sigma = sigmaAt(sigmas, i);
    const next = sigmaAt(sigmas, i + 1);
    const denoised = await evaluate(denoise, x, sigma, i, opts);
    const out = new Float32Array(n);
    if (next === 0) {
      out.set(denoised);
    } else {
      const h = Math.log(sigma / next);
      const ratio = next / sigma;
      const c = -Math.expm1(-h);
      if (previous === null) {
        for (let j = 0; j < n; j++) out[j] = ratio * x[j] + c * denoised[j];
      } else {
        const hLast = Math.log(sigmaAt(sigmas, i - 1) / sigma);
        const k = 1 / (2 * (hLast / h));
        for (let j = 0; j < n; j++) {
          const d = (1 + k) * denoised[j] - k * previous[j];
          out[j] = ratio * x[j] + c * d;
        }
      }
    }
    x = out;
    previous = denoised;
    report(opts, { step: i, total, x, denoised, sigma });
  }
  return x;
};
