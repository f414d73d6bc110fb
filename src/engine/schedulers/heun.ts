/**
 * Heun: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
 * Models", Algorithm 1 (deterministic, 2nd order): an Euler step to sigma_next, then a
 * trapezoidal correction with the slope re-evaluated there. The last step (to sigma = 0) is a
 * plain Euler step, as the algorithm prescribes. 2N - 1 model calls for N steps (diffusers'
 * HeunDiscreteScheduler and k-diffusion's sample_heun take the same steps).
 */

import { evaluate, report, sigmaAt } from './common';
import type { Sampler } from './types';

export const sampleHeun: Sampler = async (denoise, x0, sigmas, opts) => {
  let x: Float32Array = Float32Array.from(x0);
  const n = x.length;
  const total = sigmas.length - 1;
  for (let i = 0; i < total; i++) {
    const sigma = sigmaAt(sigmas, i);
    const next = sigmaAt(sigmas, i + 1);
    const dt = next - sigma;
    const denoised = await evaluate(denoise, x, sigma, i, opts);
    const d = new Float64Array(n);
    const euler = new Float32Array(n);
    for (let j = 0; j < n; j++) {
      d[j] = (x[j] - denoised[j]) / sigma;
      euler[j] = x[j] + d[j] * dt;
    }
    if (next === 0) {
      x = euler;
    } else {
      const denoised2 = await evaluate(denoise, euler, next, i, opts);
      const out = new Float32Array(n);
      for (let j = 0; j < n; j++) {
        const d2 = (euler[j] - denoised2[j]) / next;
        out[j] = x[j] + ((d[j] + d2) / 2) * dt;
      }
      x = out;
    }
    report(opts, { step: i, total, x, denoised, sigma });
  }
  return x;
};
