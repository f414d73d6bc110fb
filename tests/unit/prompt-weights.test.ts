import { describe, expect, it } from 'vitest';
import {
  applyEmphasis,
  parsePromptAttention,
  type PromptSegment,
} from '../../src/engine/tokenizer';

const pairs = (segments: PromptSegment[]): Array<[string, number]> =>
  segments.map((s) => [s.text, s.weight]);

function expectSegments(text: string, expected: Array<[string, number]>): void {
  const got = pairs(parsePromptAttention(text));
  expect(got.map(([t]) => t)).toEqual(expected.map(([t]) => t));
  got.forEach(([, w], i) => expect(w).toBeCloseTo(expected[i][1], 10));
}

describe('parsePromptAttention', () => {
  it('parses the ENGINE-NOTES example exactly', () => {
    // The first "(" never closes, so everything after it also carries x1.1.
    const got = parsePromptAttention('a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).');
    expect(got.map((s) => s.text)).toEqual([
      'a ',
      'house',
      ' ',
      'on',
      ' a ',
      'hill',
      ', sun, ',
      'sky',
      '.',
    ]);
    const w = got.map((s) => s.weight);
    expect(w[0]).toBe(1);
    expect(w[1]).toBeCloseTo(1.573, 12); // 1.3 * 1.1 * 1.1
    expect(w[2]).toBeCloseTo(1.1, 12);
    expect(w[3]).toBeCloseTo(1.0, 12); // /1.1 then x1.1
    expect(w[4]).toBeCloseTo(1.1, 12);
    expect(w[5]).toBeCloseTo(0.55, 12); // 0.5 * 1.1
    expect(w[6]).toBeCloseTo(1.1, 12);
    expect(w[7]).toBeCloseTo(1.4641, 12); // 1.1^4
    expect(w[8]).toBeCloseTo(1.1, 12);
  });

  it('plain text has weight 1', () => {
    expectSegments('normal text', [['normal text', 1]]);
    expectSegments('', [['', 1]]);
  });

  it('round brackets multiply by 1.1, square ones divide by 1.1', () => {
    expectSegments('an (important) word', [
      ['an ', 1],
      ['important', 1.1],
      [' word', 1],
    ]);
    expectSegments('a [minor] word', [
      ['a ', 1],
      ['minor', 1 / 1.1],
      [' word', 1],
    ]);
  });

  it('explicit weights', () => {
    expectSegments('(red:1.3) circle', [
      ['red', 1.3],
      [' circle', 1],
    ]);
    expectSegments('( red : 0.25 )', [[' red ', 0.25]]);
    expectSegments('(red:-1) x', [
      ['red', -1],
      [' x', 1],
    ]);
    expectSegments('(red:+2.)', [['red', 2]]);
  });

  it('nesting multiplies', () => {
    expectSegments('((a))', [['a', 1.21]]);
    expectSegments('[[a]]', [['a', 1 / 1.21]]);
    expectSegments('((a:2) b)', [
      ['a', 2.2],
      [' b', 1.1],
    ]);
    expectSegments('(a [b] c)', [
      ['a ', 1.1],
      ['b', 1],
      [' c', 1.1],
    ]);
    expectSegments('[(a:1.5)]', [['a', 1.5 / 1.1]]);
  });

  it('merges adjacent runs of equal weight', () => {
    expectSegments('(unnecessary)(parens)', [['unnecessaryparens', 1.1]]);
    expectSegments('a (b) (c) d', [
      ['a ', 1],
      ['b', 1.1],
      [' ', 1],
      ['c', 1.1],
      [' d', 1],
    ]);
  });

  it('escapes brackets and backslashes', () => {
    expectSegments('\\(literal\\]', [['(literal]', 1]]);
    expectSegments('\\[x\\) (y)', [
      ['[x) ', 1],
      ['y', 1.1],
    ]);
    expectSegments('a \\\\ b', [['a \\ b', 1]]);
    expectSegments('(smile \\(emoticon\\))', [['smile (emoticon)', 1.1]]);
  });

  it('unclosed brackets apply to the end; stray closers are text', () => {
    expectSegments('(unbalanced', [['unbalanced', 1.1]]);
    expectSegments('[unbalanced', [['unbalanced', 1 / 1.1]]);
    expectSegments('a ((b) c', [
      ['a ', 1],
      ['b', 1.21],
      [' c', 1.1],
    ]);
    expectSegments('unbalanced)', [['unbalanced)', 1]]);
    expectSegments('x] y', [['x] y', 1]]);
    expectSegments('a :1.5) b', [['a :1.5) b', 1]]);
  });

  it('a colon that is not a weight stays text', () => {
    expectSegments('style: oil painting', [['style: oil painting', 1]]);
    expectSegments('(style: oil)', [['style: oil', 1.1]]);
  });

  it('BREAK becomes a marker between runs', () => {
    const got = parsePromptAttention('a red circle BREAK a blue square');
    expect(got).toEqual([
      { text: 'a red circle', weight: 1 },
      { text: 'BREAK', weight: -1, break: true },
      { text: 'a blue square', weight: 1 },
    ]);
    expect(parsePromptAttention('aBREAKb')).toEqual([{ text: 'aBREAKb', weight: 1 }]);
    expect(parsePromptAttention('a break b')).toEqual([{ text: 'a break b', weight: 1 }]);
  });

  it('a BREAK inside brackets stays a break and is never weighted', () => {
    const got = parsePromptAttention('(a BREAK b)');
    expect(got.map((s) => s.break === true)).toEqual([false, true, false]);
    expect(got[1].weight).toBe(-1);
    expect(got[0].weight).toBeCloseTo(1.1, 12);
    expect(got[2].weight).toBeCloseTo(1.1, 12);
  });
});

describe('applyEmphasis', () => {
  const mean = (a: Float32Array): number => a.reduce((s, x) => s + x, 0) / a.length;

  // Deterministic, non-zero-mean hidden states [T=4, D=3].
  const hidden = Float32Array.from([0.5, 1, 1.5, -0.2, 0.3, 2, 1, 1, 1, 0.1, -0.4, 0.9]);

  it('weights each token, then restores the chunk mean', () => {
    const weights = [1, 1.5, 0.5, 1];
    const out = applyEmphasis(hidden, [4, 3], weights);
    expect(mean(out)).toBeCloseTo(mean(hidden), 6);
    // Every value is z * w * s with one common scale s.
    const s = out[0] / hidden[0];
    for (let t = 0; t < 4; t++) {
      for (let d = 0; d < 3; d++) {
        expect(out[t * 3 + d]).toBeCloseTo(hidden[t * 3 + d] * weights[t] * s, 5);
      }
    }
    // Weighted token 1 grows relative to the unweighted token 0; token 2 shrinks.
    expect(out[3] / out[0]).toBeCloseTo((hidden[3] * 1.5) / hidden[0], 5);
    expect(s).not.toBeCloseTo(1, 3);
  });

  it('leaves unit weights unchanged and does not modify its input', () => {
    const copy = Float32Array.from(hidden);
    const out = applyEmphasis(hidden, [1, 4, 3], [1, 1, 1, 1]);
    expect(out).toEqual(hidden);
    expect(out).not.toBe(hidden);
    applyEmphasis(hidden, [4, 3], [2, 1, 1, 1]);
    expect(hidden).toEqual(copy);
  });

  it('restores the mean per batch item, with shared or per-item weights', () => {
    const batch = new Float32Array(24);
    batch.set(hidden, 0);
    batch.set(
      hidden.map((x) => x * 2 + 1),
      12,
    );
    const shared = applyEmphasis(batch, [2, 4, 3], [1, 2, 1, 1]);
    expect(mean(shared.subarray(0, 12))).toBeCloseTo(mean(batch.subarray(0, 12)), 6);
    expect(mean(shared.subarray(12))).toBeCloseTo(mean(batch.subarray(12)), 6);
    expect(shared.subarray(0, 12)).toEqual(applyEmphasis(hidden, [4, 3], [1, 2, 1, 1]));
    const perItem = applyEmphasis(batch, [2, 4, 3], [1, 2, 1, 1, 1, 1, 1, 1]);
    expect(perItem.subarray(0, 12)).toEqual(shared.subarray(0, 12));
    expect(perItem.subarray(12)).toEqual(batch.subarray(12));
  });

  it('works on a CLIP-shaped chunk with weights from the tokenizer layout', () => {
    const T = 77;
    const D = 8;
    const h = Float32Array.from({ length: T * D }, (_, i) => Math.sin(i * 0.37) + 0.2);
    const w = new Array<number>(T).fill(1);
    w[2] = 1.573;
    w[3] = 0.55;
    const out = applyEmphasis(h, [1, T, D], w);
    expect(mean(out)).toBeCloseTo(mean(h), 5);
  });

  it('rejects mismatched shapes', () => {
    expect(() => applyEmphasis(hidden, [5, 3], [1, 1, 1, 1, 1])).toThrow(/do not match/);
    expect(() => applyEmphasis(hidden, [4, 3], [1, 1])).toThrow(/weights/);
    expect(() => applyEmphasis(hidden, [12], [1])).toThrow(/dims/);
  });
});
