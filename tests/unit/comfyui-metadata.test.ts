import sharp from 'sharp';
import { beforeAll, describe, expect, test } from 'vitest';
import { addPngTextChunks, readGenerationMetadata } from '../../src/main/library/png-metadata';
import { apiGraphFromWorkflow } from '../../src/main/library/png/comfyui-workflow';
import {
  comfyCustomAdvancedGraph,
  comfyCustomAdvancedWorkflow,
  comfyCustomGraph,
} from '../fixtures/comfyui';

// ComfyUI PNGs whose graphs sample with SamplerCustom / SamplerCustomAdvanced: the settings come
// from the noise, guider, sampler and sigmas nodes linked to the sampler.

let basePng: Uint8Array;
beforeAll(async () => {
  basePng = new Uint8Array(
    await sharp({ create: { width: 8, height: 8, channels: 3, background: '#345' } })
      .png()
      .toBuffer(),
  );
});

const read = (chunks: Record<string, unknown>) =>
  readGenerationMetadata(
    addPngTextChunks(
      basePng,
      Object.entries(chunks).map(([keyword, v]) => ({ keyword, text: JSON.stringify(v) })),
    ),
  );

describe('SamplerCustomAdvanced', () => {
  test('RandomNoise, CFGGuider, KSamplerSelect and BasicScheduler', () => {
    const r = read({
      prompt: comfyCustomAdvancedGraph({
        positive: 'a fox in the snow',
        negative: 'blurry',
        seed: 219670278747233,
        samplerName: 'dpmpp_2m',
        sigmas: {
          class_type: 'BasicScheduler',
          inputs: { scheduler: 'karras', steps: 28, denoise: 0.8, model: ['4', 0] },
        },
      }),
    });
    expect(r.source).toBe('comfyui');
    expect(r.settings).toEqual({
      seed: 219670278747233,
      steps: 28,
      guidance: 4.5,
      sampler: 'dpmpp_2m',
      schedule: 'karras',
      strength: 0.8,
      prompt: 'a fox in the snow',
      negativePrompt: 'blurry',
      width: 1024,
      height: 832,
    });
    expect(r.raw).toMatchObject({
      class_type: 'SamplerCustomAdvanced',
      noise: 'RandomNoise',
      guider: 'CFGGuider',
      'sampler node': 'KSamplerSelect',
      'sigmas node': 'BasicScheduler',
      sampler_name: 'dpmpp_2m',
      scheduler: 'karras',
      ckpt_name: 'sd3.5_medium.safetensors',
    });
  });

  test('BasicGuider: the conditioning alone, guidance 1, no negative prompt', () => {
    const r = read({
      prompt: comfyCustomAdvancedGraph({ positive: 'flux prompt', guider: 'BasicGuider' }),
    });
    expect(r.settings).toMatchObject({
      prompt: 'flux prompt',
      guidance: 1,
      sampler: 'euler',
      steps: 20,
    });
    expect(r.settings.negativePrompt).toBeUndefined();
  });

  test('DualCFGGuider: cond1 is the prompt, cfg_conds the guidance, cond2 kept in raw', () => {
    const r = read({
      prompt: comfyCustomAdvancedGraph({
        positive: 'a harbour',
        negative: 'text',
        guider: 'DualCFGGuider',
      }),
    });
    expect(r.settings).toMatchObject({ prompt: 'a harbour', negativePrompt: 'text', guidance: 5 });
    expect(r.raw).toMatchObject({ cond2: 'style: watercolor', cfg_cond2_negative: '2' });
  });

  test('DisableNoise: no seed made the image', () => {
    const graph = comfyCustomAdvancedGraph({ positive: 'x' });
    graph['25'] = { class_type: 'DisableNoise', inputs: {} } as never;
    const r = read({ prompt: graph });
    expect(r.settings.seed).toBeUndefined();
    expect(r.raw.noise).toBe('DisableNoise');
  });

  test('SplitSigmas: the schedule and step count of the scheduler, the split kept in raw', () => {
    const r = read({ prompt: comfyCustomAdvancedGraph({ positive: 'x', splitAt: 12 }) });
    expect(r.settings).toMatchObject({ steps: 20, sampler: 'euler' });
    expect(r.raw).toMatchObject({ 'sigmas split': 'SplitSigmas low', 'split at': '12' });
  });
});

describe('SamplerCustom', () => {
  test('its own seed and cfg; steps and schedule from KarrasScheduler', () => {
    const r = read({
      prompt: comfyCustomGraph({
        positive: 'an owl',
        negative: 'lowres',
        seed: 7,
        cfg: 6,
        samplerName: 'dpmpp_2m',
        sigmas: {
          class_type: 'KarrasScheduler',
          inputs: { steps: 30, sigma_max: 14.614642, sigma_min: 0.0291675, rho: 7 },
        },
      }),
    });
    expect(r.settings).toEqual({
      seed: 7,
      steps: 30,
      guidance: 6,
      sampler: 'dpmpp_2m',
      schedule: 'karras',
      prompt: 'an owl',
      negativePrompt: 'lowres',
      width: 1024,
      height: 832,
    });
    expect(r.raw).toMatchObject({
      'sigmas node': 'KarrasScheduler',
      scheduler: 'karras',
      sigma_max: '14.614642',
      sigma_min: '0.0291675',
    });
  });

  test('ExponentialScheduler and SDTurboScheduler give their step counts and schedule names', () => {
    const exp = read({
      prompt: comfyCustomGraph({
        positive: 'x',
        sigmas: {
          class_type: 'ExponentialScheduler',
          inputs: { steps: 18, sigma_max: 14.6, sigma_min: 0.03 },
        },
      }),
    });
    expect(exp.settings.steps).toBe(18);
    expect(exp.raw).toMatchObject({
      scheduler: 'exponential',
      'sigmas node': 'ExponentialScheduler',
    });
    const turbo = read({
      prompt: comfyCustomGraph({
        positive: 'x',
        cfg: 1,
        samplerName: 'euler_ancestral',
        sigmas: {
          class_type: 'SDTurboScheduler',
          inputs: { steps: 1, denoise: 1, model: ['4', 0] },
        },
      }),
    });
    expect(turbo.settings).toMatchObject({ steps: 1, guidance: 1, strength: 1, seed: 42 });
    // SD Turbo's schedule (fixed timesteps) is none of ours: the sampler stays out, named in raw.
    expect(turbo.settings.sampler).toBeUndefined();
    expect(turbo.raw).toMatchObject({ scheduler: 'sd_turbo', sampler_name: 'euler_ancestral' });
  });

  test('add_noise false: no seed', () => {
    const r = read({ prompt: comfyCustomGraph({ positive: 'x', addNoise: false, seed: 5 }) });
    expect(r.settings.seed).toBeUndefined();
  });
});

describe('the editor workflow', () => {
  test('a PNG with only the workflow: widgets by name, links past Reroute, seed from its widget', () => {
    const r = read({
      workflow: comfyCustomAdvancedWorkflow({ positive: 'a tram in fog', seed: 4242 }),
    });
    expect(r.source).toBe('comfyui');
    expect(r.settings).toEqual({
      seed: 4242,
      steps: 28,
      guidance: 5.5,
      sampler: 'dpmpp_2m',
      schedule: 'karras',
      strength: 1,
      prompt: 'a tram in fog',
      negativePrompt: 'blurry',
      width: 1024,
      height: 832,
    });
  });

  test('the prompt graph wins over the workflow', () => {
    const r = read({
      prompt: comfyCustomAdvancedGraph({ positive: 'from the prompt' }),
      workflow: comfyCustomAdvancedWorkflow({ positive: 'from the workflow', seed: 1 }),
    });
    expect(r.settings.prompt).toBe('from the prompt');
  });

  test('hostile workflows: odd ids and types, reroute loops, wrong shapes', () => {
    const loop = {
      nodes: [
        {
          id: '__proto__',
          type: 'constructor',
          inputs: [{ name: '__proto__', link: 1 }],
          widgets_values: [],
        },
        { id: 2, type: 'Reroute', inputs: [{ name: '', link: 2 }] },
        { id: 3, type: 'Reroute', inputs: [{ name: '', link: 1 }] },
        { id: 4, type: 'KSampler', inputs: [{ name: 'positive', link: 1 }], widgets_values: ['x'] },
      ],
      links: [
        [1, 2, 0, 3, 0, 'CONDITIONING'],
        [2, 3, 0, 2, 0, 'CONDITIONING'],
      ],
    };
    const graph = apiGraphFromWorkflow(loop)!;
    expect(Object.getPrototypeOf(graph)).toBe(Object.prototype);
    expect(Object.keys(graph)).toEqual(['4', '__proto__']);
    expect(read({ workflow: loop }).source).toBe('comfyui');
    for (const bad of [null, 3, 'x', [], { nodes: 1 }, { nodes: [], links: {} }])
      expect(apiGraphFromWorkflow(bad)).toBeUndefined();
    // A sigmas chain that loops back on itself ends.
    const cyclic = comfyCustomAdvancedGraph({ positive: 'x', splitAt: 3 });
    (cyclic as Record<string, unknown>)['18'] = {
      class_type: 'SplitSigmas',
      inputs: { step: 3, sigmas: ['18', 1] },
    };
    expect(read({ prompt: cyclic }).settings.prompt).toBe('x');
  });
});
