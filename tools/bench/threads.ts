// `npm run bench:threads [-- --runs N --burn K --size N]`: ONNX Runtime's intra-op spinning
// (session.intra_op.allow_spinning) off vs on, on the bench's mid UNet (CFG batch of 2), with
// runs of the two sessions interleaved so both see the same machine. --burn K adds K busy-loop
// processes for the duration (a "busy machine" made on purpose). --background measures the
// background policies instead (threads-background.ts). One JSON document on stdout.
import { type ChildProcess, spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { MID_UNET_CONFIG } from '../../tests/fixtures/models';
import { createSession } from '../../src/engine/models/providers';
import { benchModel, repoRoot } from './fixture';
import { backgroundBench } from './threads-background';

const log = (msg: string) => process.stderr.write(`bench:threads: ${msg}\n`);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string', default: '8' },
      burn: { type: 'string', default: '0' },
      size: { type: 'string', default: '256' },
      background: { type: 'boolean', default: false },
      work: { type: 'string', default: '60' },
    },
  });
  const runs = Math.max(1, Number(values.runs));
  const burn = Math.max(0, Number(values.burn));
  const latent = Math.max(8, Number(values.size) / 8);
  const cfg = MID_UNET_CONFIG;
  const { info } = await benchModel(repoRoot(), 'mid', {
    unet: cfg,
    hiddenSize: cfg.cross_attention_dim,
    dtype: 'float32',
    externalWeights: true,
  });
  const modelPath = path.join(info.dir, 'unet', 'model.onnx');
  const sessions = {
    off: (await createSession(modelPath, 'unet/model.onnx', 'cpu', { spinning: false })).session,
    on: (await createSession(modelPath, 'unet/model.onnx', 'cpu', { spinning: true })).session,
  };
  const fill = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 0.5);
  const feeds = {
    sample: new ort.Tensor('float32', fill(2 * 4 * latent * latent), [2, 4, latent, latent]),
    timestep: new ort.Tensor('float32', Float32Array.of(500, 500), [2]),
    encoder_hidden_states: new ort.Tensor('float32', fill(2 * 77 * cfg.cross_attention_dim), [
      2,
      77,
      cfg.cross_attention_dim,
    ]),
  };
  if (values.background) {
    try {
      const result = await backgroundBench({
        sessions,
        feeds,
        runs,
        work: Math.max(1, Number(values.work)),
      });
      const doc = {
        unet: 'mid',
        latent: [2, 4, latent, latent],
        cpus: os.cpus().length,
        ...result,
      };
      process.stdout.write(JSON.stringify({ ...doc, loadAvg: os.loadavg() }, null, 2) + '\n');
    } finally {
      for (const s of Object.values(sessions)) await s.release();
    }
    return;
  }
  const burners: ChildProcess[] = [];
  for (let i = 0; i < burn; i++)
    burners.push(spawn(process.execPath, ['-e', 'for(;;){}'], { stdio: 'ignore' }));
  const times: Record<'off' | 'on', number[]> = { off: [], on: [] };
  const cpu: Record<'off' | 'on', number[]> = { off: [], on: [] };
  try {
    for (const s of Object.values(sessions)) await s.run(feeds); // warm-up
    for (let r = 0; r < runs; r++) {
      // Alternate which goes first, so neither always follows the other.
      const order: ('off' | 'on')[] = r % 2 ? ['on', 'off'] : ['off', 'on'];
      for (const k of order) {
        const c0 = process.cpuUsage();
        const t0 = performance.now();
        await sessions[k].run(feeds);
        times[k].push(performance.now() - t0);
        const c = process.cpuUsage(c0);
        cpu[k].push((c.user + c.system) / 1000);
      }
    }
  } finally {
    for (const b of burners) b.kill();
    for (const s of Object.values(sessions)) await s.release();
  }
  const summary = (k: 'off' | 'on') => ({
    medianMs: Math.round(median(times[k])),
    cpuMsPerRun: Math.round(median(cpu[k])),
    runsMs: times[k].map(Math.round),
  });
  const result = {
    unet: 'mid',
    latent: [2, 4, latent, latent],
    cpus: os.cpus().length,
    loadAvg: os.loadavg().map((x) => Number(x.toFixed(2))),
    burners: burn,
    spinningOff: summary('off'),
    spinningOn: summary('on'),
    onOverOff: Number((median(times.on) / median(times.off)).toFixed(3)),
  };
  log(`off ${result.spinningOff.medianMs} ms, on ${result.spinningOn.medianMs} ms`);
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:threads: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
