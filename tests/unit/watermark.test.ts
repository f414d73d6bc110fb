import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import {
  SD1_WATERMARK,
  SDXL_WATERMARK,
  WATERMARK_MESSAGES,
  checkWatermark,
  decodeWatermarkBits,
  embedWatermark,
  findWatermark,
  maxBitErrors,
  type PixelImage,
} from '../../src/engine/image';

// Fixtures recorded by tools/watermark/record.py with the invisible-watermark library
// (ShieldMnt/invisible-watermark v0.2.0, dwtDct): lib-* it marked, library-read.json what its
// decoder read from every fixture PNG (136 and 48 bits) and from ours after OpenCV re-encodes.
const dir = path.join(__dirname, '..', 'fixtures', 'watermark');

async function load(name: string | Buffer): Promise<PixelImage> {
  const { data, info } = await sharp(typeof name === 'string' ? path.join(dir, name) : name)
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, channels: 3, data: new Uint8Array(data) };
}

function psnr(a: PixelImage, b: PixelImage): number {
  let sum = 0;
  for (let k = 0; k < a.data.length; k++) sum += (a.data[k]! - b.data[k]!) ** 2;
  return 10 * Math.log10((255 * 255) / (sum / a.data.length));
}

const sizes = ['256', '512x384'];
type Reads = Record<string, Record<string, { sd1: number[]; sdxl: number[] }>>;
const libraryRead = JSON.parse(
  fs.readFileSync(path.join(dir, 'library-read.json'), 'utf8'),
) as Reads;
const errors = (a: ArrayLike<number>, b: ArrayLike<number>) =>
  Array.from(a).filter((x, k) => x !== b[k]).length;

describe('watermark (invisible-watermark dwtDct)', () => {
  it('has the reference scripts’ messages', () => {
    expect(SD1_WATERMARK.bits.length).toBe(136);
    expect(Array.from(SD1_WATERMARK.bits.slice(0, 8)).join('')).toBe('01010011'); // 'S'
    expect(SDXL_WATERMARK.bits.length).toBe(48);
    expect(parseInt(Array.from(SDXL_WATERMARK.bits).join(''), 2).toString(16)).toBe('b3ec907bb19e');
  });

  for (const size of sizes)
    for (const m of WATERMARK_MESSAGES) {
      it(`reads the library's ${m.id} mark on ${size} as the library does`, async () => {
        const check = checkWatermark(await load(`lib-${m.id}-${size}.png`));
        // The library's own encoder loses bits on busy images; found iff its decoder's reading
        // is clearly not chance.
        const theirs = libraryRead[`lib-${m.id}-${size}.png`]!.png![m.id];
        const found = errors(theirs, m.bits) <= maxBitErrors(m.bits.length);
        expect(check.message?.id).toBe(found ? m.id : undefined);
      });

      it(`marks ${size} with ${m.id} as the library reads it, above 40 dB`, async () => {
        const source = await load(`source-${size}.png`);
        const marked = embedWatermark(source, m.bits);
        // The recorded library reading applies to exactly these pixels.
        const recorded = await load(`ours-${m.id}-${size}.png`);
        expect(Buffer.from(marked.data).equals(Buffer.from(recorded.data))).toBe(true);
        expect(libraryRead[`ours-${m.id}-${size}.png`]!.png![m.id]).toEqual(Array.from(m.bits));
        expect(Array.from(decodeWatermarkBits(marked, m.bits.length))).toEqual(Array.from(m.bits));
        expect(psnr(source, marked)).toBeGreaterThan(40);
        expect(checkWatermark(marked).message?.id).toBe(m.id);
      });
    }

  it('decodes every fixture bit for bit as the library decodes it', async () => {
    const names = Object.keys(libraryRead);
    expect(names.length).toBeGreaterThanOrEqual(10);
    for (const name of names) {
      const img = await load(name);
      for (const m of WATERMARK_MESSAGES)
        expect(Array.from(decodeWatermarkBits(img, m.bits.length)), `${name} ${m.id}`).toEqual(
          libraryRead[name]!.png![m.id],
        );
    }
  });

  it('finds the library’s marks on its two smaller fixtures', async () => {
    expect(checkWatermark(await load('lib-sd1-256.png')).message?.id).toBe('sd1');
    expect(checkWatermark(await load('lib-sdxl-256.png')).message?.id).toBe('sdxl');
  });

  it('finds no watermark in unmarked images', async () => {
    for (const size of sizes) {
      const check = checkWatermark(await load(`source-${size}.png`));
      expect(check.message).toBeNull();
      expect(check.matchingBits / check.totalBits).toBeLessThan(0.8);
    }
    const grey: PixelImage = {
      width: 300,
      height: 300,
      channels: 3,
      data: new Uint8Array(300 * 300 * 3).fill(128),
    };
    expect(checkWatermark(grey).message).toBeNull();
  });

  it('keeps the mark through a PNG round trip and keeps alpha', async () => {
    const source = await load('source-256.png');
    const rgba = new Uint8Array(256 * 256 * 4);
    for (let p = 0; p < 256 * 256; p++) {
      rgba.set(source.data.subarray(p * 3, p * 3 + 3), p * 4);
      rgba[p * 4 + 3] = p % 251;
    }
    const marked = embedWatermark({ ...source, channels: 4, data: rgba }, SDXL_WATERMARK.bits);
    for (let p = 0; p < 256 * 256; p++) expect(marked.data[p * 4 + 3]).toBe(p % 251);
    const png = await sharp(marked.data, { raw: { width: 256, height: 256, channels: 4 } })
      .png()
      .toBuffer();
    const back = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const again = {
      width: 256,
      height: 256,
      channels: 4 as const,
      data: new Uint8Array(back.data),
    };
    expect(checkWatermark(again).message?.id).toBe('sdxl');
  });

  it('is still read after JPEG q90 (4:4:4 chroma) and after resizing 0.5x to 2x', async () => {
    // A 512x512 picture, so that its half is still 256x256 (the library's minimum).
    const { data } = await sharp(path.join(dir, 'source-512x384.png'))
      .resize(512, 512)
      .raw()
      .toBuffer({ resolveWithObject: true });
    const source: PixelImage = { width: 512, height: 512, channels: 3, data: new Uint8Array(data) };
    for (const m of WATERMARK_MESSAGES) {
      const marked = embedWatermark(source, m.bits);
      const raw = () => sharp(marked.data, { raw: { width: 512, height: 512, channels: 3 } });
      const decode = async (buf: Buffer) => {
        const out = await sharp(buf).raw().toBuffer({ resolveWithObject: true });
        const { width, height } = out.info;
        return { width, height, channels: 3 as const, data: new Uint8Array(out.data) };
      };
      const jpeg = await decode(
        await raw().jpeg({ quality: 90, chromaSubsampling: '4:4:4' }).toBuffer(),
      );
      expect(checkWatermark(jpeg).message?.id, `${m.id} jpeg`).toBe(m.id);
      for (const side of [256, 384, 768, 1024]) {
        const resized = await decode(await raw().resize(side, side).png().toBuffer());
        // At its new size the block grid no longer lines up (the library reads chance there)...
        expect(checkWatermark(resized).message, `${m.id} ${side} as is`).toBeNull();
        // ...so the search reads it back at its original size.
        const found = findWatermark(resized);
        expect(found.message?.id, `${m.id} ${side}`).toBe(m.id);
        expect(found.readAt).toEqual({ width: 512, height: 512 });
      }
    }
    // The search finds nothing in unmarked pictures, resized or not.
    expect(findWatermark(source).message).toBeNull();
    const { data: half } = await sharp(source.data, {
      raw: { width: 512, height: 512, channels: 3 },
    })
      .resize(256, 256)
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect(findWatermark({ width: 256, height: 256, channels: 3, data: half }).message).toBeNull();
  }, 60_000);

  it('is read after JPEG with 4:2:0 chroma (OpenCV q90, sharp q90 and q75) through the luma copy', async () => {
    for (const size of sizes)
      for (const m of WATERMARK_MESSAGES) {
        const name = `ours-${m.id}-${size}`;
        // OpenCV's q90 JPEG of our mark (tools/watermark/record.py): the library's own decoder
        // reads chance there, as it does from its own marks; ours reads the luma copy.
        const theirs = libraryRead[`${name}.png`]!.jpeg90![m.id];
        expect(errors(theirs, m.bits), `${name} library`).toBeGreaterThan(m.bits.length / 4);
        const cv = await load(`${name}.q90.jpg`);
        const found = checkWatermark(cv);
        expect(found.message?.id, `${name} OpenCV q90`).toBe(m.id);
        expect(found.channel).toBe('y');
        expect(errors(decodeWatermarkBits(cv, m.bits.length, 'y'), m.bits)).toBeLessThanOrEqual(
          Math.ceil(m.bits.length * 0.05),
        );
        const source = await load(`source-${size}.png`);
        const marked = embedWatermark(source, m.bits);
        for (const quality of [90, 75]) {
          const jpeg = await sharp(marked.data, {
            raw: { width: marked.width, height: marked.height, channels: 3 },
          })
            .jpeg({ quality, chromaSubsampling: '4:2:0' })
            .toBuffer();
          expect(checkWatermark(await load(jpeg)).message?.id, `${name} q${quality}`).toBe(m.id);
        }
      }
  }, 60_000);

  it('keeps the luma copy cheap: it leaves U alone and costs under half a dB', async () => {
    const source = await load('source-512x384.png');
    const marked = embedWatermark(source, SD1_WATERMARK.bits);
    // Without the copy (only U marked) the picture would be within 0.5 dB of this one.
    expect(psnr(source, marked)).toBeGreaterThan(41.5);
    expect(Array.from(decodeWatermarkBits(marked, 136, 'y'))).toEqual(
      Array.from(SD1_WATERMARK.bits),
    );
    // An unmarked picture reads chance in luma too.
    const plain = decodeWatermarkBits(source, 136, 'y');
    expect(errors(plain, SD1_WATERMARK.bits)).toBeGreaterThan(40);
  });

  it('refuses images under 256x256 pixels with one sentence', () => {
    const small: PixelImage = {
      width: 200,
      height: 200,
      channels: 3,
      data: new Uint8Array(120000),
    };
    expect(() => embedWatermark(small, SD1_WATERMARK.bits)).toThrow(
      'The image is 200x200; a watermark needs at least 256x256 pixels.',
    );
    expect(() => checkWatermark(small)).toThrow(/at least 256x256/);
  });
});
