// `npm run bench:memory [-- --unet mid|sd15 --sizes 512[,768] --dtypes float32[,float16]
//  --variants matmul,fused[,fused-noarena] --calls N --threads N --out FILE]`: peak memory of the
// UNet at work, one child process per case so each peak is its own.
// `npm run bench:memory -- --generate DIR --size N [--steps N --cfg X --memory-budget MB
//  --optimized-cache DIR]`: one whole generation of a model folder (e.g. a converted SDXL
// checkpoint at 1024), its peak per phase (memory-generate.ts); with --optimized-cache the first
// run writes the optimized graphs there and a second creates its sessions from them.
// `npm run bench:memory -- --decoder [...]`: the VAE decoder alone, whole and tiled, per setting
// of ONNX Runtime's arena and memory patterns (memory-decoder.ts).
//
// A case is one UNet (the bench's random-weight fixture, whose attention is exported MatMul +
// Softmax as in diffusers/optimum folders), one storage dtype, one image size and one variant:
//   matmul          loaded as exported (attention rewrite off): every head's N x N scores exist
//   fused           rewritten to MultiHeadAttention at load (the engine's default)
//   fused-noarena   the same with ONNX Runtime's CPU arena and memory patterns off
//   fused-keep16    fused, with fp16 storage handed to ONNX Runtime as it is (no widening,
//                   widen-fp16.ts: ORT folds the Casts itself, as before the widening)
//   fused-cache     fused, through a fresh optimized-graph cache: one child loads cold and writes
//                   the entry (cache 'written'), a second opens it (cache 'hit', the warm load)
// The child creates the session (no optimized-graph cache but in fused-cache, so the load is
// cold), notes its peak
// RSS (VmHWM), resets the peak (/proc/self/clear_refs 5) and runs `calls` classifier-free-guidance
// UNet calls (batch 2) at the size; it reports load time, per-call time and both peaks. The
// fixture's text encoder and VAE are small, so the UNet's peak is the generation's; this is
// what a 512x512 SD-1.5 generation holds at once. Linux only (VmHWM). One JSON document on
// stdout, also written to bench-results/memory-<date>.json; progress on stderr.
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { MID_UNET_CONFIG, SD15_UNET_CONFIG } from '../../tests/fixtures/models';
import { getRuntimeInfo } from '../../src/engine';
import { createSession } from '../../src/engine/models/providers';
import { benchModel, isEntry, repoRoot, writeResult } from './fixture';
import {
  ARENA_SETTINGS,
  type ArenaSetting,
  decoderMatrix,
  runDecoderChild,
} from './memory-decoder';
import { measureGeneration } from './memory-generate';

const log = (msg: string) => process.stderr.write(`bench:memory: ${msg}\n`);
const GiB = 2 ** 30;
const round = (x: number, d = 2) => Number(x.toFixed(d));

export const VARIANTS = [
  'matmul',
  'fused',
  'fused-noarena',
  'fused-keep16',
  'fused-cache',
] as const;
export type Variant = (typeof VARIANTS)[number];

/** A /proc/self/status field in bytes (VmHWM: peak resident set; VmRSS: now). */
function statusBytes(field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(
    readFileSync('/proc/self/status', 'utf8'),
  );
  return m ? Number(m[1]) * 1024 : NaN;
}

export interface CaseResult {
  unet: string;
  dtype: 'float32' | 'float16';
  size: number;
  variant: Variant;
  attentionRewrites: number;
  /** Float16 weights widened before ONNX Runtime read them (0: none, or kept as float16). */
  widenedWeights: number;
  /** The optimized-graph cache: 'off', 'written' (cold) or 'hit' (warm). */
  cache: string;
  loadMs: number;
  /** Peak RSS while the session was created, GiB. */
  loadPeakGiB: number;
  /** RSS once loaded, before the first call, GiB. */
  loadedGiB: number;
  /** Peak RSS over the UNet calls (reset after the load), GiB. */
  runPeakGiB: number;
  /** Median wall time of one CFG UNet call (batch 2), ms. */
  callMs: number;
  callsMs: number[];
}

/** In the child: one case. */
async function child(args: {
  model: string;
  unet: string;
  dtype: 'float32' | 'float16';
  size: number;
  variant: Variant;
  calls: number;
  threads?: number;
  /** The optimized-graph cache folder (fused-cache). */
  cache?: string;
}): Promise<CaseResult> {
  const started = performance.now();
  const created = await createSession(args.model, 'unet/model.onnx', 'cpu', {
    rewriteAttention: args.variant !== 'matmul',
    memArena: args.variant !== 'fused-noarena',
    widenFloat16: args.variant !== 'fused-keep16',
    ...(args.cache ? { optimizedCacheDir: args.cache } : {}),
    ...(args.threads ? { threads: args.threads } : {}),
  });
  const loadMs = performance.now() - started;
  const loadPeak = statusBytes('VmHWM');
  const loaded = statusBytes('VmRSS');
  // Reset VmHWM to the current RSS (proc(5), clear_refs), so the run's peak is its own.
  writeFileSync('/proc/self/clear_refs', '5');
  const s = created.session;
  const h = args.size / 8;
  const feeds: Record<string, ort.Tensor> = {};
  for (const meta of s.inputMetadata) {
    if (!meta.isTensor) continue;
    const dims =
      meta.name === 'sample'
        ? [2, 4, h, h]
        : meta.name === 'encoder_hidden_states'
          ? [2, 77, SD15_UNET_CONFIG.cross_attention_dim]
          : meta.shape.map((d) => (typeof d === 'number' ? d : 2));
    if (meta.name === 'encoder_hidden_states' && args.unet === 'mid')
      dims[2] = MID_UNET_CONFIG.cross_attention_dim;
    const n = dims.reduce((a, b) => a * b, 1);
    const t = meta.type;
    if (t === 'int64')
      feeds[meta.name] = new ort.Tensor('int64', new BigInt64Array(n).fill(500n), dims);
    else if (t === 'float16')
      feeds[meta.name] = new ort.Tensor('float16', new Uint16Array(n).fill(0x3800), dims);
    else feeds[meta.name] = new ort.Tensor('float32', new Float32Array(n).fill(0.5), dims);
  }
  const callsMs: number[] = [];
  for (let i = 0; i < args.calls; i++) {
    const t0 = performance.now();
    await s.run(feeds);
    callsMs.push(performance.now() - t0);
    log(`${args.variant} ${args.dtype} ${args.size}: call ${i + 1} ${Math.round(callsMs[i])} ms`);
  }
  const runPeak = statusBytes('VmHWM');
  await s.release();
  const sorted = [...callsMs].sort((a, b) => a - b);
  return {
    unet: args.unet,
    dtype: args.dtype,
    size: args.size,
    variant: args.variant,
    attentionRewrites: created.attentionRewrites,
    widenedWeights: created.widenedWeights,
    cache: created.cache,
    loadMs: Math.round(loadMs),
    loadPeakGiB: round(loadPeak / GiB),
    loadedGiB: round(loaded / GiB),
    runPeakGiB: round(runPeak / GiB),
    callMs: Math.round(
      sorted.length % 2
        ? sorted[sorted.length >> 1]
        : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2,
    ),
    callsMs: callsMs.map((x) => Math.round(x)),
  };
}

function runChild(argv: string[]): Promise<CaseResult> {
  return new Promise((resolve, reject) => {
    // Through run-tool, so a child is this tool even when bench.ts bundled the parent.
    const root = repoRoot();
    const tool = ['scripts/run-tool.mjs', 'tools/bench/memory.ts'];
    const p = spawn(process.execPath, [...tool, '--child', ...argv], {
      cwd: root,
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('error', reject);
    p.on('exit', (code, signal) => {
      if (code === 0) resolve(JSON.parse(out) as CaseResult);
      else reject(new Error(`the case ${argv.join(' ')} exited with ${signal ?? code}`));
    });
  });
}

/**
 * Per dtype and size: each variant's run peak and its call time over the exported graph's
 * (matmul) in the same run, the per-step ratio the rewrite must keep at or below 1.
 */
export function summarizeMemory(
  results: Awaited<ReturnType<typeof memoryMatrix>>,
): Record<string, Record<string, { runPeakGiB: number; callMs: number; callRatio?: number }>> {
  const out: Record<
    string,
    Record<string, { runPeakGiB: number; callMs: number; callRatio?: number }>
  > = {};
  for (const r of results) {
    if (!('runPeakGiB' in r)) continue;
    const key = `${r.dtype} ${r.size}`;
    const base = results.find(
      (x) =>
        'runPeakGiB' in x && x.dtype === r.dtype && x.size === r.size && x.variant === 'matmul',
    ) as CaseResult | undefined;
    // fused-cache has two rows: the cold load that wrote the entry and the warm one.
    (out[key] ??= {})[r.cache === 'hit' ? `${r.variant} warm` : r.variant] = {
      runPeakGiB: r.runPeakGiB,
      callMs: r.callMs,
      ...(base ? { callRatio: round(r.callMs / base.callMs, 3) } : {}),
    };
  }
  return out;
}

const list = (s: string) =>
  s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);

/**
 * Every case of the matrix, one child each, in order; a failed case (out of memory) is recorded
 * with its reason and the rest still run.
 */
export async function memoryMatrix(opts: {
  unet: 'mid' | 'sd15';
  sizes: number[];
  dtypes: ('float32' | 'float16')[];
  variants: Variant[];
  calls: number;
  threads?: number;
}): Promise<(CaseResult | { dtype: string; size: number; variant: string; error: string })[]> {
  const root = repoRoot();
  const cfg = opts.unet === 'sd15' ? SD15_UNET_CONFIG : MID_UNET_CONFIG;
  const results = [];
  for (const dtype of opts.dtypes) {
    const { info } = await benchModel(root, `${opts.unet}${dtype === 'float16' ? '-fp16' : ''}`, {
      unet: cfg,
      hiddenSize: cfg.cross_attention_dim,
      dtype,
      externalWeights: true,
    });
    const model = path.join(info.dir, 'unet', 'model.onnx');
    for (const size of opts.sizes)
      for (const variant of opts.variants) {
        const argv = [
          `--model=${model}`,
          `--unet=${opts.unet}`,
          `--dtype=${dtype}`,
          `--size=${size}`,
          `--variant=${variant}`,
          `--calls=${opts.calls}`,
          ...(opts.threads ? [`--threads=${opts.threads}`] : []),
        ];
        // fused-cache: the cold child writes a fresh cache, the warm one opens it.
        const cache =
          variant === 'fused-cache'
            ? await mkdtemp(path.join(os.tmpdir(), 'latent-bench-ortcache-'))
            : undefined;
        try {
          for (const run of cache ? ['cold', 'warm'] : ['']) {
            try {
              const r = await runChild(cache ? [...argv, `--cache=${cache}`] : argv);
              log(JSON.stringify(r));
              results.push(r);
            } catch (e) {
              const error = e instanceof Error ? e.message : String(e);
              log(error);
              results.push({ dtype, size, variant: run ? `${variant} ${run}` : variant, error });
            }
          }
        } finally {
          if (cache) await rm(cache, { recursive: true, force: true });
        }
      }
  }
  return results;
}

/** The machine a result was measured on, at the head of each document. */
function machine() {
  return {
    runtime: getRuntimeInfo(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    memGiB: round(os.totalmem() / GiB, 1),
    loadAvg: os.loadavg().map((x) => round(x)),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      child: { type: 'boolean', default: false },
      model: { type: 'string' },
      unet: { type: 'string', default: 'sd15' },
      sizes: { type: 'string', default: '512' },
      size: { type: 'string' },
      dtypes: { type: 'string', default: 'float32,float16' },
      dtype: { type: 'string' },
      variants: { type: 'string', default: 'matmul,fused,fused-noarena' },
      variant: { type: 'string' },
      calls: { type: 'string', default: '2' },
      threads: { type: 'string' },
      out: { type: 'string' },
      generate: { type: 'string' },
      steps: { type: 'string', default: '1' },
      cfg: { type: 'string', default: '7' },
      'memory-budget': { type: 'string' },
      cache: { type: 'string' },
      'optimized-cache': { type: 'string' },
      decoder: { type: 'boolean', default: false },
      'decoder-child': { type: 'boolean', default: false },
      vae: { type: 'string' },
      latent: { type: 'string', default: '128' },
      tile: { type: 'string' },
      tiles: { type: 'string', default: '0,56,80' },
      arena: { type: 'string' },
      arenas: { type: 'string', default: ARENA_SETTINGS.join(',') },
    },
  });
  if (process.platform !== 'linux') throw new Error('bench:memory reads /proc: Linux only.');
  const threads = values.threads ? Number(values.threads) : undefined;
  const calls = Math.max(1, Number(values.calls));
  if (values['decoder-child']) return runDecoderChild(values, log);
  if (values.decoder) {
    // The VAE decoder alone (memory-decoder.ts): whole and tiled, per arena setting.
    const arenas = list(values.arenas);
    for (const a of arenas)
      if (!(ARENA_SETTINGS as readonly string[]).includes(a))
        throw new Error(`--arenas: "${a}" is not one of ${ARENA_SETTINGS.join(', ')}.`);
    const results = await decoderMatrix(
      {
        latent: Number(values.latent),
        tiles: list(values.tiles).map(Number),
        arenas: arenas as ArenaSetting[],
        calls,
        ...(threads ? { threads } : {}),
      },
      log,
    );
    await writeResult('memory-decoder', { ...machine(), results }, values.out);
    return;
  }
  if (values.generate) {
    // One whole generation of a model folder in this process, its peak per phase.
    const size = Number(values.size ?? values.sizes);
    if (!Number.isInteger(size) || size < 64 || size % 8)
      throw new Error(`--size must be a multiple of 8 from 64, not "${values.size}".`);
    const r = await measureGeneration(
      {
        model: path.resolve(values.generate),
        size,
        steps: Math.max(1, Number(values.steps)),
        guidance: Number(values.cfg),
        ...(threads ? { threads } : {}),
        ...(values['memory-budget'] ? { memoryBudgetMb: Number(values['memory-budget']) } : {}),
        ...(values['optimized-cache']
          ? { optimizedCacheDir: path.resolve(values['optimized-cache']) }
          : {}),
      },
      log,
    );
    await writeResult('memory-generate', { ...machine(), generation: r }, values.out);
    return;
  }
  if (values.child) {
    const r = await child({
      model: values.model ?? '',
      unet: values.unet,
      dtype: values.dtype === 'float16' ? 'float16' : 'float32',
      size: Number(values.size),
      variant: values.variant as Variant,
      calls,
      ...(threads ? { threads } : {}),
      ...(values.cache ? { cache: values.cache } : {}),
    });
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  const unet = values.unet;
  if (unet !== 'mid' && unet !== 'sd15')
    throw new Error(`--unet must be mid or sd15, not "${unet}".`);
  const sizes = list(values.sizes).map(Number);
  if (sizes.some((s) => !Number.isInteger(s) || s < 64 || s % 8))
    throw new Error(`--sizes must be multiples of 8 from 64, not "${values.sizes}".`);
  const dtypes = list(values.dtypes);
  if (dtypes.some((d) => d !== 'float32' && d !== 'float16'))
    throw new Error(`--dtypes must be float32 and/or float16, not "${values.dtypes}".`);
  const variants = list(values.variants);
  for (const v of variants)
    if (!(VARIANTS as readonly string[]).includes(v))
      throw new Error(`--variants: "${v}" is not one of ${VARIANTS.join(', ')}.`);
  const results = await memoryMatrix({
    unet,
    sizes,
    dtypes: dtypes as ('float32' | 'float16')[],
    variants: variants as Variant[],
    calls,
    ...(threads ? { threads } : {}),
  });
  const doc = {
    ...machine(),
    unet,
    calls,
    summary: summarizeMemory(results),
    results,
  };
  await writeResult('memory', doc, values.out);
}

// Bundled into bench.ts too: run only as its own tool (and its children).
if (isEntry('memory'))
  main().catch((err: unknown) => {
    process.stderr.write(`bench:memory: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  });
