// `node scripts/run-tool.mjs tools/bench/safety.ts [-- --layers 24 --width 1024 --repeats 10
//  --batch 1 --keep DIR]`: the content filter's time per image on CPU, on a safety checker of the
// real shape (CLIP ViT-L/14 vision tower: 24 layers, width 1024, patch 14, 224 px; 768-wide
// projection; 17 + 3 concepts) with random weights, converted by the converter into a temp
// folder (or DIR, kept). One JSON document on stdout:
// - convertSeconds: emitting the checker (fp16 weights) from the random values;
// - loadMs: ONNX Runtime session creation;
// - preprocessMs: CLIP preprocessing of one 512 x 512 image (bicubic to 224, crop, normalise);
// - perImageMs: median over repeats of one check() of `batch` 512 x 512 images, per image,
//   preprocessing included (what the host adds after each decode);
// - cpuMsPerImage: CPU time per image over the repeats (all of ONNX Runtime's threads);
// - peakRssMb: the process's peak resident memory (Linux VmHWM).
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { detectSafetyChecker } from '../../src/engine/convert/detect';
import { emitSafetyChecker } from '../../src/engine/convert/emit';
import { SafetyChecker, clipImageInput } from '../../src/engine/safety';
import { keySetSource, type KeySet } from '../../tests/fixtures/checkpoint';

const { values: args } = parseArgs({
  options: {
    width: { type: 'string', default: '1024' },
    layers: { type: 'string', default: '24' },
    repeats: { type: 'string', default: '10' },
    batch: { type: 'string', default: '1' },
    keep: { type: 'string' },
  },
});

/** diffusers' StableDiffusionSafetyChecker keys at ViT-L/14 shapes (`layers`, `width` varied). */
function checkerKeys(width: number, layers: number): KeySet {
  const v = 'vision_model.vision_model.';
  const t: Array<[string, number[]]> = [
    [`${v}embeddings.class_embedding`, [width]],
    [`${v}embeddings.patch_embedding.weight`, [width, 3, 14, 14]],
    [`${v}embeddings.position_embedding.weight`, [257, width]],
    [`${v}pre_layrnorm.weight`, [width]],
    [`${v}pre_layrnorm.bias`, [width]],
  ];
  for (let l = 0; l < layers; l++) {
    const b = `${v}encoder.layers.${l}.`;
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) {
      t.push([`${b}self_attn.${p}.weight`, [width, width]], [`${b}self_attn.${p}.bias`, [width]]);
    }
    for (const n of ['layer_norm1', 'layer_norm2'])
      t.push([`${b}${n}.weight`, [width]], [`${b}${n}.bias`, [width]]);
    t.push([`${b}mlp.fc1.weight`, [4 * width, width]], [`${b}mlp.fc1.bias`, [4 * width]]);
    t.push([`${b}mlp.fc2.weight`, [width, 4 * width]], [`${b}mlp.fc2.bias`, [width]]);
  }
  t.push(
    [`${v}post_layernorm.weight`, [width]],
    [`${v}post_layernorm.bias`, [width]],
    ['visual_projection.weight', [768, width]],
    ['concept_embeds', [17, 768]],
    ['special_care_embeds', [3, 768]],
    ['concept_embeds_weights', [17]],
    ['special_care_embeds_weights', [3]],
  );
  return { name: 'safety-checker-random', source: 'tools/bench/safety.ts', tensors: t };
}

/** Uniform in [-0.02, 0.02) from a fixed LCG: every run converts the same weights. */
let state = 12345;
function fill(out: Float32Array): void {
  for (let i = 0; i < out.length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = (state / 2 ** 32 - 0.5) * 0.04;
  }
}

function peakRssMb(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];

async function main(): Promise<void> {
  const width = Number(args.width);
  const layers = Number(args.layers);
  const batch = Number(args.batch);
  const repeats = Number(args.repeats);
  const source = keySetSource(checkerKeys(width, layers), { fill });
  const arch = detectSafetyChecker(source.list());
  if (!arch) throw new Error('the key set is not detected as a safety checker');
  const dir = args.keep ?? (await mkdtemp(path.join(os.tmpdir(), 'bench-safety-')));
  try {
    let t = performance.now();
    await emitSafetyChecker(source, arch, { dir, precision: 'fp16' });
    const convertSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    const checker = await SafetyChecker.open(path.join(dir, 'model.onnx'));
    const loadMs = performance.now() - t;
    const image = {
      width: 512,
      height: 512,
      channels: 3 as const,
      data: Uint8Array.from({ length: 512 * 512 * 3 }, (_, i) => (i * 37) & 255),
    };
    t = performance.now();
    clipImageInput([image]);
    const preprocessMs = performance.now() - t;
    const images = Array.from({ length: batch }, () => image);
    await checker.check(images); // warm-up
    const times: number[] = [];
    const cpu0 = process.cpuUsage();
    for (let r = 0; r < repeats; r++) {
      t = performance.now();
      await checker.check(images);
      times.push((performance.now() - t) / batch);
    }
    const cpu = process.cpuUsage(cpu0);
    // CPU time of this process (ONNX Runtime's threads included): on a shared machine, wall
    // time also counts others' work.
    const cpuMsPerImage = (cpu.user + cpu.system) / 1000 / repeats / batch;
    await checker.release();
    console.log(
      JSON.stringify(
        {
          arch,
          batch,
          repeats,
          convertSeconds: +convertSeconds.toFixed(1),
          loadMs: Math.round(loadMs),
          preprocessMs: +preprocessMs.toFixed(1),
          perImageMs: Math.round(median(times)),
          minPerImageMs: Math.round(Math.min(...times)),
          cpuMsPerImage: Math.round(cpuMsPerImage),
          cpus: os.cpus().length,
          cpu: os.cpus()[0]?.model,
          peakRssMb: Math.round(peakRssMb()),
        },
        null,
        2,
      ),
    );
  } finally {
    if (!args.keep) await rm(dir, { recursive: true, force: true });
  }
}

void main();
