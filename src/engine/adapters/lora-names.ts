/**
 * Where a LoRA module lands in an ONNX model: every float initializer that a LoRA can patch is
 * named by its diffusers module path (what kohya and PEFT name modules after), flattened with
 * underscores, whichever exporter wrote the model:
 *  - our converter (src/engine/convert/emit) names initializers by the ldm checkpoint key
 *    (`model.diffusion_model.input_blocks.1.1.proj_in.weight`, CLIP's
 *    `...text_model.encoder.layers.0.self_attn.q_proj.weight`, OpenCLIP's fused
 *    `...resblocks.0.attn.in_proj_weight[0:1024]` slices); these are translated to diffusers'
 *    module paths (the UNet's block layout as in diffusers' convert_original_stable_diffusion
 *    script: input_blocks.{1 + level (R + 1) + r} = down_blocks.{level}.resnets/attentions.{r},
 *    output_blocks likewise from the top level down);
 *  - diffusers / optimum exports name initializers by module path, or anonymously
 *    (`onnx::MatMul_1234`), when the consuming node's name (`/down_blocks.0/.../to_q/MatMul`)
 *    carries the path.
 * UNet weights answer to the ldm path as well (kohya's SDXL LoRAs name modules that way), on
 * converted and exported models alike.
 * Linear weights feeding a MatMul are stored [in, out] (the transpose of torch's [out, in]);
 * a Gemm with transB keeps [out, in]; convolutions are [out, in, kh, kw].
 */
import type { InitializerEntry } from '../models/onnx-file';

/** How an initializer holds a torch weight of shape [out, in(, kh, kw)]. */
export type WeightLayout = 'in-out' | 'out-in' | 'conv';

export interface PatchTarget {
  entry: InitializerEntry;
  layout: WeightLayout;
  /** The weight in torch's shape: [out, in] or [out, in, kh, kw]. */
  torchShape: number[];
}

/** The ldm names of the UNet's blocks -> diffusers' (resnet sub-layers renamed too). */
const RESNET_LAYERS: Record<string, string> = {
  'in_layers.0': 'norm1',
  'in_layers.2': 'conv1',
  'emb_layers.1': 'time_emb_proj',
  'out_layers.0': 'norm2',
  'out_layers.3': 'conv2',
  skip_connection: 'conv_shortcut',
};

const UNET_TOP: Record<string, string> = {
  'time_embed.0': 'time_embedding.linear_1',
  'time_embed.2': 'time_embedding.linear_2',
  'label_emb.0.0': 'add_embedding.linear_1',
  'label_emb.0.2': 'add_embedding.linear_2',
  'input_blocks.0.0': 'conv_in',
  'out.0': 'conv_norm_out',
  'out.2': 'conv_out',
};

/** The UNet's shape as far as names need it: resnets per level, and how many levels. */
export interface UNetLayout {
  resBlocks: number;
  levels: number;
}

/**
 * Res blocks per level and the number of levels, from the ldm keys: the first downsampler
 * (`input_blocks.{R + 1}.0.op`) follows R res blocks; the output blocks are levels x (R + 1).
 */
export function unetLayoutFromLdmKeys(modules: readonly string[]): UNetLayout | null {
  let firstOp = Infinity;
  let maxInput = 0;
  let maxOutput = -1;
  for (const m of modules) {
    const op = /(?:^|\.)input_blocks\.(\d+)\.0\.op$/.exec(m);
    if (op) firstOp = Math.min(firstOp, Number(op[1]));
    const i = /(?:^|\.)input_blocks\.(\d+)\./.exec(m);
    if (i) maxInput = Math.max(maxInput, Number(i[1]));
    const o = /(?:^|\.)output_blocks\.(\d+)\./.exec(m);
    if (o) maxOutput = Math.max(maxOutput, Number(o[1]));
  }
  if (maxOutput < 0) return null;
  const resBlocks = Number.isFinite(firstOp) ? firstOp - 1 : maxInput;
  if (resBlocks < 1) return null;
  return { resBlocks, levels: (maxOutput + 1) / (resBlocks + 1) };
}

/** An ldm UNet module path (prefix removed) as diffusers' module path, or null. */
export function ldmUnetToDiffusers(module: string, layout: UNetLayout): string | null {
  const top = UNET_TOP[module];
  if (top) return top;
  const R = layout.resBlocks;
  const sub = (rest: string, isResnet: boolean): string => {
    if (!isResnet) return rest;
    const layer = Object.keys(RESNET_LAYERS).find((k) => rest === k || rest.startsWith(k + '.'));
    return layer ? RESNET_LAYERS[layer] + rest.slice(layer.length) : rest;
  };
  let m = /^input_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(module);
  if (m) {
    const b = Number(m[1]) - 1;
    const level = Math.floor(b / (R + 1));
    const r = b % (R + 1);
    if (r === R) return m[3] === 'op' ? `down_blocks.${level}.downsamplers.0.conv` : null;
    return m[2] === '0'
      ? `down_blocks.${level}.resnets.${r}.${sub(m[3], true)}`
      : `down_blocks.${level}.attentions.${r}.${m[3]}`;
  }
  m = /^middle_block\.(\d+)\.(.+)$/.exec(module);
  if (m) {
    if (m[1] === '1') return `mid_block.attentions.0.${m[2]}`;
    return `mid_block.resnets.${m[1] === '0' ? 0 : 1}.${sub(m[2], true)}`;
  }
  m = /^output_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(module);
  if (m) {
    const b = Number(m[1]);
    const up = Math.floor(b / (R + 1));
    const r = b % (R + 1);
    if (m[2] === '0') return `up_blocks.${up}.resnets.${r}.${sub(m[3], true)}`;
    if (m[3] === 'conv') return `up_blocks.${up}.upsamplers.0.conv`;
    return `up_blocks.${up}.attentions.${r}.${m[3]}`;
  }
  return null;
}

/** diffusers' UNet block layout from its module paths: res blocks per down level, levels. */
export interface DiffusersUNetLayout extends UNetLayout {
  /** up_blocks indices that have attentions (their upsampler is sub-block 2, else 1). */
  upWithAttention: Set<number>;
}

export function unetLayoutFromDiffusers(modules: readonly string[]): DiffusersUNetLayout | null {
  let maxResnet = -1;
  let maxUp = -1;
  const upWithAttention = new Set<number>();
  for (const m of modules) {
    const r = /^down_blocks\.0\.resnets\.(\d+)\./.exec(m);
    if (r) maxResnet = Math.max(maxResnet, Number(r[1]));
    const u = /^up_blocks\.(\d+)\.(attentions)?/.exec(m);
    if (u) {
      maxUp = Math.max(maxUp, Number(u[1]));
      if (u[2]) upWithAttention.add(Number(u[1]));
    }
  }
  if (maxResnet < 0 || maxUp < 0) return null;
  return { resBlocks: maxResnet + 1, levels: maxUp + 1, upWithAttention };
}

const LDM_RESNET_LAYERS = Object.fromEntries(
  Object.entries(RESNET_LAYERS).map(([ldm, diffusers]) => [diffusers, ldm]),
);
const LDM_TOP = Object.fromEntries(Object.entries(UNET_TOP).map(([ldm, d]) => [d, ldm]));

/**
 * A diffusers UNet module path as the ldm one (prefix-free), or null: the inverse of
 * ldmUnetToDiffusers. kohya's SDXL LoRAs name UNet modules this way
 * (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`).
 */
export function diffusersUnetToLdm(module: string, layout: DiffusersUNetLayout): string | null {
  const top = LDM_TOP[module];
  if (top) return top;
  const R = layout.resBlocks;
  const res = (rest: string): string => {
    const layer = Object.keys(LDM_RESNET_LAYERS).find(
      (k) => rest === k || rest.startsWith(k + '.'),
    );
    return layer ? LDM_RESNET_LAYERS[layer] + rest.slice(layer.length) : rest;
  };
  let m = /^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(module);
  if (m) {
    const block = 1 + Number(m[1]) * (R + 1) + Number(m[3]);
    return m[2] === 'resnets'
      ? `input_blocks.${block}.0.${res(m[4])}`
      : `input_blocks.${block}.1.${m[4]}`;
  }
  m = /^down_blocks\.(\d+)\.downsamplers\.0\.conv$/.exec(module);
  if (m) return `input_blocks.${(Number(m[1]) + 1) * (R + 1)}.0.op`;
  m = /^mid_block\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(module);
  if (m) {
    if (m[1] === 'attentions') return `middle_block.1.${m[3]}`;
    return `middle_block.${m[2] === '0' ? 0 : 2}.${res(m[3])}`;
  }
  m = /^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(module);
  if (m) {
    const block = Number(m[1]) * (R + 1) + Number(m[3]);
    return m[2] === 'resnets'
      ? `output_blocks.${block}.0.${res(m[4])}`
      : `output_blocks.${block}.1.${m[4]}`;
  }
  m = /^up_blocks\.(\d+)\.upsamplers\.0\.conv$/.exec(module);
  if (m) {
    const up = Number(m[1]);
    return `output_blocks.${up * (R + 1) + R}.${layout.upWithAttention.has(up) ? 2 : 1}.conv`;
  }
  return null;
}

const OPENCLIP_LAYERS: Record<string, string> = {
  'attn.out_proj': 'self_attn.out_proj',
  'mlp.c_fc': 'mlp.fc1',
  'mlp.c_proj': 'mlp.fc2',
};

/**
 * A text-encoder initializer name as Hugging Face CLIPTextModel's module path
 * (`text_model.encoder.layers.0.self_attn.q_proj`), or null. OpenCLIP's fused in_proj rows
 * [0, D), [D, 2D), [2D, 3D) are q, k, v (torch's MultiheadAttention packing).
 */
export function textModuleOf(name: string): string | null {
  const hf = /(?:^|\.)(?:text_model\.)?encoder\.layers\.(\d+)\.(.+)\.weight$/.exec(name);
  if (hf) return `text_model.encoder.layers.${hf[1]}.${hf[2]}`;
  const fused = /(?:^|\.)resblocks\.(\d+)\.attn\.in_proj_weight\[(\d+):(\d+)\]$/.exec(name);
  if (fused) {
    const which = Number(fused[2]) / (Number(fused[3]) - Number(fused[2]));
    const proj = ['q_proj', 'k_proj', 'v_proj'][which];
    return proj ? `text_model.encoder.layers.${fused[1]}.self_attn.${proj}` : null;
  }
  const oc = /(?:^|\.)resblocks\.(\d+)\.(attn\.out_proj|mlp\.c_fc|mlp\.c_proj)\.weight$/.exec(name);
  if (oc) return `text_model.encoder.layers.${oc[1]}.${OPENCLIP_LAYERS[oc[2]]}`;
  return null;
}

/** `/down_blocks.0/attentions.0/.../to_q/MatMul` -> `down_blocks.0.attentions.0....to_q`. */
function moduleFromNodeName(node: string): string | null {
  const parts = node.replace(/^\//, '').split('/');
  if (parts.length < 2) return null;
  parts.pop();
  return parts.join('.');
}

/** The weight-carrying input of a MatMul/Gemm/Conv, when the initializer is one. */
function weightConsumer(e: InitializerEntry) {
  return e.consumers.find(
    (c) => (c.opType === 'MatMul' || c.opType === 'Gemm' || c.opType === 'Conv') && c.input === 1,
  );
}

function layoutOf(e: InitializerEntry): WeightLayout {
  if (e.dims.length === 4) return 'conv';
  const c = weightConsumer(e);
  if (c?.opType === 'Gemm' && c.transB === 1) return 'out-in';
  return 'in-out';
}

function torchShapeOf(e: InitializerEntry, layout: WeightLayout): number[] {
  if (layout === 'in-out') return [e.dims[1], e.dims[0]];
  return [...e.dims];
}

/**
 * Patchable initializers of one component by flat module name (diffusers' path with dots as
 * underscores), plus, for converted UNets, the ldm path too (some SDXL LoRAs use those names).
 */
export function indexTargets(
  initializers: readonly InitializerEntry[],
  component: 'unet' | 'text',
): Map<string, PatchTarget> {
  const out = new Map<string, PatchTarget>();
  const float = initializers.filter(
    (e) =>
      (e.dtype === 'float32' || e.dtype === 'float16') &&
      e.data.kind !== 'typed' &&
      (e.dims.length === 2 || e.dims.length === 4),
  );
  const unetPrefix = 'model.diffusion_model.';
  const ldm =
    component === 'unet'
      ? unetLayoutFromLdmKeys(
          float
            .filter((e) => e.name.startsWith(unetPrefix))
            .map((e) => e.name.slice(unetPrefix.length).replace(/\.weight$/, '')),
        )
      : null;
  const resolved: [string, InitializerEntry][] = [];
  const add = (module: string, e: InitializerEntry): void => {
    const layout = layoutOf(e);
    const flat = module.replace(/\./g, '_');
    if (!out.has(flat)) out.set(flat, { entry: e, layout, torchShape: torchShapeOf(e, layout) });
  };
  for (const e of float) {
    let module: string | null = null;
    if (component === 'text') module = textModuleOf(e.name);
    else if (ldm && e.name.startsWith(unetPrefix) && e.name.endsWith('.weight')) {
      const ldmPath = e.name.slice(unetPrefix.length, -'.weight'.length);
      module = ldmUnetToDiffusers(ldmPath, ldm);
      add(ldmPath, e);
    } else if (e.name.endsWith('.weight')) module = e.name.slice(0, -'.weight'.length);
    if (module === null) {
      // Anonymous (`onnx::MatMul_1234`): the consuming node's name carries the module path.
      const c = weightConsumer(e);
      const fromNode = c ? moduleFromNodeName(c.node) : null;
      if (fromNode)
        module = component === 'text' ? (textModuleOf(fromNode + '.weight') ?? fromNode) : fromNode;
    }
    if (module !== null) {
      add(module, e);
      if (!ldm) resolved.push([module, e]);
    }
  }
  // diffusers-named UNets answer to ldm names too (kohya's SDXL LoRAs use them).
  const layout =
    component === 'unet' && !ldm ? unetLayoutFromDiffusers(resolved.map(([m]) => m)) : null;
  if (layout)
    for (const [module, e] of resolved) {
      const ldmPath = diffusersUnetToLdm(module, layout);
      if (ldmPath) add(ldmPath, e);
    }
  return out;
}
