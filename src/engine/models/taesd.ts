/**
 * A converted TAESD decoder folder (model.onnx, as convertTaesd writes it) opened for a model:
 * its session, checked to take the model's latents. Which decoder fits which family is decided
 * by the host (taesdVariantFor in src/shared/taesd.ts): SD and SDXL latents have the same shape.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import { type ComponentSession, type LoadedModel, componentSession } from './load';
import type { ProviderPreference, SessionOptionsInput } from './providers';
import type { SessionCache } from './session-cache';
import { signatureFromSession, staticDim } from './signature';

/**
 * The TAESD decoder session of `dir` in `opts.cache` (owned by `dir`: released with
 * `cache.release(dir)`). Throws EngineError 'model-missing-file' when the folder has no
 * model.onnx, 'model-unsupported' when its latents are not `model`'s (one sentence each).
 */
export async function openTaesdSession(
  dir: string,
  model: LoadedModel,
  opts: { cache: SessionCache; preference: ProviderPreference; options: SessionOptionsInput },
): Promise<ComponentSession> {
  const root = path.resolve(dir);
  const modelPath = path.join(root, 'model.onnx');
  if (!(await stat(modelPath).catch(() => null))?.isFile())
    throw new EngineError(
      'model-missing-file',
      `The TAESD decoder folder ${root} has no model.onnx.`,
      { file: modelPath },
    );
  const file = `${path.basename(root)}/model.onnx`;
  const created = await opts.cache.get(
    { modelPath, preference: opts.preference, options: opts.options },
    file,
    root,
  );
  const session = componentSession(
    'vae_decoder',
    file,
    created.session,
    signatureFromSession(created.session),
    created.provider,
    created.fallbackReason,
    created.attention,
  );
  const channels = staticDim(session.input('latent_sample') ?? session.signature.inputs[0], 1);
  if (channels !== null && channels !== model.family.latentChannels)
    throw new EngineError(
      'model-unsupported',
      `The TAESD decoder in ${root} takes ${channels}-channel latents but ${model.info.name} makes ${model.family.latentChannels}-channel ones.`,
      { file: modelPath },
    );
  return session;
}
