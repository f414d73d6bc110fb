// Measures the graph emitters at full size (speed and peak memory; run it alone on the machine):
//
//   node scripts/run-tool.mjs tools/convert-reference/bench-emit.ts emit CKPT OUT [fp16|fp32]
//   node scripts/run-tool.mjs tools/convert-reference/bench-emit.ts attention UNET_DIR [SIZE]
//   node scripts/run-tool.mjs tools/convert-reference/bench-emit.ts emit-keys sd15|sd21|sdxl OUT
//
// `emit` converts an SD 1.5-shaped checkpoint (tools/convert-reference/make_full.py writes one
// with random weights) into OUT/{unet,text_encoder,vae_encoder,vae_decoder} and prints, as JSON,
// the seconds and MB/s of each component and the process's peak RSS (VmHWM) against the
// checkpoint's size. `attention` loads one converted UNet and runs one CFG step (batch 2) at a
// SIZE x SIZE latent (64: 512x512 pixels), printing load and step seconds and peak RSS; run it
// once per attention variant (emit writes unet/ fused and unet-matmul/ with MatMul + Softmax).
// `emit-keys` emits the UNet of a recorded full-size key set (SDXL's: 2.57 G parameters) from values made
// on demand, for the emitter's own time and peak memory at a size no test file has.

import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import {
  emitTextEncoder,
  emitUnet,
  emitVaeDecoder,
  emitVaeEncoder,
  type EmitResult,
} from '../../src/engine/convert/emit';
import { detectArchitecture } from '../../src/engine/convert/detect';
import { keySetSource, readKeySet } from '../../tests/fixtures/checkpoint';
import { FixtureSafetensors } from '../../tests/fixtures/safetensors-fixture';

/** Peak resident set of this process so far, in MB (Linux VmHWM). */
function peakRssMb(): number {
  return procStatusMb('VmHWM');
}

function procStatusMb(field: 'VmHWM' | 'VmRSS'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

async function emit(ckpt: string, out: string, precision: 'fp16' | 'fp32'): Promise<void> {
  const source = new FixtureSafetensors(ckpt);
  // SD 1.5's architecture, as the converter recognises it from the file's keys and shapes.
  const arch = detectArchitecture(source.list(), ckpt);
  const report: Record<string, unknown> = { checkpointMb: statSync(ckpt).size / 2 ** 20 };
  const timed = async (name: string, f: () => Promise<EmitResult>): Promise<void> => {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    const r = await f();
    const s = (performance.now() - t0) / 1000;
    const c = process.cpuUsage(c0);
    report[name] = {
      seconds: +s.toFixed(2),
      // CPU seconds of this process: on a shared machine, wall time also counts others' work.
      cpuSeconds: +((c.user + c.system) / 1e6).toFixed(2),
      mb: +(r.bytes / 2 ** 20).toFixed(1),
      mbPerSecond: +(r.bytes / 2 ** 20 / s).toFixed(1),
      tensors: r.tensors,
      peakRssMb: +peakRssMb().toFixed(0),
    };
  };
  const t0 = performance.now();
  const opts = (dir: string) => ({ dir: path.join(out, dir), precision });
  await timed('unet', () => emitUnet(source, arch.unet, arch.unetPrefix, opts('unet')));
  await timed('text_encoder', () =>
    emitTextEncoder(source, arch.textEncoders[0], 'sd1', opts('text_encoder')),
  );
  await timed('vae_encoder', () =>
    emitVaeEncoder(source, arch.vae, arch.vaePrefix, opts('vae_encoder')),
  );
  await timed('vae_decoder', () =>
    emitVaeDecoder(source, arch.vae, arch.vaePrefix, opts('vae_decoder')),
  );
  report.totalSeconds = +((performance.now() - t0) / 1000).toFixed(2);
  report.loadAverage = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  report.peakRssMb = +peakRssMb().toFixed(0);
  report.peakRssOverCheckpoint = +(
    (report.peakRssMb as number) / (report.checkpointMb as number)
  ).toFixed(3);
  if (process.argv.includes('--matmul-unet')) {
    await timed('unet_matmul', () =>
      emitUnet(source, arch.unet, arch.unetPrefix, {
        ...opts('unet-matmul'),
        attention: 'matmul',
      }),
    );
  }
  await source.close();
  console.log(JSON.stringify(report, null, 2));
}

async function attention(dir: string, size: number): Promise<void> {
  const t0 = performance.now();
  const session = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), {
    graphOptimizationLevel: 'all',
    executionProviders: ['cpu'],
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  const rssAfterLoad = peakRssMb();
  const sample = new ort.Tensor('float32', new Float32Array(2 * 4 * size * size).fill(0.1), [
    2,
    4,
    size,
    size,
  ]);
  const feeds = {
    sample,
    timestep: new ort.Tensor('float32', Float32Array.of(500, 500), [2]),
    encoder_hidden_states: new ort.Tensor(
      'float32',
      new Float32Array(2 * 77 * 768).fill(0.01),
      [2, 77, 768],
    ),
  };
  // The load's own peak (fp16 weights widened to float32, graph optimisation) hides the step's
  // in VmHWM, so the step's peak is sampled by a worker thread (session.run holds the main one).
  const rssBeforeStep = procStatusMb('VmRSS');
  const peak = new Int32Array(new SharedArrayBuffer(8));
  const sampler = new Worker(
    `const { workerData } = require('node:worker_threads');
     const fs = require('node:fs');
     const peak = new Int32Array(workerData);
     setInterval(() => {
       const kb = Number(/VmRSS:\\s+(\\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]);
       if (kb > peak[0]) peak[0] = kb;
       peak[1] = 1;
     }, 10);`,
    { eval: true, workerData: peak.buffer },
  );
  while (Atomics.load(peak, 1) === 0) await new Promise((r) => setTimeout(r, 5));
  const t1 = performance.now();
  await session.run(feeds);
  const stepSeconds = (performance.now() - t1) / 1000;
  await new Promise((r) => setTimeout(r, 50));
  const stepPeak = Math.max(rssBeforeStep, Atomics.load(peak, 0) / 1024);
  await sampler.terminate();
  console.log(
    JSON.stringify({
      dir,
      latent: size,
      loadSeconds: +loadSeconds.toFixed(1),
      stepSeconds: +stepSeconds.toFixed(2),
      loadPeakRssMb: +rssAfterLoad.toFixed(0),
      rssBeforeStepMb: +rssBeforeStep.toFixed(0),
      stepPeakRssMb: +stepPeak.toFixed(0),
      stepExtraMb: +(stepPeak - rssBeforeStep).toFixed(0),
    }),
  );
}

async function emitKeys(name: string, out: string): Promise<void> {
  if (name !== 'sd15' && name !== 'sd21' && name !== 'sdxl') throw new Error(`no key set ${name}`);
  // Values made on demand replace the cost of reading with the cost of filling one array.
  const source = keySetSource(await readKeySet(name), {
    fill: (a) => {
      for (let i = 0; i < a.length; i++) a[i] = ((i * 2654435761) % 2001) / 1000 - 1;
    },
  });
  const arch = detectArchitecture(source.list(), source.path, { globalStep: 1 });
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const r = await emitUnet(source, arch.unet, arch.unetPrefix, { dir: path.join(out, 'unet') });
  const c = process.cpuUsage(c0);
  console.log(
    JSON.stringify({
      keys: name,
      unetMb: +(r.bytes / 2 ** 20).toFixed(1),
      tensors: r.tensors,
      seconds: +((performance.now() - t0) / 1000).toFixed(2),
      cpuSeconds: +((c.user + c.system) / 1e6).toFixed(2),
      peakRssMb: +peakRssMb().toFixed(0),
      loadAverage: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' '),
    }),
  );
}

const [mode, a, b, c] = process.argv.slice(2);
if (mode === 'emit') await emit(a, b, c === 'fp32' ? 'fp32' : 'fp16');
else if (mode === 'emit-keys') await emitKeys(a, b);
else if (mode === 'attention') await attention(a, Number(b ?? 64));
else
  throw new Error(
    'usage: bench-emit.ts emit CKPT OUT [fp16|fp32] | attention UNET_DIR [SIZE] | emit-keys sd15|sd21|sdxl OUT',
  );
