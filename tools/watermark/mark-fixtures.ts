/**
 * Writes tests/fixtures/watermark/ours-<message>-<size>.png: each source image marked by our
 * encoder, for tools/watermark/record.py `check` to read with the library's decoder. The unit
 * test re-marks the sources and requires the same pixels, so a change to the encoder shows up
 * as a stale fixture instead of a silently outdated recording.
 */
import path from 'node:path';
import sharp from 'sharp';
import { WATERMARK_MESSAGES, embedWatermark } from '../../src/engine/image/watermark';

const dir = path.join('tests', 'fixtures', 'watermark');
for (const size of ['256', '512x384']) {
  const { data, info } = await sharp(path.join(dir, `source-${size}.png`))
    .raw()
    .toBuffer({ resolveWithObject: true });
  const image = { width: info.width, height: info.height, channels: 3 as const, data };
  for (const message of WATERMARK_MESSAGES) {
    const marked = embedWatermark(image, message.bits);
    const file = path.join(dir, `ours-${message.id}-${size}.png`);
    await sharp(marked.data, { raw: { width: info.width, height: info.height, channels: 3 } })
      .png()
      .toFile(file);
    console.log(file);
  }
}
