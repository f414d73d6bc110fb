import { describe, expect, it } from 'vitest';
import { anchorRowFor, assignSlots, poolSizeFor } from '../../src/renderer/lib/grid-slots';

describe('the virtual grid’s recycled cells', () => {
  it('sizes the pool to every row that can show, plus the margins', () => {
    // 1000 px of 190 px rows: 6 rows can be partly in view (5.26 rounded up, plus one when
    // scrolled between rows), plus 2 above and 2 below; 10 columns.
    expect(poolSizeFor(1000, 190, 10, 2)).toBe(110);
    expect(poolSizeFor(0, 190, 3, 0)).toBe(3);
  });

  it('puts item i in cell i mod pool, so scrolling a row re-fills only that row’s cells', () => {
    const pool = 12; // 3 columns, 4 rows
    const before = assignSlots(30, 42, pool);
    const after = assignSlots(33, 45, pool); // one row further down
    expect(before).toEqual([36, 37, 38, 39, 40, 41, 30, 31, 32, 33, 34, 35]);
    const changed = before.flatMap((index, cell) => (after[cell] === index ? [] : [cell]));
    // The row that left (30-32) hands its three cells to the row that came in (42-44).
    expect(changed).toEqual([6, 7, 8]);
    expect(changed.map((cell) => after[cell])).toEqual([42, 43, 44]);
  });

  it('leaves the cells past the end of the gallery empty', () => {
    expect(assignSlots(0, 4, 6)).toEqual([0, 1, 2, 3, -1, -1]);
    expect(assignSlots(5, 5, 3)).toEqual([-1, -1, -1]);
  });

  it('refuses a range longer than the pool (two items would share a cell)', () => {
    expect(() => assignSlots(0, 7, 6)).toThrow(/7 items does not fit 6 cells/);
  });

  it('anchors cell positions at a multiple of the anchor step', () => {
    expect(anchorRowFor(0)).toBe(0);
    expect(anchorRowFor(1023)).toBe(0);
    expect(anchorRowFor(1024)).toBe(1024);
    expect(anchorRowFor(199_999, 1000)).toBe(199_000);
  });
});
