/**
 * EMA-only checkpoints. ldm's LitEma keeps a copy of the UNet's parameters as buffers named
 * `model_ema.<name without dots>` (`model.diffusion_model.input_blocks.1.1.norm.weight` ->
 * `model_ema.diffusion_modelinput_blocks11normweight`), plus `model_ema.decay` and
 * `model_ema.num_updates`. When a file holds the EMA copy and no ordinary UNet weights, this
 * view presents the EMA tensors under the ordinary names; a file with both keeps its ordinary
 * weights (as the original sources use them for inference) and its EMA keys stay unused.
 */
import type { TensorInfo, TensorSource } from '../types';

const UNET = 'model.diffusion_model.';
const EMA = 'model_ema.';

/** Module names of ldm's UNet, longest first so `out_layers` wins over `out`. */
const WORDS = [
  'diffusion_model',
  'skip_connection',
  'transformer_blocks',
  'output_blocks',
  'input_blocks',
  'middle_block',
  'out_layers',
  'emb_layers',
  'in_layers',
  'time_embed',
  'label_emb',
  'proj_out',
  'proj_in',
  'to_out',
  'weight',
  'attn1',
  'attn2',
  'norm1',
  'norm2',
  'norm3',
  'to_q',
  'to_k',
  'to_v',
  'bias',
  'conv',
  'norm',
  'proj',
  'net',
  'out',
  'op',
  'ff',
];

/** The EMA buffer name of an ordinary UNet key. */
export function emaName(name: string): string {
  return EMA + name.slice('model.'.length).replaceAll('.', '');
}

/**
 * Puts the dots back into an EMA buffer name using ldm's module names; indices after
 * input_blocks/output_blocks are a block number then a one-digit layer number. Returns
 * undefined for a name it cannot split (it is then left out of the listing).
 */
export function ordinaryName(ema: string): string | undefined {
  let rest = ema.slice(EMA.length);
  const parts: string[] = [];
  while (rest.length > 0) {
    const digits = /^\d+/.exec(rest)?.[0];
    if (digits) {
      const previous = parts[parts.length - 1];
      if ((previous === 'input_blocks' || previous === 'output_blocks') && digits.length > 1) {
        parts.push(digits.slice(0, -1), digits.slice(-1));
      } else if (previous === 'transformer_blocks') parts.push(digits);
      else parts.push(...digits);
      rest = rest.slice(digits.length);
      continue;
    }
    const word = WORDS.find((w) => rest.startsWith(w));
    if (!word) return undefined;
    parts.push(word);
    rest = rest.slice(word.length);
  }
  return `model.${parts.join('.')}`;
}

/** `source` itself, or a view with the EMA weights under the ordinary UNet names. */
export function withEmaWeights(source: TensorSource): TensorSource {
  const all = source.list();
  if (all.some((t) => t.name.startsWith(UNET))) return source;
  if (!all.some((t) => t.name.startsWith(`${EMA}diffusion_model`))) return source;
  const renamed = new Map<string, TensorInfo>();
  const listing: TensorInfo[] = [];
  for (const t of all) {
    const name = t.name.startsWith(`${EMA}diffusion_model`) ? ordinaryName(t.name) : t.name;
    if (name === undefined || renamed.has(name)) continue;
    const info = { ...t, name };
    renamed.set(name, info);
    listing.push(info);
  }
  const stored = (name: string): string => (name.startsWith(UNET) ? emaName(name) : name);
  return {
    path: source.path,
    list: () => listing,
    info: (name) => {
      const t = source.info(stored(name));
      return t ? { ...t, name } : undefined;
    },
    readFloat32: (name) => source.readFloat32(stored(name)),
    close: () => source.close(),
  };
}
