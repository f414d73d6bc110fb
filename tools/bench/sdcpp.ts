// `npm run bench:sdcpp -- --sd-cli PATH [--checkpoint FILE] [--size 256] [--steps 4]
//   [--types f32,f16,q8_0] [--threads N] [--repeats 2] [--work DIR]`
//
// Per-step time of our engine against stable-diffusion.cpp on the same SD 1.5 checkpoint, same
// size, steps, sampler (Euler), CFG scale (7, so both run the UNet on a conditional and an
// unconditional input each step) and thread count. Not run in CI: it needs a built sd-cli.
//
// Building sd-cli (CPU): `git clone --recursive https://github.com/leejet/stable-diffusion.cpp`,
// then `cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DSD_WEBP=OFF -DSD_WEBM=OFF
// -DGGML_NATIVE=ON && cmake --build build -j` gives build/bin/sd-cli. The README's Benchmarks
// section names the commit the published figures came from.
//
// Without --checkpoint the tool writes a full-size random-weight SD 1.5 checkpoint (fp16
// safetensors with the real key set: tools/convert/random-weights.ts) into the work folder.
// Random weights make noise, not pictures, but the arithmetic per step is the real model's.
// Our side runs the generate CLI (out/main/cli.mjs: `npm run build:node` first), which
// converts the checkpoint once into the work folder's data folder; a first, untimed run pays
// for the conversion and the optimized-graph cache. Each side's denoising time comes from its
// own log: ours `denoise N ms`, sd.cpp's `sampling completed, taking N s`.
//
// One JSON document on stdout, also written to bench-results/sdcpp-<date>.json (or --out).
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { writeRandomCheckpoint } from '../convert/random-weights';
import { repoRoot, writeResult } from './fixture';

const log = (msg: string) => process.stderr.write(`bench:sdcpp: ${msg}\n`);

const { values } = parseArgs({
  options: {
    'sd-cli': { type: 'string' },
    checkpoint: { type: 'string' },
    size: { type: 'string', default: '256' },
    steps: { type: 'string', default: '4' },
    types: { type: 'string', default: 'f32,f16,q8_0' },
    threads: { type: 'string', default: String(os.availableParallelism()) },
    repeats: { type: 'string', default: '2' },
    work: { type: 'string' },
    out: { type: 'string' },
  },
});

const size = Number(values.size);
const steps = Number(values.steps);
const threads = Number(values.threads);
const repeats = Number(values.repeats);
const types = values.types.split(',').filter(Boolean);
const sdCli = values['sd-cli'];
const problems = [
  !sdCli || !existsSync(sdCli) ? '--sd-cli must name a built sd-cli binary' : '',
  !(size >= 64 && size % 64 === 0) ? '--size must be a multiple of 64' : '',
  !(steps >= 1) ? '--steps must be 1 or more' : '',
  !(threads >= 1) ? '--threads must be 1 or more' : '',
  !(repeats >= 1) ? '--repeats must be 1 or more' : '',
  types.some((t) => !['f32', 'f16', 'q8_0', 'q4_0'].includes(t))
    ? '--types takes f32, f16, q8_0, q4_0'
    : '',
].filter(Boolean);
if (problems.length) {
  log(problems.join('; '));
  process.exit(2);
}

/** Runs a command; resolves with its combined output, rejects with the tail on failure. */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${path.basename(cmd)} exited ${code}:\n${out.slice(-2000)}`)),
    );
  });
}

function matchNumber(text: string, re: RegExp, what: string): number {
  const m = re.exec(text);
  if (!m) throw new Error(`no ${what} in the log:\n${text.slice(-1500)}`);
  return Number(m[1]);
}

/** The middle value; of an even count, the mean of the middle two. */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const root = repoRoot();
  const cli = path.join(root, 'out', 'main', 'cli.mjs');
  if (!existsSync(cli)) throw new Error('out/main/cli.mjs is missing: run `npm run build:node`.');
  const work = path.resolve(values.work ?? path.join(os.tmpdir(), 'latent-sdcpp'));
  await mkdir(work, { recursive: true });
  let checkpoint = values.checkpoint ? path.resolve(values.checkpoint) : '';
  if (!checkpoint) {
    checkpoint = path.join(work, 'random-sd15.safetensors');
    if (!existsSync(checkpoint)) {
      log(`writing a random-weight SD 1.5 checkpoint to ${checkpoint}`);
      await writeRandomCheckpoint('sd15', checkpoint);
    }
  }
  const prompt = 'a lighthouse on a cliff at dusk, oil painting';
  const common = { size, steps, cfg: 7, sampler: 'euler', seed: 42, threads };

  // Ours: one untimed run converts and warms the caches.
  const ours: number[] = [];
  const dataDir = path.join(work, 'data');
  const oursArgs = [
    cli,
    '--model',
    checkpoint,
    '--prompt',
    prompt,
    '--steps',
    String(steps),
    '--width',
    String(size),
    '--height',
    String(size),
    '--cfg',
    '7',
    '--sampler',
    'euler',
    '--seed',
    '42',
    '--threads',
    String(threads),
    '--data-dir',
    dataDir,
    '--no-metadata',
  ];
  for (let i = 0; i <= repeats; i++) {
    const text = await run(process.execPath, [...oursArgs, '--out', path.join(work, 'ours.png')]);
    const ms = matchNumber(text, /denoise (\d+(?:\.\d+)?) ms/, 'denoise time');
    if (i > 0) ours.push(ms / steps);
    log(`ours ${i === 0 ? '(warm-up)' : `run ${i}`}: ${(ms / steps).toFixed(0)} ms/step`);
  }

  const sdcpp: Record<string, { msPerStep: number; runs: number[] }> = {};
  for (const type of types) {
    const runs: number[] = [];
    for (let i = 0; i < repeats; i++) {
      const text = await run(sdCli!, [
        '-m',
        checkpoint,
        '-p',
        prompt,
        '--steps',
        String(steps),
        '-W',
        String(size),
        '-H',
        String(size),
        '--cfg-scale',
        '7',
        '--sampling-method',
        'euler',
        '-s',
        '42',
        '-t',
        String(threads),
        '--type',
        type,
        '-o',
        path.join(work, `sdcpp-${type}.png`),
      ]);
      const s = matchNumber(text, /sampling completed, taking (\d+(?:\.\d+)?)s/, 'sampling time');
      runs.push((s * 1000) / steps);
      log(`sd.cpp ${type} run ${i + 1}: ${((s * 1000) / steps).toFixed(0)} ms/step`);
    }
    sdcpp[type] = { msPerStep: median(runs), runs };
  }

  const oursMs = median(ours);
  const result = {
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? '', loadAvg: os.loadavg() },
    settings: common,
    checkpoint: path.basename(checkpoint),
    ours: { msPerStep: oursMs, runs: ours },
    sdcpp,
    // How many times faster ours is per step than each sd.cpp weight type.
    speedup: Object.fromEntries(
      Object.entries(sdcpp).map(([t, r]) => [t, Number((r.msPerStep / oursMs).toFixed(2))]),
    ),
  };
  await writeResult('sdcpp', result, values.out);
  if (!values.work) await rm(path.join(work, 'data'), { recursive: true, force: true });
}

main().catch((err: unknown) => {
  log(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
