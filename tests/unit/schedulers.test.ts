import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import {
  alphasCumprod,
  ddimSchedule,
  defaultSchedulerConfig,
  discreteTimesteps,
  eulerInitNoiseSigma,
  eulerTimesteps,
  karrasSigmas,
  lcmTimesteps,
  parseSchedulerConfig,
  planSampling,
  samplerNames,
  sigmasFromTimesteps,
  sigmaToTimestep,
  trainingSigmas,
  type SchedulerConfig,
  type TimestepSpacing,
} from '../../src/engine/schedulers';
import { isEngineError } from '../../src/engine/errors';

// Computed from diffusers' formulas in float64 (see the file's "note"); kept beside the
// repository root in shared/reference.
const here = path.dirname(fileURLToPath(import.meta.url));
const vectorsPath = path.resolve(here, '../fixtures/reference/scheduler-vectors.json');

interface EulerCase {
  spacing: TimestepSpacing;
  steps_offset: number;
  steps: number;
  timesteps: number[];
  sigmas: number[];
  init_noise_sigma: number;
}
interface DdimCase {
  spacing: TimestepSpacing;
  steps_offset: number;
  steps: number;
  set_alpha_to_one: boolean;
  timesteps: number[];
  alpha_prod_t: number[];
  alpha_prod_prev: number[];
}
interface KarrasCase {
  from_spacing: TimestepSpacing;
  steps_offset: number;
  steps: number;
  sigma_min: number;
  sigma_max: number;
  sigmas: number[];
}
interface Vectors {
  alphas_cumprod_samples: Record<string, number>;
  euler: EulerCase[];
  ddim: DdimCase[];
  karras: KarrasCase[];
}
const vectors = JSON.parse(readFileSync(vectorsPath, 'utf8')) as Vectors;

// Tolerances, from how the values were recorded:
// - alpha-bars, init_noise_sigma, DDIM alpha-bars and Karras sigmas are float64 results of the
//   same formulas we evaluate in float64; only summation order can differ, so 1e-12 relative.
// - Euler sigmas were stored after diffusers' cast to float32, which rounds to within half a
//   float32 ulp (2^-24 relative). Our float64 value must lie within that of the stored one; we
//   allow one full ulp, 2^-23 ~ 1.19e-7 relative (tighter than the brief's 1e-6).
const F64_REL = 1e-12;
const F32_REL = 2 ** -23;

function expectRel(actual: number, expected: number, rel: number, what: string): void {
  const err = Math.abs(actual - expected);
  const bound = rel * Math.abs(expected);
  if (!(err <= bound)) {
    throw new Error(`${what}: got ${actual}, expected ${expected} (|err| ${err} > ${bound})`);
  }
}

/** SD 1.5's schedule, as its scheduler_config.json gives it, with the case's spacing. */
function sd15(
  spacing: TimestepSpacing,
  stepsOffset: number,
  setAlphaToOne = false,
): SchedulerConfig {
  return parseSchedulerConfig({
    _class_name: 'PNDMScheduler',
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    num_train_timesteps: 1000,
    set_alpha_to_one: setAlphaToOne,
    skip_prk_steps: true,
    steps_offset: stepsOffset,
    clip_sample: false,
    trained_betas: null,
    timestep_spacing: spacing,
  });
}

describe('recorded diffusers vectors', () => {
  it('alphas_cumprod samples', () => {
    const abar = alphasCumprod(sd15('leading', 1));
    expect(abar.length).toBe(1000);
    const samples = Object.entries(vectors.alphas_cumprod_samples);
    expect(samples.length).toBeGreaterThan(0);
    for (const [t, value] of samples) expectRel(abar[Number(t)], value, F64_REL, `abar[${t}]`);
  });

  it.each(
    vectors.euler.map(
      (c) => [`${c.spacing} offset ${c.steps_offset}, ${c.steps} steps`, c] as const,
    ),
  )('Euler %s: timesteps, sigmas, init_noise_sigma', (_name, c) => {
    const cfg = sd15(c.spacing, c.steps_offset);
    const ts = eulerTimesteps(cfg, c.steps);
    expect(ts.length).toBe(c.timesteps.length);
    ts.forEach((t, i) => expectRel(t, c.timesteps[i], 1e-12, `timestep ${i}`));

    const plan = planSampling(cfg, 'euler', c.steps);
    expect(plan.timesteps).toEqual(ts);
    expect(plan.sigmas.length).toBe(c.sigmas.length);
    expect(plan.sigmas[plan.sigmas.length - 1]).toBe(0);
    plan.sigmas.forEach((s, i) => expectRel(s, c.sigmas[i], F32_REL, `sigma ${i}`));
    expectRel(plan.initNoiseSigma, c.init_noise_sigma, F64_REL, 'init_noise_sigma');

    // The pure pieces agree with the plan.
    const direct = sigmasFromTimesteps(trainingSigmas(alphasCumprod(cfg)), ts);
    expect(Array.from(direct)).toEqual(Array.from(plan.sigmas.subarray(0, ts.length)));
    expect(eulerInitNoiseSigma(c.spacing, plan.sigmas)).toBe(plan.initNoiseSigma);
  });

  it.each(
    vectors.ddim.map(
      (c) => [`${c.spacing} offset ${c.steps_offset}, ${c.steps} steps`, c] as const,
    ),
  )('DDIM %s: timesteps, alpha_prod_t, alpha_prod_prev', (_name, c) => {
    const cfg = sd15(c.spacing, c.steps_offset, c.set_alpha_to_one);
    const sched = ddimSchedule(cfg, c.steps);
    expect(sched.timesteps).toEqual(c.timesteps);
    expect(discreteTimesteps(cfg, c.steps)).toEqual(c.timesteps);
    sched.alphaProdT.forEach((a, i) =>
      expectRel(a, c.alpha_prod_t[i], F64_REL, `alpha_prod_t ${i}`),
    );
    sched.alphaProdPrev.forEach((a, i) =>
      expectRel(a, c.alpha_prod_prev[i], F64_REL, `alpha_prod_prev ${i}`),
    );

    // The DDIM plan evaluates at exactly those alpha-bars: sigma = sqrt((1 - a) / a).
    const plan = planSampling(cfg, 'ddim', c.steps);
    expect(plan.timesteps).toEqual(c.timesteps);
    c.alpha_prod_t.forEach((a, i) =>
      expectRel(plan.sigmas[i], Math.sqrt((1 - a) / a), F64_REL, `sigma ${i}`),
    );
    expect(plan.timestepOf(plan.sigmas[0])).toBe(c.timesteps[0]);
  });

  it.each(vectors.karras.map((c) => [`from ${c.from_spacing}, ${c.steps} steps`, c] as const))(
    'Karras sigmas %s',
    (_name, c) => {
      const cfg = sd15(c.from_spacing, c.steps_offset);
      // sigma_min / sigma_max were taken from the spaced Euler sigmas (EulerDiscreteScheduler).
      const spaced = planSampling(cfg, 'euler', c.steps).sigmas;
      expectRel(spaced[c.steps - 1], c.sigma_min, F32_REL, 'sigma_min');
      expectRel(spaced[0], c.sigma_max, F32_REL, 'sigma_max');

      const ks = karrasSigmas(c.sigma_min, c.sigma_max, c.steps);
      expect(ks.length).toBe(c.sigmas.length);
      ks.forEach((s, i) => expectRel(s, c.sigmas[i], F64_REL, `karras sigma ${i}`));

      const plan = planSampling(cfg, 'euler', c.steps, {
        schedule: 'karras',
        karrasRange: 'spaced',
      });
      plan.sigmas
        .subarray(0, c.steps)
        .forEach((s, i) => expectRel(s, c.sigmas[i], 1e-6, `plan sigma ${i}`));
      expect(plan.sigmas[c.steps]).toBe(0);
    },
  );
});

describe('timestep spacing rules', () => {
  const cfg = (spacing: TimestepSpacing, offset = 0): SchedulerConfig =>
    defaultSchedulerConfig({ timestep_spacing: spacing, steps_offset: offset });

  it('trailing rounds half to even, as numpy does, and always gives N values', () => {
    // arange(1000, 0, -62.5) = 1000, 937.5, 875, 812.5, ...; numpy rounds 937.5 -> 938, 812.5 -> 812.
    expect(discreteTimesteps(cfg('trailing'), 16).slice(0, 4)).toEqual([999, 937, 874, 811]);
    // numpy's arange returns 62 values here through float error; diffusers inherits that.
    const ts = discreteTimesteps(cfg('trailing'), 61);
    expect(ts.length).toBe(61);
    expect(ts[0]).toBe(999);
    expect(ts[60]).toBeGreaterThanOrEqual(0);
  });

  it('linspace is fractional for Euler and rounded for DDIM', () => {
    expect(eulerTimesteps(cfg('linspace'), 3)).toEqual([999, 499.5, 0]);
    expect(discreteTimesteps(cfg('linspace'), 3)).toEqual([999, 500, 0]); // 499.5 -> 500 (even)
  });

  it('leading adds steps_offset', () => {
    expect(discreteTimesteps(cfg('leading', 1), 4)).toEqual([751, 501, 251, 1]);
    expect(discreteTimesteps(cfg('leading'), 3)).toEqual([666, 333, 0]);
  });

  it('rejects step counts outside 1..T', () => {
    for (const bad of [0, -1, 1.5, 1001, Number.NaN]) {
      expect(() => discreteTimesteps(cfg('leading'), bad)).toThrow(/whole number from 1 to 1000/);
    }
  });

  it('LCM picks from the skipping-step schedule like LCMScheduler.set_timesteps', () => {
    const lcm = defaultSchedulerConfig({ original_inference_steps: 50 });
    // k = 20, origin = 19, 39, ..., 999; indices floor(linspace(0, 50, N, endpoint=False)).
    expect(lcmTimesteps(lcm, 4)).toEqual([999, 759, 499, 259]);
    expect(lcmTimesteps(lcm, 1)).toEqual([999]);
    expect(lcmTimesteps(lcm, 8)).toEqual([999, 879, 759, 639, 499, 379, 259, 139]);
    expect(lcmTimesteps(lcm, 50)[49]).toBe(19);
    // strength 0.5: origin = 19..499 (25 values); 4 of them.
    expect(lcmTimesteps(lcm, 4, 0.5)).toEqual([499, 379, 259, 139]);
    expect(() => lcmTimesteps(lcm, 51)).toThrow(/at most 50/);
    expect(() => lcmTimesteps(lcm, 4, 0.05)).toThrow(/fewer than the 4 steps/);
  });
});

describe('sigmaToTimestep', () => {
  const trainSigmas = trainingSigmas(alphasCumprod(sd15('leading', 1)));

  it('inverts the training sigmas exactly on the grid', () => {
    for (const t of [0, 1, 17, 500, 998, 999])
      expect(sigmaToTimestep(trainSigmas[t], trainSigmas)).toBeCloseTo(t, 9);
  });

  it('interpolates linearly in log sigma between grid points', () => {
    const lo = trainSigmas[400];
    const hi = trainSigmas[401];
    const geometricMean = Math.sqrt(lo * hi);
    expect(sigmaToTimestep(geometricMean, trainSigmas)).toBeCloseTo(400.5, 9);
  });

  it('clamps outside the trained range', () => {
    expect(sigmaToTimestep(0, trainSigmas)).toBe(0);
    expect(sigmaToTimestep(trainSigmas[0] / 2, trainSigmas)).toBe(0);
    expect(sigmaToTimestep(1e6, trainSigmas)).toBe(999);
  });
});

describe('other beta schedules', () => {
  it('linear and cosine alpha-bars decrease from near 1 towards 0', () => {
    for (const beta_schedule of ['linear', 'squaredcos_cap_v2'] as const) {
      const abar = alphasCumprod(defaultSchedulerConfig({ beta_schedule }));
      expect(abar[0]).toBeGreaterThan(0.999);
      for (let i = 1; i < abar.length; i++) expect(abar[i]).toBeLessThan(abar[i - 1]);
      expect(abar[999]).toBeLessThan(1e-3);
    }
    // Linear 1e-4..2e-2: abar_0 = 1 - 1e-4 exactly.
    expect(alphasCumprod(defaultSchedulerConfig())[0]).toBeCloseTo(0.9999, 15);
  });

  it('trained_betas replace the named schedule', () => {
    const trained = Array.from({ length: 10 }, (_, i) => 0.01 * (i + 1));
    const cfg = parseSchedulerConfig({
      num_train_timesteps: 10,
      trained_betas: trained,
      beta_schedule: 'linear',
    });
    const abar = alphasCumprod(cfg);
    expect(abar[1]).toBeCloseTo(0.99 * 0.98, 15);
  });

  it('rescale_betas_zero_snr drives the last alpha-bar to (almost) zero and keeps the first', () => {
    const base = sd15('trailing', 0);
    const rescaled = alphasCumprod({ ...base, rescale_betas_zero_snr: true });
    expect(rescaled[999]).toBe(2 ** -24);
    expect(rescaled[0]).toBeCloseTo(alphasCumprod(base)[0], 12);
    expect(Number.isFinite(trainingSigmas(rescaled)[999])).toBe(true);
  });
});

describe('parseSchedulerConfig', () => {
  it('reads SD 1.5 and fills what it leaves out', () => {
    const cfg = sd15('leading', 1);
    const bare = parseSchedulerConfig({
      beta_start: 0.00085,
      beta_end: 0.012,
      beta_schedule: 'scaled_linear',
      steps_offset: 1,
    });
    expect(bare.timestep_spacing).toBe('leading');
    expect(bare.prediction_type).toBe('epsilon');
    expect(bare.num_train_timesteps).toBe(1000);
    expect(bare.original_inference_steps).toBe(50);
    expect(bare.timestep_scaling).toBe(10);
    expect(bare.clip_sample).toBe(false);
    expect(cfg.set_alpha_to_one).toBe(false);
    expect(cfg.class_name).toBe('PNDMScheduler');
  });

  it('ignores unknown keys and treats null as absent', () => {
    const cfg = parseSchedulerConfig({
      prediction_type: 'v_prediction',
      interpolation_type: 'linear',
      use_karras_sigmas: false,
      sample_max_value: 1.0,
      timestep_spacing: null,
      some_future_key: { nested: true },
    });
    expect(cfg.prediction_type).toBe('v_prediction');
    expect(cfg.timestep_spacing).toBe('leading');
  });

  it.each([
    [[], /must be a JSON object/],
    ['{}', /must be a JSON object/],
    [null, /must be a JSON object/],
    [
      { prediction_type: 'flow' },
      /prediction_type must be one of epsilon, v_prediction, sample \(got "flow"\)/,
    ],
    [
      { beta_schedule: 'sigmoid' },
      /beta_schedule must be one of linear, scaled_linear, squaredcos_cap_v2/,
    ],
    [{ timestep_spacing: 'middle' }, /timestep_spacing must be one of leading, trailing, linspace/],
    [{ num_train_timesteps: 10.5 }, /num_train_timesteps must be an integer/],
    [{ beta_start: -1 }, /beta_start must be a number between 0 and 1/],
    [{ beta_end: '0.012' }, /beta_end must be a number/],
    [{ steps_offset: -1 }, /steps_offset must be an integer/],
    [{ set_alpha_to_one: 'false' }, /set_alpha_to_one must be true or false/],
    [{ clip_sample_range: 0 }, /clip_sample_range must be a number greater than 0/],
    [
      { original_inference_steps: 2000 },
      /original_inference_steps must be an integer between 1 and 1000/,
    ],
    [{ trained_betas: [0.1, 0.2] }, /trained_betas must be a list of 1000 numbers/],
  ])('rejects %j with one clear sentence', (json, message) => {
    let caught: unknown;
    try {
      parseSchedulerConfig(json);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(Error);
    const text = (caught as Error).message;
    expect(text).toMatch(message);
    // One sentence: ends with a period, no line breaks.
    expect(text).toMatch(/\.$/);
    expect(text).not.toMatch(/\n/);
    expect(isEngineError(caught)).toBe(true);
  });
});

describe('planSampling', () => {
  const cfg = sd15('leading', 1);

  it('knows every sampler name and ends every schedule in 0', () => {
    for (const name of samplerNames) {
      const plan = planSampling(cfg, name, 4);
      expect(plan.samplerName).toBe(name);
      expect(plan.sigmas.length).toBe(plan.timesteps.length + 1);
      expect(plan.sigmas[plan.sigmas.length - 1]).toBe(0);
      for (let i = 1; i < plan.sigmas.length; i++)
        expect(plan.sigmas[i]).toBeLessThan(plan.sigmas[i - 1]);
      expect(plan.tStart).toBe(0);
      for (let i = 0; i < plan.timesteps.length; i++)
        expect(plan.timestepOf(plan.sigmas[i])).toBe(plan.timesteps[i]);
    }
  });

  it('starts DDIM, DDPM and LCM from N(0,1) in the variance-preserving space', () => {
    for (const name of ['ddim', 'ddpm', 'lcm'] as const) {
      const plan = planSampling(cfg, name, 4);
      expect(plan.initNoiseSigma).toBeCloseTo(Math.sqrt(plan.sigmas[0] ** 2 + 1), 12);
    }
    expect(planSampling(cfg, 'lcm', 4).timesteps).toEqual([999, 759, 499, 259]);
  });

  it('uses the training range for Karras sigmas by default (k-diffusion, DPMSolverMultistep)', () => {
    const trainSigmas = trainingSigmas(alphasCumprod(cfg));
    const plan = planSampling(cfg, 'dpmpp_2m', 20, { schedule: 'karras' });
    expect(plan.sigmas[0]).toBeCloseTo(trainSigmas[999], 12);
    expect(plan.sigmas[19]).toBeCloseTo(trainSigmas[0], 12);
    expect(plan.timesteps[0]).toBeCloseTo(999, 9);
    expect(plan.timesteps[19]).toBeCloseTo(0, 9);
    // Karras' rho = 7 spacing: sigma^(1/7) is linear in the step index.
    const r = Array.from(plan.sigmas.subarray(0, 20), (s) => s ** (1 / 7));
    for (let i = 1; i < 19; i++) expect(r[i + 1] - r[i]).toBeCloseTo(r[1] - r[0], 12);
  });

  it('cuts img2img schedules like diffusers get_timesteps', () => {
    const full = planSampling(cfg, 'euler', 20);
    const half = planSampling(cfg, 'euler', 20, { strength: 0.5 });
    expect(half.tStart).toBe(10);
    expect(half.timesteps).toEqual(full.timesteps.slice(10));
    expect(Array.from(half.sigmas)).toEqual(Array.from(full.sigmas.subarray(10)));
    // int(20 * 0.33) = 6 steps run.
    expect(planSampling(cfg, 'ddim', 20, { strength: 0.33 }).timesteps.length).toBe(6);
    expect(planSampling(cfg, 'heun', 20, { strength: 1 }).tStart).toBe(0);
    // LCM applies strength inside its timestep selection instead.
    const lcm = planSampling(cfg, 'lcm', 4, { strength: 0.5 });
    expect(lcm.tStart).toBe(0);
    expect(lcm.timesteps).toEqual([499, 379, 259, 139]);
  });

  it('refuses what it cannot plan, with a reason', () => {
    expect(() => planSampling(cfg, 'euler', 20, { strength: 0.01 })).toThrow(
      /leaves no denoising step/,
    );
    expect(() => planSampling(cfg, 'euler', 20, { strength: 1.5 })).toThrow(/between 0 and 1/);
    expect(() => planSampling(cfg, 'ddim', 20, { schedule: 'karras' })).toThrow(
      /The karras schedule does not apply to ddim/,
    );
    expect(() => planSampling(cfg, 'lcm', 4, { schedule: 'exponential' })).toThrow(
      /The exponential schedule does not apply to lcm/,
    );
    expect(() => planSampling(cfg, 'euler', 20, { schedule: 'uniform' as never })).toThrow(
      /Unknown schedule "uniform"/,
    );
    expect(() => planSampling(cfg, 'plms' as never, 20)).toThrow(/Unknown sampler "plms"/);
    expect(() => planSampling(cfg, 'ddim', 20, { eta: 2 })).toThrow(/eta must be between 0 and 1/);
    // Leading spacing with steps_offset 1 and N = T would ask DDIM for timestep 1000.
    expect(() => planSampling(cfg, 'ddpm', 1000)).toThrow(/run past the last training timestep/);
  });
});
