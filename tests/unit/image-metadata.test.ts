import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { beforeAll, describe, expect, test } from 'vitest';
import {
  decodeUserComment,
  readExifText,
  readImageMetadata,
  readJpegText,
  readWebpText,
} from '../../src/main/library/metadata';
import { comfyCustomAdvancedGraph, comfyCustomAdvancedWorkflow } from '../fixtures/comfyui';
import {
  A1111_EXIF_DIR,
  A1111_EXIF_SETTINGS,
  insertJpegComment,
  insertJpegExif,
  insertWebpExif,
  pillowIfd0Exif,
  piexifUserCommentExif,
  userCommentValue,
} from '../fixtures/exif';

// Reference files written the way AUTOMATIC1111 writes them (Pillow, then piexif), by
// tools/reference/record_a1111_exif.py; a1111.json holds the infotext and the EXIF bytes.
const refDir = A1111_EXIF_DIR;
const reference = JSON.parse(readFileSync(new URL('a1111.json', refDir), 'utf8')) as {
  infotext: string;
  exif: string;
};
const a1111Jpeg = new Uint8Array(readFileSync(new URL('a1111.jpg', refDir)));
const a1111Webp = new Uint8Array(readFileSync(new URL('a1111.webp', refDir)));

const expectedA1111 = A1111_EXIF_SETTINGS;

let jpeg: Uint8Array; // written by sharp, no metadata
let webp: Uint8Array;
beforeAll(async () => {
  const image = sharp({
    create: { width: 16, height: 12, channels: 3, background: { r: 200, g: 90, b: 30 } },
  });
  jpeg = new Uint8Array(await image.clone().jpeg({ quality: 85 }).toBuffer());
  webp = new Uint8Array(await image.clone().webp({ quality: 85 }).toBuffer());
});

describe('A1111 infotext in EXIF UserComment', () => {
  test('reads the JPEG A1111 wrote (Pillow + piexif.insert)', () => {
    const read = readImageMetadata(a1111Jpeg);
    expect(read.source).toBe('a1111');
    expect(read.settings).toEqual(expectedA1111);
    expect(read.raw).toMatchObject({ 'Model hash': '6ce0161689', Version: 'v1.10.1' });
  });

  test('reads the WebP A1111 wrote (Pillow exif=, no "Exif" header in the chunk)', () => {
    const read = readImageMetadata(a1111Webp);
    expect(read.source).toBe('a1111');
    expect(read.settings).toEqual(expectedA1111);
  });

  test('the fixture builder lays EXIF out byte for byte as piexif, and inserts it as piexif.insert does', () => {
    const ours = piexifUserCommentExif(userCommentValue(reference.infotext, 'unicode'));
    expect(Buffer.from(ours).toString('hex')).toBe(reference.exif);
    // piexif.insert replaced Pillow's JFIF APP0 with the APP1 segment.
    const app1Length = (a1111Jpeg[4]! << 8) | a1111Jpeg[5]!;
    expect(Buffer.from(a1111Jpeg.subarray(6, 4 + app1Length))).toEqual(Buffer.from(ours));
  });

  test('a JPEG and a WebP written by sharp, with the EXIF inserted, are read and still decode', async () => {
    const exif = piexifUserCommentExif(userCommentValue(reference.infotext, 'unicode'));
    const files = {
      jpeg: insertJpegExif(jpeg, exif),
      'webp with header': insertWebpExif(webp, exif, 16, 12),
      'webp without header': insertWebpExif(webp, exif.subarray(6), 16, 12),
    };
    for (const [name, file] of Object.entries(files)) {
      const read = readImageMetadata(file);
      expect(read.source, name).toBe('a1111');
      expect(read.settings, name).toEqual(expectedA1111);
      const meta = await sharp(file).metadata();
      expect([meta.width, meta.height, meta.exif !== undefined], name).toEqual([16, 12, true]);
    }
  });

  test('decodes every UserComment character code', () => {
    const text = 'red fox, ünïcödé, 狐\nSteps: 20';
    for (const charset of ['unicode', 'unicode-le', 'ascii', 'undefined', 'none'] as const)
      expect(decodeUserComment(userCommentValue(text, charset)), charset).toBe(text);
    const bom = Buffer.concat([
      Buffer.from('UNICODE\0', 'latin1'),
      Buffer.from('\ufeffhi', 'utf16le'),
    ]);
    expect(decodeUserComment(bom)).toBe('hi');
    const padded = Buffer.concat([Buffer.from(userCommentValue('x', 'ascii')), Buffer.alloc(4)]);
    expect(decodeUserComment(padded)).toBe('x');
    const jis = Buffer.concat([Buffer.from('JIS\0\0\0\0\0', 'latin1'), Buffer.from([0x82, 0xa0])]);
    expect(decodeUserComment(jis)).toBe('あ');
  });

  test('reads a little-endian TIFF too', () => {
    const be = piexifUserCommentExif(userCommentValue('Steps: 5', 'ascii')).subarray(6);
    // Swap the byte order of every header and IFD field by re-laying it out little-endian.
    const le = Buffer.from(be);
    le.write('II', 0, 'latin1');
    le.writeUInt16LE(42, 2);
    le.writeUInt32LE(8, 4);
    le.writeUInt16LE(1, 8);
    le.writeUInt16LE(0x8769, 10);
    le.writeUInt16LE(4, 12);
    le.writeUInt32LE(1, 14);
    le.writeUInt32LE(26, 18);
    le.writeUInt16LE(1, 26);
    le.writeUInt16LE(0x9286, 28);
    le.writeUInt16LE(7, 30);
    le.writeUInt32LE(16, 32);
    le.writeUInt32LE(40, 36);
    expect(readExifText(le).userComment).toBe('Steps: 5');
  });

  test('a JPEG comment carries the infotext when there is no EXIF text', () => {
    const read = readImageMetadata(insertJpegComment(jpeg, reference.infotext));
    expect(read.source).toBe('a1111');
    expect(read.settings).toEqual(expectedA1111);
    expect(readJpegText(insertJpegComment(jpeg, 'x')).comments).toEqual(['x']);
  });

  test('files without settings, and broken ones, give "none" and never throw', () => {
    expect(readImageMetadata(jpeg).source).toBe('none');
    expect(readImageMetadata(webp).source).toBe('none');
    expect(readImageMetadata(new Uint8Array(0)).source).toBe('none');
    expect(readImageMetadata(Buffer.from('GIF89a')).source).toBe('none');
    for (let cut = 0; cut < a1111Jpeg.length; cut += 7) {
      expect(() => readImageMetadata(a1111Jpeg.subarray(0, cut))).not.toThrow();
      expect(() => readImageMetadata(a1111Webp.subarray(0, cut))).not.toThrow();
    }
    // A cut inside the EXIF block loses it; a cut after it keeps it.
    expect(readImageMetadata(a1111Jpeg.subarray(0, 100)).source).toBe('none');
    expect(readImageMetadata(a1111Jpeg.subarray(0, 600)).source).toBe('a1111');
    // Offsets and counts that point outside the block are skipped.
    const bad = Buffer.from(piexifUserCommentExif(userCommentValue('Steps: 5', 'ascii')));
    bad.writeUInt32BE(0x7fffffff, 6 + 26 + 6); // UserComment count
    expect(readExifText(bad.subarray(6)).userComment).toBeUndefined();
    bad.writeUInt16BE(0xffff, 6 + 8); // IFD0 entry count
    expect(() => readExifText(bad.subarray(6))).not.toThrow();
    // A RIFF size larger than the file, a chunk size past the end.
    const riff = Buffer.from(insertWebpExif(webp, Buffer.from('MM'), 16, 12));
    riff.writeUInt32LE(0xfffffff0, 4);
    expect(readWebpText(riff).exif).toBeDefined();
    riff.writeUInt32LE(0xfffffff0, 16);
    expect(readWebpText(riff).exif).toBeUndefined();
  });
});

describe('ComfyUI graphs in WebP EXIF (SaveAnimatedWEBP)', () => {
  test('reads prompt from Model and workflow from Make', () => {
    const graph = comfyCustomAdvancedGraph({ positive: 'a lighthouse at dusk', seed: 99 });
    const workflow = comfyCustomAdvancedWorkflow({ positive: 'ignored', seed: 1 });
    const exif = pillowIfd0Exif({
      0x0110: `prompt:${JSON.stringify(graph)}`,
      0x010f: `workflow:${JSON.stringify(workflow)}`,
    });
    const read = readImageMetadata(insertWebpExif(webp, exif, 16, 12));
    expect(read.source).toBe('comfyui');
    expect(read.settings).toMatchObject({ prompt: 'a lighthouse at dusk', seed: 99, steps: 20 });
  });

  test('a WebP with only the workflow is read from the workflow', () => {
    const workflow = comfyCustomAdvancedWorkflow({ positive: 'a red barn', seed: 31337 });
    const exif = pillowIfd0Exif({ 0x010f: `workflow:${JSON.stringify(workflow)}` });
    const read = readImageMetadata(insertWebpExif(webp, exif, 16, 12));
    expect(read.source).toBe('comfyui');
    expect(read.settings).toMatchObject({ prompt: 'a red barn', seed: 31337, steps: 28 });
  });
});
