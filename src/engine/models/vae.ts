/**
 * Replacement VAEs (issue 11 item 4): a converted VAE folder (vae_encoder/, vae_decoder/, as
 * convertVae writes it) used by one generation instead of its model's own VAE. The model stays
 * loaded as it is (its UNet, text encoders and own VAE sessions are untouched); `withVae` gives
 * the pipelines a view of it whose VAE components are the replacement's. The latent scaling
 * factor is outside both graphs and stays the model family's (it is a property of the latent
 * space the UNet was trained in, which a VAE fine-tune such as ft-MSE keeps).
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { EngineError } from '../errors';
import { readComponent } from './folder';
import { type ComponentSession, type LoadedModel, createComponentSession } from './load';
import { type ProviderPreference, type SessionOptionsInput, componentOptions } from './providers';
import type { SessionCache } from './session-cache';
import { findInput, staticDim } from './signature';
import type { OnnxComponent } from './types';

type VaeComponentName = 'vae_encoder' | 'vae_decoder';

/** A converted VAE folder, inspected without creating any session. */
export interface VaeFolder {
  /** Absolute path of the folder. */
  dir: string;
  /** The VAE's name for messages: its source file's name (vae.json), else the folder's. */
  name: string;
  encoder: OnnxComponent | null;
  decoder: OnnxComponent;
  /** Latent channels the VAE works in: its decoder's `latent_sample` channels, else config.json's. */
  latentChannels: number | null;
}

/** Reads a converted VAE folder: its decoder (required), encoder (optional) and name. */
export async function openVaeFolder(dir: string): Promise<VaeFolder> {
  const root = path.resolve(dir);
  const st = await stat(root).catch(() => null);
  if (!st?.isDirectory())
    throw new EngineError('model-missing-file', `The VAE folder ${root} does not exist.`, {
      file: root,
    });
  let name = path.basename(root);
  try {
    const record = JSON.parse(await readFile(path.join(root, 'vae.json'), 'utf8')) as unknown;
    const source = (record as { source?: unknown } | null)?.source;
    if (typeof source === 'string' && source) name = source;
  } catch {
    // a folder without the conversion record is named by itself
  }
  const has = async (c: VaeComponentName) =>
    (await stat(path.join(root, c)).catch(() => null))?.isDirectory() === true;
  if (!(await has('vae_decoder')))
    throw new EngineError(
      'model-missing-file',
      `The VAE ${name} has no vae_decoder/model.onnx, so it cannot decode images.`,
      { file: 'vae_decoder/model.onnx' },
    );
  const decoder = await readComponent(root, 'vae_decoder', null);
  const encoder = (await has('vae_encoder'))
    ? await readComponent(root, 'vae_encoder', null)
    : null;
  const fromConfig = decoder.config?.latent_channels;
  const latentChannels =
    staticDim(findInput(decoder.signature, 'latent_sample'), 1) ??
    (typeof fromConfig === 'number' ? fromConfig : null);
  return { dir: root, name, encoder, decoder, latentChannels };
}

/**
 * Throws EngineError 'model-unsupported' with one sentence when `vae` cannot stand in for
 * `model`'s own VAE: the x4 upscaler (its decoder is part of the upscaler), or latents of
 * another channel count than the model's UNet makes.
 */
export function checkVaeFits(model: LoadedModel, vae: VaeFolder): void {
  if (model.decoderName !== 'vae_decoder')
    throw new EngineError(
      'model-unsupported',
      `${model.info.name} decodes with its own upscaler VAE, so the replacement VAE ${vae.name} cannot be used with it.`,
    );
  const wanted = model.family.latentChannels;
  if (vae.latentChannels !== null && vae.latentChannels !== wanted)
    throw new EngineError(
      'model-unsupported',
      `The VAE ${vae.name} works on ${vae.latentChannels}-channel latents but ${model.info.name} makes ${wanted}-channel latents, so it does not fit this model.`,
      { file: vae.decoder.file },
    );
}

export interface VaeSessionOptions {
  cache: SessionCache;
  preference: ProviderPreference;
  options: SessionOptionsInput;
}

/**
 * `model` with `vae`'s encoder and decoder in place of its own: sessions of the replacement are
 * created on first use in `opts.cache` (keyed by their own files, so released with
 * `cache.release(vae.dir)`); every other component is the model's. Call checkVaeFits first.
 */
export function withVae(model: LoadedModel, vae: VaeFolder, opts: VaeSessionOptions): LoadedModel {
  const sessions = new Map<VaeComponentName, Promise<ComponentSession>>();
  // The replacement's own, known once its sessions exist (not the model's decoder's).
  const attention = { ...model.attention };
  delete attention.vae_decoder;
  delete attention.vae_encoder;
  const component = (name: VaeComponentName) =>
    name === 'vae_decoder' ? vae.decoder : vae.encoder;
  const open = (name: VaeComponentName): Promise<ComponentSession> => {
    const existing = sessions.get(name);
    if (existing) return existing;
    const c = component(name)!;
    const file = `${vae.name}: ${c.file}`;
    const key = {
      modelPath: c.modelPath,
      preference: opts.preference,
      options: componentOptions(name, opts.options),
    };
    const p = createComponentSession(opts.cache, key, name, file, vae.dir).then((s) => {
      attention[name] = s.attention;
      return s;
    });
    sessions.set(name, p);
    p.catch(() => {
      if (sessions.get(name) === p) sessions.delete(name);
    });
    return p;
  };
  const replaced = (name: string): name is VaeComponentName =>
    name === 'vae_encoder' || name === 'vae_decoder';
  const components = { ...model.info.components, vae_decoder: vae.decoder };
  if (vae.encoder) components.vae_encoder = vae.encoder;
  else delete components.vae_encoder;
  const signatures = { ...model.signatures, vae_decoder: vae.decoder.signature };
  if (vae.encoder) signatures.vae_encoder = vae.encoder.signature;
  else delete signatures.vae_encoder;
  return {
    ...model,
    info: { ...model.info, components },
    signatures,
    attention,
    has: (name) => (replaced(name) ? component(name) !== null : model.has(name)),
    releaseSession: async (name) => {
      if (!replaced(name)) return model.releaseSession(name);
      const c = component(name);
      if (!c || !sessions.delete(name)) return;
      delete attention[name];
      await opts.cache.release(c.modelPath);
    },
    session: (name) => {
      if (!replaced(name)) return model.session(name);
      if (component(name)) return open(name);
      return Promise.reject(
        new EngineError(
          'model-missing-file',
          `The VAE ${vae.name} has no vae_encoder, which image-to-image and inpainting need to encode their input.`,
          { file: 'vae_encoder/model.onnx' },
        ),
      );
    },
  };
}
