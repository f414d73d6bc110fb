// `npm run convert -- --checkpoint FILE --out DIR [--vae FILE] [--precision fp16|fp32]
//  [--prediction epsilon|v] [--target cpu|cuda]`: a single-file checkpoint (.safetensors, .ckpt) into a diffusers
// ONNX folder that `npm run generate -- --model DIR` and the studio open. One line on stderr
// and a non-zero exit on any error; the output folder appears only when the conversion finished.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { UsageError, runCli } from './cli-run';
import { convertCheckpoint } from '../engine/convert/convert';
import {
  formatConvertProgress,
  resourcesDirFrom,
  sha256File,
  shortHash,
  vocabularyIn,
} from './models/checkpoint-cache';

const usage = `Usage: npm run convert -- --checkpoint FILE --out DIR [options]

  --checkpoint FILE    an SD 1.x, SD 2.x or SDXL single-file checkpoint (.safetensors, .ckpt)
  --out DIR            the model folder to create (must not exist)
  --vae FILE           a VAE-only file to use instead of the checkpoint's own (e.g. ft-MSE)
  --precision P        fp16 (default, half the size) or fp32 weights
  --prediction P       epsilon or v: for SD 2.x files that do not say which they are
  --target T           cpu (default: runs everywhere) or cuda (a float16 UNet with ONNX
                       Runtime's fused CUDA operators; runs on the CUDA provider only)
  --quiet              no progress on stderr`;

async function main(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      checkpoint: { type: 'string' },
      out: { type: 'string' },
      vae: { type: 'string' },
      precision: { type: 'string' },
      prediction: { type: 'string' },
      target: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (!values.checkpoint) throw new UsageError('--checkpoint is required.');
  if (!values.out) throw new UsageError('--out is required.');
  const precision = values.precision ?? 'fp16';
  if (precision !== 'fp16' && precision !== 'fp32')
    throw new UsageError(`--precision must be fp16 or fp32, not "${precision}".`);
  const prediction = values.prediction;
  if (prediction !== undefined && !['epsilon', 'v', 'v_prediction'].includes(prediction))
    throw new UsageError(`--prediction must be epsilon or v, not "${prediction}".`);

  const target = values.target ?? 'cpu';
  if (target !== 'cpu' && target !== 'cuda')
    throw new UsageError(`--target must be cpu or cuda, not "${target}".`);

  const here = path.dirname(fileURLToPath(import.meta.url));
  const controller = new AbortController();
  process.once('SIGINT', () => controller.abort());
  const checkpoint = path.resolve(values.checkpoint);
  const sha256 = await sha256File(checkpoint, { signal: controller.signal });
  const result = await convertCheckpoint(checkpoint, path.resolve(values.out), {
    vocabularyFile: vocabularyIn(resourcesDirFrom(here)),
    precision,
    sha256,
    signal: controller.signal,
    ...(values.vae ? { vae: path.resolve(values.vae) } : {}),
    ...(target === 'cuda' ? { target } : {}),
    ...(prediction ? { prediction: prediction === 'epsilon' ? 'epsilon' : 'v_prediction' } : {}),
    onProgress: (p) => {
      if (!values.quiet) process.stderr.write(`\r${formatConvertProgress(p)}      `);
    },
  });
  if (!values.quiet) process.stderr.write('\n');
  console.log(result.dir);
  if (!values.quiet) {
    console.error(
      `${result.family}${result.inpainting ? ' inpainting' : ''}, ${result.prediction}, ${result.sampleSize}px, ${result.precision}; model hash ${shortHash(sha256)}; ${(result.bytesWritten / 1e9).toFixed(2)} GB in ${result.seconds.toFixed(1)} s` +
        (result.unusedKeys.length
          ? `; ${result.unusedKeys.length} unused keys (${result.unusedKeys.slice(0, 3).join(', ')}...)`
          : ''),
    );
  }
  return 0;
}

runCli('latent-studio convert', main);
