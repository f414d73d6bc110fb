// `node scripts/run-tool.mjs tools/bench/convert.ts [--keyset sd15|sd21|sdxl] [--checkpoint FILE]
//   [--precision fp16|fp32] [--keep DIR]`  (also `npm run bench:convert -- ...`)
// The conversion benchmark of issue 11: a full-size random-weight checkpoint (written from the
// recorded key set unless --checkpoint names one) is converted in a child process, so the peak
// resident memory measured is the conversion's alone. Prints wall time, MB/s, peak RSS and its
// ratio to the checkpoint's size. Targets: SD 1.5 fp16 under 60 s with peak RSS under 1.5x the
// checkpoint on a 2-core machine; SDXL within 24 GB.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { writeRandomCheckpoint } from '../convert/random-weights';

const { values } = parseArgs({
  options: {
    keyset: { type: 'string', default: 'sd15' },
    checkpoint: { type: 'string' },
    precision: { type: 'string', default: 'fp16' },
    keep: { type: 'string' },
    child: { type: 'string' },
    out: { type: 'string' },
  },
});
const precision = values.precision === 'fp32' ? 'fp32' : 'fp16';
const vocabularyFile = path.resolve('resources', 'clip-bpe', 'bpe_simple_vocab_16e6.txt.gz');

if (values.child) {
  // The measured part: one conversion, then this process's own peak RSS.
  const started = performance.now();
  const result = await convertCheckpoint(values.child, values.out!, {
    vocabularyFile,
    precision,
    prediction: 'v_prediction', // only consulted for SD 2.x files without a global_step
  });
  const seconds = (performance.now() - started) / 1000;
  console.log(
    JSON.stringify({
      seconds,
      bytesWritten: result.bytesWritten,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      cpuSeconds: (process.cpuUsage().user + process.cpuUsage().system) / 1e6,
      family: result.family,
      unusedKeys: result.unusedKeys.length,
    }),
  );
  process.exit(0);
}

const work = await mkdtemp(path.join(values.keep ?? os.tmpdir(), 'bench-convert-'));
try {
  let checkpoint = values.checkpoint;
  if (!checkpoint) {
    checkpoint = path.join(work, `${values.keyset}-random.safetensors`);
    console.log(`writing a random-weight ${values.keyset} checkpoint to ${checkpoint} ...`);
    await writeRandomCheckpoint(values.keyset as 'sd15', checkpoint);
  }
  const size = (await stat(checkpoint)).size;
  const self = fileURLToPath(import.meta.url);
  const child = spawnSync(
    process.execPath,
    [self, '--child', checkpoint, '--out', path.join(work, 'converted'), '--precision', precision],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  if (child.status !== 0) throw new Error(`conversion failed (exit ${child.status})`);
  const r = JSON.parse(child.stdout.trim().split('\n').pop()!) as {
    seconds: number;
    bytesWritten: number;
    peakRssBytes: number;
    cpuSeconds: number;
    family: string;
    unusedKeys: number;
  };
  const gb = (b: number): string => (b / 1e9).toFixed(2);
  console.log(
    [
      `checkpoint   ${path.basename(checkpoint)} (${r.family}), ${gb(size)} GB`,
      `precision    ${precision}`,
      `time         ${r.seconds.toFixed(1)} s  (${(size / 1e6 / r.seconds).toFixed(0)} MB/s read, ${gb(r.bytesWritten)} GB written)`,
      `CPU time     ${r.cpuSeconds.toFixed(1)} s (user + system, all threads; the wall time depends on the machine's load)`,
      `peak RSS     ${gb(r.peakRssBytes)} GB = ${(r.peakRssBytes / size).toFixed(2)}x the checkpoint`,
      `unused keys  ${r.unusedKeys}`,
      `machine      ${os.cpus().length} cores, ${gb(os.totalmem())} GB, load ${os.loadavg()[0]!.toFixed(1)} at the end`,
    ].join('\n'),
  );
} finally {
  if (!values.keep) await rm(work, { recursive: true, force: true });
}
