/**
 * Generation settings from any image the studio imports: PNG text chunks (png-metadata.ts), and
 * the same texts where JPEG and WebP files keep them. AUTOMATIC1111 writes its infotext into
 * EXIF UserComment for both (modules/images.py save_image_with_geninfo, through piexif), and
 * reads a JPEG comment when there is no EXIF text (read_info_from_image); ComfyUI's WebP saver
 * writes `prompt:<json>` and `workflow:<json>` into IFD0's Model and Make fields
 * (comfy_extras/nodes_images.py SaveAnimatedWEBP). Each is mapped to the PNG keyword that
 * carries it there, so all formats share one reader.
 */
import {
  metadataFromText,
  readGenerationMetadata,
  type ReadGenerationMetadata,
} from '../png-metadata';
import { isJpeg, isWebp, readJpegText, readWebpText, type ContainerText } from './containers';
import { readExifText } from './exif';

export { decodeUserComment, readExifText, type ExifText } from './exif';
export { isJpeg, isWebp, readJpegText, readWebpText, type ContainerText } from './containers';

const PNG_SIGNATURE = Uint8Array.of(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a);

/** ComfyUI's `<key>:<json>` IFD0 values, for the keys it writes. */
const COMFY_EXIF_TEXT = /^(prompt|workflow):/;

/** The (keyword, text) pairs a JPEG or WebP carries, named as PNG text chunks name them. */
export function textEntriesOf(container: ContainerText): Array<{ keyword: string; text: string }> {
  const entries: Array<{ keyword: string; text: string }> = [];
  if (container.exif) {
    const exif = readExifText(container.exif);
    if (exif.userComment !== undefined && exif.userComment.trim() !== '')
      entries.push({ keyword: 'parameters', text: exif.userComment });
    for (const text of exif.ifd0Text.values()) {
      const m = COMFY_EXIF_TEXT.exec(text);
      if (m) entries.push({ keyword: m[1]!, text: text.slice(m[0].length) });
    }
  }
  for (const comment of container.comments)
    if (comment.trim() !== '') entries.push({ keyword: 'parameters', text: comment });
  return entries;
}

/**
 * The generation settings an imported PNG, JPEG or WebP describes, whichever tool wrote it.
 * Never throws: anything unreadable or without settings we understand gives source 'none'.
 */
export function readImageMetadata(data: Uint8Array): ReadGenerationMetadata {
  try {
    if (data.length >= 8 && PNG_SIGNATURE.every((b, i) => data[i] === b))
      return readGenerationMetadata(data);
    const container = isJpeg(data) ? readJpegText(data) : isWebp(data) ? readWebpText(data) : null;
    if (container) return metadataFromText(textEntriesOf(container));
  } catch {
    // a damaged file holds no settings we can trust
  }
  return { source: 'none', settings: {}, raw: {} };
}
