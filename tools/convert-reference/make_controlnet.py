"""Records the ControlNet reference fixtures: a tiny ldm-named ControlNet for the sd1 and for the
sdxl fixture's UNet (convert-sd1/sdxl.safetensors; the SDXL one with label_emb, fed text_embeds and
time_ids) and the outputs of reference.py's ControlNet and residual UNet.

    /usr/bin/python3 tools/convert-reference/make_controlnet.py [--out tests/fixtures/reference]

Writes, for F in sd1 and sdxl,
  controlnet-F.safetensors             the ControlNet (float32, `control_model.` keys as the
                                       ControlNet 1.0 / 1.1 .safetensors files carry)
  controlnet-F.expected.safetensors    inputs, the residuals, and the F UNet's out_sample with them
  controlnet-F.json                    the architecture (src/engine/convert/types.ts shapes)
  controlnet-F.diffusers.safetensors   the same weights under diffusers' ControlNetModel names (as
                                       save_pretrained writes them; diffusers_names below)
The zero convs get random weights (they are zero only before training) so every parameter shows in
the residuals.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import make_fixtures as M
import reference as R

HINT = [4, 4, 8, 8, 12, 12, 16]  # cldm: 16, 16, 32, 32, 96, 96, 256, then the base width


def read_safetensors(path):
    raw = Path(path).read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        a, b = h["data_offsets"]
        dtype = {"F32": np.float32, "F16": np.float16, "I64": np.int64}[h["dtype"]]
        out[name] = torch.from_numpy(np.frombuffer(raw[8 + n + a : 8 + n + b], dtype=dtype).copy()).reshape(h["shape"])
    return out


RESNET = {"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
          "out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}


def diffusers_name(key, per_level, hint_last):
    """ldm ControlNet key -> diffusers ControlNetModel key, the inverse of diffusers'
    single_file_utils.convert_controlnet_checkpoint (which maps diffusers' modules onto cldm's)."""
    def resnet(rest):
        for old, new in RESNET.items():
            if rest.startswith(old + "."):
                return new + rest[len(old):]
        return rest

    p = key.split(".")
    if p[0] == "time_embed":
        return f"time_embedding.linear_{1 if p[1] == '0' else 2}." + ".".join(p[2:])
    if p[0] == "label_emb":
        return f"add_embedding.linear_{1 if p[2] == '0' else 2}." + ".".join(p[3:])
    if p[0] == "input_hint_block":
        j = int(p[1])
        part = "conv_in" if j == 0 else "conv_out" if j == hint_last else f"blocks.{j // 2 - 1}"
        return f"controlnet_cond_embedding.{part}." + ".".join(p[2:])
    if p[0] == "zero_convs":
        return f"controlnet_down_blocks.{p[1]}." + ".".join(p[3:])
    if p[0] == "middle_block_out":
        return "controlnet_mid_block." + ".".join(p[2:])
    if p[0] == "middle_block":
        rest = ".".join(p[2:])
        if p[1] == "1":
            return "mid_block.attentions.0." + rest
        return f"mid_block.resnets.{0 if p[1] == '0' else 1}." + resnet(rest)
    if p[0] == "input_blocks":
        b = int(p[1])
        if b == 0:
            return "conv_in." + ".".join(p[3:])
        level, j = (b - 1) // (per_level + 1), (b - 1) % (per_level + 1)
        if j == per_level:
            return f"down_blocks.{level}.downsamplers.0.conv." + ".".join(p[4:])
        rest = ".".join(p[3:])
        if p[2] == "1":
            return f"down_blocks.{level}.attentions.{j}." + rest
        return f"down_blocks.{level}.resnets.{j}." + resnet(rest)
    raise KeyError(key)


def record(out, family, seed):
    """The ControlNet fixtures of `family` (the UNet of convert-<family>.safetensors)."""
    base = json.loads((out / f"convert-{family}.json").read_text())
    cfg = base["unet"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(100 * seed)

    unet = R.UNetModel(cfg).eval()
    weights = read_safetensors(out / f"convert-{family}.safetensors")
    prefix = base["unetPrefix"]
    unet.load_state_dict({k[len(prefix) :]: v.float() for k, v in weights.items() if k.startswith(prefix)})

    hint = HINT + [cfg["modelChannels"]]
    cn = R.ControlNet(cfg, 3, hint).eval()
    M.randomize_norms_and_biases(cn, gen)
    # PyTorch's default init shrinks a signal by about half per conv, so after the hint's eight
    # convs the control image would barely show against the biases; a gain keeps it visible (the
    # trained hint block does the same job), so tests can see the image decide the result.
    with torch.no_grad():
        for m in cn.input_hint_block:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.mul_(3.0)
    ckpt = {"control_model." + k: v for k, v in cn.state_dict().items()}

    io = {}
    with torch.no_grad():
        b, h, w = 2, 8, 6  # a non-square latent: the hint's strides must land on it exactly
        x = torch.randn(b, cfg["inChannels"], h, w, generator=gen)
        ts = torch.tensor([999.0, 1.0])
        ctx = torch.randn(b, 77, cfg["contextDim"], generator=gen)
        cond = torch.rand(b, 3, 8 * h, 8 * w, generator=gen)
        scale = torch.tensor(0.75)
        y = None
        if cfg["admInChannels"] is not None:
            # SDXL: the pooled text embedding and the six size/crop ids (micro-conditioning).
            text_embeds = torch.randn(b, cfg["admInChannels"] - 6 * 256, generator=gen)
            time_ids = torch.tensor([[64.0, 48.0, 0.0, 0.0, 64.0, 48.0], [128.0, 96.0, 8.0, 4.0, 64.0, 48.0]])
            y = R.sdxl_label(text_embeds, time_ids)
        res = cn(x, ts, ctx, cond, scale, y)
        io.update({"sample": x, "timestep": ts, "encoder_hidden_states": ctx, "controlnet_cond": cond,
                   "conditioning_scale": scale})
        if y is not None:
            io.update({"text_embeds": text_embeds, "time_ids": time_ids})
        for i, r in enumerate(res[:-1]):
            io[f"down_block_{i}_additional_residual"] = r
        io["mid_block_additional_residual"] = res[-1]
        io["out_sample"] = unet(x, ts, ctx, y, control=res)
        io["plain_out_sample"] = unet(x, ts, ctx, y)

    name = f"controlnet-{family}"
    M.write_safetensors(out / f"{name}.safetensors", ckpt, {"format": "pt"})
    M.write_safetensors(out / f"{name}.expected.safetensors", io)
    hint_last = 2 * (len(hint) - 1)
    named = {diffusers_name(k, cfg["numResBlocks"], hint_last): v for k, v in cn.state_dict().items()}
    assert len(named) == len(ckpt)
    M.write_safetensors(out / f"{name}.diffusers.safetensors", named, {"format": "pt"})
    arch = dict(family=family, prefix="control_model.", unet=cfg, hintInChannels=3, hintChannels=hint, reasons=[])
    (out / f"{name}.json").write_text(json.dumps(arch, indent=2) + "\n")
    print(f"{name}: {len(ckpt)} tensors, {sum(v.numel() for v in ckpt.values())} values")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/reference")
    out = Path(ap.parse_args().out)
    record(out, "sd1", 19)
    record(out, "sdxl", 20)


if __name__ == "__main__":
    main()
