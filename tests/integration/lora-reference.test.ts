// LoRAs merged by the engine against the PyTorch reference (tools/lora-reference): the
// converter's tiny SD 1.x and SDXL checkpoints, converted here, with random low-rank factors
// (kohya naming, and the same factors in PEFT naming) merged into the UNet and the text
// encoders, must reproduce the outputs of reference.py with the merged weights within 1e-4
// (relative to the largest reference value), on the recorded inputs.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { type LoraSpec, planLoras } from '../../src/engine/adapters/lora';
import { emitTextEncoder, emitUnet } from '../../src/engine/convert/emit';
import type { CheckpointFamily } from '../../src/engine/convert/types';
import { SessionCache } from '../../src/engine/models/session-cache';
import type { ComponentName, ModelInfo } from '../../src/engine/models/types';
import { FixtureSafetensors, type ReferenceArch } from '../fixtures/safetensors-fixture';
import { readFileSync } from 'node:fs';

const REF = path.join(__dirname, '../fixtures/reference');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'lora-ref-'));
const cache = new SessionCache();
const open: FixtureSafetensors[] = [];
afterAll(async () => {
  await cache.releaseAll();
  for (const f of open) await f.close();
  rmSync(tmp, { recursive: true, force: true });
});

const TOLERANCE = 1e-4;
const UNET_W = 0.8;
const TE_W = 0.6;

function safetensors(file: string): FixtureSafetensors {
  const f = new FixtureSafetensors(path.join(REF, file));
  open.push(f);
  return f;
}

/** The converted UNet and text encoder(s) of a family (fp32 weights), as a ModelInfo. */
const converted = new Map<CheckpointFamily, Promise<ModelInfo>>();
function convertedModel(family: CheckpointFamily): Promise<ModelInfo> {
  let p = converted.get(family);
  if (!p) {
    p = (async () => {
      const arch = JSON.parse(
        readFileSync(path.join(REF, `convert-${family}.json`), 'utf8'),
      ) as ReferenceArch;
      const source = safetensors(`convert-${family}.safetensors`);
      const dir = path.join(tmp, family);
      const components: ModelInfo['components'] = {};
      const add = (name: ComponentName) => {
        components[name] = {
          modelPath: path.join(dir, name, 'model.onnx'),
          file: `${name}/model.onnx`,
        } as NonNullable<ModelInfo['components'][ComponentName]>;
      };
      await emitUnet(source, arch.unet, arch.unetPrefix, {
        dir: path.join(dir, 'unet'),
        precision: 'fp32',
      });
      add('unet');
      for (const [i, te] of arch.textEncoders.entries()) {
        const name = i === 0 ? 'text_encoder' : 'text_encoder_2';
        await emitTextEncoder(source, te, family, { dir: path.join(dir, name), precision: 'fp32' });
        add(name);
      }
      return { dir, components } as ModelInfo;
    })();
    converted.set(family, p);
  }
  return p;
}

async function tensor(src: FixtureSafetensors, name: string): Promise<ort.Tensor> {
  return new ort.Tensor('float32', await src.readFloat32(name), [...src.info(name)!.shape]);
}

function relErr(got: ort.Tensor, want: Float32Array): number {
  const data = got.data as Float32Array;
  expect(data.length).toBe(want.length);
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(data[i] - want[i]));
    ref = Math.max(ref, Math.abs(want[i]));
  }
  return diff / ref;
}

/** Runs every component the plan patches (or the plain one) and returns errors per output. */
async function errors(family: CheckpointFamily, loras: LoraSpec[]) {
  const info = await convertedModel(family);
  const plan = await planLoras(info, loras);
  const io = safetensors(`convert-${family}.expected.safetensors`);
  const want = safetensors(`lora-${family}.expected.safetensors`);
  const session = async (name: ComponentName) => {
    const c = info.components[name]!;
    const variant = plan.variants[name];
    return (
      await cache.get(
        { modelPath: c.modelPath, preference: 'cpu', options: {}, ...(variant ? { variant } : {}) },
        c.file,
      )
    ).session;
  };
  const out: Record<string, number> = {};
  const unetFeeds: Record<string, ort.Tensor> = {
    sample: await tensor(io, 'unet.sample'),
    timestep: await tensor(io, 'unet.timestep'),
    encoder_hidden_states: await tensor(io, 'unet.encoder_hidden_states'),
  };
  if (io.info('unet.text_embeds')) {
    unetFeeds.text_embeds = await tensor(io, 'unet.text_embeds');
    unetFeeds.time_ids = await tensor(io, 'unet.time_ids');
  }
  const unet = await (await session('unet')).run(unetFeeds);
  out['unet.out_sample'] = relErr(unet.out_sample!, await want.readFloat32('unet.out_sample'));
  for (const [i, name] of (['text_encoder', 'text_encoder_2'] as const).entries()) {
    if (!info.components[name]) continue;
    const ids = io.int64(`text${i}.input_ids`);
    const res = await (
      await session(name)
    ).run({ input_ids: new ort.Tensor('int32', Int32Array.from(ids, Number), [2, 77]) });
    for (const t of want.list()) {
      if (!t.name.startsWith(`text${i}.`)) continue;
      const output = res[t.name.slice(`text${i}.`.length)];
      expect(output, t.name).toBeDefined();
      out[t.name] = relErr(output!, await want.readFloat32(t.name));
    }
  }
  return { out, plan };
}

const lora =
  (kind: 'kohya' | 'peft' | 'tucker') =>
  (family: string, te = TE_W, unet = UNET_W): LoraSpec => ({
    path: path.join(REF, `lora-${family}.${kind}.safetensors`),
    name: `${family}-${kind}`,
    teWeight: te,
    unetWeight: unet,
  });
const kohya = lora('kohya');
const peft = lora('peft');
const tucker = lora('tucker');

function expectAllBelow(out: Record<string, number>): void {
  for (const [name, err] of Object.entries(out)) expect(err, name).toBeLessThan(TOLERANCE);
}

describe.each(['sd1', 'sdxl'] as const)('LoRA on the converted %s fixture', (family) => {
  it('kohya naming (LoCon 3x3 and a lora_mid conv) equals the reference within 1e-4', async () => {
    const { out, plan } = await errors(family, [kohya(family), tucker(family)]);
    expect(Object.keys(out).length).toBeGreaterThanOrEqual(family === 'sdxl' ? 6 : 2);
    expectAllBelow(out);
    // The one module that names no layer of this model is reported, never dropped.
    const [report, tuckerReport] = plan.reports;
    expect(report.unmatched).toEqual(['lora_unet_down_blocks_7_attentions_0_proj_in']);
    expect(report.unmatchedTensors).toBe(3);
    expect(report.matchedTensors).toBe(report.tensors - 3);
    expect(tuckerReport).toMatchObject({ tensors: 4, matchedTensors: 4, unmatchedTensors: 0 });
  });

  it('PEFT naming of the same factors (bf16 and fp16 tensors) gives the same result', async () => {
    const { out, plan } = await errors(family, [peft(family), tucker(family)]);
    expect(plan.reports[0]).toMatchObject({ unmatchedTensors: 0 });
    expect(plan.reports[0].matchedTensors).toBe(plan.reports[0].tensors);
    expectAllBelow(out);
  });

  it('two LoRAs add: kohya and PEFT files at half the weights each equal one at full', async () => {
    const { out } = await errors(family, [
      kohya(family, TE_W / 2, UNET_W / 2),
      peft(family, TE_W / 2, UNET_W / 2),
      tucker(family),
    ]);
    expectAllBelow(out);
  });

  it('without the Tucker LoRA the UNet no longer matches, without any nothing does', async () => {
    const { out } = await errors(family, [kohya(family)]);
    expect(out['unet.out_sample']).toBeGreaterThan(10 * TOLERANCE);
    const none = await errors(family, []);
    for (const [name, err] of Object.entries(none.out))
      expect(err, name).toBeGreaterThan(10 * TOLERANCE);
  });

  it('weights of 0 patch nothing: the plain sessions serve', async () => {
    const info = await convertedModel(family);
    const plan = await planLoras(info, [kohya(family, 0, 0)]);
    expect(plan.id).toBe('');
    expect(plan.variants).toEqual({});
    expect(plan.reports[0].matchedTensors).toBeGreaterThan(0);
  });
});

describe('LoRA files saved by torch.save', () => {
  it('a .pt LoRA (zip + restricted unpickler) gives the same result as its .safetensors twin', async () => {
    const pt: LoraSpec = { ...tucker('sd1'), path: path.join(REF, 'lora-sd1.tucker.pt') };
    const { out, plan } = await errors('sd1', [kohya('sd1'), pt]);
    expectAllBelow(out);
    expect(plan.reports[1]).toMatchObject({ tensors: 4, matchedTensors: 4 });
  });
});

describe('LoRA for another family', () => {
  it('an SDXL LoRA on an SD 1.x model is refused with a sentence', async () => {
    const info = await convertedModel('sd1');
    await expect(planLoras(info, [kohya('sdxl')])).rejects.toThrow(
      /does not fit this model \(it looks made for SDXL\)/,
    );
  });
});
