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
  /** The height all rows would take. */
  contentHeight = $derived(Math.max(0, this.rows * this.rowHeight - this.gap));
  /**
   * The scrolled element's height: the content's, up to maxHeight. Chromium lays out at most
   * about 33.5 million CSS pixels (its LayoutUnit is a 32-bit 1/64 px), which a million images in
   * five columns pass (37.6 million): past it the last rows could not be scrolled to. Taller
   * content scrolls a sizer of maxHeight, each scrolled pixel moving `scale` content pixels.
   */
  readonly maxHeight = 16_000_000;
  totalHeight = $derived(Math.min(this.contentHeight, this.maxHeight));
  scale = $derived(
    this.totalHeight > this.height && this.contentHeight > this.totalHeight
      ? (this.contentHeight - this.height) / (this.totalHeight - this.height)
      : 1,
  );
  /** Where the viewport's top lies in the content. */
  contentTop = $derived(this.scrollTop * this.scale);
  /** Indices [start, end) to render. */
  range = $derived.by(() => {
    const first = Math.max(0, Math.floor(this.contentTop / this.rowHeight) - this.overscanRows);
    const last = Math.min(
      this.rows,
      Math.ceil((this.contentTop + this.height) / this.rowHeight) + this.overscanRows,
    );
    return {
      start: first * this.columns,
      end: Math.min(this.count(), Math.max(first, last) * this.columns),
    };
  });

  constructor(private readonly count: () => number) {}

  /** A cell's place in the sizer (shifted with the viewport when the content is scaled). */
  position(index: number): { top: number; left: number } {
    const row = Math.floor(index / this.columns);
    const col = index % this.columns;
    const shift = this.scale === 1 ? 0 : this.contentTop - this.scrollTop;
    return { top: row * this.rowHeight - shift, left: col * (this.cell + this.gap) };
  }

  /** The scrollTop that brings `index` into view (or the current one when it already is). */
  scrollFor(index: number): number {
    const top = Math.floor(index / this.columns) * this.rowHeight;
    if (top < this.contentTop) return top / this.scale;
    if (top + this.cell > this.contentTop + this.height)
      return (top + this.cell - this.height) / this.scale;
    return this.scrollTop;
  }
}
