import { describe, expect, it } from 'vitest';
import {
  alphasCumprod,
  makeDdimSampler,
  makeDenoiser,
  makeEulerAncestralSampler,
  parseSchedulerConfig,
  planSampling,
  sampleDdim,
  sampleDdpm,
  sampleDpmpp2m,
  sampleEuler,
  sampleEulerAncestral,
  sampleHeun,
  sampleLcm,
  samplerNames,
  sigmaToTimestep,
  trainingSigmas,
  type Denoiser,
  type NoiseSource,
  type SampleOptions,
  type Sampler,
  type SamplerName,
  type SchedulerConfig,
  type TimestepSpacing,
} from '../../src/engine/schedulers';

// ---------------------------------------------------------------------------------------------
// Helpers

/** A small seeded N(0, 1) source (mulberry32 + Box-Muller in double), independent of src/. */
function gaussian(seed: number): NoiseSource & { drawn: number } {
  let a = seed >>> 0;
  const uniform = (): number => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const source = {
    drawn: 0,
    randn(n: number): Float32Array {
      source.drawn += n;
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const u1 = 1 - uniform();
        const u2 = uniform();
        out[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
      }
      return out;
    },
  };
  return source;
}

function sd15(
  spacing: TimestepSpacing = 'leading',
  extra: Record<string, unknown> = {},
): SchedulerConfig {
  return parseSchedulerConfig({
    beta_start: 0.00085,
    beta_end: 0.012,
    beta_schedule: 'scaled_linear',
    num_train_timesteps: 1000,
    steps_offset: spacing === 'leading' ? 1 : 0,
    set_alpha_to_one: false,
    clip_sample: false,
    timestep_spacing: spacing,
    ...extra,
  });
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

/** How one step moves the sample: the ancestral split with this eta, or LCM's re-noising. */
type StepLaw = { kind: 'ancestral'; eta: number } | { kind: 'lcm' };

interface Subject {
  name: string;
  sampler: Sampler;
  sigmas: Float64Array;
  timestepOf?: (sigma: number) => number;
  /** Set for samplers that draw noise. */
  law?: StepLaw;
}

/**
 * Every sampler, as a pipeline gets it from planSampling (SD 1.5's schedule; set_alpha_to_one so
 * DDIM ends on x0 like the rest), plus the plain exports and other eta values.
 */
function subjects(steps: number, spacing: TimestepSpacing = 'leading'): Subject[] {
  const cfg = sd15(spacing, { set_alpha_to_one: true });
  const out: Subject[] = samplerNames.map((name: SamplerName) => {
    const plan = planSampling(cfg, name, Math.min(steps, name === 'lcm' ? 50 : steps));
    return {
      name: `plan ${name}`,
      sampler: plan.sampler,
      sigmas: plan.sigmas,
      timestepOf: plan.timestepOf,
      ...(name === 'euler_a' || name === 'ddpm'
        ? { law: { kind: 'ancestral', eta: 1 } as const }
        : name === 'lcm'
          ? { law: { kind: 'lcm' } as const }
          : {}),
    };
  });
  const euler = planSampling(cfg, 'euler', steps);
  const ddim = planSampling(cfg, 'ddim', steps);
  const scheduled = (name: SamplerName, schedule: 'karras' | 'exponential'): Subject => {
    const plan = planSampling(cfg, name, steps, { schedule });
    return {
      name: `plan ${name}_${schedule}`,
      sampler: plan.sampler,
      sigmas: plan.sigmas,
      timestepOf: plan.timestepOf,
      ...(name === 'euler_a' ? { law: { kind: 'ancestral', eta: 1 } as const } : {}),
    };
  };
  const a1 = { kind: 'ancestral', eta: 1 } as const;
  const aHalf = { kind: 'ancestral', eta: 0.5 } as const;
  out.push(
    scheduled('dpmpp_2m', 'karras'),
    scheduled('euler', 'exponential'),
    scheduled('euler_a', 'karras'),
    {
      name: 'plan ddim eta 1',
      sampler: planSampling(cfg, 'ddim', steps, { eta: 1 }).sampler,
      sigmas: ddim.sigmas,
      law: a1,
    },
    { name: 'sampleEuler', sampler: sampleEuler, sigmas: euler.sigmas },
    { name: 'sampleDdim', sampler: sampleDdim, sigmas: ddim.sigmas },
    { name: 'sampleDdpm', sampler: sampleDdpm, sigmas: ddim.sigmas, law: a1 },
    { name: 'sampleLcm', sampler: sampleLcm, sigmas: euler.sigmas, law: { kind: 'lcm' } },
    { name: 'sampleEulerAncestral', sampler: sampleEulerAncestral, sigmas: euler.sigmas, law: a1 },
    {
      name: 'euler_a eta 0.5',
      sampler: makeEulerAncestralSampler(0.5),
      sigmas: euler.sigmas,
      law: aHalf,
    },
    {
      name: 'ddim eta 0.5',
      sampler: makeDdimSampler({ eta: 0.5 }),
      sigmas: ddim.sigmas,
      law: aHalf,
    },
    { name: 'sampleHeun', sampler: sampleHeun, sigmas: euler.sigmas },
    { name: 'sampleDpmpp2m', sampler: sampleDpmpp2m, sigmas: euler.sigmas },
  );
  return out;
}

function opts(s: Subject, rng: NoiseSource, extra: Partial<SampleOptions> = {}): SampleOptions {
  return { rng, ...(s.timestepOf ? { timestepOf: s.timestepOf } : {}), ...extra };
}

// ---------------------------------------------------------------------------------------------
// (a) The exact denoiser of a single point: D(x, sigma) = x*. Every sampler must land on it.

describe('conformance: a single data point', () => {
  const n = 64;
  const target = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.7) * 2);
  const pointDenoiser: Denoiser = async () => Float32Array.from(target);

  for (const spacing of ['leading', 'trailing'] as const) {
    it.each(subjects(10, spacing).map((s) => [s.name, s] as const))(
      `%s (${spacing}) ends on x*`,
      async (_n, s) => {
        const start = gaussian(1)
          .randn(n)
          .map((z) => z * s.sigmas[0]);
        const before = Float32Array.from(start);
        const out = await s.sampler(pointDenoiser, start, s.sigmas, opts(s, gaussian(2)));
        expect(maxAbsDiff(out, target)).toBeLessThan(1e-5);
        // The input is never written to.
        expect(Array.from(start)).toEqual(Array.from(before));
      },
    );
  }
});

// ---------------------------------------------------------------------------------------------
// (b) The exact denoiser of a Gaussian data distribution N(mu, s^2), per element:
//       D(x, sigma) = (s^2 x + sigma^2 mu) / (s^2 + sigma^2).
// The probability-flow ODE dx/dsigma = (x - D) / sigma = sigma (x - mu) / (s^2 + sigma^2) has
// the solution x(sigma) = mu + (x_T - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_T^2).

const MU = 0.5;
const S = 0.8;
const gaussianDenoiser: Denoiser = async (x, sigma) => {
  const out = new Float32Array(x.length);
  const s2 = S * S;
  for (let i = 0; i < x.length; i++)
    out[i] = (s2 * x[i] + sigma * sigma * MU) / (s2 + sigma * sigma);
  return out;
};

/**
 * Where a perfect ODE solver on this schedule ends: the exact flow down to the last nonzero
 * sigma, then the step to 0, which every sampler takes as x -> D(x, sigma_min).
 */
function flowSolution(xT: Float32Array, sigmas: Float64Array): Float64Array {
  const sigmaT = sigmas[0];
  const sigmaMin = sigmas[sigmas.length - 2];
  const s2 = S * S;
  const scale = Math.sqrt(s2 + sigmaMin * sigmaMin) / Math.sqrt(s2 + sigmaT * sigmaT);
  return Float64Array.from(xT, (x) => {
    const atMin = MU + (x - MU) * scale;
    return (s2 * atMin + sigmaMin * sigmaMin * MU) / (s2 + sigmaMin * sigmaMin);
  });
}

/** Root-mean-square difference over the elements, in units of the data's spread S. */
function rmsError(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  let sum = 0;
  for (let i = 0; i < ref.length; i++) sum += (out[i] - ref[i]) ** 2;
  return Math.sqrt(sum / ref.length) / S;
}

async function flowError(name: string, steps: number, seed: number): Promise<number> {
  const s = subjects(steps).find((x) => x.name === name)!;
  const xT = gaussian(seed)
    .randn(1024)
    .map((v) => MU + v * Math.sqrt(S * S + s.sigmas[0] ** 2));
  const out = await s.sampler(gaussianDenoiser, xT, s.sigmas, opts(s, gaussian(seed + 1)));
  return rmsError(out, flowSolution(xT, s.sigmas));
}

describe('conformance: Gaussian data, deterministic samplers follow the probability flow', () => {
  // Bounds on the RMS error at 50 steps (SD 1.5 "leading" schedule, or Karras), in units of S,
  // about twice what these solvers reach: Euler/DDIM are first order (~3e-2); Heun is second
  // order (~9e-4); DPM++(2M) is second order where log-sigma steps are even (Karras: ~2e-3) and
  // pays for the leading schedule's big last log-sigma steps (sigma 0.14 -> 0.04) otherwise.
  const bounds: Record<string, number> = {
    'plan euler': 0.06,
    'plan ddim': 0.06,
    sampleEuler: 0.06,
    'plan heun': 2e-3,
    'plan dpmpp_2m': 0.03,
    'plan dpmpp_2m_karras': 4e-3,
  };
  // From 20 steps: DPM++ 2M on DPMSolverMultistepScheduler's own timesteps happens to land
  // closer at 10 steps (7.7e-4) than at 20 (3.3e-3) on this schedule, then shrinks steadily.
  it.each(Object.keys(bounds))('%s: error shrinks with steps and is small at 50', async (name) => {
    const at20 = await flowError(name, 20, 7);
    const at50 = await flowError(name, 50, 7);
    expect(at50).toBeLessThan(at20);
    expect(at50).toBeLessThan(bounds[name]);
  });

  it('DDIM (eta 0) on its timesteps is the Euler step: same trajectory for the same sigmas', async () => {
    const s = subjects(20);
    const ddim = s.find((x) => x.name === 'plan ddim')!;
    const xT = gaussian(3)
      .randn(256)
      .map((v) => v * ddim.sigmas[0]);
    const a = await ddim.sampler(gaussianDenoiser, xT, ddim.sigmas, opts(ddim, gaussian(1)));
    const b = await sampleEuler(gaussianDenoiser, xT, ddim.sigmas, { rng: gaussian(1) });
    expect(maxAbsDiff(a, b)).toBeLessThan(1e-5);
  });

  it('Heun and DPM++(2M) Karras are second order: 5x the steps cuts the error by over 10x', async () => {
    for (const name of ['plan heun', 'plan dpmpp_2m_karras']) {
      const ratio = (await flowError(name, 10, 9)) / (await flowError(name, 50, 9));
      expect(ratio).toBeGreaterThan(10);
    }
    // ...whereas first-order Euler gains about 5x.
    const euler = (await flowError('plan euler', 10, 9)) / (await flowError('plan euler', 50, 9));
    expect(euler).toBeGreaterThan(2.5);
    expect(euler).toBeLessThan(10);
  });
});

/**
 * The exact law of a stochastic sampler's chain on Gaussian data. Every step is linear-Gaussian
 * in x - mu: with a = S^2, c = sigma^2 and D - mu = a/(a+c) (x - mu), x - D = c/(a+c) (x - mu),
 *   ancestral (k-diffusion / DDPM posterior): x' = D + (down/sigma)(x - D) + up z
 *   LCM:                                      x' = D + sigma_next z
 * so the mean stays mu and the variance follows V' = k^2 V + q^2.
 */
function chainVariance(law: StepLaw, sigmas: Float64Array, startVariance: number): number {
  const a = S * S;
  let v = startVariance;
  for (let i = 0; i + 1 < sigmas.length; i++) {
    const sigma = sigmas[i];
    const next = sigmas[i + 1];
    const c = sigma * sigma;
    let k: number;
    let q2: number;
    if (law.kind === 'lcm') {
      k = a / (a + c);
      q2 = next * next;
    } else {
      const up = Math.min(next, law.eta * Math.sqrt((next * next * (c - next * next)) / c));
      const down = Math.sqrt(next * next - up * up);
      k = a / (a + c) + ((down / sigma) * c) / (a + c);
      q2 = up * up;
    }
    v = k * k * v + q2;
  }
  return v;
}

function moments(xs: Float32Array): { mean: number; variance: number } {
  let mean = 0;
  for (const v of xs) mean += v;
  mean /= xs.length;
  let variance = 0;
  for (const v of xs) variance += (v - mean) ** 2;
  return { mean, variance: variance / (xs.length - 1) };
}

describe('conformance: Gaussian data, stochastic samplers', () => {
  const n = 4096;
  const stochastic = subjects(50).filter((s) => s.law);

  it.each(stochastic.map((s) => [s.name, s] as const))(
    '%s is reproducible and its samples follow the chain law',
    async (_name, s) => {
      const start = S * S + s.sigmas[0] ** 2;
      const xT = gaussian(11)
        .randn(n)
        .map((v) => MU + v * Math.sqrt(start));
      const a = await s.sampler(gaussianDenoiser, xT, s.sigmas, opts(s, gaussian(12)));
      const b = await s.sampler(gaussianDenoiser, xT, s.sigmas, opts(s, gaussian(12)));
      const c = await s.sampler(gaussianDenoiser, xT, s.sigmas, opts(s, gaussian(13)));
      expect(Array.from(a)).toEqual(Array.from(b));
      expect(maxAbsDiff(a, c)).toBeGreaterThan(1e-3);

      const expected = chainVariance(s.law!, s.sigmas, start);
      const { mean, variance } = moments(a);
      // Four standard errors: sqrt(V/n) for the mean; sqrt(2/(n-1)) = 2.2% (relative) for the
      // variance. (LCM's boundary condition adds c_skip < 1e-6 of x_t: far below these.)
      expect(Math.abs(mean - MU)).toBeLessThan(4 * Math.sqrt(expected / n));
      expect(Math.abs(variance / expected - 1)).toBeLessThan(4 * Math.sqrt(2 / (n - 1)));
    },
  );

  it.each(['plan euler_a', 'plan ddpm'])(
    '%s samples N(mu, s^2) as the steps grow',
    async (name) => {
      // With E[x0 | x] in place of a draw of x0, each step loses a little variance: the chain law
      // gives 0.87 s^2 after 50 steps and 0.98 s^2 after 500. 16384 samples: relative standard
      // error of the variance 1.1%; we allow 4 of them plus the 2% bias.
      const big = 16384;
      const s = subjects(500).find((x) => x.name === name)!;
      expect(chainVariance(s.law!, s.sigmas, S * S + s.sigmas[0] ** 2) / (S * S)).toBeGreaterThan(
        0.975,
      );
      const xT = gaussian(31)
        .randn(big)
        .map((v) => MU + v * Math.sqrt(S * S + s.sigmas[0] ** 2));
      const { mean, variance } = moments(
        await s.sampler(gaussianDenoiser, xT, s.sigmas, opts(s, gaussian(32))),
      );
      expect(Math.abs(mean - MU)).toBeLessThan((4 * S) / Math.sqrt(big));
      expect(Math.abs(variance / (S * S) - 1)).toBeLessThan(4 * Math.sqrt(2 / (big - 1)) + 0.025);
    },
  );
});

// ---------------------------------------------------------------------------------------------
// (c) Cancellation.

describe('conformance: abort', () => {
  it.each(subjects(10).map((s) => [s.name, s] as const))(
    '%s stops before the next model call',
    async (_n, s) => {
      const controller = new AbortController();
      let calls = 0;
      const denoise: Denoiser = async (x) => {
        calls++;
        if (calls === 3) controller.abort();
        return new Float32Array(x.length);
      };
      const run = s.sampler(
        denoise,
        new Float32Array(8).fill(1),
        s.sigmas,
        opts(s, gaussian(3), { signal: controller.signal }),
      );
      await expect(run).rejects.toMatchObject({ name: 'AbortError' });
      expect(calls).toBe(3);
    },
  );

  it('an already-aborted signal makes no model call at all', async () => {
    const controller = new AbortController();
    controller.abort();
    let calls = 0;
    const denoise: Denoiser = async (x) => {
      calls++;
      return x;
    };
    const plan = planSampling(sd15(), 'heun', 5);
    await expect(
      plan.sampler(denoise, new Float32Array(4), plan.sigmas, {
        rng: gaussian(1),
        signal: controller.signal,
      }),
    ).rejects.toMatchObject({ name: 'AbortError' });
    expect(calls).toBe(0);
  });

  it('reports progress once per step, with the step index and total', async () => {
    const plan = planSampling(sd15(), 'heun', 6);
    const seen: Array<[number, number, number]> = [];
    let calls = 0;
    const denoise: Denoiser = async (x) => {
      calls++;
      return new Float32Array(x.length);
    };
    await plan.sampler(denoise, new Float32Array(4).fill(1), plan.sigmas, {
      rng: gaussian(1),
      timestepOf: plan.timestepOf,
      onStep: (e) => seen.push([e.step, e.total, e.sigma]),
    });
    expect(seen.map((e) => e[0])).toEqual([0, 1, 2, 3, 4, 5]);
    expect(seen.every((e) => e[1] === 6)).toBe(true);
    expect(seen.map((e) => e[2])).toEqual(Array.from(plan.sigmas.subarray(0, 6)));
    expect(calls).toBe(2 * 6 - 1); // Heun: two calls per step, one on the last.
  });

  it.each(subjects(5).map((s) => [s.name, s] as const))(
    '%s: afterStep changes the sample it continues from, once per step, before onStep',
    async (_name, s) => {
      const total = s.sigmas.length - 1;
      const inputs: Float32Array[] = [];
      const denoise: Denoiser = async (x) => {
        inputs.push(Float32Array.from(x));
        return Float32Array.from(x, (v) => 0.5 * v);
      };
      const blended: Float32Array[] = [];
      const order: string[] = [];
      const out = await s.sampler(denoise, new Float32Array(6).fill(1), s.sigmas, {
        ...opts(s, gaussian(2)),
        afterStep: (x, step) => {
          order.push(`after ${step}`);
          x.fill(step + 10); // a value no step of these samplers would make
          blended.push(Float32Array.from(x));
        },
        onStep: (e) => {
          order.push(`step ${e.step}`);
          expect(Array.from(e.x)).toEqual(Array.from(blended[e.step]));
        },
      });
      expect(order).toEqual(
        Array.from({ length: total }, (_, i) => [`after ${i}`, `step ${i}`]).flat(),
      );
      // Each later step's model call sees the blended sample, and so does the result.
      for (let i = 1; i < total; i++)
        expect(inputs.some((x) => x.every((v) => v === i - 1 + 10))).toBe(true);
      expect(Array.from(out)).toEqual(Array.from(blended[total - 1]));
    },
  );
});

// ---------------------------------------------------------------------------------------------
// (d) Golden trajectories: diffusers' step formulas written out in the variance-preserving
// parameterisation, driven by the same model, against the samplers run through makeDenoiser.

/** A model with some x- and t-dependence, so the trajectories must agree step by step. */
function fakeModel(x: ArrayLike<number>, t: number): Float32Array {
  return Float32Array.from(
    x,
    (v, i) => 0.35 * v + 0.2 * Math.sin(0.01 * t + i) - 0.05 * Math.cos(i * 1.3),
  );
}

/** A noise source replaying the same draws to both sides. */
function replay(seed: number): NoiseSource {
  return gaussian(seed);
}

interface Golden {
  cfg: SchedulerConfig;
  name: SamplerName;
  steps: number;
  eta?: number;
  strength?: number;
}

async function runOurs(
  g: Golden,
  init: Float32Array,
  seed: number,
): Promise<{ out: Float32Array; timesteps: number[] }> {
  const plan = planSampling(g.cfg, g.name, g.steps, { eta: g.eta, strength: g.strength });
  const timesteps: number[] = [];
  const denoise = makeDenoiser(async (scaled, t) => {
    timesteps.push(t);
    return fakeModel(scaled, t);
  }, g.cfg);
  // Sigma space starts from the VP latent divided by sqrt(abar_T).
  const x = init.map((v) => v * Math.sqrt(1 + plan.sigmas[0] ** 2));
  const out = await plan.sampler(denoise, x, plan.sigmas, {
    rng: replay(seed),
    timestepOf: plan.timestepOf,
  });
  return { out, timesteps };
}

describe('golden: diffusers step formulas', () => {
  const n = 32;
  const init = gaussian(21).randn(n); // a VP latent x_T (diffusers' init_noise_sigma = 1)

  it.each([
    ['leading', false],
    ['trailing', false],
    ['linspace', true],
  ] as const)(
    'DDIM eta 0, %s spacing, set_alpha_to_one %s, matches DDIMScheduler.step',
    async (spacing, one) => {
      const cfg = sd15(spacing, { set_alpha_to_one: one });
      const steps = 7;
      const abar = alphasCumprod(cfg);
      const plan = planSampling(cfg, 'ddim', steps);
      // DDIMScheduler.step, eta = 0: prev timestep t - T//N; below 0 the final alpha-bar.
      const ratio = Math.floor(1000 / steps);
      const finalAbar = one ? 1 : abar[0];
      let x = Float64Array.from(init);
      for (const t of plan.timesteps) {
        const aT = abar[t];
        const aP = t - ratio >= 0 ? abar[t - ratio] : finalAbar;
        const eps = fakeModel(x, t);
        const x0 = x.map((v, i) => (v - Math.sqrt(1 - aT) * eps[i]) / Math.sqrt(aT));
        x = x0.map((v, i) => Math.sqrt(aP) * v + Math.sqrt(1 - aP) * eps[i]);
      }
      const ours = await runOurs({ cfg, name: 'ddim', steps }, init, 1);
      expect(ours.timesteps).toEqual(plan.timesteps);
      expect(maxAbsDiff(ours.out, x)).toBeLessThan(2e-5);
    },
  );

  it('DDIM eta 1 and DDPM match their diffusers steps, noise draws included', async () => {
    const cfg = sd15('trailing');
    const steps = 6;
    const abar = alphasCumprod(cfg);
    const ratio = Math.floor(1000 / steps);
    for (const name of ['ddim', 'ddpm'] as const) {
      const plan = planSampling(cfg, name, steps, name === 'ddim' ? { eta: 1 } : {});
      const rng = replay(5);
      let x = Float64Array.from(init);
      for (const t of plan.timesteps) {
        const aT = abar[t];
        const prevT = t - ratio;
        const eps = fakeModel(x, t);
        const x0 = x.map((v, i) => (v - Math.sqrt(1 - aT) * eps[i]) / Math.sqrt(aT));
        if (name === 'ddim') {
          const aP = prevT >= 0 ? abar[prevT] : abar[0]; // set_alpha_to_one false
          const std = Math.sqrt(((1 - aP) / (1 - aT)) * (1 - aT / aP));
          const z = rng.randn(n); // eta > 0: a draw on every step
          x = x0.map(
            (v, i) => Math.sqrt(aP) * v + Math.sqrt(1 - aP - std * std) * eps[i] + std * z[i],
          );
        } else {
          const aP = prevT >= 0 ? abar[prevT] : 1;
          const alphaT = aT / aP;
          const betaT = 1 - alphaT;
          const cX0 = (Math.sqrt(aP) * betaT) / (1 - aT);
          const cXt = (Math.sqrt(alphaT) * (1 - aP)) / (1 - aT);
          const variance = Math.max(((1 - aP) / (1 - aT)) * betaT, 1e-20);
          const mean = x0.map((v, i) => cX0 * v + cXt * x[i]);
          // diffusers draws when t > 0; the last step's draw is multiplied by 0 (aP = 1).
          const z = prevT >= 0 ? rng.randn(n) : new Float32Array(n);
          x = mean.map((v, i) => v + (prevT >= 0 ? Math.sqrt(variance) * z[i] : 0));
        }
      }
      const ours = await runOurs(
        { cfg, name, steps, eta: name === 'ddim' ? 1 : undefined },
        init,
        5,
      );
      expect(maxAbsDiff(ours.out, x)).toBeLessThan(2e-5);
    }
  });

  it.each(['epsilon', 'v_prediction'] as const)(
    'Euler (%s) matches EulerDiscreteScheduler.step',
    async (prediction) => {
      const cfg = sd15('linspace', { prediction_type: prediction });
      const plan = planSampling(cfg, 'euler', 9);
      // EulerDiscreteScheduler works in sigma space already: latents start at z * init_noise_sigma.
      const x = init.map((v) => v * plan.initNoiseSigma);
      let xs = Float64Array.from(x);
      for (let i = 0; i < plan.timesteps.length; i++) {
        const sigma = plan.sigmas[i];
        const next = plan.sigmas[i + 1];
        const out = fakeModel(
          xs.map((v) => v / Math.sqrt(sigma * sigma + 1)),
          plan.timesteps[i],
        );
        const x0 =
          prediction === 'epsilon'
            ? xs.map((v, j) => v - sigma * out[j])
            : xs.map(
                (v, j) =>
                  out[j] * (-sigma / Math.sqrt(sigma * sigma + 1)) + v / (sigma * sigma + 1),
              );
        const derivative = xs.map((v, j) => (v - x0[j]) / sigma);
        xs = xs.map((v, j) => v + derivative[j] * (next - sigma));
      }
      const timesteps: number[] = [];
      const denoise = makeDenoiser(async (scaled, t) => {
        timesteps.push(t);
        return fakeModel(scaled, t);
      }, cfg);
      const ours = await plan.sampler(denoise, x, plan.sigmas, {
        rng: gaussian(1),
        timestepOf: plan.timestepOf,
      });
      // Linspace timesteps stay fractional and reach the model unchanged.
      expect(timesteps).toEqual(plan.timesteps);
      expect(timesteps.some((t) => !Number.isInteger(t))).toBe(true);
      expect(maxAbsDiff(ours, xs)).toBeLessThan(2e-5);
    },
  );

  // timestep_scaling 10 (LCM's) makes c_skip < 1e-7 at these timesteps; 0.005 makes the
  // boundary condition visible (c_skip ~ 0.06 at t = 259).
  it.each([10, 0.005])('LCM (timestep_scaling %s) matches LCMScheduler.step', async (scaling) => {
    const cfg = sd15('leading', { set_alpha_to_one: true, timestep_scaling: scaling });
    const steps = 4;
    const abar = alphasCumprod(cfg);
    const plan = planSampling(cfg, 'lcm', steps);
    expect(plan.timesteps).toEqual([999, 759, 499, 259]);
    const rng = replay(9);
    let x = Float64Array.from(init);
    let denoised = new Float64Array(n);
    plan.timesteps.forEach((t, k) => {
      const aT = abar[t];
      const st = t * scaling;
      const cSkip = 0.25 / (st * st + 0.25);
      const cOut = st / Math.sqrt(st * st + 0.25);
      const eps = fakeModel(x, t);
      const x0 = x.map((v, i) => (v - Math.sqrt(1 - aT) * eps[i]) / Math.sqrt(aT));
      denoised = x0.map((v, i) => cOut * v + cSkip * x[i]);
      if (k < steps - 1) {
        const aP = abar[plan.timesteps[k + 1]];
        const z = rng.randn(n);
        x = denoised.map((v, i) => Math.sqrt(aP) * v + Math.sqrt(1 - aP) * z[i]);
      } else {
        x = denoised;
      }
    });
    const ours = await runOurs({ cfg, name: 'lcm', steps }, init, 9);
    expect(maxAbsDiff(ours.out, x)).toBeLessThan(2e-5);
  });

  it('img2img with DDIM starts where add_noise puts the init latents', async () => {
    const cfg = sd15('leading');
    const plan = planSampling(cfg, 'ddim', 10, { strength: 0.6 });
    expect(plan.tStart).toBe(4);
    const abar = alphasCumprod(cfg);
    const t = plan.timesteps[0];
    expect(t).toBe(501);
    // add_noise: sqrt(abar) x0 + sqrt(1 - abar) eps == sqrt(abar) (x0 + sigma eps).
    const sigma = plan.sigmas[0];
    expect(Math.sqrt(abar[t]) * sigma).toBeCloseTo(Math.sqrt(1 - abar[t]), 14);
  });
});

// ---------------------------------------------------------------------------------------------
// (e) makeDenoiser: the eps / v / x0 adaptation.

describe('makeDenoiser', () => {
  const sigma = 2; // c_in = 1/sqrt(5), c_skip = 1/5, c_out = -2/sqrt(5)
  const x = Float32Array.of(3, 0.5, -1);

  function recorder(output: number[]) {
    const seen: { input: Float32Array; timestep: number }[] = [];
    const predict = async (scaled: Float32Array, timestep: number) => {
      seen.push({ input: scaled, timestep });
      return Float32Array.from(output);
    };
    return { predict, seen };
  }

  it('epsilon: feeds x / sqrt(sigma^2 + 1) and returns x - sigma * eps', async () => {
    const { predict, seen } = recorder([1, -1, 0.25]);
    const d = makeDenoiser(predict, sd15());
    const x0 = await d(x, sigma, { step: 0, timestep: 123 });
    expect(Array.from(seen[0].input)).toEqual(
      Array.from(Float32Array.of(3 / Math.sqrt(5), 0.5 / Math.sqrt(5), -1 / Math.sqrt(5))),
    );
    expect(seen[0].timestep).toBe(123);
    expect(Array.from(x0)).toEqual(Array.from(Float32Array.of(1, 2.5, -1.5)));
  });

  it('v_prediction: x0 = x / (sigma^2 + 1) - v * sigma / sqrt(sigma^2 + 1)', async () => {
    const { predict } = recorder([1, -1, 0.25]);
    const d = makeDenoiser(predict, sd15('leading', { prediction_type: 'v_prediction' }));
    const x0 = await d(x, sigma, { step: 0, timestep: 1 });
    const r5 = Math.sqrt(5);
    const expected = [3 / 5 - (1 * 2) / r5, 0.5 / 5 + (1 * 2) / r5, -1 / 5 - (0.25 * 2) / r5];
    expect(maxAbsDiff(x0, expected)).toBeLessThan(1e-6);
  });

  it('v_prediction recovers x0 from v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho)', async () => {
    const cfg = sd15('leading', { prediction_type: 'v_prediction' });
    const trueX0 = [0.7, -1.2, 0.1, 2];
    const eps = [-0.3, 0.9, 1.5, -2];
    for (const s of [0.03, 0.5, 1, 7, 14]) {
      const abar = 1 / (1 + s * s);
      const xVe = Float32Array.from(trueX0, (v, i) => v + s * eps[i]);
      const v = trueX0.map((x0, i) => Math.sqrt(abar) * eps[i] - Math.sqrt(1 - abar) * x0);
      const d = makeDenoiser(async () => Float32Array.from(v), cfg);
      expect(maxAbsDiff(await d(xVe, s, { step: 0, timestep: 0 }), trueX0)).toBeLessThan(1e-5);
    }
  });

  it('sample prediction passes through; clip_sample clamps to the range', async () => {
    const { predict } = recorder([1.7, -0.2, -3]);
    const plain = makeDenoiser(predict, sd15('leading', { prediction_type: 'sample' }));
    expect(Array.from(await plain(x, sigma, { step: 0, timestep: 1 }))).toEqual(
      Array.from(Float32Array.of(1.7, -0.2, -3)),
    );
    const clipped = makeDenoiser(
      predict,
      sd15('leading', { prediction_type: 'sample', clip_sample: true, clip_sample_range: 1.5 }),
    );
    expect(Array.from(await clipped(x, sigma, { step: 0, timestep: 1 }))).toEqual(
      Array.from(Float32Array.of(1.5, -0.2, -1.5)),
    );
  });

  it('derives the timestep from sigma when the sampler has none', async () => {
    const cfg = sd15();
    const trainSigmas = trainingSigmas(alphasCumprod(cfg));
    const { predict, seen } = recorder([0, 0, 0]);
    const d = makeDenoiser(predict, cfg);
    await d(x, trainSigmas[640], { step: 0, timestep: Number.NaN });
    expect(seen[0].timestep).toBeCloseTo(640, 9);
    await d(x, 3.3, { step: 1, timestep: Number.NaN });
    expect(seen[1].timestep).toBe(sigmaToTimestep(3.3, trainSigmas));
    expect(seen[1].timestep % 1).not.toBe(0);
  });

  it('refuses a model output of the wrong length', async () => {
    const d = makeDenoiser(async () => new Float32Array(2), sd15());
    await expect(d(x, 1, { step: 0, timestep: 1 })).rejects.toThrow(
      /returned 2 values for a latent of 3/,
    );
  });
});
