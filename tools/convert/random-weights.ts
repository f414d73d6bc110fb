// Writes a full-size random-weight fp16 .safetensors checkpoint with exactly the keys and shapes
// of a recorded key set (tests/fixtures/reference/keysets), for the conversion benchmark and for
// trying the converter by hand without downloading weights. Speed and memory of a conversion do
// not depend on the values. position_ids are int64 0..76, as real fp16 checkpoints store them.
import { readKeySet, writeSafetensors } from '../../tests/fixtures/checkpoint';
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

export async function writeRandomCheckpoint(
  keyset: 'sd15' | 'sd21' | 'sdxl',
  file: string,
): Promise<number> {
  const set = await readKeySet(keyset);
  const specs = set.tensors.map(([name, shape]) => ({
    name,
    dtype: name.endsWith('position_ids') ? ('I64' as const) : ('F16' as const),
    shape,
  }));
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
    { 'latent-studio.random-weights': keyset },
  );
  return specs.length;
}
