// diffusers' safety decision (StableDiffusionSafetyChecker.forward) on hand-made cosines: the
// cases its loop distinguishes, each with the scores that loop would give.
import { describe, expect, it } from 'vitest';
import { safetyVerdicts } from '../../src/engine/safety/decision';

const f = (...v: number[]): Float32Array => Float32Array.from(v);

describe('safetyVerdicts', () => {
  it('flags an image whose concept cosine exceeds its threshold, and names the concept', () => {
    const [v] = safetyVerdicts(
      {
        specialCos: f(0.1, 0.1),
        specialThresholds: f(0.2, 0.2),
        conceptCos: f(0.1, 0.3, 0.19),
        conceptThresholds: f(0.2, 0.2, 0.2),
      },
      1,
    );
    expect(v).toEqual({
      flagged: true,
      specialScores: [-0.1, -0.1],
      conceptScores: [-0.1, 0.1, -0.01],
      badConcepts: [1],
    });
  });

  it('adds 0.01 after the first positive special-care score, to later special scores too', () => {
    const [v] = safetyVerdicts(
      {
        specialCos: f(0.195, 0.25, 0.195),
        specialThresholds: f(0.2, 0.2, 0.2),
        conceptCos: f(0.195),
        conceptThresholds: f(0.2),
      },
      1,
    );
    // The first special score stays -0.005 (no adjustment yet); the third becomes +0.005.
    expect(v.specialScores).toEqual([-0.005, 0.05, 0.005]);
    expect(v.conceptScores).toEqual([0.005]);
    expect(v.flagged).toBe(true);
  });

  it('rounds to 3 decimals before comparing: a score of +0.0004 does not flag', () => {
    const [v] = safetyVerdicts(
      {
        specialCos: f(0),
        specialThresholds: f(0.5),
        conceptCos: f(0.2004),
        conceptThresholds: f(0.2),
      },
      1,
    );
    expect(v.conceptScores).toEqual([0]);
    expect(v.flagged).toBe(false);
  });

  it('gives one verdict per image of a batch, row by row', () => {
    const verdicts = safetyVerdicts(
      {
        specialCos: f(0, 0),
        specialThresholds: f(0.5),
        conceptCos: f(0.1, 0.9),
        conceptThresholds: f(0.5),
      },
      2,
    );
    expect(verdicts.map((v) => v.flagged)).toEqual([false, true]);
  });

  it('refuses outputs that do not match the batch', () => {
    expect(() =>
      safetyVerdicts(
        {
          specialCos: f(0),
          specialThresholds: f(0.5),
          conceptCos: f(0.1),
          conceptThresholds: f(0.5),
        },
        2,
      ),
    ).toThrow(/do not match 2 images/);
  });
});
