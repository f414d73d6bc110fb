// `node scripts/run-tool.mjs tools/convert/random-checkpoint.ts --keyset sd15|sd21|sdxl --out FILE
//   [--inpainting] [--prediction epsilon|v]`
// A full-size random-weight fp16 .safetensors checkpoint from a recorded key set (see
// random-weights.ts), for the conversion benchmark and for trying the converter by hand.
// --inpainting widens the UNet's conv_in to 9 input channels; --prediction records the
// prediction type as SAI ModelSpec metadata (`modelspec.prediction_type`), which the converter
// believes (an SD 2.x file otherwise does not say whether it is the 768 px v model).
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeRandomCheckpoint } from './random-weights';
const { values } = parseArgs({
  options: {
    keyset: { type: 'string' },
    out: { type: 'string' },
    inpainting: { type: 'boolean', default: false },
    prediction: { type: 'string' },
  },
});
if (
  !values.keyset ||
  !values.out ||
  !['sd15', 'sd21', 'sdxl'].includes(values.keyset) ||
  (values.prediction !== undefined && !['epsilon', 'v'].includes(values.prediction))
) {
  console.error(
    'random-checkpoint: --keyset sd15|sd21|sdxl --out FILE [--inpainting] [--prediction epsilon|v]',
  );
  process.exit(2);
}
const count = await writeRandomCheckpoint(values.keyset as 'sd15', path.resolve(values.out), {
  inpainting: values.inpainting,
  ...(values.prediction ? { metadata: { 'modelspec.prediction_type': values.prediction } } : {}),
});
console.log(
  `${values.out}: ${count} tensors of ${values.keyset}${values.inpainting ? ' (9-channel inpainting)' : ''}, random fp16 weights`,
);
