/**
 * Layout of a virtualized grid of square cells: only the rows in view (plus a margin) exist in
 * the DOM, so 100,000 items cost what 60 do. The component binds the viewport's size and scroll
 * position; everything else is derived.
 */
export class VirtualGrid {
  width = $state(0);
  height = $state(0);
  scrollTop = $state(0);
  /** Smallest cell side in CSS pixels (the thumbnail size slider). */
  cellMin = $state(180);
  readonly gap = 8;
  readonly overscanRows = 2;

  columns = $derived(Math.max(1, Math.floor((this.width + this.gap) / (this.cellMin + this.gap))));
  cell = $derived(
    Math.max(40, Math.floor((this.width - this.gap * (this.columns - 1)) / this.columns)),
  );
  rowHeight = $derived(this.cell + this.gap);
  rows = $derived.by(() => Math.ceil(this.count() / this.columns));
  totalHeight = $derived(Math.max(0, this.rows * this.rowHeight - this.gap));
  /** Indices [start, end) to render. */
  range = $derived.by(() => {
    const first = Math.max(0, Math.floor(this.scrollTop / this.rowHeight) - this.overscanRows);
    const last = Math.min(
      this.rows,
      Math.ceil((this.scrollTop + this.height) / this.rowHeight) + this.overscanRows,
    );
    return {
      start: first * this.columns,
      end: Math.min(this.count(), Math.max(first, last) * this.columns),
    };
  });

  constructor(private readonly count: () => number) {}

  position(index: number): { top: number; left: number } {
    const row = Math.floor(index / this.columns);
    const col = index % this.columns;
    return { top: row * this.rowHeight, left: col * (this.cell + this.gap) };
  }

  /** The scrollTop that brings `index` into view (or the current one when it already is). */
  scrollFor(index: number): number {
    const { top } = this.position(index);
    if (top < this.scrollTop) return top;
    if (top + this.cell > this.scrollTop + this.height) return top + this.cell - this.height;
    return this.scrollTop;
  }
}
