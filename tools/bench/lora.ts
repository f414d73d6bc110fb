// `npm run bench:lora -- [--model DIR] [--precision fp16|fp32] [--rank N] [--repeats N]
//   [--size N] [--threads N] [--keep DIR]`
// The LoRA benchmark of issue 12, on a full-size SD 1.5 UNet with random weights: a random
// checkpoint written from the recorded key set and converted by our converter (unless --model
// names a converted folder), and a rank-N kohya LoRA (default 32) over the full key set kohya's
// trainer targets in the UNet (every transformer's proj_in/out, attention q/k/v/out and
// feed-forward: 192 modules), written here with random factors. It measures, alternating base
// and LoRA runs so load on the machine hits both alike:
// - session creation: the plain UNet vs. planning + merging + creating it from patched weights
//   held in memory (target: under 5 s added), wall and CPU time (the CPU time says more on a
//   shared machine);
// - sampling: UNet steps (batch 2, as with guidance; 16x16 latents by default, so a step takes
//   seconds) with both sessions alive, paired step by step (target: ratio <= 1.02; the merged
//   graph is the same graph, so only noise should show). Skipped below 10 GB available.
// Prints the figures and the machine, and writes them to bench-results/lora-<date>.json.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { planLoras } from '../../src/engine/adapters/lora';
import { indexTargets } from '../../src/engine/adapters/lora-names';
import { convertCheckpoint } from '../../src/engine/convert/convert';
import { openModelFolder } from '../../src/engine/models';
import { readOnnxInitializerIndex } from '../../src/engine/models/onnx-file';
import { createSession, physicalCoreCount } from '../../src/engine/models/providers';
import { type TensorSpec, encodeFloats, writeSafetensors } from '../../tests/fixtures/checkpoint';
import { writeRandomCheckpoint } from '../convert/random-weights';

const { values } = parseArgs({
  options: {
    model: { type: 'string' },
    precision: { type: 'string', default: 'fp16' },
    rank: { type: 'string', default: '32' },
    repeats: { type: 'string', default: '3' },
    size: { type: 'string', default: '128' },
    steps: { type: 'string', default: '6' },
    threads: { type: 'string' },
    keep: { type: 'string' },
  },
});
const precision = values.precision === 'fp32' ? 'fp32' : 'fp16';
const rank = Number(values.rank);
const repeats = Number(values.repeats);
const steps = Number(values.steps);
const latent = Math.round(Number(values.size) / 8);
const threads = values.threads ? Number(values.threads) : physicalCoreCount();
const log = (m: string) => process.stderr.write(`bench:lora: ${m}\n`);
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[h] : (s[h - 1] + s[h]) / 2;
};
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** /proc/meminfo's MemAvailable in GB (os.freemem leaves the page cache out); Infinity elsewhere. */
function memAvailableGb(): number {
  try {
    const m = /MemAvailable:\s+(\d+) kB/.exec(readFileSync('/proc/meminfo', 'utf8'));
    return m ? Number(m[1]) / 1e6 : Infinity;
  } catch {
    return Infinity;
  }
}

/** kohya's UNet targets (Transformer2DModel's Linear and 1x1-conv layers). */
const KOHYA_UNET =
  /^(down|mid|up)_blocks?_.*attentions_\d+_(proj_in|proj_out|transformer_blocks_\d+_(attn[12]_(to_q|to_k|to_v|to_out_0)|ff_net_0_proj|ff_net_2))$/;

async function writeLora(file: string, modelPath: string): Promise<number> {
  const targets = indexTargets(readOnnxInitializerIndex(modelPath).initializers, 'unet');
  const specs: TensorSpec[] = [];
  const shapes = new Map<string, number[]>();
  for (const [flat, t] of targets) {
    if (!KOHYA_UNET.test(flat) || !/^(down|mid|up)_/.test(flat)) continue;
    const [out, inF] = [t.torchShape[0], t.torchShape.slice(1).reduce((a, b) => a * b, 1)];
    const conv = t.torchShape.length === 4;
    const key = `lora_unet_${flat}`;
    specs.push(
      {
        name: `${key}.lora_down.weight`,
        dtype: 'F16',
        shape: conv ? [rank, inF, 1, 1] : [rank, inF],
      },
      {
        name: `${key}.lora_up.weight`,
        dtype: 'F16',
        shape: conv ? [out, rank, 1, 1] : [out, rank],
      },
      { name: `${key}.alpha`, dtype: 'F32', shape: [] },
    );
    shapes.set(key, [out, inF]);
  }
  let seed = 7;
  await writeSafetensors(file, specs, (t) => {
    if (t.name.endsWith('.alpha')) return encodeFloats(Float32Array.of(rank / 2), 'F32');
    const n = t.shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      v[i] = (seed / 2 ** 32 - 0.5) * 0.02;
    }
    return encodeFloats(v, 'F16');
  });
  return shapes.size;
}

async function main(): Promise<void> {
  const work = await mkdtemp(path.join(values.keep ?? os.tmpdir(), 'bench-lora-'));
  try {
    let modelDir = values.model;
    if (!modelDir) {
      const ckpt = path.join(work, 'sd15-random.safetensors');
      log(`writing a random SD 1.5 checkpoint and converting it (${precision}) ...`);
      await writeRandomCheckpoint('sd15', ckpt);
      modelDir = path.join(work, 'converted');
      await convertCheckpoint(ckpt, modelDir, {
        vocabularyFile: path.resolve('resources', 'clip-bpe', 'bpe_simple_vocab_16e6.txt.gz'),
        precision,
      });
      await rm(ckpt);
    }
    const info = await openModelFolder(modelDir);
    const unet = info.components.unet!;
    const loraFile = path.join(work, 'rank.safetensors');
    const modules = await writeLora(loraFile, unet.modelPath);
    log(`rank-${rank} LoRA over ${modules} UNet modules written`);
    const lora = { path: loraFile, name: 'bench', teWeight: 1, unetWeight: 1 };

    const cpu = (): number => {
      const u = process.cpuUsage();
      return (u.user + u.system) / 1000;
    };
    const baseMs: number[] = [];
    const baseCpuMs: number[] = [];
    const loraMs: number[] = [];
    const loraCpuMs: number[] = [];
    const mergeMs: number[] = [];
    let matched = 0;
    for (let r = 0; r < repeats; r++) {
      let t0 = performance.now();
      let c0 = cpu();
      const base = await createSession(unet.modelPath, unet.file, 'cpu', { threads });
      baseMs.push(performance.now() - t0);
      baseCpuMs.push(cpu() - c0);
      await base.session.release();
      t0 = performance.now();
      c0 = cpu();
      const plan = await planLoras(info, [lora], { threads });
      const source = await plan.variants.unet!.source();
      mergeMs.push(performance.now() - t0);
      const patched = await createSession(unet.modelPath, unet.file, 'cpu', { threads, source });
      loraMs.push(performance.now() - t0);
      loraCpuMs.push(cpu() - c0);
      matched = plan.reports[0].matchedTensors;
      await patched.session.release();
      log(
        `repeat ${r + 1}: session ${baseMs[r].toFixed(0)} ms (CPU ${baseCpuMs[r].toFixed(0)}), with LoRA ${loraMs[r].toFixed(0)} ms (CPU ${loraCpuMs[r].toFixed(0)}; merge ${mergeMs[r].toFixed(0)} ms)`,
      );
    }

    // Sampling: both sessions alive, the same feeds, paired step by step in alternating order
    // (separate blocks would compare different moments of a shared machine's load). Two full
    // UNets need about 9 GB: skipped, with a line saying so, when less is available.
    const stepBase: number[] = [];
    const stepLora: number[] = [];
    const available = memAvailableGb();
    if (available < 10) {
      log(`sampling ratio skipped: ${available.toFixed(1)} GB available, 10 GB needed`);
    } else {
      const n = 2 * 4 * latent * latent;
      const feeds = {
        sample: new ort.Tensor(
          'float32',
          Float32Array.from({ length: n }, (_, i) => Math.sin(i)),
          [2, 4, latent, latent],
        ),
        timestep: new ort.Tensor('float32', Float32Array.of(500, 500), [2]),
        encoder_hidden_states: new ort.Tensor(
          'float32',
          new Float32Array(2 * 77 * 768).fill(0.1),
          [2, 77, 768],
        ),
      };
      const base = await createSession(unet.modelPath, unet.file, 'cpu', { threads });
      const plan = await planLoras(info, [lora], { threads });
      const source = await plan.variants.unet!.source();
      const patched = await createSession(unet.modelPath, unet.file, 'cpu', { threads, source });
      await base.session.run(feeds);
      await patched.session.run(feeds);
      for (let s = 0; s < steps; s++) {
        const order = s % 2 === 0 ? [base, patched] : [patched, base];
        for (const sess of order) {
          const t = performance.now();
          await sess.session.run(feeds);
          (sess === base ? stepBase : stepLora).push(performance.now() - t);
        }
      }
      log(`steps ${stepBase.map((x) => x.toFixed(0))} vs ${stepLora.map((x) => x.toFixed(0))} ms`);
      await base.session.release();
      await patched.session.release();
    }

    const result = {
      machine: `${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 1e9).toFixed(0)} GB, load ${os.loadavg()[0].toFixed(1)}`,
      model: `SD 1.5 UNet, random weights, converted ${values.model ? `(${modelDir})` : `here, ${precision}`}`,
      lora: { rank, modules, matchedTensors: matched },
      threads,
      sessionBaseMs: median(baseMs),
      sessionLoraMs: median(loraMs),
      sessionBaseCpuMs: median(baseCpuMs),
      sessionLoraCpuMs: median(loraCpuMs),
      addedCpuMs: median(loraCpuMs) - median(baseCpuMs),
      mergeMs: median(mergeMs),
      addedMs: median(loraMs) - median(baseMs),
      stepBaseMs: stepBase.length ? median(stepBase) : null,
      stepLoraMs: stepLora.length ? median(stepLora) : null,
      stepRatio: stepBase.length ? median(stepLora) / median(stepBase) : null,
      stepRatioOfSums: stepBase.length ? sum(stepLora) / sum(stepBase) : null,
      latent: [2, 4, latent, latent],
      peakRssGb: (process.resourceUsage().maxRSS * 1024) / 1e9,
    };
    console.log(JSON.stringify(result, null, 2));
    const out = path.resolve(
      'bench-results',
      `lora-${new Date().toISOString().replace(/[:.]/g, '-')}.json`,
    );
    await mkdir(path.dirname(out), { recursive: true });
    await writeFile(out, JSON.stringify(result, null, 2) + '\n');
    log(`written to ${path.relative(process.cwd(), out)}`);
  } finally {
    if (!values.keep) await rm(work, { recursive: true, force: true });
    else if (existsSync(work)) log(`kept ${work}`);
  }
}

main().catch((e: unknown) => {
  log(e instanceof Error ? e.message : String(e));
  process.exit(1);
});
