// The ControlNet converter against the PyTorch reference (tools/convert-reference/reference.py
// ControlNet, recorded by make_controlnet.py): a tiny ldm-named ControlNet for the sd1 and for the
// sdxl fixture's UNet (the SDXL one with label_emb, fed text_embeds and time_ids), converted here
// and run in onnxruntime-node, must reproduce the recorded residuals, from its ldm-named file and
// from the same weights under diffusers' names; the residual UNet fed those residuals must
// reproduce the reference UNet's output with them. Relative error is
// max |ours - reference| / max |reference| over each output.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import {
  convertControlNet,
  controlNetModelFile,
} from '../../src/engine/convert/convert-controlnet';
import { detectControlNet } from '../../src/engine/convert/detect';
import {
  type AttentionKind,
  controlResidualNames,
  emitControlNet,
  emitUnet,
} from '../../src/engine/convert/emit';
import { ldmControlNetNames } from '../../src/engine/convert/readers/diffusers-controlnet';
import type { ControlNetArchitecture, TensorInfo } from '../../src/engine/convert/types';
import { signatureFromSession, validateSignature } from '../../src/engine/models/signature';
import { FixtureSafetensors, type ReferenceArch } from '../fixtures/safetensors-fixture';

const REF = path.join(__dirname, '../fixtures/reference');
const tmp = mkdtempSync(path.join(os.tmpdir(), 'convert-controlnet-'));
const TOLERANCE = 1e-4;
let dirs = 0;

/** One family's recorded ControlNet, its UNet and the reference outputs. */
function fixture(family: 'sd1' | 'sdxl') {
  const arch = JSON.parse(
    readFileSync(path.join(REF, `controlnet-${family}.json`), 'utf8'),
  ) as ControlNetArchitecture;
  const levels = arch.unet.channelMult.length;
  return {
    family,
    arch,
    unetArch: JSON.parse(
      readFileSync(path.join(REF, `convert-${family}.json`), 'utf8'),
    ) as ReferenceArch,
    source: new FixtureSafetensors(path.join(REF, `controlnet-${family}.safetensors`)),
    unetSource: new FixtureSafetensors(path.join(REF, `convert-${family}.safetensors`)),
    expected: new FixtureSafetensors(path.join(REF, `controlnet-${family}.expected.safetensors`)),
    // The same weights under diffusers' ControlNetModel names (make_controlnet.py diffusers_name).
    diffusers: path.join(REF, `controlnet-${family}.diffusers.safetensors`),
    diffusersSource: new FixtureSafetensors(
      path.join(REF, `controlnet-${family}.diffusers.safetensors`),
    ),
    // One residual per input block: conv_in, numResBlocks per level, a downsampler between levels.
    names: controlResidualNames(1 + levels * arch.unet.numResBlocks + (levels - 1)),
    // SDXL's UNet (and so its ControlNet) also takes the pooled text embedding and the size ids.
    added: arch.unet.admInChannels !== null ? ['text_embeds', 'time_ids'] : [],
  };
}
type Fixture = ReturnType<typeof fixture>;
const fixtures = [fixture('sd1'), fixture('sdxl')];
afterAll(async () => {
  for (const f of fixtures) {
    await Promise.all([
      f.source.close(),
      f.unetSource.close(),
      f.expected.close(),
      f.diffusersSource.close(),
    ]);
  }
  rmSync(tmp, { recursive: true, force: true });
});

async function f32(f: Fixture, name: string): Promise<ort.Tensor> {
  const info = f.expected.info(name)!;
  return new ort.Tensor('float32', await f.expected.readFloat32(name), [...info.shape]);
}

async function relErr(f: Fixture, got: ort.Tensor | undefined, name: string): Promise<number> {
  if (!got) throw new Error(`no output ${name}`);
  expect([...got.dims]).toEqual([...f.expected.info(name)!.shape]);
  const want = await f.expected.readFloat32(name);
  const data = got.data as Float32Array;
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < want.length; i++) {
    diff = Math.max(diff, Math.abs(data[i] - want[i]));
    ref = Math.max(ref, Math.abs(want[i]));
  }
  expect(ref).toBeGreaterThan(0);
  return diff / ref;
}

async function session(model: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(model, { executionProviders: ['cpu'] });
}

/** Runs the ControlNet `model` on the recorded inputs: every residual within TOLERANCE. */
async function expectReferenceResiduals(f: Fixture, model: string): Promise<void> {
  const s = await session(model);
  try {
    expect(s.inputNames).toEqual([
      'sample',
      'timestep',
      'encoder_hidden_states',
      ...f.added,
      'controlnet_cond',
      'conditioning_scale',
    ]);
    expect(s.outputNames).toEqual([...f.names.down, f.names.mid]);
    const feeds: Record<string, ort.Tensor> = {};
    for (const n of s.inputNames) feeds[n] = await f32(f, n);
    const out = await s.run(feeds);
    for (const n of s.outputNames) expect(await relErr(f, out[n], n), n).toBeLessThan(TOLERANCE);
  } finally {
    await s.release();
  }
}

describe.each(fixtures)('ControlNet conversion ($family) matches the PyTorch reference', (f) => {
  it.each<AttentionKind>(['fused', 'matmul'])(
    'the residuals (%s attention) and consumes every key',
    async (attention) => {
      const result = await emitControlNet(f.source, f.arch, {
        dir: path.join(tmp, `c${dirs++}`),
        precision: 'fp32',
        attention,
      });
      expect(f.source.list().filter((t: TensorInfo) => !result.consumed.has(t.name))).toEqual([]);
      await expectReferenceResiduals(f, result.model);
    },
  );

  it('a diffusers-named file (ControlNetModel.save_pretrained) converts to the same residuals', async () => {
    const out = path.join(tmp, `d${dirs++}`);
    // The fixture's head count cannot be read from its keys (detection assumes the family's), so
    // the architecture is given; detection of this file is tested below.
    const record = await convertControlNet(f.diffusers, out, {
      precision: 'fp32',
      architecture: { ...f.arch, prefix: '' },
    });
    expect(record.architecture.prefix).toBe('');
    await expectReferenceResiduals(f, controlNetModelFile(out));
  });

  it('the residual UNet adds them as the reference does, and zeros give the plain UNet', async () => {
    const result = await emitUnet(
      f.unetSource,
      f.unetArch.unet,
      f.unetArch.unetPrefix,
      { dir: path.join(tmp, `u${dirs++}`), precision: 'fp32' },
      { controlResiduals: true },
    );
    const s = await session(result.model);
    try {
      validateSignature('unet', signatureFromSession(s), result.model);
      expect(s.inputNames).toEqual([
        'sample',
        'timestep',
        'encoder_hidden_states',
        ...f.added,
        ...f.names.down,
        f.names.mid,
      ]);
      const feeds: Record<string, ort.Tensor> = {};
      for (const n of s.inputNames) feeds[n] = await f32(f, n);
      const out = await s.run(feeds);
      expect(await relErr(f, out.out_sample, 'out_sample')).toBeLessThan(TOLERANCE);
      for (const n of [...f.names.down, f.names.mid]) {
        const t = feeds[n];
        feeds[n] = new ort.Tensor('float32', new Float32Array(t.size), t.dims);
      }
      const plain = await s.run(feeds);
      expect(await relErr(f, plain.out_sample, 'plain_out_sample')).toBeLessThan(TOLERANCE);
      // The control changes the output by far more than the tolerance.
      expect(await relErr(f, out.out_sample, 'plain_out_sample')).toBeGreaterThan(0.05);
    } finally {
      await s.release();
    }
  });

  it('detection reads the architecture back from the ldm and from the diffusers keys', () => {
    const got = detectControlNet(f.source.list(), `controlnet-${f.family}.safetensors`);
    expect(got.prefix).toBe('control_model.');
    expect(got.family).toBe(f.family);
    expect(got.hintInChannels).toBe(3);
    expect(got.hintChannels).toEqual(f.arch.hintChannels);
    for (const key of [
      'inChannels',
      'modelChannels',
      'channelMult',
      'numResBlocks',
      'attentionLevels',
      'contextDim',
      'linearProjection',
      'admInChannels',
    ] as const) {
      expect(got.unet[key], key).toEqual(f.arch.unet[key]);
    }
    // Depth matters only where a level has attention (the recorded configs say 1 elsewhere).
    const depths = (u: typeof got.unet): number[] =>
      u.transformerDepth.filter((_, i) => u.attentionLevels[i]);
    expect(depths(got.unet)).toEqual(depths(f.arch.unet));
    const fromDiffusers = detectControlNet(f.diffusersSource.list(), 'diffusion_pytorch_model');
    expect(fromDiffusers.reasons[0]).toMatch(/diffusers naming/);
    expect({ ...fromDiffusers, reasons: [] }).toEqual({ ...got, prefix: '', reasons: [] });
  });
});

describe('detectControlNet', () => {
  const [sd1] = fixtures;

  it('reads files without the control_model. prefix (ControlNet 1.1 .pth naming)', () => {
    const bare = sd1.source
      .list()
      .map((t) => ({ ...t, name: t.name.slice('control_model.'.length) }));
    expect(detectControlNet(bare, 'cn.safetensors').prefix).toBe('');
  });

  it('says what a full checkpoint or a damaged diffusers-named ControlNet is, in one sentence', () => {
    expect(() => detectControlNet(sd1.unetSource.list(), 'model.safetensors')).toThrow(
      /^model\.safetensors is .*not a ControlNet that can be used\.$/,
    );
    // The hint and zero convs of a diffusers ControlNet without its encoder copy.
    const partial: TensorInfo[] = sd1.diffusersSource
      .list()
      .filter((t) => t.name.startsWith('controlnet_'));
    expect(() => detectControlNet(partial, 'cn.safetensors')).toThrow(
      /^cn\.safetensors is a ControlNet without cross-attention layers, not a ControlNet that can be used\.$/,
    );
  });
});

describe('diffusers ControlNet names', () => {
  it('map onto the ldm names for any resnets per level, shortcut and downsampler included', () => {
    // Three resnets per level (a layout the fixtures do not have): level 1 starts at block 5.
    const map = ldmControlNetNames([
      'down_blocks.0.resnets.2.norm1.weight',
      'down_blocks.0.downsamplers.0.conv.weight',
      'down_blocks.1.resnets.0.conv_shortcut.bias',
      'down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k.weight',
      'mid_block.resnets.1.time_emb_proj.weight',
      'add_embedding.linear_2.bias',
      'controlnet_cond_embedding.blocks.5.weight',
      'controlnet_cond_embedding.conv_out.weight',
      'controlnet_down_blocks.11.bias',
      'controlnet_mid_block.weight',
    ]);
    expect([...map.values()]).toEqual([
      'input_blocks.3.0.in_layers.0.weight',
      'input_blocks.4.0.op.weight',
      'input_blocks.5.0.skip_connection.bias',
      'input_blocks.6.1.transformer_blocks.0.attn2.to_k.weight',
      'middle_block.2.emb_layers.1.weight',
      'label_emb.0.2.bias',
      'input_hint_block.12.weight',
      'input_hint_block.14.weight',
      'zero_convs.11.0.bias',
      'middle_block_out.0.weight',
    ]);
  });
});
