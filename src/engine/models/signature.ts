/**
 * Graph signatures: read from a session, and checked against what the engine can feed.
 * Exporters disagree (ENGINE-NOTES §2); these checks accept every variant seen in the wild and
 * name the model, the input, what was expected and what was found when something else turns up.
 */
import type * as ort from 'onnxruntime-node';
import { EngineError } from '../errors';
import type { Dim, IoSpec, TensorType } from '../tensor';
import type { ComponentName, Signature } from './types';

/** The signature as ONNX Runtime reports it (inputMetadata/outputMetadata, onnxruntime-node >= 1.22). */
export function signatureFromSession(session: ort.InferenceSession): Signature {
  const conv = (
    names: readonly string[],
    meta: readonly ort.InferenceSession.ValueMetadata[] | undefined,
  ): IoSpec[] =>
    names.map((name, i) => {
      const m = meta?.[i];
      if (!m || m.name !== name) return { name, type: 'non-tensor', shape: [] };
      return m.isTensor
        ? { name, type: m.type as TensorType, shape: [...m.shape] as Dim[] }
        : { name, type: 'non-tensor', shape: [] };
    });
  return {
    inputs: conv(session.inputNames, session.inputMetadata),
    outputs: conv(session.outputNames, session.outputMetadata),
  };
}

export function findInput(sig: Signature, name: string): IoSpec | undefined {
  return sig.inputs.find((i) => i.name === name);
}

export function findOutput(sig: Signature, name: string): IoSpec | undefined {
  return sig.outputs.find((o) => o.name === name);
}

/** A dimension if the model fixes it, else null. */
export function staticDim(spec: IoSpec | undefined, axis: number): number | null {
  const d = spec?.shape[axis];
  return typeof d === 'number' && d > 0 ? d : null;
}

const FLOATS: readonly TensorType[] = ['float32', 'float16'];

/**
 * A ControlNet residual input of a ControlNet-ready UNet, rank 4 float: `down_block_N_additional
 * _residual` and `mid_block_additional_residual` (Olive's and OnnxStack's exports, our
 * converter's) or `down_block_add_resNN` and `mid_block_res_sample` (the diffusers-based ONNX
 * scripts of Amblyopius' Stable-Diffusion-ONNX-FP16 and its forks). The pipeline feeds them
 * (zeros without a ControlNet).
 */
export function isControlResidual(spec: IoSpec): boolean {
  return (
    /^(down_block_\d+_additional_residual|down_block_add_res\d+|mid_block_additional_residual|mid_block_res_sample)$/.test(
      spec.name,
    ) &&
    spec.shape.length === 4 &&
    FLOATS.includes(spec.type)
  );
}
const INTS: readonly TensorType[] = ['int32', 'int64'];
const TIMESTEP: readonly TensorType[] = ['float32', 'float16', 'float64', 'int64', 'int32'];

interface Expect {
  name: string;
  ranks: readonly number[];
  types: readonly TensorType[];
  layout: string;
  required: boolean;
}

const UNET_INPUTS: Expect[] = [
  {
    name: 'sample',
    ranks: [4],
    types: FLOATS,
    layout: '[batch,channels,height,width]',
    required: true,
  },
  {
    name: 'timestep',
    ranks: [0, 1],
    types: TIMESTEP,
    layout: 'a scalar or [batch]',
    required: true,
  },
  {
    name: 'encoder_hidden_states',
    ranks: [3],
    types: FLOATS,
    layout: '[batch,77,context]',
    required: true,
  },
  { name: 'text_embeds', ranks: [2], types: FLOATS, layout: '[batch,1280]', required: false },
  { name: 'time_ids', ranks: [2], types: FLOATS, layout: '[batch,6]', required: false },
  { name: 'timestep_cond', ranks: [2], types: FLOATS, layout: '[batch,256]', required: false },
  {
    name: 'class_labels',
    ranks: [0, 1],
    types: [...INTS, ...FLOATS],
    layout: '[batch]',
    required: false,
  },
];

const EXPECTED: Record<ComponentName, { inputs: Expect[]; output: { ranks: readonly number[] } }> =
  {
    unet: { inputs: UNET_INPUTS, output: { ranks: [4] } },
    text_encoder: {
      inputs: [
        { name: 'input_ids', ranks: [2], types: INTS, layout: '[batch,77]', required: true },
      ],
      output: { ranks: [2, 3] },
    },
    text_encoder_2: {
      inputs: [
        { name: 'input_ids', ranks: [2], types: INTS, layout: '[batch,77]', required: true },
      ],
      output: { ranks: [2, 3] },
    },
    vae_encoder: {
      inputs: [
        {
          name: 'sample',
          ranks: [4],
          types: FLOATS,
          layout: '[batch,3,height,width]',
          required: true,
        },
      ],
      output: { ranks: [4] },
    },
    vae_decoder: {
      inputs: [
        {
          name: 'latent_sample',
          ranks: [4],
          types: FLOATS,
          layout: '[batch,4,height,width]',
          required: true,
        },
      ],
      output: { ranks: [4] },
    },
    vae: {
      inputs: [
        {
          name: 'latent_sample',
          ranks: [4],
          types: FLOATS,
          layout: '[batch,4,height,width]',
          required: true,
        },
      ],
      output: { ranks: [4] },
    },
    safety_checker: { inputs: [], output: { ranks: [] } },
  };

function describe(spec: IoSpec): string {
  return `rank ${spec.shape.length} ${spec.type} [${spec.shape.join(',')}]`;
}

/**
 * Check a component's signature. Throws EngineError 'model-shape' (wrong rank/dtype, missing
 * input) or 'model-unsupported' (inputs the engine would not know how to feed).
 */
export function validateSignature(component: ComponentName, sig: Signature, file: string): void {
  const spec = EXPECTED[component];
  if (component === 'safety_checker') return;
  for (const want of spec.inputs) {
    const got = findInput(sig, want.name);
    if (!got) {
      if (!want.required) continue;
      throw new EngineError(
        'model-shape',
        `${file} has no input named "${want.name}" (its inputs: ${sig.inputs.map((i) => i.name).join(', ') || 'none'}).`,
        { file },
      );
    }
    if (got.type === 'bfloat16') {
      throw new EngineError(
        'model-unsupported',
        `${file} input "${want.name}" is bfloat16, which onnxruntime-node cannot feed; export the model in float16 or float32.`,
        { file },
      );
    }
    if (!want.ranks.includes(got.shape.length) || !want.types.includes(got.type)) {
      const ranks = want.ranks.map((r) => `rank ${r}`).join(' or ');
      throw new EngineError(
        'model-shape',
        `${file} input "${want.name}" should be ${ranks} ${want.layout} of ${want.types.join('/')} but is ${describe(got)}.`,
        { file },
      );
    }
  }
  const known = new Set(spec.inputs.map((e) => e.name));
  const unknown = sig.inputs
    .filter((i) => !known.has(i.name))
    .filter((i) => !(component === 'unet' && isControlResidual(i)))
    .map((i) => i.name);
  if (unknown.length > 0) {
    throw new EngineError(
      'model-unsupported',
      `${file} has input${unknown.length > 1 ? 's' : ''} the engine does not know how to feed: ${unknown.join(', ')}.`,
      { file },
    );
  }
  if (sig.outputs.length === 0) {
    throw new EngineError('model-shape', `${file} declares no outputs.`, { file });
  }
  const main = sig.outputs[0];
  if (
    main.type !== 'non-tensor' &&
    main.shape.length > 0 &&
    !spec.output.ranks.includes(main.shape.length)
  ) {
    throw new EngineError(
      'model-shape',
      `${file} output "${main.name}" should be rank ${spec.output.ranks.join(' or ')} but is ${describe(main)}.`,
      { file },
    );
  }
  if (component === 'vae_encoder') {
    const c = staticDim(findInput(sig, 'sample'), 1);
    if (c !== null && c !== 3) {
      throw new EngineError(
        'model-shape',
        `${file} input "sample" should have 3 channels (RGB) but has ${c}.`,
        { file },
      );
    }
  }
}
