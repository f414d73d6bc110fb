"""Full-size checkpoints of reference.py's models, for measuring and checking the converter:

    /usr/bin/python3 tools/convert-reference/make_full.py sd15 OUT.safetensors
    /usr/bin/python3 tools/convert-reference/make_full.py --keys OUT_DIR

The first writes SD 1.5's sizes (UNet 320 channels, VAE 128, CLIP ViT-L) with PyTorch's default
init, stored float16 under the original checkpoint's keys; speed and memory of the conversion do
not depend on the weights' values. The second writes the key sets (name -> shape) of SD 1.5,
SD 2.1 and SDXL base as JSON, with the architecture, without allocating the weights.
"""

import math
import sys

import torch

import reference as R
from make_fixtures import VOCAB, write_safetensors  # noqa: F401  (same writer as the fixtures)

SD15 = dict(
    unet=dict(inChannels=4, outChannels=4, modelChannels=320, channelMult=[1, 2, 4, 4], numResBlocks=2,
              attentionLevels=[True, True, True, False], transformerDepth=[1, 1, 1, 1], numHeads=8,
              headChannels=None, contextDim=768, linearProjection=False, admInChannels=None),
    vae=dict(inChannels=3, outChannels=3, ch=128, chMult=[1, 2, 4, 4], numResBlocks=2, zChannels=4,
             embedDim=4, scalingFactor=0.18215),
    text=dict(naming="hf", prefix="cond_stage_model.transformer.", width=768, layers=12, heads=12,
              vocabSize=49408, maxPositions=77, activation="quick_gelu", projectionDim=None),
)


def text(naming, prefix, width, layers, heads, activation, projection=None):
    return dict(naming=naming, prefix=prefix, width=width, layers=layers, heads=heads, vocabSize=49408,
                maxPositions=77, activation=activation, projectionDim=projection)


VAE = dict(SD15["vae"])
FULL = {
    "sd15": dict(family="sd1", unet=SD15["unet"], vae=VAE, textEncoders=[SD15["text"]]),
    "sd21": dict(
        family="sd2",
        unet=dict(SD15["unet"], numHeads=None, headChannels=64, contextDim=1024, linearProjection=True),
        vae=VAE,
        textEncoders=[text("openclip", "cond_stage_model.model.", 1024, 24, 16, "gelu")],
    ),
    "sdxl": dict(
        family="sdxl",
        unet=dict(SD15["unet"], channelMult=[1, 2, 4], attentionLevels=[False, True, True],
                  transformerDepth=[0, 2, 10], numHeads=None, headChannels=64, contextDim=2048,
                  linearProjection=True, admInChannels=2816),
        vae=dict(VAE, scalingFactor=0.13025),
        textEncoders=[
            text("hf", "conditioner.embedders.0.transformer.", 768, 12, 12, "quick_gelu"),
            text("openclip", "conditioner.embedders.1.model.", 1280, 32, 20, "gelu", 1280),
        ],
    ),
}


def write_keys(out_dir):
    """Key -> shape of each full-size family, the weights never touched (so never resident)."""
    import json
    from pathlib import Path

    from torch import nn

    for cls in (nn.Linear, nn.Conv2d, nn.Embedding, nn.LayerNorm, nn.GroupNorm):
        cls.reset_parameters = lambda self: None
    torch.nn.init.xavier_uniform_ = torch.nn.init.normal_ = lambda t, *a, **k: t
    for name, spec in FULL.items():
        keys = {}
        parts = [("model.diffusion_model.", R.UNetModel(spec["unet"])), ("first_stage_model.", R.AutoencoderKL(spec["vae"]))]
        for t in spec["textEncoders"]:
            parts.append((t["prefix"], (R.HFClip if t["naming"] == "hf" else R.OpenClip)(t)))
        for prefix, model in parts:
            for k, v in model.state_dict().items():
                keys[prefix + k] = list(v.shape)
            del model
        arch = dict(family=spec["family"], unetPrefix="model.diffusion_model.", vaePrefix="first_stage_model.",
                    unet=spec["unet"], vae=spec["vae"], textEncoders=spec["textEncoders"])
        Path(out_dir, f"keys-{name}.json").write_text(json.dumps(dict(arch=arch, keys=keys), separators=(",", ":")) + "\n")
        print(f"{name}: {len(keys)} keys, {sum(math.prod(s) for s in keys.values())} values")


def main():
    if sys.argv[1] == "--keys":
        return write_keys(sys.argv[2])
    family, out = sys.argv[1], sys.argv[2]
    if family != "sd15":
        raise SystemExit("only sd15 is defined")
    torch.manual_seed(0)
    tensors = {}
    with torch.no_grad():
        for prefix, model in [
            ("model.diffusion_model.", R.UNetModel(SD15["unet"])),
            ("first_stage_model.", R.AutoencoderKL(SD15["vae"])),
            (SD15["text"]["prefix"], R.HFClip(SD15["text"])),
        ]:
            for k, v in model.state_dict().items():
                tensors[prefix + k] = v.half()
            del model
    write_safetensors(out, tensors, {"format": "pt"})
    print(f"{out}: {len(tensors)} tensors, {sum(t.numel() for t in tensors.values())} values")


if __name__ == "__main__":
    main()
