/**
 * Where JPEG and WebP files keep the text that generation settings travel in. JPEG: the EXIF
 * APP1 segment (`Exif\0\0` + TIFF; JPEG/Exif 2.32 section 4.7) and COM comment segments (ITU
 * T.81 B.2.4.5), up to the first scan. WebP: the `EXIF` chunk of the RIFF container (Google's
 * "WebP Container Specification"), whose TIFF some writers (Pillow before 9.x, piexif.insert)
 * still prefix with `Exif\0\0`. Bounded walks over untrusted bytes; nothing throws.
 */
import { EXIF_HEADER, startsWith } from './exif';

export interface ContainerText {
  /** The TIFF structure of the first EXIF block, if any. */
  exif?: Uint8Array;
  /** JPEG COM segments, as UTF-8. */
  comments: string[];
}

const JPEG_SOI = Uint8Array.of(0xff, 0xd8, 0xff);
const RIFF = Uint8Array.of(0x52, 0x49, 0x46, 0x46);
const WEBP = Uint8Array.of(0x57, 0x45, 0x42, 0x50);
const utf8 = new TextDecoder('utf-8');

export function isJpeg(data: Uint8Array): boolean {
  return startsWith(data, JPEG_SOI);
}

export function isWebp(data: Uint8Array): boolean {
  return startsWith(data, RIFF) && startsWith(data, WEBP, 8);
}

function stripExifHeader(block: Uint8Array): Uint8Array {
  return startsWith(block, EXIF_HEADER) ? block.subarray(EXIF_HEADER.length) : block;
}

/** The EXIF block and comments of a JPEG, from the segments before its first scan. */
export function readJpegText(data: Uint8Array): ContainerText {
  const out: ContainerText = { comments: [] };
  let pos = 2;
  while (pos + 4 <= data.length) {
    if (data[pos] !== 0xff) break;
    const marker = data[pos + 1]!;
    if (marker === 0xff) {
      pos++; // fill byte
      continue;
    }
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      pos += 2; // markers without a length
      continue;
    }
    if (marker === 0xda || marker === 0xd9) break; // start of scan, end of image
    const length = (data[pos + 2]! << 8) | data[pos + 3]!;
    if (length < 2 || pos + 2 + length > data.length) break;
    const body = data.subarray(pos + 4, pos + 2 + length);
    if (marker === 0xe1 && out.exif === undefined && startsWith(body, EXIF_HEADER))
      out.exif = body.subarray(EXIF_HEADER.length);
    else if (marker === 0xfe) out.comments.push(utf8.decode(body).replace(/\0+$/, ''));
    pos += 2 + length;
  }
  return out;
}

/** The EXIF chunk of a WebP file (simple files have none). */
export function readWebpText(data: Uint8Array): ContainerText {
  const out: ContainerText = { comments: [] };
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const end = Math.min(data.length, 8 + view.getUint32(4, true));
  let pos = 12;
  while (pos + 8 <= end) {
    const fourCc = String.fromCharCode(...data.subarray(pos, pos + 4));
    const size = view.getUint32(pos + 4, true);
    if (pos + 8 + size > end) break;
    if (fourCc === 'EXIF') {
      out.exif = stripExifHeader(data.subarray(pos + 8, pos + 8 + size));
      break;
    }
    pos += 8 + size + (size % 2); // chunks are padded to an even size
  }
  return out;
}
