/**
 * Canny edge detection (Canny 1986, "A Computational Approach to Edge Detection"), with the
 * choices of OpenCV's cv2.Canny(image, low, high) on an 8-bit image as ControlNet's annotator
 * calls it (L1 gradient, aperture 3):
 *  - 3x3 Sobel derivatives of each channel with the border replicated (BORDER_REPLICATE); per
 *    pixel the channel with the largest |dx| + |dy| gives the gradient (OpenCV on colour images);
 *  - non-maximum suppression along the gradient quantised to 0, 45, 90, 135 degrees by
 *    OpenCV's fixed-point tan(22.5°) comparisons, a pixel kept when its magnitude exceeds the previous
 *    neighbour and is at least the next one (both strict on diagonals: OpenCV's tie rules), the
 *    magnitude outside the image counting as 0;
 *  - hysteresis: magnitudes above `high` are edges, those above `low` are edges when 8-connected
 *    to one. Output: 255 on edges, 0 elsewhere, one channel.
 * ControlNet's canny annotator blurs nothing before (the thresholds do the work), so neither do we.
 */
import type { PixelImage } from './pixels';

// OpenCV's fixed-point tan(22.5°): round(0.41421356 * 2^15).
const SHIFT = 32768;
const TG22 = 13573;

function clamp(i: number, n: number): number {
  return i < 0 ? 0 : i >= n ? n - 1 : i;
}

/** Edges of `img` (any channel count) as a one-channel image of 0 and 255. */
export function canny(img: PixelImage, low: number, high: number): PixelImage {
  const { width: w, height: h, channels } = img;
  const ch = channels === 4 ? 3 : channels;
  const dx = new Int32Array(w * h);
  const dy = new Int32Array(w * h);
  const mag = new Int32Array(w * h);
  const px = (x: number, y: number, c: number): number =>
    img.data[(clamp(y, h) * w + clamp(x, w)) * channels + c];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let best = -1;
      for (let c = 0; c < ch; c++) {
        const gx =
          px(x + 1, y - 1, c) -
          px(x - 1, y - 1, c) +
          2 * (px(x + 1, y, c) - px(x - 1, y, c)) +
          px(x + 1, y + 1, c) -
          px(x - 1, y + 1, c);
        const gy =
          px(x - 1, y + 1, c) -
          px(x - 1, y - 1, c) +
          2 * (px(x, y + 1, c) - px(x, y - 1, c)) +
          px(x + 1, y + 1, c) -
          px(x + 1, y - 1, c);
        const m = Math.abs(gx) + Math.abs(gy);
        if (m > best) {
          best = m;
          dx[y * w + x] = gx;
          dy[y * w + x] = gy;
        }
      }
      mag[y * w + x] = best;
    }
  }
  // OpenCV compares integer magnitudes against floor(low) and floor(high).
  const lo = Math.floor(low);
  const hi = Math.floor(high);
  const state = new Uint8Array(w * h); // 0 none, 1 weak candidate, 2 edge
  const stack: number[] = [];
  const at = (x: number, y: number): number =>
    x < 0 || y < 0 || x >= w || y >= h ? 0 : mag[y * w + x];
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = y * w + x;
      const m = mag[i];
      if (m <= lo) continue;
      const ax = Math.abs(dx[i]);
      const ay = Math.abs(dy[i]);
      let prev: number;
      let next: number;
      const tg22x = ax * TG22;
      if (ay * SHIFT < tg22x) {
        prev = at(x - 1, y);
        next = at(x + 1, y);
      } else if (ay * SHIFT > tg22x + ax * 2 * SHIFT) {
        prev = at(x, y - 1);
        next = at(x, y + 1);
      } else if (dx[i] < 0 !== dy[i] < 0) {
        prev = at(x + 1, y - 1);
        next = at(x - 1, y + 1);
      } else {
        prev = at(x - 1, y - 1);
        next = at(x + 1, y + 1);
      }
      // Horizontal and vertical: strictly above the previous, at least the next; diagonal: both strict.
      const diagonal = !(ay * SHIFT < tg22x) && !(ay * SHIFT > tg22x + ax * 2 * SHIFT);
      if (!(m > prev && (diagonal ? m > next : m >= next))) continue;
      if (m > hi) {
        state[i] = 2;
        stack.push(i);
      } else state[i] = 1;
    }
  }
  while (stack.length > 0) {
    const i = stack.pop()!;
    const x = i % w;
    const y = (i - x) / w;
    for (let oy = -1; oy <= 1; oy++) {
      for (let ox = -1; ox <= 1; ox++) {
        const nx = x + ox;
        const ny = y + oy;
        if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
        const j = ny * w + nx;
        if (state[j] === 1) {
          state[j] = 2;
          stack.push(j);
        }
      }
    }
  }
  const out = new Uint8Array(w * h);
  for (let i = 0; i < out.length; i++) out[i] = state[i] === 2 ? 255 : 0;
  return { width: w, height: h, channels: 1, data: out };
}
