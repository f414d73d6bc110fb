/**
 * The plan of a word with a tag or LoRA in rating order (rating-order.ts, bandsOrAll): band
 * walks within the links' times, or every match read at once, for the sizes of the
 * 1,000,000-image library of npm run bench:library, where the figures behind its costs were
 * measured (a word with a tag: 10 ms at once against 3 band walks of 9 ms; a word with a LoRA:
 * the top band's walk 11 ms against 40 ms at once).
 */
import { describe, expect, it } from 'vitest';
import { type RatingBands, bandsOrAll } from '../../src/main/library/rating-order';

/** Half the images unrated, a tenth at each star; no column filter. */
const all = [500_000, 100_000, 100_000, 100_000, 100_000, 100_000];
const bands: RatingBands = { all, kept: all };
const page = 101;

describe('bandsOrAll', () => {
  it('reads the few matches of a word with a tag at once', () => {
    // "cat" (50,000 images) and a 10,000-image tag: about 500 matches, 50 of them 5-star.
    expect(bandsOrAll(bands, 5, 50_000, page, [10_000])).toBe('all');
  });

  it('walks the top band for a word with a common LoRA', () => {
    // "dragon" and a 50,000-image LoRA: about 2,500 matches, 250 of them 5-star.
    expect(bandsOrAll(bands, 5, 50_000, page, [50_000])).toBe('bands');
  });

  it('walks one band after a cursor in the unrated half, whose matches fill a page', () => {
    expect(bandsOrAll(bands, 0, 50_000, page, [50_000])).toBe('bands');
  });

  it('reads at once when the column filters leave the top bands nearly empty', () => {
    const thin: RatingBands = { all, kept: [250_000, 1_000, 1_000, 1_000, 1_000, 1_000] };
    expect(bandsOrAll(thin, 5, 50_000, page, [50_000])).toBe('all');
  });

  it('reads at once in an empty library', () => {
    expect(bandsOrAll({ all: [0, 0, 0, 0, 0, 0], kept: [0, 0, 0, 0, 0, 0] }, 5, 0, page, [1])).toBe(
      'all',
    );
  });
});
