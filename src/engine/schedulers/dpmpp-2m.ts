/**
 * DPM-Solver++(2M): Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
 * Probabilistic Models", Algorithm 2 (multistep, second order, data prediction), in the
 * sigma-space form of k-diffusion's sample_dpmpp_2m. With lambda = -log(sigma) and
 * h = lambda_next - lambda:
 *   first step and the step to sigma = 0:  x' = (sigma_next/sigma) x - expm1(-h) D_i
 *   otherwise, r = h_last / h:             x' = (sigma_next/sigma) x - expm1(-h) *
 *                                               ((1 + 1/(2r)) D_i - (1/(2r)) D_{i-1})
 * A final step to sigma = 0 returns D_i (the first-order update's limit). With `lowerOrderFinal`
 * the last step is first order wherever it lands (diffusers' DPMSolverMultistepScheduler:
 * lower_order_final, euler_at_final), which matters when it lands on sigma_min.
 * diffusers' multistep_dpm_solver_second_order_update (midpoint) is the same update written for
 * variance-preserving samples: divide both sides by alpha_t and it becomes the one above.
 */

import { evaluate, report, sigmaAt } from './common';
import type { Denoiser, SampleOptions, Sampler } from './types';

export interface Dpmpp2mOptions {
  /** Take the last step with the first-order update (default false). */
  lowerOrderFinal?: boolean;
}

export function makeDpmpp2mSampler(options: Dpmpp2mOptions = {}): Sampler {
  const lowerOrderFinal = options.lowerOrderFinal ?? false;
  return (denoise, x0, sigmas, opts) => dpmpp2m(denoise, x0, sigmas, opts, lowerOrderFinal);
}

export const sampleDpmpp2m: Sampler = makeDpmpp2mSampler();

async function dpmpp2m(
  denoise: Denoiser,
  x0: Float32Array,
  sigmas: Float64Array | readonly number[],
  opts: SampleOptions,
  lowerOrderFinal: boolean,
): Promise<Float32Array> {
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
      if (previous === null || (lowerOrderFinal && i === total - 1)) {
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
}
