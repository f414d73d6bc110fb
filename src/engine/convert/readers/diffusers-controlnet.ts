/**
 * ControlNets saved by diffusers' `ControlNetModel.save_pretrained` (`diffusion_pytorch_model
 * .safetensors`, and the many single files copied from it): the same network as
 * lllyasviel/ControlNet's cldm.ControlNet under diffusers' module names. This view presents such a
 * file under the ldm names the ControlNet emitter reads, so one emitter serves both namings.
 *
 * The correspondence is diffusers' own (src/diffusers/loaders/single_file_utils.py
 * `convert_controlnet_checkpoint`, and scripts/convert_original_stable_diffusion_to_diffusers.py
 * for the UNet part):
 *  - time_embedding.linear_1/2 -> time_embed.0/2; add_embedding.linear_1/2 (SDXL) ->
 *    label_emb.0.0/0.2; conv_in -> input_blocks.0.0;
 *  - down_blocks.i.resnets.j / .attentions.j -> input_blocks.(1 + i (L + 1) + j).0 / .1, with L
 *    the resnets per level; down_blocks.i.downsamplers.0.conv -> input_blocks.((i + 1)(L + 1)).0.op;
 *  - mid_block.resnets.0, .attentions.0, .resnets.1 -> middle_block.0, .1, .2;
 *  - resnet parts norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut -> in_layers.0,
 *    in_layers.2, emb_layers.1, out_layers.0, out_layers.3, skip_connection (attention parts keep
 *    their names);
 *  - controlnet_cond_embedding.conv_in, .blocks.j, .conv_out -> input_hint_block.0, .2(j + 1),
 *    .2n (n the number of blocks + 1; SiLUs hold the odd indices);
 *  - controlnet_down_blocks.i -> zero_convs.i.0; controlnet_mid_block -> middle_block_out.0.
 */
import type { TensorInfo, TensorSource } from '../types';

const RESNET: Record<string, string> = {
  norm1: 'in_layers.0',
  conv1: 'in_layers.2',
  time_emb_proj: 'emb_layers.1',
  norm2: 'out_layers.0',
  conv2: 'out_layers.3',
  conv_shortcut: 'skip_connection',
};

/** Whether `names` are a ControlNet in diffusers naming. */
export function isDiffusersControlNet(names: readonly string[]): boolean {
  return (
    names.some((n) => n.startsWith('controlnet_cond_embedding.')) &&
    names.some((n) => n.startsWith('controlnet_down_blocks.'))
  );
}

/**
 * The ldm name of each diffusers ControlNet key (a key it does not know keeps its name, so the
 * emitter's coverage check names it). Throws nothing: detection decides what the result is.
 */
export function ldmControlNetNames(names: readonly string[]): Map<string, string> {
  // Resnets per level: the highest resnet index under down_blocks.0, plus one.
  let perLevel = 0;
  for (const n of names) {
    const m = /^down_blocks\.0\.resnets\.(\d+)\./.exec(n);
    if (m) perLevel = Math.max(perLevel, Number(m[1]) + 1);
  }
  let hintBlocks = 0;
  for (const n of names) {
    const m = /^controlnet_cond_embedding\.blocks\.(\d+)\./.exec(n);
    if (m) hintBlocks = Math.max(hintBlocks, Number(m[1]) + 1);
  }
  const resnetPart = (rest: string): string => {
    const dot = rest.indexOf('.');
    const mapped = RESNET[rest.slice(0, dot)];
    return mapped ? `${mapped}${rest.slice(dot)}` : rest;
  };
  const rename = (n: string): string => {
    let m: RegExpExecArray | null;
    if ((m = /^time_embedding\.linear_([12])\.(.*)$/.exec(n)))
      return `time_embed.${m[1] === '1' ? 0 : 2}.${m[2]}`;
    if ((m = /^add_embedding\.linear_([12])\.(.*)$/.exec(n)))
      return `label_emb.0.${m[1] === '1' ? 0 : 2}.${m[2]}`;
    if ((m = /^conv_in\.(.*)$/.exec(n))) return `input_blocks.0.0.${m[1]}`;
    if ((m = /^down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)$/.exec(n))) {
      const block = 1 + Number(m[1]) * (perLevel + 1) + Number(m[2]);
      return `input_blocks.${block}.0.${resnetPart(m[3])}`;
    }
    if ((m = /^down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)$/.exec(n))) {
      const block = 1 + Number(m[1]) * (perLevel + 1) + Number(m[2]);
      return `input_blocks.${block}.1.${m[3]}`;
    }
    if ((m = /^down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)$/.exec(n)))
      return `input_blocks.${(Number(m[1]) + 1) * (perLevel + 1)}.0.op.${m[2]}`;
    if ((m = /^mid_block\.resnets\.([01])\.(.*)$/.exec(n)))
      return `middle_block.${m[1] === '0' ? 0 : 2}.${resnetPart(m[2])}`;
    if ((m = /^mid_block\.attentions\.0\.(.*)$/.exec(n))) return `middle_block.1.${m[1]}`;
    if ((m = /^controlnet_cond_embedding\.conv_in\.(.*)$/.exec(n)))
      return `input_hint_block.0.${m[1]}`;
    if ((m = /^controlnet_cond_embedding\.blocks\.(\d+)\.(.*)$/.exec(n)))
      return `input_hint_block.${2 * (Number(m[1]) + 1)}.${m[2]}`;
    if ((m = /^controlnet_cond_embedding\.conv_out\.(.*)$/.exec(n)))
      return `input_hint_block.${2 * (hintBlocks + 1)}.${m[1]}`;
    if ((m = /^controlnet_down_blocks\.(\d+)\.(.*)$/.exec(n)))
      return `zero_convs.${m[1]}.0.${m[2]}`;
    if ((m = /^controlnet_mid_block\.(.*)$/.exec(n))) return `middle_block_out.0.${m[1]}`;
    return n;
  };
  return new Map(names.map((n) => [n, rename(n)]));
}

/** `source` itself, or, for a diffusers-named ControlNet, a view under the ldm names. */
export function withLdmControlNetNames(source: TensorSource): TensorSource {
  const all = source.list();
  if (!isDiffusersControlNet(all.map((t) => t.name))) return source;
  const toLdm = ldmControlNetNames(all.map((t) => t.name));
  const stored = new Map<string, string>();
  const listing: TensorInfo[] = [];
  for (const t of all) {
    const name = toLdm.get(t.name)!;
    stored.set(name, t.name);
    listing.push({ ...t, name });
  }
  return {
    path: source.path,
    list: () => listing,
    info: (name) => {
      const t = source.info(stored.get(name) ?? '\0');
      return t ? { ...t, name } : undefined;
    },
    readFloat32: (name) => source.readFloat32(stored.get(name) ?? name),
    close: () => source.close(),
  };
}
