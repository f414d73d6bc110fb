// `node scripts/run-tool.mjs tools/convert/random-checkpoint.ts --keyset sd15|sd21|sdxl --out FILE`
// A full-size random-weight fp16 .safetensors checkpoint from a recorded key set (see
// random-weights.ts), for the conversion benchmark and for trying the converter by hand.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeRandomCheckpoint } from './random-weights';
const { values } = parseArgs({
  options: { keyset: { type: 'string' }, out: { type: 'string' } },
});
if (!values.keyset || !values.out || !['sd15', 'sd21', 'sdxl'].includes(values.keyset)) {
  console.error('random-checkpoint: --keyset sd15|sd21|sdxl --out FILE');
  process.exit(2);
}
const count = await writeRandomCheckpoint(values.keyset as 'sd15', path.resolve(values.out));
console.log(`${values.out}: ${count} tensors of ${values.keyset}, random fp16 weights`);
