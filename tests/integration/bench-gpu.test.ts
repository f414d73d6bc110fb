// `npm run bench -- --gpu` end to end as the dry run a machine without CUDA gets (issue 17 item
// 6): the small recorded checkpoint converted, generated through DiffusionEngine on CPU, the raw
// loop, the loads, and the numerics check of the decomposed fused UNet against the plain one.
// Its figures are a benchmark's business; here only that the run completes and reports them.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { gpuMain } from '../../tools/bench/gpu';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'bench-gpu-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

it('a dry run on CPU writes the JSON report with every figure and a passing numerics check', async () => {
  const out = path.join(tmp, 'gpu.json');
  const write = process.stdout.write;
  process.stdout.write = () => true; // the report also goes to stdout
  try {
    await gpuMain([
      '--dry-run',
      '--models',
      'sd15',
      '--work',
      path.join(tmp, 'work'),
      '--out',
      out,
    ]);
  } finally {
    process.stdout.write = write;
  }
  const doc = JSON.parse(readFileSync(out, 'utf8'));
  expect(doc).toMatchObject({ bench: 'gpu', dryRun: true, provider: 'cpu' });
  expect(doc.dryRunReason).toMatch(/dry-run/);
  const sd15 = doc.models.sd15;
  expect(sd15.provider).toBe('cpu');
  expect(sd15.settings).toMatchObject({ size: 64, steps: 2, cfg: true });
  expect(sd15.runs[0].unetBatch).toBe(2);
  for (const k of ['stepMs', 'rawStepMs', 'rawRatio', 'wallMs'])
    expect(sd15.median[k], k).toBeGreaterThan(0);
  expect(sd15.load.coldMs).toBeGreaterThan(0);
  expect(sd15.load.warmMs).toBeGreaterThan(0);
  expect(sd15.peakRssMiB).toBeGreaterThan(0);
  expect(sd15.peakGpuMemory).toEqual({ processMiB: null, deviceMiB: null });
  expect(doc.numerics.sd15).toMatchObject({ ok: true, finite: true });
  expect(doc.numerics.sd15.relErr).toBeLessThan(1e-4);
  expect(doc.anchors.sd15.stepMs).toBe(20);
}, 300_000);
