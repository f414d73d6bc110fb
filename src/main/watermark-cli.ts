// `npm run watermark -- --check FILE...`: reads the invisible watermark of images (ours, or the
// one Stable Diffusion's reference scripts write), one line per file on stdout. Exit 0 when
// every file was read (marked or not); 1, with one sentence each, when a file cannot be read.
import path from 'node:path';
import { parseArgs } from 'node:util';
import { UsageError, runCli } from './cli-run';
import { StudioError } from '../shared';
import { checkWatermarkFile } from './images/watermark';

const usage = `Usage: npm run watermark -- --check FILE [FILE...] [--json]

  --check FILE    read the watermark of an image (PNG, JPEG, WebP; 256x256 pixels or more)
  --json          one JSON object per file instead of a sentence`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      check: { type: 'string', multiple: true },
      json: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  const files = [...(values.check ?? []), ...positionals];
  if (!values.check?.length) throw new UsageError('--check FILE is required.');
  let code = 0;
  for (const file of files) {
    try {
      const report = await checkWatermarkFile(path.resolve(file), `"${path.basename(file)}"`);
      console.log(values.json ? JSON.stringify({ file, ...report }) : `${file}: ${report.summary}`);
    } catch (err) {
      // Our own sentence, not the engine's wrapper: the next file is still read.
      if (!(err instanceof StudioError)) throw err;
      console.error(`latent-studio watermark: ${err.message}`);
      code = 1;
    }
  }
  return code;
}

runCli('latent-studio watermark', main);
