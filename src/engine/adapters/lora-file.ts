/**
 * Reading a LoRA file (.safetensors, or a torch zip through the restricted unpickler) into its
 * low-rank modules, whatever naming wrote it:
 *  - kohya sd-scripts / A1111: `lora_unet_<module>` and `lora_te_` (SDXL: `lora_te1_`,
 *    `lora_te2_`), each with `.lora_down.weight`, `.lora_up.weight` and `.alpha`; LoCon/LyCORIS
 *    conv layers use the same keys with a kxk down and 1x1 up, and `.lora_mid.weight` for the
 *    Tucker-decomposed variant;
 *  - diffusers / PEFT: `unet.<module>.lora_A.weight` / `.lora_B.weight` (also
 *    `text_encoder.`, `text_encoder_2.`, `base_model.model.` prefixes) and diffusers' older
 *    attention-processor names (`.processor.to_q_lora.down.weight`, `.lora_linear_layer.up`,
 *    `.lora.down`).
 * A module is named by its module path with dots as underscores (kohya's spelling), so both
 * namings of the same factors meet the same initializer. Other LyCORIS algorithms are refused
 * with a sentence that names them, never half-applied.
 */
import path from 'node:path';
import { EngineError } from '../errors';
import { openCheckpoint } from '../convert/readers';
import type { TensorInfo, TensorSource } from '../convert/types';

/** Which network a module patches: the UNet, or the first / second text encoder. */
export type LoraTarget = 'unet' | 'te1' | 'te2';

/** One low-rank module: delta W = (alpha / rank) * up . [mid .] down. */
export interface LoraModule {
  /** The module as the file names it (`lora_unet_down_blocks_0_..._to_q`), for messages. */
  key: string;
  target: LoraTarget;
  /** The module path with dots as underscores, prefixes removed (`down_blocks_0_..._to_q`). */
  flat: string;
  /** Tensor names in the file. */
  down: TensorInfo;
  up: TensorInfo;
  mid: TensorInfo | null;
  /** The file's alpha (a scalar tensor), or null: then alpha = rank (scale 1, PEFT's default). */
  alphaKey: string | null;
  /** Every tensor of the file that belongs to this module (2 to 4). */
  tensorCount: number;
}

export interface LoraFile {
  readonly path: string;
  readonly source: TensorSource;
  readonly modules: LoraModule[];
  /** Tensors in the file. */
  readonly tensorCount: number;
  /** Tensors that are not part of a complete LoRA module (counted as matching nothing). */
  readonly strayKeys: string[];
}

/**
 * Algorithms that are not LoRA, told apart by their tensor names (LyCORIS' module files and
 * PEFT's tuners), with the sentence a person reads.
 */
const OTHER_FORMATS: { test: RegExp; name: string }[] = [
  { test: /\.hada_w[12]_[ab]$/, name: 'a LoHa (LyCORIS Hadamard-product) network' },
  { test: /\.lokr_w[12](_[ab])?$/, name: 'a LoKr (LyCORIS Kronecker-product) network' },
  { test: /\.dora_scale$|\.lora_magnitude_vector/, name: 'a DoRA (weight-decomposed LoRA)' },
  { test: /\.on_input$|\.ia3_l$|ia3_/, name: 'an (IA)³ network' },
  { test: /\.oft_(blocks|diag)$|\.oft_r$|oft_R/, name: 'an OFT (orthogonal fine-tuning) network' },
  { test: /\.boft_/, name: 'a BOFT (butterfly orthogonal fine-tuning) network' },
  { test: /\.(a1|a2|b1|b2)\.weight$/, name: 'a GLoRA network' },
  { test: /\.diff(_b)?$/, name: 'a LyCORIS full (difference) network' },
  { test: /\.[wb]_norm$/, name: 'a LyCORIS network that trains norm layers' },
];

/** Tensor-name suffixes of one module and the factor each names. */
const SUFFIXES: { re: RegExp; role: 'down' | 'up' | 'mid' | 'alpha' }[] = [
  { re: /\.lora_down\.weight$/, role: 'down' },
  { re: /\.lora_up\.weight$/, role: 'up' },
  { re: /\.lora_mid\.weight$/, role: 'mid' },
  { re: /\.lora_A(\.[A-Za-z0-9_-]+)?\.weight$/, role: 'down' },
  { re: /\.lora_B(\.[A-Za-z0-9_-]+)?\.weight$/, role: 'up' },
  { re: /\.lora_linear_layer\.down\.weight$/, role: 'down' },
  { re: /\.lora_linear_layer\.up\.weight$/, role: 'up' },
  { re: /[._]lora\.down\.weight$/, role: 'down' },
  { re: /[._]lora\.up\.weight$/, role: 'up' },
  { re: /\.alpha$/, role: 'alpha' },
];

/** The target and flat module name of a module key, or null when it names no known network. */
export function parseModuleKey(key: string): { target: LoraTarget; flat: string } | null {
  const kohya = /^lora_(unet|te|te1|te2)_(.+)$/.exec(key);
  if (kohya) {
    const target: LoraTarget = kohya[1] === 'unet' ? 'unet' : kohya[1] === 'te2' ? 'te2' : 'te1';
    return { target, flat: kohya[2] };
  }
  const dotted = /^(unet|text_encoder|text_encoder_2|base_model\.model|transformer)\.(.+)$/.exec(
    key,
  );
  if (!dotted) return null;
  let module = dotted[2];
  // diffusers' attention processors: `attn1.processor.to_q_lora` is attn1.to_q, and
  // `to_out_lora` is to_out.0.
  module = module
    .replace(/\.processor\.to_(q|k|v)(_lora)?$/, '.to_$1')
    .replace(/\.processor\.to_out(_lora)?$/, '.to_out.0');
  let target: LoraTarget = 'unet';
  if (dotted[1] === 'text_encoder') target = 'te1';
  else if (dotted[1] === 'text_encoder_2') target = 'te2';
  else if (dotted[1] === 'base_model.model' && module.startsWith('text_model.')) target = 'te1';
  return { target, flat: module.replace(/\./g, '_') };
}

/** Opens a LoRA file and groups its tensors into modules; throws one sentence when it is not one. */
export async function openLoraFile(file: string): Promise<LoraFile> {
  const { source } = await openCheckpoint(file);
  try {
    return groupModules(file, source);
  } catch (e) {
    await source.close();
    throw e;
  }
}

function groupModules(file: string, source: TensorSource): LoraFile {
  const base = path.basename(file);
  const tensors = source.list();
  for (const t of tensors) {
    const other = OTHER_FORMATS.find((f) => f.test.test(t.name));
    if (other) {
      throw new EngineError(
        'model-unsupported',
        `${base} is ${other.name} (tensor "${t.name}"), not a LoRA; Latent Studio applies LoRA and LoCon files.`,
        { file },
      );
    }
  }
  const parts = new Map<string, Partial<Record<'down' | 'up' | 'mid' | 'alpha', TensorInfo>>>();
  const stray: string[] = [];
  for (const t of tensors) {
    const suffix = SUFFIXES.find((s) => s.re.test(t.name));
    if (!suffix) {
      stray.push(t.name);
      continue;
    }
    const key = t.name.replace(suffix.re, '');
    const entry = parts.get(key) ?? {};
    entry[suffix.role] = t;
    parts.set(key, entry);
  }
  const modules: LoraModule[] = [];
  for (const [key, p] of parts) {
    const parsed = parseModuleKey(key);
    const members = [p.down, p.up, p.mid, p.alpha].filter((t) => t !== undefined);
    if (!p.down || !p.up || !parsed) {
      stray.push(...members.map((t) => t.name));
      continue;
    }
    checkFactors(base, file, key, p.down, p.up, p.mid ?? null);
    modules.push({
      key,
      target: parsed.target,
      flat: parsed.flat,
      down: p.down,
      up: p.up,
      mid: p.mid ?? null,
      alphaKey: p.alpha?.name ?? null,
      tensorCount: members.length,
    });
  }
  if (modules.length === 0) {
    throw new EngineError(
      'model-unsupported',
      `${base} holds no LoRA modules (no lora_down/lora_up or lora_A/lora_B tensors); it may be a checkpoint or an embedding rather than a LoRA.`,
      { file },
    );
  }
  return { path: file, source, modules, tensorCount: tensors.length, strayKeys: stray };
}

/** down [r, in(, kh, kw)], up [out, r(, 1, 1)], mid [r, r, kh, kw]: ranks must agree. */
function checkFactors(
  base: string,
  file: string,
  key: string,
  down: TensorInfo,
  up: TensorInfo,
  mid: TensorInfo | null,
): void {
  const ok =
    (down.shape.length === 2 || down.shape.length === 4) &&
    (up.shape.length === 2 || (up.shape.length === 4 && up.shape[2] === 1 && up.shape[3] === 1)) &&
    up.shape[1] === down.shape[0] &&
    (mid === null ||
      (mid.shape.length === 4 && mid.shape[0] === up.shape[1] && mid.shape[1] === down.shape[0]));
  if (!ok) {
    throw new EngineError(
      'model-corrupt',
      `${base}: the factors of "${key}" do not fit together (down [${down.shape.join(', ')}], up [${up.shape.join(', ')}]${mid ? `, mid [${mid.shape.join(', ')}]` : ''}).`,
      { file },
    );
  }
}
