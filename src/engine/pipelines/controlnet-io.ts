/**
 * How a ControlNet graph and a ControlNet-ready UNet meet, read from their sessions rather than
 * assumed, so ONNX exports made by other tools are used as they are:
 *  - the ControlNet's inputs: sample, timestep, encoder_hidden_states, controlnet_cond, and where
 *    the export has them conditioning_scale, text_embeds, time_ids (diffusers' ControlNetModel
 *    forward arguments, the names every export we know keeps);
 *  - its outputs onto the UNet's residual inputs: by name when the ControlNet has an output for
 *    every one of them (Olive / OnnxStack / our converter), else by position (diffusers'
 *    ControlNetModel returns the down residuals in order, then the middle one; exports that pass
 *    torch.onnx two output names for those thirteen tensors name only the first two, the second
 *    of which is down residual 1, so a name is no guide there);
 *  - where the ControlNet and the UNet-with-residuals live in a folder (`model.onnx` or
 *    `controlnet/model.onnx`; OnnxStack writes a model's ControlNet UNet to
 *    `controlnet/model.onnx` beside its plain `unet/`).
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import type { ComponentSession } from '../models';
import { isControlResidual } from '../models/signature';
import type { IoSpec } from '../tensor';

/** The ControlNet inputs the pipeline feeds; anything else is refused with its name. */
const CONTROLNET_INPUTS = new Set([
  'sample',
  'timestep',
  'encoder_hidden_states',
  'controlnet_cond',
  'conditioning_scale',
  'text_embeds',
  'time_ids',
]);

/** The UNet's residual inputs in order (down 0..N-1, then mid); empty for a plain UNet. */
export function residualInputs(unet: ComponentSession): IoSpec[] {
  const index = (s: IoSpec): number => {
    const m = /^down_block_(?:add_res)?(\d+)/.exec(s.name);
    return m ? Number(m[1]) : Number.MAX_SAFE_INTEGER;
  };
  return unet.signature.inputs.filter(isControlResidual).sort((a, b) => index(a) - index(b));
}

/**
 * The ControlNet output feeding each of `residuals` (the UNet's residual inputs in order). Throws
 * EngineError 'model-shape' with one sentence when the ControlNet's inputs are not ones the
 * pipeline can feed or its outputs cannot be matched to the UNet's residuals.
 */
export function controlNetOutputsFor(
  cn: ComponentSession,
  residuals: readonly IoSpec[],
  unetFile: string,
): string[] {
  const unknown = cn.signature.inputs.filter((i) => !CONTROLNET_INPUTS.has(i.name));
  if (!cn.input('controlnet_cond') || !cn.input('sample') || unknown.length > 0) {
    const what =
      unknown.length > 0
        ? `has input${unknown.length > 1 ? 's' : ''} the engine does not know how to feed (${unknown.map((i) => i.name).join(', ')})`
        : 'lacks the sample or controlnet_cond input';
    throw new EngineError(
      'model-shape',
      `${cn.file} ${what}; a ControlNet takes sample, timestep, encoder_hidden_states and controlnet_cond.`,
      { file: cn.file },
    );
  }
  const names = new Set(cn.signature.outputs.map((o) => o.name));
  if (residuals.every((r) => names.has(r.name))) return residuals.map((r) => r.name);
  const outputs = cn.signature.outputs.filter((o) => o.type !== 'non-tensor');
  if (outputs.length !== residuals.length) {
    throw new EngineError(
      'model-shape',
      `${cn.file} gives ${outputs.length} residuals where ${unetFile} takes ${residuals.length}; the ControlNet was made for another model family.`,
      { file: cn.file },
    );
  }
  return outputs.map((o) => o.name);
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => null))?.isFile() ?? false;
}

/**
 * The ControlNet graph a unit names: `file` itself when it is a file, else `model.onnx` or
 * `controlnet/model.onnx` inside the folder (a diffusers ONNX ControlNet folder, or the
 * converter's output). Throws 'model-missing-file' with one sentence when there is none.
 */
export async function controlNetModelPath(file: string): Promise<string> {
  const s = await stat(file).catch(() => null);
  if (!s) {
    throw new EngineError('model-missing-file', `The ControlNet ${file} does not exist.`, { file });
  }
  if (s.isFile()) return file;
  for (const candidate of [
    path.join(file, 'model.onnx'),
    path.join(file, 'controlnet', 'model.onnx'),
  ]) {
    if (await isFile(candidate)) return candidate;
  }
  throw new EngineError(
    'model-missing-file',
    `The ControlNet folder ${file} holds no model.onnx (nor controlnet/model.onnx).`,
    { file },
  );
}

/**
 * A model folder's ControlNet UNet, OnnxStack's layout (`controlnet/model.onnx`: the UNet with
 * residual inputs, beside the plain `unet/`), or null when the folder has none. Whether the file
 * really takes residuals is read from its session by the caller.
 */
export async function controlUnetPath(modelDir: string): Promise<string | null> {
  const candidate = path.join(modelDir, 'controlnet', 'model.onnx');
  return (await isFile(candidate)) ? candidate : null;
}
