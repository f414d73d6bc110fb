"""Records the safety checker's reference fixture: a small-config StableDiffusionSafetyChecker
with the real key structure, and reference.py's outputs and decisions for fixed inputs.

    /usr/bin/python3 tools/convert-reference/make_safety.py [--out tests/fixtures/reference]

Writes
  safety-checker.safetensors           the checker (float32, diffusers' key names)
  safety-checker.expected.safetensors  clip_input, image_embeds, the cosines, and the flags
  safety-checker.json                  the architecture and the per-image scores and flags
  safety-preprocess.expected.safetensors  an 80x60 RGB image and its CLIP input at 56 px, as
                                       transformers' CLIPImageProcessor computes it (Pillow
                                       BICUBIC resize of the short side, centre crop, mean/std)

The concept embeddings and thresholds are set from the images' embeddings so that the batch
covers each path of diffusers' decision: image 0 flagged by a concept, image 1 flagged only
through the special-care adjustment (its concept score is -0.005 before the +0.01), image 2 clean.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import reference as R
from make_fixtures import randomize_norms_and_biases, write_safetensors

CFG = dict(width=128, layers=2, heads=2, patch=14, imageSize=56, projectionDim=64, concepts=17,
           specialConcepts=3)
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def clip_preprocess(img, size):
    """transformers' CLIPImageProcessor (resize shortest edge, centre crop, rescale, normalise)."""
    w, h = img.size
    short = min(w, h)
    nw, nh = (size, int(size * h / w)) if w == short else (int(size * w / h), size)
    r = np.asarray(img.resize((nw, nh), Image.BICUBIC), dtype=np.float32)
    top, left = (nh - size) // 2, (nw - size) // 2
    r = r[top : top + size, left : left + size] / 255.0
    r = (r - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(r.transpose(2, 0, 1).copy()).float()[None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/reference")
    out = Path(ap.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(18)
    gen = torch.Generator().manual_seed(1018)
    m = R.SafetyChecker(CFG).eval()
    randomize_norms_and_biases(m, gen)
    with torch.no_grad():
        # At PyTorch's default init the class token and positions swamp the patches and every
        # image gets nearly the same embedding; scaled so the input decides the output.
        emb_mod = m.vision_model.vision_model.embeddings
        emb_mod.class_embedding.mul_(0.2)
        emb_mod.position_embedding.weight.mul_(0.2)
        emb_mod.patch_embedding.weight.mul_(3)
    io = {}
    with torch.no_grad():
        x = torch.randn(3, 3, CFG["imageSize"], CFG["imageSize"], generator=gen)
        emb = m.image_embeds(x)
        # Concept 5 and special concept 1 point at what sets images 0 and 1 apart from the batch
        # (the embeddings of random-weight towers share a large common part); concept 9 leans to
        # image 1.
        centred = emb - emb.mean(0)
        noise = lambda n: torch.randn(n, CFG["projectionDim"], generator=gen)  # noqa: E731
        m.concept_embeds.copy_(noise(CFG["concepts"]))
        m.special_care_embeds.copy_(noise(CFG["specialConcepts"]))
        m.concept_embeds[5] = centred[0]
        m.special_care_embeds[1] = centred[1]
        m.concept_embeds[9] = centred[1] / centred[1].norm() + noise(1)[0] / 16
        special, cos = m.cosines(emb)
        mid = lambda col, i: (col[i] + torch.cat([col[:i], col[i + 1 :]]).max()) / 2  # noqa: E731
        m.special_care_embeds_weights.copy_(special.max(0).values + 0.05)
        m.special_care_embeds_weights[1] = mid(special[:, 1], 1)
        m.concept_embeds_weights.copy_(cos.max(0).values + 0.05)
        m.concept_embeds_weights[5] = mid(cos[:, 5], 0)
        assert cos[1, 9] - cos[[0, 2], 9].max() > 0.02, cos[:, 9]
        m.concept_embeds_weights[9] = cos[1, 9] + 0.005
        special, cos = m.cosines(emb)
        decisions = R.safety_decisions(special, cos, m.special_care_embeds_weights, m.concept_embeds_weights)
        assert [d[0] for d in decisions] == [True, True, False], decisions
        io.update({"clip_input": x, "image_embeds": emb, "special_cos_dist": special, "cos_dist": cos})
        io["flagged"] = torch.tensor([int(d[0]) for d in decisions], dtype=torch.int64)

    sd = {k: v for k, v in m.state_dict().items()}
    # CLIPVisionModel's buffer, present in the real file; the converter must not need it.
    sd["vision_model.vision_model.embeddings.position_ids"] = torch.arange((CFG["imageSize"] // CFG["patch"]) ** 2 + 1)[None]
    write_safetensors(out / "safety-checker.safetensors", sd, {"format": "pt"})
    write_safetensors(out / "safety-checker.expected.safetensors", io)
    (out / "safety-checker.json").write_text(json.dumps(dict(
        arch=dict(prefix="vision_model.vision_model.", **CFG),
        decisions=[dict(flagged=f, specialScores=s, conceptScores=c) for f, s, c in decisions],
    ), indent=2) + "\n")

    rng = np.random.default_rng(56)
    # A smooth image plus noise: edges and flat areas both exercise the resampling kernel.
    yy, xx = np.mgrid[0:60, 0:80]
    base = np.stack([xx * 3, yy * 4, (xx + yy) * 2], -1).astype(np.float64)
    pixels = np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)
    write_safetensors(out / "safety-preprocess.expected.safetensors", {
        "image": torch.from_numpy(pixels.astype(np.int64)),
        "clip_input": clip_preprocess(Image.fromarray(pixels, "RGB"), CFG["imageSize"]),
    })
    print(f"safety checker: {len(sd)} tensors, {sum(v.numel() for v in sd.values())} values")


if __name__ == "__main__":
    main()
