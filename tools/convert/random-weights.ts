// Writes a full-size random-weight fp16 .safetensors checkpoint with exactly the keys and shapes
// of a recorded key set (tests/fixtures/reference/keysets), for the conversion benchmark and for
// trying the converter by hand without downloading weights. Speed and memory of a conversion do
// not depend on the values. position_ids are int64 0..76, as real fp16 checkpoints store them.
import {
  inpaintingKeySet,
  readKeySet,
  writeSafetensors,
  type TensorSpec,
} from '../../tests/fixtures/checkpoint';
import { floatToHalf } from '../../tests/fixtures/onnx-builder';

/** fp16 bits of small values (|x| < ~0.06) from xorshift32, the same for the same seed. */
function randomHalves(count: number, seed: number): Uint8Array {
  const table = new Uint16Array(1024);
  for (let i = 0; i < 1024; i++) table[i] = floatToHalf(((i + 0.5) / 1024 - 0.5) * 0.12);
  const out = new Uint16Array(count);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < count; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = table[s & 1023]!;
  }
  return new Uint8Array(out.buffer);
}

export interface RandomCheckpointOptions {
  /**
   * The 9-channel inpainting variant (4 latent + 1 mask + 4 masked-image latent channels into
   * the UNet's conv_in); every other key is the same as the base model's, as in the released
   * sd-v1-5-inpainting and SDXL inpainting checkpoints.
   */
  inpainting?: boolean;
  /** Written as safetensors metadata (e.g. `modelspec.prediction_type`). */
  metadata?: Record<string, string>;
}

/** The tensors of a random checkpoint of `keyset`: names and shapes of the key set, fp16. */
export async function randomCheckpointSpecs(
  keyset: 'sd15' | 'sd21' | 'sdxl',
  options: RandomCheckpointOptions = {},
): Promise<TensorSpec[]> {
  const base = await readKeySet(keyset);
  const set = options.inpainting ? inpaintingKeySet(base) : base;
  return set.tensors.map(([name, shape]) => ({
    name,
    dtype: name.endsWith('position_ids') ? ('I64' as const) : ('F16' as const),
    shape,
  }));
}

export async function writeRandomCheckpoint(
  keyset: 'sd15' | 'sd21' | 'sdxl',
  file: string,
  options: RandomCheckpointOptions = {},
): Promise<number> {
  const specs = await randomCheckpointSpecs(keyset, options);
  let seed = 1;
  await writeSafetensors(
    file,
    specs,
    (t) => {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (t.dtype === 'I64')
        return new Uint8Array(BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 77)).buffer);
      return randomHalves(n, seed++);
    },
    {
      'latent-studio.random-weights': `${keyset}${options.inpainting ? '-inpainting' : ''}`,
      ...options.metadata,
    },
  );
  return specs.length;
}
