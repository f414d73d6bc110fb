/**
 * Opening a single-file checkpoint as a TensorSource, by what the file starts with (not its
 * extension): a zip (torch.save) or a safetensors header. EMA-only checkpoints are presented
 * under the ordinary names (see ema.ts).
 */
import { open } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../../errors';
import type { CheckpointHints } from '../detect';
import type { TensorSource } from '../types';
import { withEmaWeights } from './ema';
import { SafetensorsSource } from './safetensors';
import { TorchZipSource } from './torch';

export { SafetensorsSource } from './safetensors';
export { TorchZipSource } from './torch';

/** A checkpoint's tensors plus what the file says about itself. */
export interface OpenedCheckpoint {
  readonly source: TensorSource;
  readonly hints: CheckpointHints;
}

/** Opens `file`; throws an EngineError with one sentence when it is neither format. */
export async function openCheckpoint(file: string): Promise<OpenedCheckpoint> {
  let head: Buffer;
  try {
    const handle = await open(file, 'r');
    try {
      head = Buffer.alloc(9);
      const { bytesRead } = await handle.read(head, 0, 9, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await handle.close();
    }
  } catch (e) {
    throw new EngineError('model-missing-file', `Cannot open ${file}: ${(e as Error).message}.`, {
      file,
      cause: e,
    });
  }
  if (head.length >= 4 && head.readUInt32LE(0) === 0x04034b50) {
    const source = await TorchZipSource.open(file);
    const hints = source.globalStep === undefined ? {} : { globalStep: source.globalStep };
    return { source: withEmaWeights(source), hints };
  } else if (head.length === 9 && head[8] === 0x7b /* '{' */) {
    const source = await SafetensorsSource.open(file);
    return { source: withEmaWeights(source), hints: { metadata: source.metadata } };
  } else if (head.length >= 2 && head[0] === 0x80 && head[1]! <= 5) {
    throw new EngineError(
      'model-unsupported',
      `${path.basename(file)} is a PyTorch file in the pre-1.6 format; re-save it with a current torch or as .safetensors.`,
      { file },
    );
  } else {
    throw new EngineError(
      'model-corrupt',
      `${path.basename(file)} is neither a .safetensors file nor a PyTorch checkpoint.`,
      { file },
    );
  }
}
