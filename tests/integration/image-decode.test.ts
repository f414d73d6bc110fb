// The guarded decoder (src/main/images/decode.ts) and the static files' link refusal, on real
// files: sharp decodes for real, links are real links in a temp folder.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  DecodeGate,
  ImageTooLargeError,
  checkStudioPng,
  checkUploadedImage,
  decodeGate,
  makeThumbnail,
  maxInputPixels,
  maxStudioImagePixels,
  withImage,
} from '../../src/main/images/decode';
import { readPixels } from '../../src/main/jobs/images';
import { readRegularFileInside, readStaticFile } from '../../src/main/static-files';
import { type StudioError } from '../../src/shared';
import { pngBomb } from './hostile-images';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ls-decode-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('limits', () => {
  it('inputs up to the studio largest size (4096x4096); its own upscales up to 4x that a side', () => {
    expect(maxInputPixels).toBe(4096 * 4096);
    expect(maxStudioImagePixels).toBe(16384 * 16384);
  });
});

describe('the decode gate', () => {
  it('runs at most its slots at once and every task to the end, in order', async () => {
    const gate = new DecodeGate(2);
    let running = 0;
    let peak = 0;
    const finished: number[] = [];
    await Promise.all(
      Array.from({ length: 7 }, (_, i) =>
        gate.run(async () => {
          running++;
          peak = Math.max(peak, running);
          await new Promise((r) => setTimeout(r, 5));
          running--;
          finished.push(i);
        }),
      ),
    );
    expect(peak).toBe(2);
    expect(finished.sort()).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(gate.running).toBe(0);
  });

  it('frees the slot of a task that throws', async () => {
    const gate = new DecodeGate(1);
    await expect(gate.run(() => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
    await expect(gate.run(async () => 'next')).resolves.toBe('next');
    expect(gate.running).toBe(0);
  });

  it('the host-wide gate holds real decodes to its slots', async () => {
    const png = await sharp({
      create: { width: 512, height: 512, channels: 3, background: '#888' },
    })
      .png()
      .toBuffer();
    let peak = 0;
    await Promise.all(
      Array.from({ length: 6 }, () =>
        withImage(png, { what: 'x' }, async (image) => {
          peak = Math.max(peak, decodeGate.running);
          return image.raw().toBuffer();
        }),
      ),
    );
    expect(peak).toBe(decodeGate.slots);
  });
});

describe('refusal before decoding', () => {
  it('a bomb is refused from its header with both sizes in one sentence', async () => {
    const err = await withImage(pngBomb(16383, 16383), { what: 'The source image' }, () => {
      throw new Error('must not decode');
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageTooLargeError);
    expect((err as StudioError).code).toBe('invalid-argument');
    expect((err as Error).message).toBe(
      'The source image is 16383x16383 (268.4 megapixels); the studio reads images of at most 16.8 megapixels (4096x4096 or the same area in another shape).',
    );
  });

  it('a long thin image within the area is accepted', async () => {
    const header = await withImage(pngBomb(8192, 2048), { what: 'x' }, async (_i, h) => h);
    expect(header).toMatchObject({ width: 8192, height: 2048 });
  });

  it("a job's source image and mask on disk are refused the same way", async () => {
    const file = path.join(tmp, 'bomb.png');
    fs.writeFileSync(file, pngBomb(5000, 5000));
    await expect(readPixels(file, 'init')).rejects.toThrow(/^The source image is 5000x5000/);
    await expect(readPixels(file, 'mask')).rejects.toThrow(/^The mask image is 5000x5000/);
  });

  it('uploads: a truncated PNG is damaged, a GIF is only named', async () => {
    const png = await sharp({
      create: { width: 300, height: 200, channels: 3, background: '#123' },
    })
      .png({ compressionLevel: 0 })
      .toBuffer();
    await expect(checkUploadedImage(png, 'a.png', ['png'])).resolves.toMatchObject({
      format: 'png',
      width: 300,
      height: 200,
    });
    await expect(
      checkUploadedImage(png.subarray(0, png.length >> 1), 'half.png', ['png']),
    ).rejects.toThrow('"half.png" could not be read: it is damaged');
    const gif = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#fff' } })
      .gif()
      .toBuffer();
    await expect(checkUploadedImage(gif, 'g.gif', ['png'])).resolves.toEqual({ format: 'gif' });
    await expect(checkUploadedImage(pngBomb(4097, 4097), 'big.png', ['png'])).rejects.toThrow(
      /^"big\.png" is 4097x4097/,
    );
  });

  it("the studio's own large PNGs still get checked and thumbnailed", async () => {
    const big = pngBomb(6000, 5000);
    expect(await checkStudioPng(big)).toEqual({ width: 6000, height: 5000 });
    const thumb = await sharp(await makeThumbnail(big, 256)).metadata();
    expect(thumb).toMatchObject({ format: 'webp', width: 256, height: 213 });
    expect(await checkStudioPng(big.subarray(0, big.length - 40))).toBeNull();
  });
});

describe('readRegularFileInside', () => {
  it('reads a regular file and refuses links, link parents, folders and paths outside', async () => {
    const root = path.join(tmp, 'root');
    fs.mkdirSync(path.join(root, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(root, 'sub', 'a.txt'), 'inside');
    fs.writeFileSync(path.join(tmp, 'outside.txt'), 'outside');
    fs.symlinkSync(path.join(tmp, 'outside.txt'), path.join(root, 'link.txt'));
    fs.symlinkSync(path.join(root, 'sub'), path.join(root, 'linked-sub'));
    expect((await readRegularFileInside(root, path.join(root, 'sub', 'a.txt')))?.toString()).toBe(
      'inside',
    );
    expect(await readRegularFileInside(root, path.join(root, 'link.txt'))).toBeNull();
    expect(await readRegularFileInside(root, path.join(root, 'linked-sub', 'a.txt'))).toBeNull();
    expect(await readRegularFileInside(root, path.join(root, 'sub'))).toBeNull();
    expect(await readRegularFileInside(root, path.join(tmp, 'outside.txt'))).toBeNull();
    expect(await readRegularFileInside(root, root)).toBeNull();
  });

  it('a root that is itself a link is fine; the renderer folder refuses planted links', async () => {
    const real = path.join(tmp, 'renderer-real');
    fs.mkdirSync(real);
    fs.writeFileSync(path.join(real, 'index.html'), '<!doctype html>');
    fs.symlinkSync('/etc/passwd', path.join(real, 'passwd.txt'));
    const linkedRoot = path.join(tmp, 'renderer');
    fs.symlinkSync(real, linkedRoot);
    expect((await readStaticFile(linkedRoot, '/'))?.body.toString()).toBe('<!doctype html>');
    expect(await readStaticFile(linkedRoot, '/passwd.txt')).toBeNull();
  });
});
