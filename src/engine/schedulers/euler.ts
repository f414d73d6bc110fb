/**
 * Euler: Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
 * Models", Algorithm 2 without churn (s_churn = 0): one explicit Euler step of the probability
 * flow ODE dx/dsigma = (x - D(x, sigma)) / sigma per sigma interval. diffusers'
 * EulerDiscreteScheduler.step (gamma = 0) and k-diffusion's sample_euler take the same step.
 */

import { ancestralStep, evaluate, report, sigmaAt } from './common';
import type { Sampler } from './types';

export const sampleEuler: Sampler = async (denoise, x0, sigmas, opts) => {
  let x: Float32Array = Float32Array.from(x0);
  const total = sigmas.length - 1;
  for (let i = 0; i < total; i++) {
    const sigma = sigmaAt(sigmas, i);
    const next = sigmaAt(sigmas, i + 1);
    const denoised = await evaluate(denoise, x, sigma, i, opts);
    // x + (next - sigma) * (x - denoised) / sigma, written as denoised + next/sigma * (x - denoised).
    x = ancestralStep(x, denoised, sigma, next, 0, opts.rng);
    report(opts, { step: i, total, x, denoised, sigma });
  }
  return x;
};
