/**
 * Schedulers: noise schedules (pure functions of the model's scheduler_config.json), samplers in
 * the k-diffusion shape, the model wrapper that adapts eps/v/x0 predictions to that shape, and
 * planSampling, which ties them together for a pipeline.
 */

export type { Denoiser, NoiseSource, SampleOptions, Sampler, StepEvent, StepInfo } from './types';
export {
  finalSigmasTypes,
  betaSchedules,
  defaultSchedulerConfig,
  parseSchedulerConfig,
  predictionTypes,
  timestepSpacings,
} from './config';
export type {
  BetaSchedule,
  FinalSigmasType,
  PredictionType,
  SchedulerConfig,
  TimestepSpacing,
} from './config';
export {
  alphaCumprodFromSigma,
  alphasCumprod,
  betas,
  ddimSchedule,
  discreteTimesteps,
  dpmSolverTimesteps,
  eulerInitNoiseSigma,
  eulerTimesteps,
  exponentialSigmas,
  karrasSigmas,
  lcmTimesteps,
  sigmaFromAlphaCumprod,
  sigmasFromTimesteps,
  sigmaToTimestep,
  trainingSigmas,
} from './schedule';
export type { DdimSchedule } from './schedule';
export { abortError, isAbortError } from './common';
export { sampleEuler } from './euler';
export { makeEulerAncestralSampler, sampleEulerAncestral } from './euler-ancestral';
export { sampleHeun } from './heun';
export { makeDpmpp2mSampler, sampleDpmpp2m } from './dpmpp-2m';
export type { Dpmpp2mOptions } from './dpmpp-2m';
export { makeLcmSampler, sampleLcm } from './lcm';
export type { LcmOptions } from './lcm';
export { makeDdimSampler, sampleDdim } from './ddim';
export type { DdimOptions } from './ddim';
export { makeDdpmSampler, sampleDdpm } from './ddpm';
export type { DdpmOptions } from './ddpm';
export { makeDenoiser } from './denoiser';
export type { DenoiserOptions, ModelPredict } from './denoiser';
export { isSamplerName, planSampling, samplerNames, scheduleNames } from './plan';
export type { PlanOptions, SamplerName, SamplingPlan, ScheduleName } from './plan';
