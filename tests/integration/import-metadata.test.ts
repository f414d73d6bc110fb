import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Library } from '../../src/main/library/service';
import { A1111_EXIF_DIR, A1111_EXIF_SETTINGS } from '../fixtures/exif';
import { openLibrary, tempDir } from './library-helpers';

// "Use these settings" for JPEG and WebP imports: the real library stores the upload (real
// SQLite, real files) and reads the settings the file carries, as it does for PNGs.

const refDir = A1111_EXIF_DIR;
let dataDir: string;
let library: Library;
beforeAll(async () => {
  dataDir = tempDir('ls-import-');
  library = (await openLibrary(dataDir)).library;
});
afterAll(() => {
  library.close();
  fs.rmSync(dataDir, { recursive: true, force: true });
});

describe('importing JPEG and WebP files written by AUTOMATIC1111', () => {
  for (const file of ['a1111.jpg', 'a1111.webp']) {
    it(`reads the infotext of ${file}`, async () => {
      const data = fs.readFileSync(new URL(file, refDir));
      const up = await library.uploads.uploadImage({
        data: data.toString('base64'),
        purpose: 'import',
        name: file,
      });
      expect(up).toMatchObject({ width: 8, height: 8 });
      expect(up.metadata).toEqual({
        source: 'a1111',
        settings: A1111_EXIF_SETTINGS,
        networks: [],
      });
      // The stored upload is the file as given, metadata and all.
      expect(fs.readFileSync(library.resolveImage(up.imageId).file)).toEqual(data);
    });
  }

  it('an init upload reads no metadata', async () => {
    const data = fs.readFileSync(new URL('a1111.jpg', refDir));
    const up = await library.uploads.uploadImage({
      data: data.toString('base64'),
      purpose: 'init',
    });
    expect(up.metadata).toBeNull();
  });
});
