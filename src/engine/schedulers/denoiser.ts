/**
 * The model wrapper: the one place where a UNet's raw prediction (eps, v or x0, on
 * variance-preserving inputs at a discrete timestep) becomes the sigma-space denoiser
 * D(x, sigma) that every sampler uses. k-diffusion's external.py (DiscreteEpsDDPMDenoiser,
 * DiscreteVDDPMDenoiser) plays the same role.
 *
 * With x = x0 + sigma * eps (sigma space) and abar = 1 / (sigma^2 + 1):
 *   model input  x_t = x * c_in,  c_in = 1 / sqrt(sigma^2 + 1)   (= sqrt(abar) * x; diffusers'
 *                                                                 Euler scale_model_input)
 *   epsilon:     x0 = x - sigma * eps
 *   v:           x0 = c_skip * x + c_out * v,  c_skip = 1 / (sigma^2 + 1),
 *                c_out = -sigma / sqrt(sigma^2 + 1)
 *                (Salimans & Ho 2022, "Progressive Distillation", v = sqrt(abar) eps -
 *                sqrt(1 - abar) x0, so x0 = sqrt(abar) x_t - sqrt(1 - abar) v; this is
 *                diffusers' EulerDiscreteScheduler v_prediction branch:
 *                x0 = v * (-sigma / sqrt(sigma^2 + 1)) + x / (sigma^2 + 1))
 *   sample:      x0 = the prediction
 * then x0 is clamped to +-clip_sample_range when clip_sample is set.
 */

import type { SchedulerConfig } from './config';
import { alphasCumprod, sigmaToTimestep, trainingSigmas } from './schedule';
import type { Denoiser, StepInfo } from './types';

/**
 * Runs the model (with classifier-free guidance, if any) on a variance-preserving input at a
 * timestep and returns its raw prediction, same length. The timestep may be fractional; cast it
 * as the UNet's input dtype requires.
 */
export type ModelPredict = (
  scaledX: Float32Array,
  timestep: number,
  info: StepInfo,
) => Promise<Float32Array>;

export interface DenoiserOptions {
  /** Training sigmas (t = 0..T-1), if the caller already has them; computed from cfg otherwise. */
  trainSigmas?: Float64Array;
}

export function makeDenoiser(
  predict: ModelPredict,
  cfg: SchedulerConfig,
  options: DenoiserOptions = {},
): Denoiser {
  const trainSigmas = options.trainSigmas ?? trainingSigmas(alphasCumprod(cfg));
  const kind = cfg.prediction_type;
  const clip = cfg.clip_sample ? cfg.clip_sample_range : Infinity;

  return async (x, sigma, info) => {
    const n = x.length;
    const s2 = sigma * sigma + 1;
    const cIn = 1 / Math.sqrt(s2);
    const scaled = new Float32Array(n);
    for (let j = 0; j < n; j++) scaled[j] = x[j] * cIn;

    // A plan knows the exact timestep of each of its sigmas; anything else is inverted.
    const timestep = Number.isFinite(info.timestep)
      ? info.timestep
      : sigmaToTimestep(sigma, trainSigmas);
    const out = await predict(scaled, timestep, { step: info.step, timestep });
    if (out.length !== n) {
      throw new Error(`The model returned ${out.length} values for a latent of ${n}.`);
    }

    const x0 = new Float32Array(n);
    if (kind === 'epsilon') {
      for (let j = 0; j < n; j++) x0[j] = x[j] - sigma * out[j];
    } else if (kind === 'v_prediction') {
      const cSkip = 1 / s2;
      const cOut = -sigma / Math.sqrt(s2);
      for (let j = 0; j < n; j++) x0[j] = cSkip * x[j] + cOut * out[j];
    } else {
      x0.set(out);
    }
    if (clip !== Infinity) {
      for (let j = 0; j < n; j++) x0[j] = Math.min(clip, Math.max(-clip, x0[j]));
    }
    return x0;
  };
}
