// `npm run bench:memory -- --decoder [--latent 128 --tiles 0,56,80
//  --arenas on,no-pattern,no-arena,off --calls N --threads N --out FILE]`: the peak memory and
// time of the VAE decoder alone, the part that held an SDXL generation's peak at 1024x1024
// (README "Performance"), fast to iterate on where a whole SDXL generation takes minutes more.
//
// The decoder is SD's (SDXL's has the same architecture; only its weights and latent scale
// differ): a full-size random-weight VAE written from the recorded sd15 key set's
// `first_stage_model.` tensors and converted by the engine's own converter (convertVae, fp16
// storage as `npm run convert` writes it), built once into tests/fixtures/.models/. One child
// process per case, so each peak is its own; a case is one latent size, one tile side (0: one
// whole call; else the engine's blended tiles, decodeLatents over planTiles with the overlap the
// memory plan uses) and one setting of ONNX Runtime's CPU memory options:
//   on          arena and memory patterns on (ONNX Runtime's defaults)
//   no-pattern  memory patterns off (enableMemPattern false), arena on
//   no-arena    arena off (enableCpuMemArena false), memory patterns on
//   off         both off
// The child creates the session (cold), reads VmHWM, resets it, and runs `calls` decodes,
// reporting each call's time and peak (VmHWM read and reset around every call). Linux only.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { convertVae } from '../../src/engine/convert/convert-vae';
import { componentSession } from '../../src/engine/models/load';
import { sessionOptions } from '../../src/engine/models/providers';
import { signatureFromSession } from '../../src/engine/models/signature';
import { emptyTimings } from '../../src/engine/pipelines/stats';
import { decodeLatents, planTiles } from '../../src/engine/pipelines/tiling';
import {
  encodeFloats,
  readKeySet,
  writeSafetensors,
  xorshift32,
} from '../../tests/fixtures/checkpoint';
import { repoRoot } from './fixture';
import { resetPeak, statusBytes } from './memory-generate';

const GiB = 2 ** 30;
const round = (x: number, d = 2) => Number(x.toFixed(d));

export const ARENA_SETTINGS = ['on', 'no-pattern', 'no-arena', 'off'] as const;
export type ArenaSetting = (typeof ARENA_SETTINGS)[number];

export interface DecoderCase {
  latent: number;
  /** Latent tile side; 0 for one whole call. */
  tile: number;
  tiles: number;
  arena: ArenaSetting;
  loadMs: number;
  /** RSS once the session is created, GiB. */
  loadedGiB: number;
  /** Per call: wall time and peak RSS over the loaded session (VmHWM reset before each). */
  calls: { ms: number; peakGiB: number; addedGiB: number; endGiB: number }[];
}

/**
 * The random full-size VAE folder (vae_decoder/ and vae_encoder/), built once: a VAE-only
 * safetensors of the sd15 key set's `first_stage_model.` tensors (small random fp16 values,
 * xorshift32), converted with convertVae at fp16 storage.
 */
export async function benchVae(log: (msg: string) => void): Promise<string> {
  const root = repoRoot();
  const cache =
    process.env.LATENT_STUDIO_FIXTURE_CACHE ?? path.join(root, 'tests', 'fixtures', '.models');
  const dir = path.join(cache, 'bench-vae-sd-full');
  if (existsSync(path.join(dir, 'vae.json'))) return dir;
  log(`building the full-size random VAE into ${path.relative(root, dir)} (once)`);
  await mkdir(cache, { recursive: true });
  const file = `${dir}.tmp-${process.pid}.safetensors`;
  const set = await readKeySet('sd15');
  const specs = set.tensors
    .filter(([name]) => name.startsWith('first_stage_model.'))
    .map(([name, shape]) => ({ name, dtype: 'F16' as const, shape }));
  let seed = 1;
  try {
    await writeSafetensors(file, specs, (t) => {
      const n = t.shape.reduce((a, b) => a * b, 1);
      const r = xorshift32(seed++);
      const v = new Float32Array(n);
      for (let i = 0; i < n; i++) v[i] = ((r.next().value / 2 ** 32 - 0.5) * 0.12) as number;
      return encodeFloats(v, 'F16');
    });
    await convertVae(file, dir, { precision: 'fp16' });
  } finally {
    await rm(file, { force: true });
  }
  return dir;
}

/** In the child: one case. */
async function decoderChild(
  args: {
    vae: string;
    latent: number;
    tile: number;
    arena: ArenaSetting;
    calls: number;
    threads?: number;
  },
  log: (msg: string) => void,
): Promise<DecoderCase> {
  const options = sessionOptions('cpu', args.threads ? { threads: args.threads } : {});
  options.enableMemPattern = args.arena === 'on' || args.arena === 'no-arena';
  options.enableCpuMemArena = args.arena === 'on' || args.arena === 'no-pattern';
  const file = path.join(args.vae, 'vae_decoder', 'model.onnx');
  const started = performance.now();
  const session = await ort.InferenceSession.create(file, options);
  const loadMs = Math.round(performance.now() - started);
  const decoder = componentSession(
    'vae_decoder',
    'vae_decoder/model.onnx',
    session,
    signatureFromSession(session),
    'cpu',
    null,
  );
  const h = args.latent;
  const grid =
    args.tile > 0 ? planTiles(h, h, args.tile, Math.max(2, Math.floor(args.tile / 4))) : null;
  const r = xorshift32(7);
  const latents = new Float32Array(4 * h * h);
  for (let i = 0; i < latents.length; i++) latents[i] = (r.next().value / 2 ** 32 - 0.5) * 2;
  const loaded = statusBytes('VmRSS');
  const calls = [];
  for (let i = 0; i < args.calls; i++) {
    const before = statusBytes('VmRSS');
    resetPeak();
    const t0 = performance.now();
    await decodeLatents({ timings: emptyTimings() }, decoder, latents, 0, h, h, 0.13025, grid);
    const ms = Math.round(performance.now() - t0);
    const peak = statusBytes('VmHWM');
    calls.push({
      ms,
      peakGiB: round(peak / GiB),
      addedGiB: round((peak - before) / GiB),
      endGiB: round(statusBytes('VmRSS') / GiB),
    });
    log(`${args.arena} tile ${args.tile}: call ${i + 1} ${JSON.stringify(calls[i])}`);
  }
  await session.release();
  return {
    latent: h,
    tile: args.tile,
    tiles: grid?.tiles.length ?? 1,
    arena: args.arena,
    loadMs,
    loadedGiB: round(loaded / GiB),
    calls,
  };
}

function spawnChild(argv: string[]): Promise<DecoderCase> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      ['scripts/run-tool.mjs', 'tools/bench/memory.ts', '--decoder-child', ...argv],
      { cwd: repoRoot(), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      if (code === 0) resolve(JSON.parse(out) as DecoderCase);
      else reject(new Error(`the decoder case ${argv.join(' ')} exited with ${signal ?? code}`));
    });
  });
}

/** Every case, one child each; a failed case is recorded with its reason. */
export async function decoderMatrix(
  o: {
    latent: number;
    tiles: number[];
    arenas: ArenaSetting[];
    calls: number;
    threads?: number;
  },
  log: (msg: string) => void,
): Promise<(DecoderCase | { tile: number; arena: string; error: string })[]> {
  const vae = await benchVae(log);
  const results = [];
  for (const tile of o.tiles)
    for (const arena of o.arenas) {
      const argv = [
        `--vae=${vae}`,
        `--latent=${o.latent}`,
        `--tile=${tile}`,
        `--arena=${arena}`,
        `--calls=${o.calls}`,
        ...(o.threads ? [`--threads=${o.threads}`] : []),
      ];
      try {
        const r = await spawnChild(argv);
        log(JSON.stringify(r));
        results.push(r);
      } catch (e) {
        const error = e instanceof Error ? e.message : String(e);
        log(error);
        results.push({ tile, arena, error });
      }
    }
  return results;
}

/** The child's entry: parses its own arguments and prints its case as JSON. */
export async function runDecoderChild(
  values: Record<string, string | boolean | undefined>,
  log: (msg: string) => void,
): Promise<void> {
  const r = await decoderChild(
    {
      vae: String(values.vae),
      latent: Number(values.latent),
      tile: Number(values.tile),
      arena: values.arena as ArenaSetting,
      calls: Number(values.calls),
      ...(values.threads ? { threads: Number(values.threads) } : {}),
    },
    log,
  );
  process.stdout.write(JSON.stringify(r) + '\n');
}
