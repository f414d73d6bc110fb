/**
 * The one sampler shape (k-diffusion's): `sample(denoise, x, sigmas, opts)`.
 *
 * All tensors are flat Float32Arrays; the pipeline knows their shapes. x lives in sigma space
 * (variance exploding): x = x0 + sigma * eps. A variance-preserving latent x_t is x * sqrt(abar_t)
 * = x / sqrt(sigma^2 + 1); the model wrapper (makeDenoiser) does that conversion, so samplers
 * never see timesteps, alpha-bars or prediction types.
 */

export interface StepInfo {
  /** 0-based index of the step (sigmas[step] -> sigmas[step + 1]) being computed. */
  step: number;
  /**
   * The model timestep for this sigma when the caller supplied `timestepOf` (a plan does),
   * otherwise NaN and the denoiser derives it from sigma.
   */
  timestep: number;
}

/** D(x, sigma): the denoised (x0) estimate for x at noise level sigma, same length as x. */
export type Denoiser = (x: Float32Array, sigma: number, info: StepInfo) => Promise<Float32Array>;

/** Fresh N(0, 1) values on every call. */
export interface NoiseSource {
  randn(n: number): Float32Array;
}

export interface StepEvent {
  /** 0-based index of the step just completed; `step + 1` of `total` are done. */
  step: number;
  total: number;
  /**
   * The sample after this step (at sigma `sigmas[step + 1]`), after `afterStep`. The sampler
   * continues from this array: read or copy it, never change it.
   */
  x: Float32Array;
  /** The denoised estimate this step used (a preview). */
  denoised: Float32Array;
  /** The sigma the step started from. */
  sigma: number;
}

export interface SampleOptions {
  rng: NoiseSource;
  /** Checked before every model call; when fired the sampler throws an AbortError. */
  signal?: AbortSignal;
  onStep?: (e: StepEvent) => void;
  /**
   * A step of the caller's own after each sampler step (inpainting's blend): it gets the new
   * sample and may change it in place; the sampler continues from the changed sample, and
   * reports it to onStep afterwards.
   */
  afterStep?: (x: Float32Array, step: number) => void;
  /** Maps a sigma of the schedule to its model timestep (plan.timestepOf); fills StepInfo. */
  timestepOf?: (sigma: number) => number;
}

/** Returns the final sample (at the last sigma, normally 0: the clean latent). Never mutates x. */
export type Sampler = (
  denoise: Denoiser,
  x: Float32Array,
  sigmas: Float64Array | readonly number[],
  opts: SampleOptions,
) => Promise<Float32Array>;
