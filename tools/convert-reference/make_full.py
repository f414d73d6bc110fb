"""Full-size checkpoints of reference.py's models, for measuring and checking the converter:

    /usr/bin/python3 tools/convert-reference/make_full.py sd15 OUT.safetensors

writes SD 1.5's sizes (UNet 320 channels, VAE 128, CLIP ViT-L) with PyTorch's default init,
stored float16 under the original checkpoint's keys; speed and memory of the conversion do not
depend on the weights' values. The full-size key sets (names and shapes) of SD 1.5, SD 2.1 and
SDXL base are recorded from the original sources by tools/convert/record_keysets.py.
"""

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


def main():
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
