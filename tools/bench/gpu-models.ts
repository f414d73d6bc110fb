// The GPU benchmark's models: random-weight single-file checkpoints with the real key sets of
// SD 1.5 and SD 2.1 (SD-Turbo's architecture), converted by the converter as a person's file
// would be, or the converter's small recorded checkpoints for a dry run on CPU.
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { detectArchitecture } from '../../src/engine/convert/detect';
import { type ConvertTarget, emitUnet } from '../../src/engine/convert/emit';
import { toHalfInto } from '../../src/engine/convert/onnx/graph';
import { openCheckpoint } from '../../src/engine/convert/readers/index';
import type { CheckpointArchitecture } from '../../src/engine/convert/types';
import { readKeySet, writeSafetensors, xorshift32 } from '../../tests/fixtures/checkpoint';
import { VOCABULARY, smallCheckpoint } from '../../tests/fixtures/small-checkpoint';

export type GpuModelName = 'sd15' | 'turbo';

const POOL = 1 << 20;

/**
 * Initial values in the spirit of PyTorch's defaults, so float16 activations stay in range:
 * matrices and kernels uniform in +-sqrt(3 / fan-in) (unit variance through each layer), norm
 * gains 1 +- 0.1, biases +- 0.02.
 */
function initOf(name: string, shape: readonly number[]): { offset: number; scale: number } {
  if (shape.length >= 2) {
    const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
    return { offset: 0, scale: Math.sqrt(3 / fanIn) };
  }
  return name.endsWith('.weight') ? { offset: 1, scale: 0.1 } : { offset: 0, scale: 0.02 };
}

/**
 * Writes a full-size checkpoint of `keyset` with random fp16 weights (position_ids int64 as real
 * files store them). Values are slices of one 1 M-value xorshift32 pool per initial scale at
 * random offsets: random enough for timing and for float16 range checks, and fast (a 2 GB file
 * in seconds).
 */
export async function writeRandomCheckpoint(keyset: 'sd15' | 'sd21', file: string): Promise<void> {
  const set = await readKeySet(keyset);
  const random = xorshift32(20261206);
  const uniform = Float32Array.from({ length: POOL }, () => random.next().value / 2 ** 31 - 1);
  const pools = new Map<string, Uint16Array>();
  const specs = set.tensors.map(([name, shape]) => ({
    name,
    dtype: name.endsWith('position_ids') ? ('I64' as const) : ('F16' as const),
    shape,
  }));
  await writeSafetensors(file, specs, (t) => {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.dtype === 'I64') {
      const last = t.shape[t.shape.length - 1] ?? 1;
      return new Uint8Array(BigInt64Array.from({ length: n }, (_, i) => BigInt(i % last)).buffer);
    }
    const { offset, scale } = initOf(t.name, t.shape);
    const key = `${offset}:${scale}`;
    let pool = pools.get(key);
    if (!pool) {
      pool = new Uint16Array(POOL);
      toHalfInto(
        uniform.map((u) => offset + scale * u),
        pool,
      );
      pools.set(key, pool);
    }
    const out = new Uint16Array(n);
    for (let at = 0; at < n;) {
      const start = random.next().value % (POOL >> 1);
      const len = Math.min(n - at, POOL - start);
      out.set(pool.subarray(start, start + len), at);
      at += len;
    }
    return new Uint8Array(out.buffer);
  });
}

export interface BuiltModel {
  /** The converted diffusers ONNX folder the engine loads. */
  dir: string;
  /** UNets for the numerics check: the fused variant and the plain one, same weights. */
  numerics: { fused: string; plain: string; contextDim: number } | null;
  /** What it was built from, in words. */
  checkpoint: string;
  checkpointMs: number;
  convertMs: number;
}

/**
 * Builds `name` under `work`: a random full-size checkpoint (or, `tiny`, the converter's small
 * recorded SD 1.x one), converted for `target`. With `numerics`, also the UNet's other variant
 * from the same checkpoint: plain beside a CUDA conversion, or the fused one decomposed (so a
 * CPU can run it) beside a plain one.
 */
export async function buildModel(
  work: string,
  name: GpuModelName,
  target: ConvertTarget,
  tiny: boolean,
  numerics: boolean,
): Promise<BuiltModel> {
  const t0 = performance.now();
  let file: string;
  let architecture: CheckpointArchitecture | undefined;
  if (tiny) {
    // The recorded SD 2.x one is a 9-channel inpainting UNet, so both dry-run models are SD 1.x.
    ({ file, arch: architecture } = await smallCheckpoint(work, 'sd1'));
  } else {
    file = path.join(work, `${name}-random.safetensors`);
    await writeRandomCheckpoint(name === 'sd15' ? 'sd15' : 'sd21', file);
  }
  const checkpointMs = performance.now() - t0;
  const checkpoint = tiny
    ? "the converter's small recorded SD 1.x checkpoint (tests/fixtures/reference/convert-sd1)"
    : `random fp16 weights with the ${name === 'sd15' ? 'SD 1.5' : 'SD 2.1 (SD-Turbo)'} key set`;
  const dir = path.join(work, `${name}-${target}`);
  try {
    const t1 = performance.now();
    await convertCheckpoint(file, dir, {
      vocabularyFile: VOCABULARY,
      // SD 2.1 files cannot say epsilon or v; either costs the same per step.
      prediction: 'epsilon',
      ...(architecture ? { architecture } : {}),
      ...(target === 'cuda' ? { target } : {}),
    });
    const convertMs = performance.now() - t1;
    if (!numerics) return { dir, numerics: null, checkpoint, checkpointMs, convertMs };
    const { source } = await openCheckpoint(file);
    try {
      const arch = architecture ?? detectArchitecture(source.list(), source.path);
      // The converted folder's UNet is one of the two; the other is written beside it.
      const other = path.join(work, `${name}-numerics-unet`);
      await emitUnet(source, arch.unet, arch.unetPrefix, {
        dir: other,
        ...(target === 'cpu' ? { target: 'cuda', decomposeFused: true } : {}),
      });
      const converted = path.join(dir, 'unet', 'model.onnx');
      const written = path.join(other, 'model.onnx');
      return {
        dir,
        numerics: {
          fused: target === 'cuda' ? converted : written,
          plain: target === 'cuda' ? written : converted,
          contextDim: arch.unet.contextDim,
        },
        checkpoint,
        checkpointMs,
        convertMs,
      };
    } finally {
      await source.close();
    }
  } finally {
    await rm(file, { force: true });
  }
}
