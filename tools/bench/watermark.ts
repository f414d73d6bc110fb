// `npm run bench:watermark [-- --sizes 512,1024,2048 --repeats N]`: what the invisible
// watermark (src/engine/image/watermark.ts) costs when a generation is saved and when an image
// is checked. One JSON document on stdout, per image size (square, smooth synthetic content
// with grain, like a generated picture):
// - embedMsPerMp / checkMsPerMp: median milliseconds per megapixel of embedWatermark (SD 1/2
//   message) and checkWatermark (both known messages read);
// - embedVsPng: the embed's median time / the median time of sharp's PNG encode of the same
//   pixels (what saving costs anyway), the two timed in turn per repeat (the machines are
//   noisy; the ratio carries over, milliseconds do not);
// - psnrDb: the marked image against the original.
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import {
  type PixelImage,
  SD1_WATERMARK,
  checkWatermark,
  embedWatermark,
} from '../../src/engine/image';

const { values: args } = parseArgs({
  options: {
    sizes: { type: 'string', default: '512,1024,2048' },
    repeats: { type: 'string', default: '7' },
  },
});
const sizes = args.sizes.split(',').map(Number);
const repeats = Number(args.repeats);
if (sizes.some((s) => !Number.isInteger(s) || s < 256) || !(repeats >= 1)) {
  process.stderr.write(
    'bench-watermark: --sizes takes sides of 256 or more, --repeats 1 or more\n',
  );
  process.exit(2);
}

/** Smooth colour fields plus a little grain, from a fixed seed (mulberry32). */
function picture(side: number): PixelImage {
  let state = side;
  const rand = () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const data = new Uint8Array(side * side * 3);
  for (let y = 0; y < side; y++)
    for (let x = 0; x < side; x++)
      for (let c = 0; c < 3; c++) {
        const v =
          128 +
          80 * Math.sin((x / side) * (3 + c) + c) * Math.cos((y / side) * (2 + c)) +
          (rand() - 0.5) * 8;
        data[(y * side + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(v)));
      }
  return { width: side, height: side, channels: 3, data };
}

function psnr(a: PixelImage, b: PixelImage): number {
  let sum = 0;
  for (let k = 0; k < a.data.length; k++) sum += (a.data[k]! - b.data[k]!) ** 2;
  return 10 * Math.log10((255 * 255) / (sum / a.data.length));
}

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)]!;
const time = async (fn: () => unknown) => {
  const t = performance.now();
  await fn();
  return performance.now() - t;
};

const results = [];
for (const side of sizes) {
  const image = picture(side);
  const mp = (side * side) / 1e6;
  const marked = embedWatermark(image, SD1_WATERMARK.bits); // warm-up
  checkWatermark(marked);
  const embed: number[] = [];
  const check: number[] = [];
  const png: number[] = [];
  for (let r = 0; r < repeats; r++) {
    embed.push(await time(() => embedWatermark(image, SD1_WATERMARK.bits)));
    png.push(
      await time(() =>
        sharp(image.data, { raw: { width: side, height: side, channels: 3 } })
          .png({ compressionLevel: 6 })
          .toBuffer(),
      ),
    );
    check.push(await time(() => checkWatermark(marked)));
  }
  const found = checkWatermark(marked).message?.id ?? null;
  results.push({
    side,
    megapixels: Number(mp.toFixed(3)),
    embedMsPerMp: Number((median(embed) / mp).toFixed(1)),
    checkMsPerMp: Number((median(check) / mp).toFixed(1)),
    pngEncodeMsPerMp: Number((median(png) / mp).toFixed(1)),
    embedVsPng: Number((median(embed) / median(png)).toFixed(2)),
    psnrDb: Number(psnr(image, marked).toFixed(2)),
    found,
  });
  process.stderr.write(`bench-watermark: ${side}px done\n`);
}
console.log(JSON.stringify({ repeats, node: process.version, results }, null, 2));
