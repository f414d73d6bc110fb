"""Records the converter's reference fixtures: tiny checkpoints with the real key structure and
the outputs of reference.py for fixed inputs.

    /usr/bin/python3 tools/convert-reference/make_fixtures.py [--out tests/fixtures/reference] [sd1 sd2 sdxl]

For each family (sd1, sd2, sdxl) it writes
  convert-<family>.safetensors           the checkpoint (float32, ldm / CLIP / OpenCLIP keys)
  convert-<family>.expected.safetensors  inputs and the reference outputs (float32 / int64)
  convert-<family>.json                  the architecture (src/engine/convert/types.ts shapes)
The tiny configs cover every structural difference between the families: 1x1-conv vs Linear
proj_in/out, fixed heads vs fixed head width, transformer depth > 1, label_emb, attention-free
levels, 9 input channels, odd latent sizes, CLIP vs OpenCLIP text encoders.

Weights are random (seeded): PyTorch's default init for convs and linears, and norms and biases
drawn around their defaults so that every parameter matters to the output.
"""

import argparse
import json
import struct
from pathlib import Path

import torch

import reference as R

VOCAB = 1000
BOS, EOS = 998, 999


def unet_cfg(**kw):
    base = dict(
        inChannels=4, outChannels=4, modelChannels=32, numResBlocks=1, numHeads=None,
        headChannels=None, linearProjection=False, admInChannels=None,
    )
    base.update(kw)
    return base


FAMILIES = {
    "sd1": dict(
        # Two levels at the narrowest width GroupNorm(32) allows keep the file small (stored
        # float32); channel changes between levels are covered by sd2 and sdxl's VAE.
        unet=unet_cfg(channelMult=[1, 1], attentionLevels=[True, False],
                      transformerDepth=[1, 1], numResBlocks=2, numHeads=2, contextDim=32),
        # Four levels: the 8x VAE the engine expects, so this fixture also runs end to end.
        vae=dict(inChannels=3, outChannels=3, ch=32, chMult=[1, 1, 1, 1], numResBlocks=1, zChannels=4,
                 embedDim=4, scalingFactor=0.18215),
        text=[dict(naming="hf", prefix="cond_stage_model.transformer.", width=32, layers=3, heads=2,
                   vocabSize=VOCAB, maxPositions=77, activation="quick_gelu", projectionDim=None)],
        latent=(2, 8, 8), image=(1, 32, 24), pad=EOS,
    ),
    "sd2": dict(
        unet=unet_cfg(inChannels=9, channelMult=[1, 2, 2], attentionLevels=[True, True, False],
                      transformerDepth=[1, 1, 1], headChannels=16, linearProjection=True,
                      contextDim=64),
        vae=dict(inChannels=3, outChannels=3, ch=32, chMult=[1, 1, 2], numResBlocks=1, zChannels=4,
                 embedDim=4, scalingFactor=0.18215),
        text=[dict(naming="openclip", prefix="cond_stage_model.model.", width=64, layers=3, heads=4,
                   vocabSize=VOCAB, maxPositions=77, activation="gelu", projectionDim=None)],
        latent=(1, 9, 7), image=(1, 24, 16), pad=0,
    ),
    "sdxl": dict(
        # One width throughout (sd2 covers channel changes): label_emb, the attention-free
        # level and transformer depth 2 are what this one adds.
        unet=unet_cfg(channelMult=[1, 1, 1], attentionLevels=[False, True, True],
                      transformerDepth=[0, 1, 2], headChannels=16, linearProjection=True,
                      contextDim=96, admInChannels=48 + 6 * 256),
        vae=dict(inChannels=3, outChannels=3, ch=32, chMult=[1, 1], numResBlocks=1, zChannels=4,
                 embedDim=4, scalingFactor=0.13025),
        text=[
            dict(naming="hf", prefix="conditioner.embedders.0.transformer.", width=32, layers=3,
                 heads=2, vocabSize=VOCAB, maxPositions=77, activation="quick_gelu",
                 projectionDim=None),
            dict(naming="openclip", prefix="conditioner.embedders.1.model.", width=64, layers=3,
                 heads=4, vocabSize=VOCAB, maxPositions=77, activation="gelu", projectionDim=48),
        ],
        latent=(2, 8, 8), image=(1, 16, 16), pad=0,
    ),
}

PREFIX = {
    "sd1": ("model.diffusion_model.", "first_stage_model."),
    "sd2": ("model.diffusion_model.", "first_stage_model."),
    "sdxl": ("model.diffusion_model.", "first_stage_model."),
}

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}
# sd1's checkpoint stays float32 (so the fp16-storage test sees real rounding); the others are
# stored float16, as most checkpoints are, and their reference runs on those rounded values.
STORE = {"sd1": torch.float32, "sd2": torch.float16, "sdxl": torch.float16}


def write_safetensors(path, tensors, metadata=None):
    """The safetensors layout: u64 header length, JSON header, then the data, in order.
    Streams one tensor at a time (a full-size checkpoint never sits in memory twice)."""
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, t in tensors.items():
        n = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in tensors.values():
            f.write(t.detach().contiguous().numpy().tobytes())


def randomize_norms_and_biases(model, gen):
    for name, p in model.named_parameters():
        with torch.no_grad():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "bias":
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            elif p.dim() == 1 and leaf == "weight":  # GroupNorm / LayerNorm scale
                p.copy_(1 + torch.randn(p.shape, generator=gen) * 0.1)


def token_ids(batch, pad, gen):
    ids = torch.full((batch, 77), pad, dtype=torch.int64)
    for b in range(batch):
        n = 5 + 7 * b
        ids[b, 0] = BOS
        ids[b, 1 : 1 + n] = torch.randint(1, BOS, (n,), generator=gen)
        ids[b, 1 + n] = EOS
    return ids


def record(family, out):
    spec = FAMILIES[family]
    torch.manual_seed({"sd1": 1, "sd2": 2, "sdxl": 3}[family])
    gen = torch.Generator().manual_seed(100 + len(family))
    unet_prefix, vae_prefix = PREFIX[family]
    ckpt, io = {}, {}

    unet = R.UNetModel(spec["unet"]).eval()
    vae = R.AutoencoderKL(spec["vae"]).eval()
    texts = [(R.HFClip if t["naming"] == "hf" else R.OpenClip)(t).eval() for t in spec["text"]]
    for m in [unet, vae, *texts]:
        randomize_norms_and_biases(m, gen)
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(p.to(STORE[family]).float())
    for k, v in unet.state_dict().items():
        ckpt[unet_prefix + k] = v
    for k, v in vae.state_dict().items():
        ckpt[vae_prefix + k] = v
    for t, m in zip(spec["text"], texts):
        for k, v in m.state_dict().items():
            ckpt[t["prefix"] + k] = v
        if t["naming"] == "hf":  # stored as floats that lost precision in some files: never read
            ckpt[t["prefix"] + "text_model.embeddings.position_ids"] = torch.arange(77.0)[None] + 0.3

    with torch.no_grad():
        # Text encoders.
        pooled_for_unet = None
        contexts = []
        for i, (t, m) in enumerate(zip(spec["text"], texts)):
            ids = token_ids(2, spec["pad"] if t["naming"] == "openclip" or family == "sd1" else EOS, gen)
            io[f"text{i}.input_ids"] = ids
            layers = t["layers"] - 1 if family == "sd2" else None
            hidden, last = m(ids, layers)
            pooled = R.pool_eos(last, ids)
            io[f"text{i}.last_hidden_state"] = last
            if t["projectionDim"]:
                io[f"text{i}.text_embeds"] = pooled @ m.text_projection
                pooled_for_unet = io[f"text{i}.text_embeds"]
            else:
                io[f"text{i}.pooler_output"] = pooled
            if family == "sdxl":
                io[f"text{i}.hidden_states.{len(hidden) - 2}"] = hidden[-2]
                io[f"text{i}.hidden_states.{len(hidden) - 1}"] = hidden[-1]
            contexts.append(hidden[-2] if family == "sdxl" else last)

        # UNet (the context drawn at random at the UNet's width; the encoders are checked apart).
        b, h, w = spec["latent"]
        cfg = spec["unet"]
        x = torch.randn(b, cfg["inChannels"], h, w, generator=gen)
        ts = torch.tensor([999.0, 1.0][:b]) if b > 1 else torch.tensor([500.0])
        ctx = torch.randn(b, 77, cfg["contextDim"], generator=gen)
        io["unet.sample"], io["unet.timestep"], io["unet.encoder_hidden_states"] = x, ts, ctx
        y = None
        if cfg["admInChannels"]:
            text_embeds = torch.randn(b, cfg["admInChannels"] - 6 * 256, generator=gen)
            time_ids = torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024], [768, 1344, 16, 32, 832, 1216]])[:b]
            io["unet.text_embeds"], io["unet.time_ids"] = text_embeds, time_ids
            y = R.sdxl_label(text_embeds, time_ids)
        io["unet.out_sample"] = unet(x, ts, ctx, y)

        # VAE.
        n, ih, iw = spec["image"]
        img = torch.rand(n, 3, ih, iw, generator=gen) * 2 - 1
        io["vae_encoder.sample"] = img
        io["vae_encoder.latent_parameters"] = vae.encode_moments(img)
        factor = 2 ** (len(spec["vae"]["chMult"]) - 1)
        z = torch.randn(n, spec["vae"]["embedDim"], ih // factor, iw // factor, generator=gen)
        io["vae_decoder.latent_sample"] = z
        io["vae_decoder.sample"] = vae.decode(z)

    arch = dict(family=family, unetPrefix=unet_prefix, vaePrefix=vae_prefix, unet=spec["unet"],
                vae=spec["vae"], textEncoders=spec["text"])
    ckpt = {k: v.to(STORE[family]) if v.is_floating_point() else v for k, v in ckpt.items()}
    write_safetensors(out / f"convert-{family}.safetensors", ckpt, {"format": "pt"})
    write_safetensors(out / f"convert-{family}.expected.safetensors", io)
    (out / f"convert-{family}.json").write_text(json.dumps(arch, indent=2) + "\n")
    params = sum(v.numel() for v in ckpt.values())
    print(f"{family}: {len(ckpt)} tensors, {params} values")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/reference")
    ap.add_argument("families", nargs="*", help=f"some of {', '.join(FAMILIES)} (default: all)")
    args = ap.parse_args()
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown:
        ap.error(f"unknown family {unknown[0]}; choose from {', '.join(FAMILIES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for family in args.families or FAMILIES:
        record(family, out)


if __name__ == "__main__":
    main()
