import { anchorEvery, anchorRowFor, assignSlots, poolSizeFor } from './grid-slots';

/**
 * Layout of a virtualized grid of square cells: only the rows in view (plus a margin) exist in
 * the DOM, so a million items cost what 60 do. The component binds the viewport's size and
 * scroll position; everything else is derived. Scrolling within a row changes nothing but
 * `layerY` (and that only in a scaled grid); crossing a row changes `start`/`end`, which hand
 * one row of the recycled cells (`slots`) to new items.
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
  /** How many cells the grid keeps: every row that fits the viewport, plus the margins. */
  poolSize = $derived(poolSizeFor(this.height, this.rowHeight, this.columns, this.overscanRows));
  /** The first row to render (the margin included). A number, so a scroll within a row is no change. */
  firstRow = $derived(
    Math.max(0, Math.floor(this.contentTop / this.rowHeight) - this.overscanRows),
  );
  /**
   * The row after the last one to render: always a pool's worth of rows after the first (the
   * pool covers the view and both margins), so a row leaving hands its cells to the row coming
   * in at once, never a frame later through cells removed and made again.
   */
  lastRow = $derived(Math.min(this.rows, this.firstRow + Math.ceil(this.poolSize / this.columns)));
  /** Indices [start, end) to render. */
  start = $derived(this.firstRow * this.columns);
  end = $derived.by(() =>
    Math.min(this.count(), Math.max(this.firstRow, this.lastRow) * this.columns),
  );
  /** The item index each recycled cell shows (-1: none); see grid-slots.ts. */
  slots = $derived(assignSlots(this.start, this.end, this.poolSize));
  /** The row cell positions are measured from (see anchorRowFor). */
  anchorRow = $derived(anchorRowFor(this.firstRow));
  /**
   * Where the layer holding the cells sits in the sizer: at the anchor row, moved up by how
   * far the content has scrolled past the sizer in a scaled grid (every frame there; one
   * transform for all cells).
   */
  layerY = $derived(this.anchorRow * this.rowHeight - (this.contentTop - this.scrollTop));

  /**
   * The layer's height: every place a cell can take below its anchor. Fixed while scrolling, so
   * Chromium keeps the layer as one composited layer (a layer with no height of its own is split
   * into one per row) and never has to resize it.
   */
  layerHeight = $derived((anchorEvery + Math.ceil(this.poolSize / this.columns)) * this.rowHeight);

  constructor(private readonly count: () => number) {}

  /** A cell's place in the layer (see layerY). */
  position(index: number): { top: number; left: number } {
    const row = Math.floor(index / this.columns);
    const col = index % this.columns;
    return { top: (row - this.anchorRow) * this.rowHeight, left: col * (this.cell + this.gap) };
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
