"""Checks reference.py against the original public sources, run locally (not part of the project):

    /usr/bin/python3 tools/convert-reference/crosscheck.py --sgm DIR --ldm DIR --clip DIR

DIR are checkouts of Stability-AI/generative-models (the UNet of SD 1.x, 2.x and SDXL),
CompVis/stable-diffusion (AutoencoderKL's Encoder/Decoder) and openai/CLIP (the text
transformer). For each tiny family config of make_fixtures.py, the original module is built with
the equivalent arguments, loads the reference's state_dict with strict=True (so the key structure
is the checkpoint's), and must give the same outputs for the same inputs.

Only imports are stubbed (einops' rearrange/repeat, packaging.version, torch 2's
scaled_dot_product_attention on torch 1.13), with their documented meanings.
"""

import argparse
import importlib.util
import math
import re
import sys
import types

import torch
import torch.nn.functional as F

import reference as R
from make_fixtures import FAMILIES

# ---------------------------------------------------------------------------------------------
# Stubs for what the originals import and this machine lacks.


def _parse_side(side):
    groups, i, toks = [], 0, re.findall(r"\(|\)|\.\.\.|[A-Za-z0-9_]+", side)
    while i < len(toks):
        if toks[i] == "(":
            j = toks.index(")", i)
            groups.append(toks[i + 1 : j])
            i = j + 1
        else:
            groups.append([toks[i]])
            i += 1
    return groups


def rearrange(t, pattern, **sizes):
    """einops.rearrange for the patterns without '...' the originals use: split, permute, merge."""
    left, right = (_parse_side(s.strip()) for s in pattern.split("->"))
    known = dict(sizes)
    for dim, group in zip(t.shape, left):
        unknown = [a for a in group if a not in known]
        prod = math.prod(known[a] for a in group if a in known)
        if unknown:
            known[unknown[0]] = dim // prod
    elementary = [a for g in left for a in g]
    t = t.reshape([known[a] for a in elementary])
    order = [a for g in right for a in g]
    t = t.permute([elementary.index(a) for a in order])
    return t.reshape([math.prod(known[a] for a in g) for g in right])


def repeat(*_a, **_k):
    raise NotImplementedError("einops.repeat is not on the paths checked here")


def sdpa(q, k, v, attn_mask=None):
    """torch 2's scaled_dot_product_attention: softmax(q k^T / sqrt(d) + mask) v."""
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if attn_mask is not None:
        s = s + attn_mask
    return s.softmax(-1) @ v


class _Version(tuple):
    pass


def _parse_version(v):
    return _Version(int(x) for x in re.findall(r"\d+", v)[:3])


def install_stubs():
    einops = types.ModuleType("einops")
    einops.rearrange, einops.repeat = rearrange, repeat
    packaging = types.ModuleType("packaging")
    packaging.version = types.ModuleType("packaging.version")
    packaging.version.parse = _parse_version
    sys.modules.update({"einops": einops, "packaging": packaging, "packaging.version": packaging.version})
    F.scaled_dot_product_attention = sdpa
    import contextlib

    torch.backends.cuda.SDPBackend = types.SimpleNamespace(MATH=0, FLASH_ATTENTION=1, EFFICIENT_ATTENTION=2)
    torch.backends.cuda.sdp_kernel = lambda **_k: contextlib.nullcontext()
    torch.__version__ = "2.0.0"  # so sgm takes its scaled_dot_product_attention path


def namespace(name, path=None):
    m = types.ModuleType(name)
    m.__path__ = [path] if path else []
    sys.modules[name] = m
    return m


def load(name, file):
    spec = importlib.util.spec_from_file_location(name, file)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    return m


# ---------------------------------------------------------------------------------------------


def close(a, b, what):
    err = ((a - b).abs().max() / b.abs().max()).item()
    ok = err < 1e-5
    print(f"{'ok ' if ok else 'BAD'} {what}: relative error {err:.2e}")
    return ok


def check_unet(sgm, family, spec):
    cfg = spec["unet"]
    torch.manual_seed(0)
    ref = R.UNetModel(cfg).eval()
    ds = [2**i for i, a in enumerate(cfg["attentionLevels"]) if a]
    kw = dict(
        in_channels=cfg["inChannels"], model_channels=cfg["modelChannels"], out_channels=cfg["outChannels"],
        num_res_blocks=cfg["numResBlocks"], attention_resolutions=ds, channel_mult=cfg["channelMult"],
        num_heads=cfg["numHeads"] or -1, num_head_channels=cfg["headChannels"] or -1,
        transformer_depth=cfg["transformerDepth"], context_dim=cfg["contextDim"],
        use_linear_in_transformer=cfg["linearProjection"],
    )
    if cfg["admInChannels"]:
        kw.update(num_classes="sequential", adm_in_channels=cfg["admInChannels"])
    orig = sgm.UNetModel(**kw).eval()
    orig.load_state_dict(ref.state_dict(), strict=True)
    b = 2
    x = torch.randn(b, cfg["inChannels"], 8, 8)
    t = torch.tensor([999.0, 3.0])
    ctx = torch.randn(b, 77, cfg["contextDim"])
    y = None
    if cfg["admInChannels"]:
        y = R.sdxl_label(torch.randn(b, cfg["admInChannels"] - 1536), torch.rand(b, 6) * 1024)
    with torch.no_grad():
        return close(ref(x, t, ctx, y), orig(x, timesteps=t, context=ctx, y=y), f"{family} UNet")


def check_vae(ldm, family, spec):
    cfg = spec["vae"]
    torch.manual_seed(0)
    ref = R.AutoencoderKL(cfg).eval()
    dd = dict(double_z=True, z_channels=cfg["zChannels"], resolution=256, in_channels=cfg["inChannels"],
              out_ch=cfg["outChannels"], ch=cfg["ch"], ch_mult=cfg["chMult"], num_res_blocks=cfg["numResBlocks"],
              attn_resolutions=[], dropout=0.0)
    enc, dec = ldm.Encoder(**dd).eval(), ldm.Decoder(**dd).eval()
    sd = ref.state_dict()
    enc.load_state_dict({k[8:]: v for k, v in sd.items() if k.startswith("encoder.")}, strict=True)
    dec.load_state_dict({k[8:]: v for k, v in sd.items() if k.startswith("decoder.")}, strict=True)
    img = torch.rand(1, 3, 32, 32) * 2 - 1
    z = torch.randn(1, cfg["embedDim"], 8, 8)
    with torch.no_grad():
        a = close(ref.encoder(img), enc(img), f"{family} VAE encoder")
        b = close(ref.decoder(z), dec(z), f"{family} VAE decoder")
    return a and b


def check_text(clip, family, spec):
    ok = True
    for i, cfg in enumerate(spec["text"]):
        torch.manual_seed(0)
        ref = (R.HFClip if cfg["naming"] == "hf" else R.OpenClip)(cfg).eval()
        d, n = cfg["width"], cfg["layers"]
        orig = clip.Transformer(d, n, cfg["heads"], attn_mask=R.causal_mask(77)).eval()
        sd = ref.state_dict()
        if cfg["naming"] == "hf":
            # openai/CLIP's fused nn.MultiheadAttention: in_proj rows are q, k, v.
            mapped = {}
            for l in range(n):
                p = f"text_model.encoder.layers.{l}."
                o = f"resblocks.{l}."
                for kind in ("weight", "bias"):
                    mapped[o + f"attn.in_proj_{kind}"] = torch.cat(
                        [sd[p + f"self_attn.{x}_proj.{kind}"] for x in "qkv"]
                    )
                    mapped[o + f"attn.out_proj.{kind}"] = sd[p + f"self_attn.out_proj.{kind}"]
                    mapped[o + f"ln_1.{kind}"] = sd[p + f"layer_norm1.{kind}"]
                    mapped[o + f"ln_2.{kind}"] = sd[p + f"layer_norm2.{kind}"]
                    mapped[o + f"mlp.c_fc.{kind}"] = sd[p + f"mlp.fc1.{kind}"]
                    mapped[o + f"mlp.c_proj.{kind}"] = sd[p + f"mlp.fc2.{kind}"]
            tok = sd["text_model.embeddings.token_embedding.weight"]
            pos = sd["text_model.embeddings.position_embedding.weight"]
            ln = ref.text_model.final_layer_norm
        else:
            mapped = {k[len("transformer."):]: v for k, v in sd.items() if k.startswith("transformer.")}
            tok, pos, ln = sd["token_embedding.weight"], sd["positional_embedding"], ref.ln_final
        orig.load_state_dict(mapped, strict=True)
        if cfg["activation"] == "gelu":  # OpenCLIP's ViT-H/bigG use exact GELU in place of QuickGELU
            for blk in orig.resblocks:
                blk.mlp.gelu = torch.nn.GELU()
        ids = torch.randint(0, cfg["vocabSize"] - 1, (2, 77))
        ids[:, 20] = cfg["vocabSize"] - 1
        with torch.no_grad():
            hidden, last = ref(ids)
            x = (tok[ids] + pos).permute(1, 0, 2)  # openai/CLIP runs LND
            x = ln(orig(x).permute(1, 0, 2))
            ok &= close(last, x, f"{family} text encoder {i} ({cfg['naming']})")
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sgm", required=True)
    ap.add_argument("--ldm", required=True)
    ap.add_argument("--clip", required=True)
    args = ap.parse_args()
    install_stubs()
    namespace("sgm", f"{args.sgm}/sgm")
    util = namespace("sgm.util")
    util.exists = lambda x: x is not None
    util.default = lambda v, d: v if v is not None else (d() if callable(d) else d)
    namespace("sgm.modules", f"{args.sgm}/sgm/modules")
    namespace("sgm.modules.diffusionmodules", f"{args.sgm}/sgm/modules/diffusionmodules")
    # Video-model classes the UNet's forward only tests isinstance against.
    video = namespace("sgm.modules.diffusionmodules.video_model")
    video.VideoResBlock = video.PostHocResBlockWithTime = type("Unused", (), {})
    st = namespace("sgm.modules.spacetime_attention")
    for name in ("BasicTransformerTimeMixBlock", "PostHocSpatialTransformerWithTimeMixing",
                 "PostHocSpatialTransformerWithTimeMixingAndMotion"):
        setattr(st, name, type(name, (), {}))
    sgm = load("sgm.modules.diffusionmodules.openaimodel", f"{args.sgm}/sgm/modules/diffusionmodules/openaimodel.py")
    namespace("ldm", f"{args.ldm}/ldm")
    ldm_util = namespace("ldm.util")
    ldm_util.instantiate_from_config = None
    namespace("ldm.modules", f"{args.ldm}/ldm/modules")
    namespace("ldm.modules.diffusionmodules", f"{args.ldm}/ldm/modules/diffusionmodules")
    ldm = load("ldm.modules.diffusionmodules.model", f"{args.ldm}/ldm/modules/diffusionmodules/model.py")
    clip = load("clip_model", f"{args.clip}/clip/model.py")
    ok = True
    for family, spec in FAMILIES.items():
        ok &= check_unet(sgm, family, spec)
        ok &= check_vae(ldm, family, spec)
        ok &= check_text(clip, family, spec)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
