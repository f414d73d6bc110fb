// LoRAs through the engine on diffusers-layout ONNX folders (the fixture builder's: weights named
// by module path, MatMul weights [in, out], inline fp32 or external fp16 behind a Cast), and on
// the same UNet with anonymous `onnx::MatMul_N` weights found through the consuming node's name.

import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import onnxProto from 'onnx-proto';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DiffusionEngine, EngineClient } from '../../src/engine';
import { planLoras, type LoraSpec } from '../../src/engine/adapters/lora';
import { openModelFolder } from '../../src/engine/models';
import { readOnnxInitializerIndex } from '../../src/engine/models/onnx-file';
import { float16BitsToFloat32 } from '../../src/engine/tensor';
import { GenerationSettings } from '../../src/shared/generation';
import { type TensorSpec, encodeFloats, writeSafetensors } from '../fixtures/checkpoint';
import { Prng } from '../fixtures/onnx-builder';
import { fixtureModel } from '../fixtures/models';
import { bundleEntry } from './bundle';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'lora-engine-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let inlineDir: string;
let externalDir: string;
let anonymousDir: string;
let loraFile: string;

/** Modules of the fixture UNet / text encoder the LoRA patches: [kohya name, out, in]. */
const C = 32; // the tiny UNet's first block width
const UNET_MODULES: [string, number, number][] = [
  ['down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q', C, C],
  ['down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0', C, C],
  ['down_blocks_0_attentions_0_transformer_blocks_0_ff_net_0_proj', 8 * C, C],
];
const RANK = 2;
const ALPHA = 1; // scale alpha / rank = 0.5

function factors(seed: number, out: number, inF: number) {
  const rng = new Prng(seed);
  const down = Float32Array.from({ length: RANK * inF }, () => rng.normal() * 0.5);
  const up = Float32Array.from({ length: out * RANK }, () => rng.normal() * 0.5);
  return { down, up };
}

async function writeLora(file: string, textWidth: number): Promise<void> {
  const specs: TensorSpec[] = [];
  const data = new Map<string, Uint8Array>();
  const add = (name: string, dtype: 'F32' | 'F16', shape: number[], v: Float32Array) => {
    specs.push({ name, dtype, shape });
    data.set(name, encodeFloats(v, dtype));
  };
  UNET_MODULES.forEach(([m, out, inF], i) => {
    const { down, up } = factors(i + 1, out, inF);
    add(`lora_unet_${m}.lora_down.weight`, 'F32', [RANK, inF], down);
    add(`lora_unet_${m}.lora_up.weight`, 'F32', [out, RANK], up);
    add(`lora_unet_${m}.alpha`, 'F32', [], Float32Array.of(ALPHA));
  });
  const te = 'lora_te_text_model_encoder_layers_0_self_attn_to_q';
  const { down, up } = factors(99, textWidth, textWidth);
  add(`${te}.lora_down.weight`, 'F16', [RANK, textWidth], down);
  add(`${te}.lora_up.weight`, 'F16', [textWidth, RANK], up);
  // A module the model does not have.
  add(
    'lora_unet_down_blocks_5_attentions_0_proj_in.lora_down.weight',
    'F32',
    [RANK, 4],
    new Float32Array(8),
  );
  add(
    'lora_unet_down_blocks_5_attentions_0_proj_in.lora_up.weight',
    'F32',
    [4, RANK],
    new Float32Array(8),
  );
  await writeSafetensors(file, specs, (t) => data.get(t.name)!);
}

/** The UNet with its MatMul weights renamed as torch.onnx.export leaves them. */
function anonymize(dir: string): void {
  const file = path.join(dir, 'unet', 'model.onnx');
  const { ModelProto } = onnxProto.onnx;
  const model = ModelProto.decode(readFileSync(file));
  const graph = model.graph!;
  let n = 0;
  const renamed = new Map<string, string>();
  for (const node of graph.node!) {
    if (node.opType !== 'MatMul') continue;
    const w = node.input![1]!;
    if (!w.endsWith('.weight')) continue;
    const anon = `onnx::MatMul_${1000 + n++}`;
    renamed.set(w, anon);
    node.input![1] = anon;
    // `/down_blocks.0/attentions.0/.../to_q/MatMul`, as the exporter names nodes.
    node.name = `/${w.slice(0, -'.weight'.length).replace(/\.(?!\d)/g, '/')}/MatMul`;
  }
  for (const init of graph.initializer!) init.name = renamed.get(init.name!) ?? init.name;
  expect(renamed.size).toBeGreaterThan(10);
  writeFileSync(file, ModelProto.encode(model).finish());
}

beforeAll(async () => {
  inlineDir = await fixtureModel('lora-inline', { family: 'sd15' });
  externalDir = await fixtureModel('lora-external', {
    family: 'sd15',
    dtype: 'float16',
    externalWeights: true,
  });
  anonymousDir = path.join(tmp, 'anonymous');
  cpSync(inlineDir, anonymousDir, { recursive: true });
  anonymize(anonymousDir);
  const te = readOnnxInitializerIndex(path.join(inlineDir, 'text_encoder', 'model.onnx'));
  const q = te.initializers.find((i) => i.name === 'encoder.layers.0.self_attn.to_q.weight')!;
  loraFile = path.join(tmp, 'style.safetensors');
  await writeLora(loraFile, q.dims[0]);
});

const spec = (teWeight: number, unetWeight: number): LoraSpec => ({
  path: loraFile,
  name: 'style',
  teWeight,
  unetWeight,
});

/** Values of a patched initializer in its stored layout, as float32. */
function storedValues(bytes: Uint8Array, dtype: string): Float32Array {
  const copy = new Uint8Array(bytes); // a copy at offset 0 (a Buffer's slice is a view)
  if (dtype === 'float32') return new Float32Array(copy.buffer);
  return Float32Array.from(new Uint16Array(copy.buffer), float16BitsToFloat32);
}

async function patchedWeight(dir: string, weight: number, module: string) {
  const info = await openModelFolder(dir);
  const plan = await planLoras(info, [spec(weight, weight)]);
  const source = await plan.variants.unet!.source();
  const index = readOnnxInitializerIndex(info.components.unet!.modelPath);
  const name = `${module}.weight`;
  const entry =
    index.initializers.find((i) => i.name === name) ??
    index.initializers.find((i) =>
      i.consumers.some((c) => c.node === `/${module.replace(/\.(?!\d)/g, '/')}/MatMul`),
    )!;
  const data = entry.data;
  if (data.kind === 'typed') throw new Error('typed');
  const buffer =
    data.kind === 'inline'
      ? (source.model as Uint8Array)
      : source.externalData.find((f) => f.path === data.location)!.data;
  const patched = storedValues(
    buffer.subarray(data.offset, data.offset + data.length),
    entry.dtype,
  );
  const base = storedValues(
    data.kind === 'inline'
      ? readFileSync(info.components.unet!.modelPath).subarray(
          data.offset,
          data.offset + data.length,
        )
      : readFileSync(path.join(dir, 'unet', data.location)).subarray(
          data.offset,
          data.offset + data.length,
        ),
    entry.dtype,
  );
  return { patched, base, dims: entry.dims, dtype: entry.dtype, plan };
}

describe('merging into diffusers ONNX folders', () => {
  it.each([
    ['inline fp32, named', () => inlineDir],
    ['external fp16 behind a Cast, named', () => externalDir],
    ['inline fp32, anonymous onnx::MatMul weights', () => anonymousDir],
  ])('%s: W + w (alpha / rank) up . down, transposed into MatMul layout', async (_, dir) => {
    const weight = 0.7;
    const [module, out, inF] = UNET_MODULES[2]; // ff.net.0.proj: [256, 32], not square
    const dotted = 'down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj';
    expect(module).toBe(dotted.replace(/\./g, '_'));
    const { patched, base, dims, dtype, plan } = await patchedWeight(dir(), weight, dotted);
    expect(dims).toEqual([inF, out]);
    const { down, up } = factors(3, out, inF);
    let maxErr = 0;
    let changed = 0;
    for (let i = 0; i < inF; i++)
      for (let o = 0; o < out; o++) {
        let d = 0;
        for (let r = 0; r < RANK; r++) d += up[o * RANK + r] * down[r * inF + i];
        const want = base[i * out + o] + weight * (ALPHA / RANK) * d;
        const got = patched[i * out + o];
        maxErr = Math.max(maxErr, Math.abs(got - want) / Math.max(1, Math.abs(want)));
        if (got !== base[i * out + o]) changed++;
      }
    expect(maxErr).toBeLessThan(dtype === 'float16' ? 1e-3 : 1e-6);
    expect(changed).toBeGreaterThan((inF * out) / 2);
    const [report] = plan.reports;
    expect(report).toMatchObject({ tensors: 13, matchedTensors: 11, unmatchedTensors: 2 });
    expect(report.unmatched).toEqual(['lora_unet_down_blocks_5_attentions_0_proj_in']);
  });
});

describe('a LoRA of which nothing matches', () => {
  it('is refused in one sentence before any session is built (it would change nothing)', async () => {
    const file = path.join(tmp, 'elsewhere.safetensors');
    const m = 'lora_unet_down_blocks_5_attentions_0_proj_in';
    await writeSafetensors(
      file,
      [
        { name: `${m}.lora_down.weight`, dtype: 'F32', shape: [RANK, 4] },
        { name: `${m}.lora_up.weight`, dtype: 'F32', shape: [4, RANK] },
      ],
      () => new Uint8Array(8 * 4),
    );
    const info = await openModelFolder(inlineDir);
    await expect(
      planLoras(info, [{ path: file, name: 'elsewhere', teWeight: 1, unetWeight: 1 }]),
    ).rejects.toThrow(
      /^None of the 2 tensors of the LoRA "elsewhere" matched this model, so it would change nothing/,
    );
    // Part of it matching is enough: the report counts the rest.
    const plan = await planLoras(info, [spec(1, 1)]);
    expect(plan.reports[0]).toMatchObject({ matchedTensors: 11, unmatchedTensors: 2 });
  });
});

describe('the patched session runs the same graph', () => {
  it("after ONNX Runtime optimises both, the nodes and the weights' types and shapes are the same", async () => {
    const info = await openModelFolder(externalDir);
    const plan = await planLoras(info, [spec(1, 1)]);
    const source = await plan.variants.unet!.source();
    const summary = async (file: string, extra: ort.InferenceSession.SessionOptions) => {
      const s = await ort.InferenceSession.create(info.components.unet!.modelPath, {
        executionProviders: ['cpu'],
        graphOptimizationLevel: 'all',
        optimizedModelFilePath: file,
        ...extra,
      });
      await s.release();
      const g = onnxProto.onnx.ModelProto.decode(readFileSync(file)).graph!;
      return {
        ops: g.node!.map((n) => n.opType),
        weights: g.initializer!.map((i) => `${i.dataType}:${i.dims!.join('x')}`).sort(),
      };
    };
    const base = await summary(path.join(tmp, 'opt-base.onnx'), {});
    const patched = await summary(path.join(tmp, 'opt-patched.onnx'), {
      externalData: source.externalData,
    });
    // External weights: model.onnx itself is used as it is, the data file comes from memory.
    expect(source.model).toBe(info.components.unet!.modelPath);
    expect(patched).toEqual(base);
  });
});

describe('LoRAs in the engine', () => {
  const engine = new DiffusionEngine({ provider: 'cpu', threads: 1, previewEvery: 0 });
  afterAll(() => engine.release());
  const settings = (dir: string) =>
    GenerationSettings.parse({
      model: dir,
      prompt: 'a small red circle',
      seed: 11,
      steps: 3,
      sampler: 'euler',
      width: 64,
      height: 64,
    });
  const pixels = async (dir: string, loras?: LoraSpec[]) => {
    const r = await engine.generate({
      settings: settings(dir),
      modelDir: dir,
      ...(loras ? { loras } : {}),
    });
    return { data: Buffer.from(r.images[0].image.data), report: r.loras };
  };

  it.each([
    ['inline fp32', () => inlineDir],
    ['external fp16', () => externalDir],
  ])(
    '%s: weight 0 is the base bit for bit; a weight changes it; back to none is the base',
    async (_, dir) => {
      const base = await pixels(dir());
      expect(base.report).toBeUndefined();
      const zero = await pixels(dir(), [spec(0, 0)]);
      expect(zero.data.equals(base.data)).toBe(true);
      expect(zero.report![0]).toMatchObject({ name: 'style', matchedTensors: 11 });
      const one = await pixels(dir(), [spec(1, 1)]);
      expect(one.data.equals(base.data)).toBe(false);
      const again = await pixels(dir(), [spec(1, 1)]);
      expect(again.data.equals(one.data)).toBe(true);
      const half = await pixels(dir(), [spec(0.5, 0.5)]);
      expect(half.data.equals(one.data)).toBe(false);
      expect(half.data.equals(base.data)).toBe(false);
      // Text-encoder weight alone changes the image too (the prompt embedding moves).
      const teOnly = await pixels(dir(), [spec(1, 0)]);
      expect(teOnly.data.equals(base.data)).toBe(false);
      const none = await pixels(dir());
      expect(none.data.equals(base.data)).toBe(true);
    },
  );

  it('a file that is not a LoRA gets one sentence and the engine still generates', async () => {
    const bad = path.join(tmp, 'loha.safetensors');
    await writeSafetensors(
      bad,
      [{ name: 'lora_unet_x.hada_w1_a', dtype: 'F32', shape: [2, 2] }],
      () => new Uint8Array(16),
    );
    await expect(
      engine.generate({
        settings: settings(inlineDir),
        modelDir: inlineDir,
        loras: [{ path: bad, name: 'loha', teWeight: 1, unetWeight: 1 }],
      }),
    ).rejects.toThrow(/loha\.safetensors is a LoHa \(LyCORIS Hadamard-product\) network/);
    expect((await pixels(inlineDir)).data.length).toBeGreaterThan(0);
  });
});

describe('LoRAs through the engine worker', () => {
  let client: EngineClient;
  beforeAll(async () => {
    const workerPath = await bundleEntry('src/engine/worker.ts', 'engine-worker');
    client = new EngineClient(workerPath, { provider: 'cpu', threads: 1, previewEvery: 0 });
  });
  afterAll(() => client?.close());

  it('carries loras in the request and the report in the result', async () => {
    const s = GenerationSettings.parse({
      model: inlineDir,
      prompt: 'x',
      seed: 3,
      steps: 2,
      sampler: 'euler',
      width: 64,
      height: 64,
    });
    const base = await client.generate({ settings: s, modelDir: inlineDir });
    const withLora = await client.generate({
      settings: s,
      modelDir: inlineDir,
      loras: [spec(1, 1)],
    });
    expect(withLora.loras).toEqual([
      {
        name: 'style',
        tensors: 13,
        matchedTensors: 11,
        unmatchedTensors: 2,
        unmatched: ['lora_unet_down_blocks_5_attentions_0_proj_in'],
      },
    ]);
    expect(
      Buffer.from(withLora.images[0].image.data).equals(Buffer.from(base.images[0].image.data)),
    ).toBe(false);
  });
});
