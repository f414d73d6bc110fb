"""Records ONNX ControlNet exports made the way other tools make them, from the fixture's weights,
so the engine is tested on graphs it did not write:

    /usr/bin/python3 tools/convert-reference/make_controlnet_onnx.py [--out tests/fixtures/reference]

Writes under controlnet-sd1-onnx/
  controlnet/model.onnx   reference.py's ControlNet with controlnet-sd1.safetensors' weights, exported
                          by torch.onnx as the diffusers-based ControlNet ONNX scripts export
                          ControlNetModel (Amblyopius' Stable-Diffusion-ONNX-FP16 and its forks):
                          inputs sample, timestep, encoder_hidden_states, controlnet_cond (no
                          conditioning_scale), output_names ["down_block_res_samples",
                          "mid_block_res_sample"] for a tuple of 13 tensors, so only the first two
                          outputs carry those names (the second is down residual 1) and torch names
                          the rest: the outputs can only be matched by position.
  unet/model.onnx         reference.py's UNet with convert-sd1.safetensors' weights and the residual
                          inputs of that family of scripts: down_block_add_res00 .. NN and
                          mid_block_res_sample, output out_sample.
"""

import argparse
import json
from pathlib import Path

import torch

import reference as R
from make_controlnet import HINT, read_safetensors


class ResidualUNet(torch.nn.Module):
    """The UNet taking each residual as its own input (ONNX has no tuple inputs)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, *residuals):
        return self.unet(sample, timestep, encoder_hidden_states, control=list(residuals))


class ControlNetOnly(torch.nn.Module):
    """The ControlNet at conditioning scale 1 (those exports have no scale input)."""

    def __init__(self, cn):
        super().__init__()
        self.cn = cn

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond):
        outs = self.cn(sample, timestep, encoder_hidden_states, controlnet_cond, 1.0)
        return tuple(outs[:-1]), outs[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/reference")
    out = Path(ap.parse_args().out)
    sd1 = json.loads((out / "convert-sd1.json").read_text())
    cfg = sd1["unet"]
    prefix = sd1["unetPrefix"]

    unet = R.UNetModel(cfg).eval()
    weights = read_safetensors(out / "convert-sd1.safetensors")
    unet.load_state_dict({k[len(prefix) :]: v.float() for k, v in weights.items() if k.startswith(prefix)})
    cn = R.ControlNet(cfg, 3, HINT + [cfg["modelChannels"]]).eval()
    cn.load_state_dict({k[len("control_model.") :]: v for k, v in read_safetensors(out / "controlnet-sd1.safetensors").items()})

    b, h, w = 2, 8, 8
    x = torch.randn(b, cfg["inChannels"], h, w)
    ts = torch.tensor([999.0, 1.0])
    ctx = torch.randn(b, 77, cfg["contextDim"])
    cond = torch.rand(b, 3, 8 * h, 8 * w)
    with torch.no_grad():
        res = cn(x, ts, ctx, cond, 1.0)
    n = len(res) - 1
    root = out / "controlnet-sd1-onnx"
    (root / "controlnet").mkdir(parents=True, exist_ok=True)
    (root / "unet").mkdir(parents=True, exist_ok=True)

    latent = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(
        ControlNetOnly(cn),
        (x, ts, ctx, cond),
        str(root / "controlnet" / "model.onnx"),
        input_names=["sample", "timestep", "encoder_hidden_states", "controlnet_cond"],
        output_names=["down_block_res_samples", "mid_block_res_sample"],
        dynamic_axes={
            "sample": latent,
            "timestep": {0: "batch"},
            "encoder_hidden_states": {0: "batch", 1: "sequence"},
            "controlnet_cond": {0: "batch", 2: "image_height", 3: "image_width"},
        },
        opset_version=14,
        do_constant_folding=True,
    )
    res_names = [f"down_block_add_res{i:02d}" for i in range(n)] + ["mid_block_res_sample"]
    torch.onnx.export(
        ResidualUNet(unet),
        (x, ts, ctx, *res),
        str(root / "unet" / "model.onnx"),
        input_names=["sample", "timestep", "encoder_hidden_states", *res_names],
        output_names=["out_sample"],
        dynamic_axes={
            "sample": latent,
            "timestep": {0: "batch"},
            "encoder_hidden_states": {0: "batch", 1: "sequence"},
            **{r: {0: "batch", 2: f"{r}_height", 3: f"{r}_width"} for r in res_names},
            "out_sample": latent,
        },
        opset_version=14,
        do_constant_folding=True,
    )
    print(f"controlnet-sd1-onnx: {n} down residuals + mid")


if __name__ == "__main__":
    main()
