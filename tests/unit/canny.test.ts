// The canny preprocessor against OpenCV's cv2.Canny on a recorded fixture image
// (tools/convert-reference/make_canny.py): the edge maps must be the same pixel for pixel.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { canny } from '../../src/engine/image/canny';

interface CannyFixture {
  width: number;
  height: number;
  rgb: string;
  cases: { low: number; high: number; edges: string }[];
}

const fixture = JSON.parse(
  readFileSync(path.join(__dirname, '../fixtures/reference/canny.json'), 'utf8'),
) as CannyFixture;
const image = {
  width: fixture.width,
  height: fixture.height,
  channels: 3 as const,
  data: new Uint8Array(Buffer.from(fixture.rgb, 'base64')),
};

describe('canny matches OpenCV', () => {
  it.each(fixture.cases)('thresholds $low / $high', ({ low, high, edges }) => {
    const want = new Uint8Array(Buffer.from(edges, 'base64'));
    const got = canny(image, low, high);
    expect(got.channels).toBe(1);
    expect(got.width).toBe(fixture.width);
    let edgeCount = 0;
    const wrong: number[] = [];
    for (let i = 0; i < want.length; i++) {
      if (want[i]) edgeCount++;
      if (got.data[i] !== want[i]) wrong.push(i);
    }
    expect(edgeCount).toBeGreaterThan(50);
    expect(wrong).toEqual([]);
  });

  it('finds no edges in a flat image', () => {
    const flat = {
      width: 16,
      height: 16,
      channels: 1 as const,
      data: new Uint8Array(256).fill(90),
    };
    expect(canny(flat, 10, 20).data.every((v) => v === 0)).toBe(true);
  });
});
