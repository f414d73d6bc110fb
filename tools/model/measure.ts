// Recognising what a latent-shapes image shows, from its pixels alone: the background is the
// median colour of the border, the main object is the largest 4-connected region of pixels far
// from it, its colour is the nearest named colour to its median, and its shape is the template
// (circle, square, triangle, star, each drawn to fill the region's bounding box) with the best
// intersection-over-union. Mirrors measure() in dataset.py; the world is described by spec.json.

import spec from './spec.json' with { type: 'json' };

export type ColorName = keyof typeof spec.colors;
export const colorNames = Object.keys(spec.colors) as ColorName[];
export const shapeNames = spec.shapes as readonly string[];

export interface ImageLike {
  width: number;
  height: number;
  channels: number;
  data: ArrayLike<number>;
}

export interface Measurement {
  /** Null when no object stands out from the background. */
  color: ColorName | null;
  shape: string | null;
  background: ColorName | null;
  /** IoU of the best-fitting template. */
  iou: number;
  /** Bounding box of the object: x, y, width, height. */
  bbox: [number, number, number, number] | null;
  pixels: number;
}

/** Star with five points, pointing up, scaled so that its bounding box is [-1,1]^2. */
function starPolygon(innerRatio: number): Array<[number, number]> {
  const pts: Array<[number, number]> = [];
  for (let k = 0; k < 10; k++) {
    const r = k % 2 === 0 ? 1 : innerRatio;
    const a = -Math.PI / 2 + (k * Math.PI) / 5;
    pts.push([r * Math.cos(a), r * Math.sin(a)]);
  }
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  return pts.map(([x, y]) => [
    (x - (x0 + x1) / 2) / ((x1 - x0) / 2),
    (y - (y0 + y1) / 2) / ((y1 - y0) / 2),
  ]);
}

const star = starPolygon(spec.star_inner_ratio);

function insidePolygon(x: number, y: number, poly: Array<[number, number]>): boolean {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [x1, y1] = poly[j];
    const [x2, y2] = poly[i];
    if (y1 > y !== y2 > y && x < x1 + ((y - y1) * (x2 - x1)) / (y2 - y1)) inside = !inside;
  }
  return inside;
}

/** Is (u, v) inside `shape` drawn in its bounding box [-1,1]^2 (v grows downwards)? */
export function insideShape(shape: string, u: number, v: number): boolean {
  switch (shape) {
    case 'circle':
      return u * u + v * v <= 1;
    case 'square':
      return Math.abs(u) <= 1 && Math.abs(v) <= 1;
    case 'triangle':
      return v <= 1 && v >= -1 && Math.abs(u) <= (v + 1) / 2;
    case 'star':
      return insidePolygon(u, v, star);
    default:
      throw new Error(`unknown shape ${shape}`);
  }
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

function nearestColor(rgb: number[]): ColorName {
  let best: ColorName = colorNames[0];
  let bestD = Infinity;
  for (const name of colorNames) {
    const c = spec.colors[name];
    const d = (c[0] - rgb[0]) ** 2 + (c[1] - rgb[1]) ** 2 + (c[2] - rgb[2]) ** 2;
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  return best;
}

/** Colour distance from the background beyond which a pixel belongs to an object. */
const objectThreshold = 60;

export function measure(img: ImageLike): Measurement {
  const { width: w, height: h, channels: ch, data } = img;
  const px = (x: number, y: number, c: number) => data[(y * w + x) * ch + c];
  const border: Array<[number, number]> = [];
  for (let x = 0; x < w; x++) border.push([x, 0], [x, h - 1]);
  for (let y = 0; y < h; y++) border.push([0, y], [w - 1, y]);
  const bg = [0, 1, 2].map((c) => median(border.map(([x, y]) => px(x, y, c))));

  const mask = new Uint8Array(w * h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const d = Math.hypot(px(x, y, 0) - bg[0], px(x, y, 1) - bg[1], px(x, y, 2) - bg[2]);
      if (d > objectThreshold) mask[y * w + x] = 1;
    }

  // Largest 4-connected component.
  const label = new Int32Array(w * h).fill(-1);
  let bestLabel = -1;
  let bestSize = 0;
  let next = 0;
  for (let start = 0; start < w * h; start++) {
    if (!mask[start] || label[start] >= 0) continue;
    const id = next++;
    const stack = [start];
    label[start] = id;
    let size = 0;
    while (stack.length) {
      const p = stack.pop()!;
      size++;
      const x = p % w;
      const y = (p - x) / w;
      const neighbours = [
        x > 0 ? p - 1 : -1,
        x < w - 1 ? p + 1 : -1,
        y > 0 ? p - w : -1,
        y < h - 1 ? p + w : -1,
      ];
      for (const q of neighbours) {
        if (q >= 0 && mask[q] && label[q] < 0) {
          label[q] = id;
          stack.push(q);
        }
      }
    }
    if (size > bestSize) {
      bestSize = size;
      bestLabel = id;
    }
  }
  const background = nearestColor(bg);
  if (bestSize < 6)
    return { color: null, shape: null, background, iou: 0, bbox: null, pixels: bestSize };

  let x0 = w;
  let y0 = h;
  let x1 = -1;
  let y1 = -1;
  const channels: number[][] = [[], [], []];
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      if (label[y * w + x] !== bestLabel) continue;
      x0 = Math.min(x0, x);
      x1 = Math.max(x1, x);
      y0 = Math.min(y0, y);
      y1 = Math.max(y1, y);
      for (let c = 0; c < 3; c++) channels[c].push(px(x, y, c));
    }
  const color = nearestColor(channels.map(median));
  const bw = x1 - x0 + 1;
  const bh = y1 - y0 + 1;
  let shape = shapeNames[0];
  let bestIou = -1;
  for (const s of shapeNames) {
    let inter = 0;
    let union = 0;
    for (let y = 0; y < bh; y++)
      for (let x = 0; x < bw; x++) {
        const t = insideShape(s, ((x + 0.5) / bw) * 2 - 1, ((y + 0.5) / bh) * 2 - 1);
        const m = label[(y0 + y) * w + x0 + x] === bestLabel;
        if (t && m) inter++;
        if (t || m) union++;
      }
    const iou = inter / Math.max(1, union);
    if (iou > bestIou) {
      bestIou = iou;
      shape = s;
    }
  }
  return { color, shape, background, iou: bestIou, bbox: [x0, y0, bw, bh], pixels: bestSize };
}
