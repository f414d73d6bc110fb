/**
 * Which item each recycled cell of the virtual grid shows. The grid keeps a fixed pool of
 * `poolSize` cells (a whole number of rows, as many as can be in view plus the margin) and
 * item `i` always lands in cell `i % poolSize`: scrolling by a row hands that row's cells to the
 * row coming into view and leaves every other cell as it was, so nothing is created, removed or
 * moved in the DOM and only the cells whose item changed are touched.
 */

/** The pool's size for a viewport: every row that can be partly in view, plus `overscanRows` on each side. */
export function poolSizeFor(
  viewportHeight: number,
  rowHeight: number,
  columns: number,
  overscanRows: number,
): number {
  const rows = Math.ceil(Math.max(0, viewportHeight) / rowHeight) + 1 + 2 * overscanRows;
  return rows * columns;
}

/**
 * The item index each cell shows for the range [start, end), -1 for a cell with nothing to
 * show. The range must be at most `poolSize` long (then no two items share a cell).
 */
export function assignSlots(start: number, end: number, poolSize: number): number[] {
  if (end - start > poolSize)
    throw new RangeError(`A range of ${end - start} items does not fit ${poolSize} cells.`);
  const slots = new Array<number>(poolSize).fill(-1);
  for (let i = start; i < end; i++) slots[i % poolSize] = i;
  return slots;
}

/** Rows between two anchors (see anchorRowFor). */
export const anchorEvery = 1024;

/**
 * The row that cell positions are measured from: `row` rounded down to a multiple of `every`.
 * Cells sit at small offsets below it and one transform places the whole layer, so the cells'
 * own positions stay far below the tallest layout Chromium can do (about 33.5 million px) in
 * any gallery, and change only when the anchor does (once every `every` rows).
 */
export function anchorRowFor(row: number, every = anchorEvery): number {
  return Math.max(0, Math.floor(row / every) * every);
}
