"""Records the LoRA reference fixtures: random low-rank factors for the converter's tiny
checkpoints (tests/fixtures/reference/convert-<family>.safetensors), written in kohya's and in
PEFT's naming, and the outputs of the reference models (tools/convert-reference/reference.py)
with the factors merged into their weights.

    /usr/bin/python3 tools/lora-reference/make_lora_fixtures.py [--out tests/fixtures/reference]

For sd1 and sdxl it writes
  lora-<family>.kohya.safetensors     lora_unet_* / lora_te*_* with lora_down, lora_up, alpha
                                      (float32): every Linear of the transformers (1x1-conv
                                      proj_in/out for sd1), the text encoders' attention and MLP,
                                      a LoCon 3x3 conv, a time-embedding projection, and one
                                      module that names no layer of the model;
  lora-<family>.peft.safetensors      the same factors as unet.* / text_encoder(_2).* lora_A /
                                      lora_B (the UNet's in bfloat16, the encoders' in float16;
                                      no alpha, so lora_B carries alpha / rank); every factor is
                                      rounded to bfloat16 first, so both files hold equal values;
  lora-<family>.tucker.safetensors    one LoCon conv with lora_mid (Tucker), kohya naming (PEFT has
                                      no such layer, so it is a LoRA of its own, applied with
                                      either naming: it also shows that two LoRAs add);
  lora-sd1.tucker.pt                  the sd1 Tucker file saved by torch.save (zip + pickle);
  lora-<family>.expected.safetensors  the reference outputs with both LoRAs (kohya + tucker)
                                      merged at unet weight UNET_W and text weight TE_W, on the
                                      inputs of convert-<family>.expected.safetensors.

Merge: W' = W + weight * (alpha / rank) * up @ down (Hu et al. 2021, LoRA, sec. 4.1; kohya's
alpha); a conv's factors are flattened to [out, r] @ [r, in*kh*kw]; with lora_mid,
delta[o, c, k, l] = sum_ij up[o, i] mid[i, j, k, l] down[j, c] (Tucker, Kolda & Bader 2009).
The module names are derived here from the reference module tree (diffusers' block layout:
each input block is a level's resnet [+ attention] or its downsampler), independently of the
engine's mapping.
"""

import argparse
import json
import re
import struct
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "convert-reference"))
import reference as R  # noqa: E402
from make_fixtures import FAMILIES, write_safetensors  # noqa: E402

UNET_W = 0.8
TE_W = 0.6
RANK = 4

ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    out = {}
    for name, h in header.items():
        a, b = h["data_offsets"]
        buf = bytearray(raw[8 + n + a : 8 + n + b])
        out[name] = torch.frombuffer(buf, dtype=ST_DTYPES[h["dtype"]]).reshape(h["shape"]).clone()
    return out


def write_st(path, tensors):
    """make_fixtures' writer knows F32/F16/I64; bfloat16 is written here the same way."""
    header, offset, blobs = {}, 0, []
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    for name, t in tensors.items():
        t = t.detach().contiguous()
        data = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def unet_diffusers_names(unet):
    """ldm module path -> diffusers module path, walking the reference's blocks in order."""
    names = {}
    level, r = 0, 0
    for i, blk in enumerate(unet.input_blocks):
        if i == 0:
            names["input_blocks.0.0"] = "conv_in"
            continue
        first = dict(blk.named_modules())
        if any(n.endswith("op") for n in first):
            names[f"input_blocks.{i}.0.op"] = f"down_blocks.{level}.downsamplers.0.conv"
            level, r = level + 1, 0
            continue
        names[f"input_blocks.{i}.0"] = f"down_blocks.{level}.resnets.{r}"
        names[f"input_blocks.{i}.1"] = f"down_blocks.{level}.attentions.{r}"
        r += 1
    names["middle_block.0"] = "mid_block.resnets.0"
    names["middle_block.1"] = "mid_block.attentions.0"
    names["middle_block.2"] = "mid_block.resnets.1"
    def upsampler(b):
        return next((n for n in dict(b.named_modules()) if re.fullmatch(r"\d+\.conv", n)), None)

    # Output blocks per level: the first upsampler closes the first (lowest-resolution) level.
    per_level = next(j for j, b in enumerate(unet.output_blocks) if upsampler(b)) + 1
    for i, blk in enumerate(unet.output_blocks):
        up, r = divmod(i, per_level)
        names[f"output_blocks.{i}.0"] = f"up_blocks.{up}.resnets.{r}"
        names[f"output_blocks.{i}.1"] = f"up_blocks.{up}.attentions.{r}"
        conv = upsampler(blk)
        if conv:
            names[f"output_blocks.{i}.{conv}"] = f"up_blocks.{up}.upsamplers.0.conv"
    return names


RESNET = {"in_layers.2": "conv1", "emb_layers.1": "time_emb_proj", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def to_diffusers(ldm_module, block_names):
    for ldm, diff in sorted(block_names.items(), key=lambda kv: -len(kv[0])):
        if ldm_module == ldm:
            return diff
        if ldm_module.startswith(ldm + "."):
            rest = ldm_module[len(ldm) + 1 :]
            if ".resnets." in diff:
                rest = RESNET.get(rest, rest)
            return f"{diff}.{rest}"
    return None


def bf16(t):
    return t.to(torch.bfloat16).float()


def factors(gen, out_c, in_c, kernel=None, mid=False):
    """Random factors (rounded to bfloat16) and an alpha that makes alpha / rank a power of two."""
    k = kernel or 1
    if mid:
        down = bf16(torch.randn(RANK, in_c, 1, 1, generator=gen) * 0.3)
        midt = bf16(torch.randn(RANK, RANK, k, k, generator=gen) * 0.3)
    else:
        shape = (RANK, in_c, k, k) if kernel else (RANK, in_c)
        down = bf16(torch.randn(*shape, generator=gen) * 0.3)
        midt = None
    up = bf16(torch.randn(out_c, RANK, *((1, 1) if kernel else ()), generator=gen) * 0.3)
    alpha = float(RANK) / (2 if torch.rand(1, generator=gen).item() < 0.5 else 1)
    return down, up, midt, alpha


def delta(down, up, midt, alpha):
    r = down.shape[0]
    if midt is not None:
        d = torch.einsum("oi,ijkl,jc->ockl", up.flatten(1), midt, down.flatten(1))
    else:
        d = (up.flatten(1) @ down.flatten(1)).reshape(up.shape[0], *down.shape[1:])
    return d * (alpha / r)


def record(family, out):
    spec = FAMILIES[family]
    gen = torch.Generator().manual_seed(1200 + len(family))
    ckpt = read_safetensors(out / f"convert-{family}.safetensors")
    io = read_safetensors(out / f"convert-{family}.expected.safetensors")
    ckpt = {k: v.float() for k, v in ckpt.items()}

    unet = R.UNetModel(spec["unet"]).eval()
    unet.load_state_dict({k[len("model.diffusion_model.") :]: v for k, v in ckpt.items() if k.startswith("model.diffusion_model.")})
    texts = []
    for t in spec["text"]:
        m = (R.HFClip if t["naming"] == "hf" else R.OpenClip)(t).eval()
        m.load_state_dict({k[len(t["prefix"]) :]: v for k, v in ckpt.items() if k.startswith(t["prefix"])}, strict=False)
        texts.append(m)

    kohya, peft, tucker_file = {}, {}, {}
    blocks = unet_diffusers_names(unet)
    mods = dict(unet.named_modules())
    chosen = [n for n, m in mods.items() if isinstance(m, torch.nn.Linear) and "transformer_blocks" in n]
    chosen += [n for n in mods if n.endswith("proj_in") or n.endswith("proj_out")]
    resnet_convs = [n for n in mods if n.endswith("in_layers.2") or n.endswith("out_layers.3")]
    locon, tucker = resnet_convs[0], resnet_convs[-1]
    chosen += [locon, tucker, next(n for n in mods if n.endswith("emb_layers.1"))]

    def add(kohya_name, peft_name, down, up, midt, alpha, peft_dtype):
        # PEFT has no Tucker layers: that module goes to a file of its own, in both sets.
        k = kohya if midt is None else tucker_file
        k[f"{kohya_name}.lora_down.weight"] = down
        k[f"{kohya_name}.lora_up.weight"] = up
        if midt is not None:
            k[f"{kohya_name}.lora_mid.weight"] = midt
        k[f"{kohya_name}.alpha"] = torch.tensor(alpha)
        if midt is None:
            peft[f"{peft_name}.lora_A.weight"] = down.to(peft_dtype)
            peft[f"{peft_name}.lora_B.weight"] = (up * (alpha / down.shape[0])).to(peft_dtype)

    with torch.no_grad():
        for name in chosen:
            m = mods[name]
            w = m.weight
            conv = w.dim() == 4
            down, up, midt, alpha = factors(gen, w.shape[0], w.shape[1], w.shape[2] if conv else None, name == tucker)
            w += UNET_W * delta(down, up, midt, alpha).reshape(w.shape)
            diff = to_diffusers(name, blocks)
            assert diff, name
            add("lora_unet_" + diff.replace(".", "_"), "unet." + diff, down, up, midt, alpha, torch.bfloat16)
        # A module this model does not have: reported, never applied.
        down, up, _, alpha = factors(gen, 8, 8)
        kohya["lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight"] = down
        kohya["lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight"] = up
        kohya["lora_unet_down_blocks_7_attentions_0_proj_in.alpha"] = torch.tensor(alpha)

        for i, (t, m) in enumerate(zip(spec["text"], texts)):
            kp = "lora_te" if len(texts) == 1 else f"lora_te{i + 1}"
            pp = "text_encoder" if i == 0 else "text_encoder_2"
            d = t["width"]
            for layer in range(t["layers"]):
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]:
                    hf = f"text_model.encoder.layers.{layer}.{'mlp' if proj.startswith('fc') else 'self_attn'}.{proj}"
                    if t["naming"] == "hf":
                        w = dict(m.named_modules())[hf].weight
                    else:
                        blk = m.transformer.resblocks[layer]
                        if proj in ("q_proj", "k_proj", "v_proj"):
                            j = ["q_proj", "k_proj", "v_proj"].index(proj)
                            w = blk.attn.in_proj_weight[j * d : (j + 1) * d]
                        else:
                            w = {"out_proj": blk.attn.out_proj, "fc1": blk.mlp.c_fc, "fc2": blk.mlp.c_proj}[proj].weight
                    down, up, midt, alpha = factors(gen, w.shape[0], w.shape[1])
                    w += TE_W * delta(down, up, midt, alpha)
                    add(f"{kp}_{hf.replace('.', '_')}", f"{pp}.{hf}", down, up, None, alpha, torch.float16)

        expected = {}
        y = R.sdxl_label(io["unet.text_embeds"], io["unet.time_ids"]) if "unet.text_embeds" in io else None
        expected["unet.out_sample"] = unet(io["unet.sample"], io["unet.timestep"], io["unet.encoder_hidden_states"], y)
        for i, (t, m) in enumerate(zip(spec["text"], texts)):
            ids = io[f"text{i}.input_ids"]
            hidden, last = m(ids, None)
            expected[f"text{i}.last_hidden_state"] = last
            if family == "sdxl":
                expected[f"text{i}.hidden_states.{len(hidden) - 2}"] = hidden[-2]
            if t["projectionDim"]:
                expected[f"text{i}.text_embeds"] = R.pool_eos(last, ids) @ m.text_projection

    write_st(out / f"lora-{family}.kohya.safetensors", kohya)
    write_st(out / f"lora-{family}.peft.safetensors", peft)
    write_st(out / f"lora-{family}.tucker.safetensors", tucker_file)
    if family == "sd1":  # the same file as torch.save writes it (read by the restricted unpickler)
        torch.save({k: v.clone() for k, v in tucker_file.items()}, out / "lora-sd1.tucker.pt")
    write_safetensors(out / f"lora-{family}.expected.safetensors", {k: v.float().contiguous() for k, v in expected.items()},
                      {"unet_weight": str(UNET_W), "te_weight": str(TE_W)})
    print(family, len(kohya), "kohya tensors,", len(peft), "peft tensors")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", default=str(HERE.parent.parent / "tests/fixtures/reference"))
    args = p.parse_args()
    torch.set_grad_enabled(False)
    for family in ["sd1", "sdxl"]:
        record(family, Path(args.out))


if __name__ == "__main__":
    main()
