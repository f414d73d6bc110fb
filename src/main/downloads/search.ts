/**
 * What a Hub search result looks like to the studio: whether the repo loads as it is (an ONNX
 * diffusers folder: model_index.json beside unet/model.onnx, the layout optimum's ONNX export
 * and the ONNX repos of the catalogue have) or holds single checkpoint files to convert.
 */
import type { HubSearchHit } from '../../shared';
import type { HubClient, HubSearchResult } from './hub';

const checkpointFile = /\.(safetensors|ckpt)$/i;

export function searchHitOf(
  result: HubSearchResult,
  hub: Pick<HubClient, 'fileUrl'>,
): HubSearchHit {
  const files = new Set(result.siblings);
  const onnx = files.has('model_index.json') && files.has('unet/model.onnx');
  // Checkpoints at the top of the repo: those in subfolders are diffusers' per-part weights.
  const checkpoints = onnx
    ? []
    : result.siblings.filter((f) => !f.includes('/') && checkpointFile.test(f));
  return {
    id: result.id,
    downloads: result.downloads,
    likes: result.likes,
    lastModified: result.lastModified,
    layout: onnx ? 'onnx' : checkpoints.length ? 'checkpoint' : 'unknown',
    checkpoints: checkpoints.map((file) => ({ file, url: hub.fileUrl(result.id, 'main', file) })),
  };
}
