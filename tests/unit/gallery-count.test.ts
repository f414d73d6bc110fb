import { describe, expect, it } from 'vitest';
import { galleryCountLabel, roundEstimate } from '../../src/renderer/lib/gallery-count';

// The gallery's count says what the host knows: an exact total, an estimate, or a lower bound.
describe('galleryCountLabel', () => {
  const n = (x: number) => x.toLocaleString();

  it('shows exact totals as they are', () => {
    expect(galleryCountLabel(1, true, null)).toBe('1 image');
    expect(galleryCountLabel(0, true, null)).toBe('0 images');
    expect(galleryCountLabel(1234, true, 5000)).toBe(`${n(1234)} images`);
  });

  it('shows an estimate as "about", rounded to two digits', () => {
    expect(galleryCountLabel(101, false, 12_345)).toBe(`about ${n(12_000)} images`);
    expect(galleryCountLabel(101, false, 987)).toBe('about 990 images');
    expect(galleryCountLabel(61, false, 74)).toBe('about 74 images');
  });

  it('shows a lower bound with "+" when there is no estimate, or the pages passed it', () => {
    expect(galleryCountLabel(2100, false, null)).toBe(`${n(2100)}+ images`);
    expect(galleryCountLabel(3000, false, 2500)).toBe(`${n(3000)}+ images`);
  });

  it('rounds estimates to two significant digits', () => {
    expect([5, 99, 100, 149, 1_049, 995_000, 1_234_567].map(roundEstimate)).toEqual([
      5, 99, 100, 150, 1_000, 1_000_000, 1_200_000,
    ]);
  });
});
