"""Train latent-shapes, the studio's built-in model, and export it.

    /usr/bin/python3 tools/model/train.py

runs every stage in order (about an hour on one CPU thread) and writes the exported model to
resources/models/latent-shapes/. Stages (each reads the previous one's files from --work):

  data    render the procedural dataset (dataset.py), held-out triples excluded
  vae     train the VAE (64x64x3 <-> 8x8x4)
  latents encode the dataset, per-channel latent statistics
  unet    train the text encoder and the UNet together (epsilon prediction, SD-1.5 betas,
          min-SNR-5 loss weights, 10% empty captions for classifier-free guidance, EMA)
  check   sample held-out prompts in PyTorch and measure colour and shape (a quick figure;
          the real one comes from the studio's engine: npm run eval-model)
  inpaint fine-tune the 9-channel inpainting variant from the UNet (latents + mask + masked
          image latents, diffusers' layout), text encoder frozen
  export  write both ONNX model folders (export.py): latent-shapes, latent-shapes-inpainting
  eval    prompt adherence through the studio's engine (tools/model/eval.ts, needs node and
          the npm packages): text-to-image, and replacing an object by inpainting; the figures
          go into the model cards

`--stages vae,latents` runs some of them. Seeded: the same command gives the same model on the
same machine (PyTorch CPU kernels are deterministic with one thread).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import dataset  # noqa: E402
from models import VAE, TextEncoder, UNet, count  # noqa: E402

STAGES = ["data", "vae", "latents", "unet", "check", "inpaint", "export", "eval"]

CONFIG = {
    "seed": 0,
    "images": 40000,
    # The UNet's own set: same world, half the size/position jitter (a tighter target per caption
    # makes outlines come out sharper in a short training; the VAE trains on the full jitter).
    "unet_data": {"images": 40000, "seed": 10, "jitter": 0.5},
    "vae": {"steps": 2000, "batch": 32, "lr": 2e-3, "kl": 1e-5, "shape_weight": 9.0},
    "text": {"width": 128, "layers": 2, "heads": 4},
    "unet": {"channels": [64, 128], "heads": 4, "steps": 3000, "batch": 48, "lr": 7e-4,
             "warmup": 100, "weight_decay": 0.01, "ema": 0.995, "min_snr": 5.0, "uncond": 0.1,
             "junk_word": 0.05},
    "schedule": {"beta_start": 0.00085, "beta_end": 0.012, "steps": 1000},
    # The 9-channel inpainting variant: the text-to-image UNet (EMA) with 5 zero-initialised input
    # channels (mask, masked-image latents), fine-tuned on the UNet's set with painted-like masks;
    # the text encoder stays frozen. Mask kinds: the object's box or an ellipse around it (what
    # a person paints to replace it), random rectangles, or everything (then it draws from text).
    "inpaint": {"steps": 800, "batch": 48, "lr": 3e-4, "warmup": 50, "weight_decay": 0.01,
                "ema": 0.995, "min_snr": 5.0, "uncond": 0.1,
                "masks": {"object": 0.5, "rect": 0.35, "full": 0.15}},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cosine_lr(step: int, total: int, base: float, warmup: int, floor: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * p)))


def alphas_cumprod() -> torch.Tensor:
    s = CONFIG["schedule"]
    betas = torch.linspace(s["beta_start"] ** 0.5, s["beta_end"] ** 0.5, s["steps"], dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def to_float(images_u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_u8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


# --------------------------------------------------------------------------- stages


def stage_data(work: str) -> None:
    train, held = dataset.split_triples()
    log(f"rendering {CONFIG['images']} images from {len(train)} of {len(train) + len(held)} triples")
    images, attrs = dataset.make_dataset(CONFIG["images"], CONFIG["seed"], train)
    np.save(os.path.join(work, "images.npy"), images)
    with open(os.path.join(work, "attrs.json"), "w") as f:
        json.dump(attrs, f)
    dataset.write_png(os.path.join(work, "data.png"), dataset.grid(images[:64]))


def stage_vae(work: str) -> None:
    cfg = CONFIG["vae"]
    torch.manual_seed(CONFIG["seed"] + 1)
    images = np.load(os.path.join(work, "images.npy"))
    attrs = json.load(open(os.path.join(work, "attrs.json")))
    bg = torch.tensor([dataset.SPEC["colors"][a["background"]] for a in attrs], dtype=torch.float32) / 127.5 - 1
    vae = VAE()
    log(f"VAE: encoder {count(vae.encoder)} + decoder {count(vae.decoder)} parameters")
    opt = torch.optim.Adam(vae.parameters(), lr=cfg["lr"], betas=(0.9, 0.99))
    rng = np.random.RandomState(CONFIG["seed"] + 2)
    t0 = time.time()
    for step in range(cfg["steps"]):
        idx = rng.randint(0, len(images), cfg["batch"])
        x = to_float(images[idx])
        # Weight the shape (everything that differs from the background, grown by one pixel)
        # so that the few hundred pixels of a small shape count as much as the background.
        diff = ((x - bg[idx][:, :, None, None]).abs().sum(1, keepdim=True) > 0.02).float()
        diff = F.max_pool2d(diff, 3, 1, 1)
        w = 1 + cfg["shape_weight"] * diff
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg["steps"], cfg["lr"], 50)
        mean, logvar = vae.encode(x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        y = vae.decoder(z)
        err = y - x
        rec = ((err.abs() + err ** 2) * w).mean() / w.mean()
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
        loss = rec + cfg["kl"] * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 50 == 0 or step == cfg["steps"] - 1:
            log(f"vae step {step} rec {rec.item():.4f} kl {kl.item():.2f} "
                f"std(mean) {mean.std().item():.3f} post-std {torch.exp(0.5 * logvar).mean().item():.4f} "
                f"{time.time() - t0:.0f}s")
    torch.save(vae.state_dict(), os.path.join(work, "vae.pt"))
    with torch.no_grad():
        x = to_float(images[-32:])
        y = vae.decoder(vae.encode(x)[0])
        dataset.write_png(os.path.join(work, "vae-recon.png"), dataset.grid(np.concatenate([to_u8(x), to_u8(y)])))


def stage_latents(work: str) -> None:
    vae = VAE()
    vae.load_state_dict(torch.load(os.path.join(work, "vae.pt")))
    vae.eval()
    # How well do images survive the VAE round trip (what the UNet's samples go through)?
    images = np.load(os.path.join(work, "images.npy"), mmap_mode="r")
    attrs = json.load(open(os.path.join(work, "attrs.json")))
    with torch.no_grad():
        y = vae.decoder(vae.encode(to_float(np.array(images[:500])))[0])
    ok = sum(m["color"] == a["color"] and m["shape"] == a["shape"]
             for m, a in zip(map(dataset.measure, to_u8(y)), attrs[:500]))
    log(f"VAE round trip: colour and shape recognised in {ok}/500 reconstructions")

    u = CONFIG["unet_data"]
    train, _ = dataset.split_triples()
    log(f"rendering the UNet's {u['images']} images (jitter x{u['jitter']})")
    images, attrs = dataset.make_dataset(u["images"], u["seed"], train, jitter=u["jitter"])
    with open(os.path.join(work, "unet_attrs.json"), "w") as f:
        json.dump(attrs, f)
    out = []
    with torch.no_grad():
        for i in range(0, len(images), 500):
            out.append(vae.encode(to_float(images[i : i + 500]))[0])
    lat = torch.cat(out)
    mu = lat.mean((0, 2, 3))
    sd = lat.std((0, 2, 3))
    log(f"latents {tuple(lat.shape)} channel means {mu.numpy().round(3)} stds {sd.numpy().round(3)}")
    torch.save({"latents": ((lat - mu[None, :, None, None]) / sd[None, :, None, None]).contiguous(),
                "mean": mu, "std": sd}, os.path.join(work, "latents.pt"))


def junk_word(rng: np.random.RandomState) -> str:
    return "".join(chr(97 + rng.randint(26)) for _ in range(rng.randint(3, 7)))


def captions_batch(attrs: list, idx: np.ndarray, rng: np.random.RandomState, tok: dataset.Tokenizer,
                   uncond: float | None = None) -> torch.Tensor:
    cfg = CONFIG["unet"]
    rows = []
    for i in idx:
        if rng.uniform() < (cfg["uncond"] if uncond is None else uncond):
            text = ""
        else:
            text = dataset.caption(attrs[i], rng)
            if rng.uniform() < cfg["junk_word"]:
                words = text.split()
                words.insert(rng.randint(len(words) + 1), junk_word(rng))
                text = " ".join(words)
        rows.append(tok.encode(text))
    return torch.tensor(rows, dtype=torch.int64)


def optimize(opt, params: list, ema_params: list, loss: torch.Tensor, step: int, ema: float) -> None:
    """One optimiser step (gradients clipped to norm 1), then the EMA weights follow."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    decay = min(ema, (1 + step) / (10 + step))
    with torch.no_grad():
        for e, p in zip(ema_params, params):
            e.mul_(decay).add_(p.detach(), alpha=1 - decay)


def report(label: str, step: int, first: int, steps: int, running: float, opt, t0: float) -> None:
    """Every 50 steps and at the last: the smoothed loss, the learning rate, time and ETA."""
    if step % 50 == 0 or step == steps - 1:
        el = time.time() - t0
        log(f"{label} step {step} loss {running:.4f} lr {opt.param_groups[0]['lr']:.2e} {el:.0f}s "
            f"(eta {el / (step - first + 1) * (steps - step - 1) / 60:.1f} min)")


def make_models(tok: dataset.Tokenizer):
    t = CONFIG["text"]
    u = CONFIG["unet"]
    te = TextEncoder(tok.size, d=t["width"], layers=t["layers"], heads=t["heads"])
    unet = UNet(tuple(u["channels"]), ctx_dim=t["width"], heads=u["heads"])
    return te, unet


def stage_unet(work: str) -> None:
    cfg = CONFIG["unet"]
    torch.manual_seed(CONFIG["seed"] + 3)
    tok = dataset.Tokenizer()
    data = torch.load(os.path.join(work, "latents.pt"))
    lat = data["latents"]
    attrs = json.load(open(os.path.join(work, "unet_attrs.json")))
    te, unet = make_models(tok)
    log(f"text encoder {count(te)} parameters, UNet {count(unet)} parameters")
    params = list(te.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.99))
    ema_te, ema_unet = make_models(tok)
    ema_te.load_state_dict(te.state_dict())
    ema_unet.load_state_dict(unet.state_dict())
    ema_params = list(ema_te.parameters()) + list(ema_unet.parameters())
    ac = alphas_cumprod()
    snr = ac / (1 - ac)
    weight = torch.clamp(snr, max=cfg["min_snr"]) / snr  # min-SNR-gamma for epsilon prediction
    rng = np.random.RandomState(CONFIG["seed"] + 4)
    t0 = time.time()
    running = 0.0
    first = 0
    resume = os.path.join(work, "unet-resume.pt")
    if os.path.exists(resume):
        # An interrupted run of the same config continues where its last snapshot left off,
        # with the same random streams, so it ends with the same weights.
        r = torch.load(resume)
        if r["config"] == CONFIG:
            for m, k in ((te, "te"), (unet, "unet"), (ema_te, "ema_te"), (ema_unet, "ema_unet"), (opt, "opt")):
                m.load_state_dict(r[k])
            rng.set_state(r["np_rng"])
            torch.set_rng_state(r["torch_rng"])
            first, running = r["step"], r["running"]
            log(f"resuming at step {first}")
    for step in range(first, cfg["steps"]):
        idx = rng.randint(0, len(lat), cfg["batch"])
        x0 = lat[idx]
        ids = captions_batch(attrs, idx, rng, tok)
        L = int(te.valid_mask(ids).sum(-1).max())
        t = torch.from_numpy(rng.randint(0, 1000, cfg["batch"]))
        noise = torch.randn_like(x0)
        a = ac[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg["steps"], cfg["lr"], cfg["warmup"])
        ctx, _ = te(ids[:, :L])
        pred = unet(xt, t.float(), ctx, null_keys=77 - L)
        loss = (((pred - noise) ** 2).mean((1, 2, 3)) * weight[t]).mean()
        optimize(opt, params, ema_params, loss, step, cfg["ema"])
        running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
        report("unet", step, first, cfg["steps"], running, opt, t0)
        if (step + 1) % 250 == 0 and step + 1 < cfg["steps"]:
            torch.save({"step": step + 1, "running": running, "config": CONFIG, "te": te.state_dict(),
                        "unet": unet.state_dict(), "ema_te": ema_te.state_dict(),
                        "ema_unet": ema_unet.state_dict(), "opt": opt.state_dict(),
                        "np_rng": rng.get_state(), "torch_rng": torch.get_rng_state()}, resume + ".tmp")
            os.replace(resume + ".tmp", resume)
    save_unet(work, ema_te, ema_unet, te, unet, data, cfg["steps"])
    if os.path.exists(resume):
        os.remove(resume)


def save_unet(work: str, te, unet, raw_te, raw_unet, data, steps: int) -> None:
    """EMA weights (what is exported) and, for comparison only, the raw ones."""
    torch.save({"text_encoder": te.state_dict(), "unet": unet.state_dict(), "steps": steps,
                "raw": {"text_encoder": raw_te.state_dict(), "unet": raw_unet.state_dict()},
                "latent_mean": data["mean"], "latent_std": data["std"], "config": CONFIG},
               os.path.join(work, "unet.pt"))
    log(f"saved EMA weights after {steps} steps")


@torch.no_grad()
def sample(te, unet, prompts: list[str], seed: int, steps: int = 25, cfg_scale: float = 5.0) -> torch.Tensor:
    """DDIM (eta 0, leading spacing + 1 like SD 1.5), normalised latents [B,4,8,8]."""
    tok = dataset.Tokenizer()
    ids = torch.tensor([tok.encode(p) for p in prompts] + [tok.encode("")] * len(prompts))
    ctx, _ = te(ids)
    ac = alphas_cumprod()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(prompts), 4, 8, 8, generator=g)
    ts = list(range(0, 1000, 1000 // steps))[::-1]
    ts = [t + 1 for t in ts]
    for i, t in enumerate(ts):
        e = unet(torch.cat([x, x]), torch.full((2 * len(prompts),), float(t)), ctx)
        ec, eu = e.chunk(2)
        eps = eu + cfg_scale * (ec - eu)
        a = ac[t]
        a_prev = ac[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x


def stage_check(work: str) -> None:
    tok = dataset.Tokenizer()
    ck = torch.load(os.path.join(work, "unet.pt"))
    vae = VAE()
    vae.load_state_dict(torch.load(os.path.join(work, "vae.pt")))
    vae.eval()
    prompts = dataset.heldout_prompts()
    for label, weights in (("EMA", ck), ("raw", ck.get("raw"))):
        if weights is None:
            continue
        te, unet = make_models(tok)
        te.load_state_dict(weights["text_encoder"])
        unet.load_state_dict(weights["unet"])
        te.eval()
        unet.eval()
        z = sample(te, unet, [p["prompt"] for p in prompts], seed=0)
        z = z * ck["latent_std"][None, :, None, None] + ck["latent_mean"][None, :, None, None]
        with torch.no_grad():
            imgs = to_u8(vae.decoder(z))
        ok_c = ok_s = ok = 0
        for im, p in zip(imgs, prompts):
            m = dataset.measure(im)
            ok_c += m["color"] == p["color"]
            ok_s += m["shape"] == p["shape"]
            ok += m["color"] == p["color"] and m["shape"] == p["shape"]
        n = len(prompts)
        log(f"PyTorch check, {label} weights, {n} held-out prompts (DDIM 25, cfg 5): "
            f"colour {ok_c}/{n}, shape {ok_s}/{n}, both {ok}/{n}")
        dataset.write_png(os.path.join(work, f"check-{label.lower()}.png"), dataset.grid(imgs[:64]))


def object_or_random_mask(a: dict, rng: np.random.RandomState, kinds: dict) -> np.ndarray:
    """A binary 64x64 mask (1 = repaint) of the kind a person paints, for one training image."""
    size = dataset.SIZE
    m = np.zeros((size, size), np.float32)
    r = rng.uniform()
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    if r < kinds["object"]:
        # The object's box grown by a few pixels on each side, or an ellipse through that box.
        half = a["extent"] / 2
        x0, x1 = a["cx"] - half - rng.uniform(1, 10), a["cx"] + half + rng.uniform(1, 10)
        y0, y1 = a["cy"] - half - rng.uniform(1, 10), a["cy"] + half + rng.uniform(1, 10)
        if rng.uniform() < 0.3:
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * 1.2, (y1 - y0) / 2 * 1.2
            m[((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1] = 1
        else:
            m[(xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1)] = 1
    elif r < kinds["object"] + kinds["rect"]:
        for _ in range(rng.randint(1, 3)):
            w, h = rng.uniform(12, 48, 2)
            x0, y0 = rng.uniform(-w / 2, size - w / 2), rng.uniform(-h / 2, size - h / 2)
            m[(xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)] = 1
    else:
        m[:] = 1
    return m


def make_inpaint_unet(base_unet_state: dict) -> UNet:
    """The text-to-image UNet with 9 input channels; the 5 new ones start at zero."""
    t = CONFIG["text"]
    u = CONFIG["unet"]
    unet = UNet(tuple(u["channels"]), ctx_dim=t["width"], heads=u["heads"], in_ch=9)
    state = dict(base_unet_state)
    w = state["conv_in.weight"]
    grown = torch.zeros(w.shape[0], 9, *w.shape[2:])
    grown[:, :4] = w
    state["conv_in.weight"] = grown
    unet.load_state_dict(state)
    return unet


def stage_inpaint(work: str) -> None:
    cfg = CONFIG["inpaint"]
    torch.manual_seed(CONFIG["seed"] + 5)
    tok = dataset.Tokenizer()
    base = torch.load(os.path.join(work, "unet.pt"))
    data = torch.load(os.path.join(work, "latents.pt"))
    lat, mu, sd = data["latents"], data["mean"], data["std"]
    attrs = json.load(open(os.path.join(work, "unet_attrs.json")))
    te, _ = make_models(tok)
    te.load_state_dict(base["text_encoder"])
    te.eval()
    vae = VAE()
    vae.load_state_dict(torch.load(os.path.join(work, "vae.pt")))
    vae.eval()
    for p in list(te.parameters()) + list(vae.parameters()):
        p.requires_grad_(False)
    unet = make_inpaint_unet(base["unet"])
    ema = make_inpaint_unet(base["unet"])
    ema.load_state_dict(unet.state_dict())
    params = list(unet.parameters())
    ema_params = list(ema.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.99))
    ac = alphas_cumprod()
    snr = ac / (1 - ac)
    weight = torch.clamp(snr, max=cfg["min_snr"]) / snr
    rng = np.random.RandomState(CONFIG["seed"] + 6)
    log(f"inpainting UNet {count(unet)} parameters, from the text-to-image UNet after {base['steps']} steps")
    t0 = time.time()
    running = 0.0
    for step in range(cfg["steps"]):
        idx = rng.randint(0, len(lat), cfg["batch"])
        x0 = lat[idx]
        images = to_float(np.stack([dataset.render(attrs[i]) for i in idx]))
        masks = torch.from_numpy(np.stack([object_or_random_mask(attrs[i], rng, cfg["masks"]) for i in idx]))[:, None]
        ids = captions_batch(attrs, idx, rng, tok, uncond=cfg["uncond"])
        L = int(te.valid_mask(ids).sum(-1).max())
        with torch.no_grad():
            # As the engine (and diffusers) build them: masked pixels set to 0, the encoder's
            # normalised latents, the mask sampled at each latent cell's centre.
            masked = (vae.encode(images * (masks < 0.5))[0] - mu[None, :, None, None]) / sd[None, :, None, None]
            cell = dataset.SIZE // lat.shape[-1]
            latent_mask = masks[:, :, cell // 2 :: cell, cell // 2 :: cell]
            ctx, _ = te(ids[:, :L])
        t = torch.from_numpy(rng.randint(0, 1000, cfg["batch"]))
        noise = torch.randn_like(x0)
        a = ac[t][:, None, None, None]
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = cosine_lr(step, cfg["steps"], cfg["lr"], cfg["warmup"])
        pred = unet(torch.cat([xt, latent_mask, masked], 1), t.float(), ctx, null_keys=77 - L)
        loss = (((pred - noise) ** 2).mean((1, 2, 3)) * weight[t]).mean()
        optimize(opt, params, ema_params, loss, step, cfg["ema"])
        running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
        report("inpaint", step, 0, cfg["steps"], running, opt, t0)
    torch.save({"text_encoder": base["text_encoder"], "unet": ema.state_dict(), "steps": cfg["steps"],
                "base_steps": base["steps"], "latent_mean": mu, "latent_std": sd, "config": CONFIG},
               os.path.join(work, "inpaint.pt"))
    log(f"saved the inpainting UNet (EMA) after {cfg['steps']} steps")


def stage_export(work: str) -> None:
    import export

    export.export(work, os.path.join(ROOT, "resources", "models", "latent-shapes"))
    export.export(work, os.path.join(ROOT, "resources", "models", "latent-shapes-inpainting"), inpaint=True)


def stage_eval(work: str) -> None:
    import subprocess

    import export

    models = os.path.join(ROOT, "resources", "models")
    for name, task in (("latent-shapes", "txt2img"), ("latent-shapes-inpainting", "inpaint")):
        out = os.path.join(models, name)
        result = os.path.join(work, f"eval-{task}.json")
        cmd = ["node", "scripts/run-tool.mjs", "tools/model/eval.ts", "--task", task, "--model", out,
               "--out", result, "--sheet", os.path.join(work, f"eval-{task}.png")]
        if task == "inpaint":
            cmd += ["--source-model", os.path.join(models, "latent-shapes")]
        try:
            code = subprocess.run(cmd, cwd=ROOT).returncode
        except FileNotFoundError:
            log("node is not installed: skipping the evaluation (run npm run eval-model later)")
            return
        summary = os.path.join(work, f"eval-{task}.summary.json")
        if code not in (0, 1) or not os.path.exists(summary):
            sys.exit(f"evaluation failed (exit {code})")
        export.update_evaluation(out, json.load(open(summary)))
        log(f"evaluation recorded in {out}/about.json and README.md" + ("" if code == 0 else " (below the 90% target)"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=os.path.join(ROOT, ".cache", "model-train"),
                    help="folder for intermediate files (default: .cache/model-train, git-ignored)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.work, exist_ok=True)
    started = time.time()
    for name in args.stages.split(","):
        if name not in STAGES:
            sys.exit(f"unknown stage {name}; stages: {STAGES}")
        t = time.time()
        log(f"stage {name}")
        globals()[f"stage_{name}"](args.work)
        log(f"stage {name} done in {time.time() - t:.0f}s")
    log(f"all done in {(time.time() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
