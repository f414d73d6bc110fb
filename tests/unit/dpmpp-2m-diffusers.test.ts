import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { parseJsonText } from '../../src/engine/models/json';
import {
  exponentialSigmas,
  karrasSigmas,
  makeDenoiser,
  parseSchedulerConfig,
  planSampling,
} from '../../src/engine/schedulers';

// Recorded by tools/reference/record_schedule_vectors.py from diffusers' own
// DPMSolverMultistepScheduler and k-diffusion's sigma schedules (see each file's "source").
const here = path.dirname(fileURLToPath(import.meta.url));
const reference = (name: string) =>
  JSON.parse(readFileSync(path.resolve(here, '../fixtures/reference', name), 'utf8')) as unknown;

interface DpmCase {
  config: Record<string, unknown>;
  steps: number;
  timesteps: number[];
  sigmas: number[];
  initial_sample: number[];
  final_sample: number[];
}
const dpm = reference('dpmpp-2m-vectors.json') as { source: string; cases: DpmCase[] };
const kd = reference('kdiffusion-sigmas.json') as {
  sigma_min: number;
  sigma_max: number;
  karras: Record<string, number[]>;
  exponential: Record<string, number[]>;
};

function label(c: DpmCase): string {
  const skip = new Set(['num_train_timesteps', 'beta_start', 'beta_end', 'beta_schedule']);
  const opts = Object.entries(c.config)
    .filter(([k]) => !skip.has(k))
    .map(([k, v]) => `${k}=${String(v)}`);
  return `${c.steps} steps, ${opts.join(' ')}`;
}

// diffusers computes alphas_cumprod in float32 and sigma = sqrt((1 - abar) / abar) from it; we
// compute in float64 (schedule.ts). Near t = 0, abar = 0.99915 holds only to half a float32 ulp
// (3e-8), so 1 - abar and sigma_min carry up to ~1.8e-5 relative error there (1.3e-5 measured),
// which Karras and exponential sigmas spread along their ramp: sigmas agree to 2e-5 relative.
// The samples: diffusers steps float32 samples, we step float32 samples with float64
// coefficients; they agree to a few float32 ulps (measured: at most 6.5e-7 on values up to 1.5).
const SIGMA_REL = 2e-5;
const SAMPLE_ABS = 1.5e-6;

describe("DPM++ 2M reproduces diffusers' DPMSolverMultistepScheduler full loop", () => {
  it('has the recorded cases', () => {
    expect(dpm.cases.length).toBeGreaterThanOrEqual(20);
    expect(dpm.source).toMatch(/scheduling_dpmsolver_multistep\.py$/);
  });

  it.each(dpm.cases.map((c) => [label(c), c] as const))('%s', async (_name, c) => {
    const cfg = parseSchedulerConfig(c.config);
    const plan = planSampling(cfg, 'dpmpp_2m', c.steps);
    expect(plan.timesteps).toEqual(c.timesteps);
    expect(plan.sigmas.length).toBe(c.sigmas.length);
    plan.sigmas.forEach((s, i) =>
      expect(Math.abs(s - c.sigmas[i]), `sigma ${i}`).toBeLessThanOrEqual(SIGMA_REL * c.sigmas[i]),
    );

    // The model of diffusers' scheduler tests, eps = sample * t / (t + 1), on its
    // variance-preserving sample; our sampler works on x = sample / alpha.
    const model = async (scaled: Float32Array, t: number) =>
      Float32Array.from(scaled, (v) => (v * t) / (t + 1));
    const sigma0 = plan.sigmas[0];
    const x = Float32Array.from(c.initial_sample, (v) => v * Math.sqrt(sigma0 * sigma0 + 1));
    const out = await plan.sampler(makeDenoiser(model, cfg), x, plan.sigmas, {
      rng: { randn: () => new Float32Array(0) },
      timestepOf: plan.timestepOf,
    });
    const last = plan.sigmas[plan.sigmas.length - 1];
    const vp = Array.from(out, (v) => v / Math.sqrt(last * last + 1));
    vp.forEach((v, i) =>
      expect(Math.abs(v - c.final_sample[i]), `sample ${i}`).toBeLessThan(SAMPLE_ABS),
    );
  });

  it('a schedule chosen in the settings overrides the config (Karras there: use_karras_sigmas)', () => {
    const karras = dpm.cases.find((c) => c.config.use_karras_sigmas && c.steps === 12)!;
    const bare = parseSchedulerConfig({ ...karras.config, use_karras_sigmas: false });
    const plan = planSampling(bare, 'dpmpp_2m', karras.steps, { schedule: 'karras' });
    expect(plan.timesteps).toEqual(karras.timesteps);
  });

  it('reads a scheduler_config.json as diffusers writes it (json.dumps: -Infinity)', () => {
    // DPMSolverMultistepScheduler.save_config output (Python json.dumps, indent 2, sorted keys).
    const text = [
      '{',
      '  "_class_name": "DPMSolverMultistepScheduler",',
      '  "algorithm_type": "dpmsolver++",',
      '  "beta_end": 0.012,',
      '  "beta_schedule": "scaled_linear",',
      '  "beta_start": 0.00085,',
      '  "euler_at_final": false,',
      '  "final_sigmas_type": "zero",',
      '  "lambda_min_clipped": -Infinity,',
      '  "lower_order_final": true,',
      '  "num_train_timesteps": 1000,',
      '  "solver_order": 2,',
      '  "steps_offset": 1,',
      '  "timestep_spacing": "leading",',
      '  "use_karras_sigmas": true,',
      '  "variance_type": null',
      '}',
    ].join('\n');
    expect(() => JSON.parse(text)).toThrow(SyntaxError);
    const cfg = parseSchedulerConfig(parseJsonText(text));
    expect(cfg.lambda_min_clipped).toBe(-Infinity);
    expect(cfg.use_karras_sigmas).toBe(true);
    const plan = planSampling(cfg, 'dpmpp_2m', 12);
    const karras = dpm.cases.find((c) => c.config.use_karras_sigmas && c.steps === 12)!;
    expect(plan.timesteps).toEqual(karras.timesteps);

    // Only bare words in value positions are numbers; strings keep their text.
    expect(parseJsonText('{"a": [NaN, Infinity, -Infinity], "b": "NaN, -Infinity"}')).toEqual({
      a: [NaN, Infinity, -Infinity],
      b: 'NaN, -Infinity',
    });
    expect(() => parseJsonText('{"a": -Infinityx}')).toThrow(SyntaxError);
    expect(() => parseSchedulerConfig({ lambda_min_clipped: Infinity })).toThrow(
      /lambda_min_clipped must be a number or -Infinity/,
    );
  });

  it('refuses a config that asks for both Karras and exponential sigmas', () => {
    expect(() =>
      parseSchedulerConfig({ use_karras_sigmas: true, use_exponential_sigmas: true }),
    ).toThrow(/cannot both be true/);
    expect(() => parseSchedulerConfig({ final_sigmas_type: 'one' })).toThrow(
      /final_sigmas_type must be one of zero, sigma_min/,
    );
  });
});

describe("Karras and exponential sigmas are k-diffusion's", () => {
  it.each(Object.keys(kd.karras))('%s steps', (n) => {
    const steps = Number(n);
    const want = { karras: kd.karras[n], exponential: kd.exponential[n] };
    const got = {
      karras: karrasSigmas(kd.sigma_min, kd.sigma_max, steps),
      exponential: exponentialSigmas(kd.sigma_min, kd.sigma_max, steps),
    };
    for (const kind of ['karras', 'exponential'] as const) {
      expect(got[kind].length + 1).toBe(want[kind].length);
      expect(want[kind].at(-1)).toBe(0);
      got[kind].forEach((s, i) =>
        expect(Math.abs(s - want[kind][i]), `${kind} ${i}`).toBeLessThanOrEqual(1e-12 * s),
      );
    }
  });

  it("is what a plan for the Euler family steps through, ending at 0 (SD 1.5's training range)", () => {
    const cfg = parseSchedulerConfig({
      beta_start: 0.00085,
      beta_end: 0.012,
      beta_schedule: 'scaled_linear',
    });
    for (const schedule of ['karras', 'exponential'] as const) {
      const plan = planSampling(cfg, 'euler_a', 10, { schedule });
      const want = kd[schedule]['10'];
      expect(plan.sigmas.length).toBe(want.length);
      plan.sigmas.forEach((s, i) =>
        expect(Math.abs(s - want[i]), `${schedule} ${i}`).toBeLessThanOrEqual(1e-12 * want[i]),
      );
    }
  });
});
