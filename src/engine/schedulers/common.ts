/** Helpers shared by the samplers. */

import type { Denoiser, SampleOptions, StepEvent } from './types';

/** The error every sampler throws when its signal fires (name "AbortError", as fetch does). */
export function abortError(): DOMException {
  return new DOMException('Generation cancelled', 'AbortError');
}

export function isAbortError(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'AbortError';
}

/**
 * Check the signal, then call the model once. Every model call of every sampler goes through
 * here, so a fired signal stops the run before the next call.
 */
export async function evaluate(
  denoise: Denoiser,
  x: Float32Array,
  sigma: number,
  step: number,
  opts: SampleOptions,
): Promise<Float32Array> {
  if (opts.signal?.aborted) throw abortError();
  const timestep = opts.timestepOf ? opts.timestepOf(sigma) : Number.NaN;
  const out = await denoise(x, sigma, { step, timestep });
  if (out.length !== x.length) {
    throw new Error(`The denoiser returned ${out.length} values for a sample of ${x.length}.`);
  }
  return out;
}

/**
 * Ends step e.step: the caller's afterStep on the new sample (in place), then onStep. Every
 * sampler calls this once per step with the sample it continues from.
 */
export function report(opts: SampleOptions, e: StepEvent): void {
  opts.afterStep?.(e.x, e.step);
  opts.onStep?.(e);
}

/**
 * The ancestral split of a step sigma -> sigmaNext (k-diffusion get_ancestral_step; Ho et al.
 * 2020 posterior, Song et al. 2021 DDIM eq. 12-16 with eta): the step goes deterministically down
 * to sigmaDown and adds fresh noise of size sigmaUp, with sigmaDown^2 + sigmaUp^2 = sigmaNext^2.
 */
export function ancestralSplit(
  sigma: number,
  sigmaNext: number,
  eta: number,
): { down: number; up: number } {
  if (eta === 0 || sigmaNext === 0) return { down: sigmaNext, up: 0 };
  const up = Math.min(
    sigmaNext,
    eta *
      Math.sqrt(
        (sigmaNext * sigmaNext * (sigma * sigma - sigmaNext * sigmaNext)) / (sigma * sigma),
      ),
  );
  return { down: Math.sqrt(Math.max(0, sigmaNext * sigmaNext - up * up)), up };
}

/**
 * x' = denoised + down * (x - denoised) / sigma + up * noise: an Euler step of the probability
 * flow ODE to `down`, then noise up to the target level. With up = 0 it is a plain Euler step.
 */
export function ancestralStep(
  x: Float32Array,
  denoised: Float32Array,
  sigma: number,
  down: number,
  up: number,
  rng: SampleOptions['rng'],
): Float32Array {
  const n = x.length;
  const out = new Float32Array(n);
  const ratio = down / sigma;
  for (let j = 0; j < n; j++) out[j] = denoised[j] + ratio * (x[j] - denoised[j]);
  if (up > 0) {
    const noise = rng.randn(n);
    if (noise.length !== n)
      throw new Error(`The noise source returned ${noise.length} values, not ${n}.`);
    for (let j = 0; j < n; j++) out[j] += up * noise[j];
  }
  return out;
}

export function sigmaAt(sigmas: Float64Array | readonly number[], i: number): number {
  const s = sigmas[i];
  if (s === undefined || !Number.isFinite(s) || s < 0) {
    throw new Error(`Sigma ${i} of the schedule is not a finite non-negative number (got ${s}).`);
  }
  return s;
}
