"""Procedural captioned dataset for the built-in model (latent-shapes).

One flat shape (circle, square, triangle, star) of one colour, at one of nine positions, small or
large, on a plain background of another colour, 64x64 RGB, anti-aliased (4x4 supersampling).
Captions: "a small red circle in the top left on a blue background", with the size, position and
background clauses sometimes left out, synonyms (tiny/big, in the middle) and either clause order.

The world is described by spec.json (shared with measure.ts, which recognises colour and shape
from generated pixels). Everything is seeded; the same seed gives the same arrays.

Held-out split: 10% of the (colour, shape, background) triples never appear in training (neither
as images nor as captions); the evaluation prompts (heldout.jsonl) are drawn from them only.

    /usr/bin/python3 tools/model/dataset.py --preview /tmp/shapes.png   # a grid of samples
    /usr/bin/python3 tools/model/dataset.py --check                     # measure() on renders
    /usr/bin/python3 tools/model/dataset.py --write-heldout             # tools/model/heldout.jsonl
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import zlib
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.join(HERE, "spec.json")
SS = 4  # supersampling factor per axis


def load_spec(path: str = SPEC_PATH) -> dict:
    with open(path) as f:
        return json.load(f)


SPEC = load_spec()
SIZE = SPEC["image_size"]
COLOR_NAMES = list(SPEC["colors"].keys())
SHAPES = list(SPEC["shapes"])
SIZE_NAMES = list(SPEC["sizes"].keys())
POSITION_NAMES = list(SPEC["positions"].keys())

# --------------------------------------------------------------------------- geometry


def star_polygon(inner_ratio: float = SPEC["star_inner_ratio"]) -> np.ndarray:
    """Five-pointed star pointing up, normalised so that its bounding box is [-1,1]^2."""
    pts = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else inner_ratio
        a = -math.pi / 2 + k * math.pi / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    p = np.array(pts)
    lo, hi = p.min(0), p.max(0)
    return (p - (lo + hi) / 2) / ((hi - lo) / 2)


STAR = star_polygon()


def inside_polygon(x: np.ndarray, y: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd rule, vectorised over points."""
    inside = np.zeros(x.shape, dtype=bool)
    n = len(poly)
    for i in range(n):
        x1, y1 = poly[i]
        x2, y2 = poly[(i + 1) % n]
        cond = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        inside ^= cond & (x < xc)
    return inside


def shape_mask_unit(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Is (u, v) inside the shape drawn in its bounding box [-1,1]^2 (v grows downwards)?"""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == "triangle":  # apex at the top, base at the bottom
        return (v <= 1.0) & (v >= -1.0) & (np.abs(u) <= (v + 1.0) / 2.0)
    if shape == "star":
        return inside_polygon(u, v, STAR)
    raise ValueError(shape)


_GRID = (np.arange(SIZE * SS) + 0.5) / SS  # pixel-space sample coordinates


def render(a: dict) -> np.ndarray:
    """Attributes -> uint8 [SIZE, SIZE, 3]."""
    half = a["extent"] / 2.0
    # Only the supersampled window around the shape needs testing.
    x0 = max(0, int(math.floor(a["cx"] - half - 1)) * SS)
    x1 = min(SIZE * SS, int(math.ceil(a["cx"] + half + 1)) * SS)
    y0 = max(0, int(math.floor(a["cy"] - half - 1)) * SS)
    y1 = min(SIZE * SS, int(math.ceil(a["cy"] + half + 1)) * SS)
    u = (_GRID[None, x0:x1] - a["cx"]) / half
    v = (_GRID[y0:y1, None] - a["cy"]) / half
    u, v = np.broadcast_arrays(u, v)
    m = shape_mask_unit(a["shape"], u, v).astype(np.float32)
    cov = np.zeros((SIZE, SIZE), np.float32)
    h, w = m.shape
    cov[y0 // SS : y1 // SS, x0 // SS : x1 // SS] = m.reshape(h // SS, SS, w // SS, SS).mean((1, 3))
    fg = np.array(SPEC["colors"][a["color"]], np.float32)
    bg = np.array(SPEC["colors"][a["background"]], np.float32)
    img = bg[None, None, :] * (1 - cov[..., None]) + fg[None, None, :] * cov[..., None]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- attributes


def all_triples() -> list[tuple[str, str, str]]:
    return [(c, s, b) for c in COLOR_NAMES for s in SHAPES for b in COLOR_NAMES if b != c]


def split_triples() -> tuple[list, list]:
    """(train, heldout) lists of (colour, shape, background) triples."""
    triples = all_triples()
    rng = np.random.RandomState(SPEC["split_seed"])
    order = rng.permutation(len(triples))
    k = int(round(len(triples) * SPEC["heldout_fraction"]))
    held = sorted(triples[i] for i in order[:k])
    train = sorted(triples[i] for i in order[k:])
    return train, held


def place(size: str, position: str, rng: np.random.RandomState,
          jitter: float = 1.0) -> tuple[float, float, float]:
    """Centre and extent in pixels; `jitter` scales the spec's size and position jitter."""
    sz = SPEC["sizes"][size]
    extent = sz["extent"] + jitter * rng.uniform(-sz["jitter"], sz["jitter"])
    half = extent / 2
    fx, fy = SPEC["positions"][position]["xy"]
    j = jitter * SPEC["position_jitter"]
    lo, hi = half + SPEC["margin"], SIZE - half - SPEC["margin"]
    cx = float(np.clip(fx * SIZE + rng.uniform(-j, j), lo, hi))
    cy = float(np.clip(fy * SIZE + rng.uniform(-j, j), lo, hi))
    return cx, cy, extent


def sample_attrs(rng: np.random.RandomState, triples: list, jitter: float = 1.0) -> dict:
    color, shape, bg = triples[rng.randint(len(triples))]
    size = SIZE_NAMES[rng.randint(len(SIZE_NAMES))]
    position = POSITION_NAMES[rng.randint(len(POSITION_NAMES))]
    cx, cy, extent = place(size, position, rng, jitter)
    return dict(color=color, shape=shape, background=bg, size=size, position=position,
                cx=cx, cy=cy, extent=extent)


def article(next_word: str) -> str:
    return "an" if next_word[0] in "aeiou" else "a"


def caption(a: dict, rng: np.random.RandomState | None = None, full: bool = False) -> str:
    """A caption for the attributes; with rng, parts are dropped/varied at random."""
    r = (lambda: rng.uniform()) if rng is not None and not full else (lambda: 0.0)
    pick = (lambda xs: xs[rng.randint(len(xs))]) if rng is not None and not full else (lambda xs: xs[0])
    words = []
    if r() < 0.8:
        words.append(pick(SPEC["sizes"][a["size"]]["synonyms"]))
    words += [a["color"], a["shape"]]
    subject = f"{article(words[0])} {' '.join(words)}"
    clauses = []
    if r() < 0.8:
        clauses.append(pick(SPEC["positions"][a["position"]]["phrases"]))
    if r() < 0.8:
        clauses.append(f"on {article(a['background'])} {a['background']} background")
    if len(clauses) == 2 and r() > 0.5:
        clauses.reverse()
    return " ".join([subject] + clauses)


def make_dataset(n: int, seed: int, triples: list, jitter: float = 1.0) -> tuple[np.ndarray, list[dict]]:
    rng = np.random.RandomState(seed)
    attrs = [sample_attrs(rng, triples, jitter) for _ in range(n)]
    images = np.stack([render(a) for a in attrs])
    return images, attrs


# --------------------------------------------------------------------------- tokenizer


def bytes_to_unicode() -> dict[int, str]:
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


BYTE_ENCODER = bytes_to_unicode()
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
SPLIT = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+", re.I)


def corpus_words() -> list[str]:
    """Every word a training caption can contain."""
    words = {"a", "an", "on", "background", "in", "the", "at", "top", "bottom", "left", "right",
             "center", "middle"}
    words |= set(COLOR_NAMES) | set(SHAPES)
    for s in SPEC["sizes"].values():
        words |= set(s["synonyms"])
    for p in SPEC["positions"].values():
        for ph in p["phrases"]:
            words |= set(ph.split())
    return sorted(words)


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE over the word list until every word is one symbol (ties: smaller 'left right')."""
    seqs = []
    for w in words:
        sym = [BYTE_ENCODER[b] for b in w.encode()]
        sym[-1] += "</w>"
        seqs.append(sym)
    merges = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for i in range(len(s) - 1):
                counts[(s[i], s[i + 1])] = counts.get((s[i], s[i + 1]), 0) + 1
        if not counts:
            break
        best = min(counts.items(), key=lambda kv: (-kv[1], f"{kv[0][0]} {kv[0][1]}"))[0]
        merges.append(best)
        joined = best[0] + best[1]
        for k, s in enumerate(seqs):
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[k] = out
    return merges


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    order = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    order += [b for b in range(256) if b not in order]
    symbols = [BYTE_ENCODER[b] for b in order]
    vocab: dict[str, int] = {}
    for s in symbols:
        vocab[s] = len(vocab)
    for s in symbols:
        vocab[s + "</w>"] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    return vocab


def write_tokenizer(out_dir: str) -> None:
    """CLIP-format tokenizer folder: vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json."""
    os.makedirs(out_dir, exist_ok=True)
    merges = learn_merges(corpus_words())
    vocab = build_vocab(merges)

    def added(c):
        return {"content": c, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    with open(os.path.join(out_dir, "vocab.json"), "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    with open(os.path.join(out_dir, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": added(BOS), "eos_token": added(EOS), "pad_token": added(EOS),
                   "unk_token": added(EOS)}, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"add_prefix_space": False, "bos_token": added(BOS), "clean_up_tokenization_spaces": True,
                   "do_lower_case": True, "eos_token": added(EOS), "errors": "replace",
                   "model_max_length": 77, "pad_token": EOS, "tokenizer_class": "CLIPTokenizer",
                   "unk_token": added(EOS)}, f, indent=2)
        f.write("\n")


class Tokenizer:
    """CLIP BPE (OpenAI simple_tokenizer) over our vocab: text -> 77 ids, padded with EOS."""

    def __init__(self):
        self.merges = learn_merges(corpus_words())
        self.vocab = build_vocab(self.merges)
        self.ranks = {m: i for i, m in enumerate(self.merges)}
        self.bos, self.eos = self.vocab[BOS], self.vocab[EOS]
        self.size = len(self.vocab)
        self.cache: dict[str, list[int]] = {}

    def bpe(self, word: str) -> list[int]:
        if word in self.cache:
            return self.cache[word]
        sym = [BYTE_ENCODER[b] for b in word.encode()]
        sym[-1] += "</w>"
        while len(sym) > 1:
            pairs = [(self.ranks.get((sym[i], sym[i + 1]), 1 << 30), i) for i in range(len(sym) - 1)]
            rank, _ = min(pairs)
            if rank == 1 << 30:
                break
            a, b = self.merges[rank]
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and sym[i] == a and sym[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            sym = out
        ids = [self.vocab.get(s, self.eos) for s in sym]
        self.cache[word] = ids
        return ids

    def encode(self, text: str, length: int = 77) -> list[int]:
        text = " ".join(text.split()).strip().lower()
        ids = [t for w in SPLIT.findall(text) for t in self.bpe(w)][: length - 2]
        ids = [self.bos] + ids + [self.eos]
        return ids + [self.eos] * (length - len(ids))


# --------------------------------------------------------------------------- measuring


def measure(img: np.ndarray) -> dict:
    """Recognise the main object of an RGB uint8 image: colour, shape, bbox. Mirrors measure.ts."""
    cols = np.array([SPEC["colors"][c] for c in COLOR_NAMES], np.float32)
    px = img.reshape(-1, 3).astype(np.float32)
    h, w = img.shape[:2]
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]]).astype(np.float32)
    bg = np.median(border, axis=0)
    dist = np.sqrt(((px - bg) ** 2).sum(1)).reshape(h, w)
    mask = dist > 60
    if mask.sum() < 6:
        return dict(color=None, shape=None, background=None, pixels=int(mask.sum()))
    ys, xs = np.nonzero(mask)
    # The main object: pixels within the bounding box of the largest 4-connected component.
    lab = _largest_component(mask)
    ys, xs = np.nonzero(lab)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    core = img[lab].astype(np.float32)
    fg = np.median(core, axis=0)
    color = COLOR_NAMES[int(((cols - fg) ** 2).sum(1).argmin())]
    background = COLOR_NAMES[int(((cols - bg) ** 2).sum(1).argmin())]
    box = lab[y0:y1, x0:x1]
    bh, bw = box.shape
    u = ((np.arange(bw) + 0.5) / bw * 2 - 1)[None, :]
    v = ((np.arange(bh) + 0.5) / bh * 2 - 1)[:, None]
    u, v = np.broadcast_arrays(u, v)
    ious = {}
    for s in SHAPES:
        t = shape_mask_unit(s, u, v)
        ious[s] = float((t & box).sum() / max(1, (t | box).sum()))
    shape = max(ious, key=ious.get)
    return dict(color=color, shape=shape, background=background, iou=ious[shape],
                bbox=[int(x0), int(y0), int(bw), int(bh)], pixels=int(lab.sum()))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    seen = np.zeros_like(mask)
    best = None
    best_n = 0
    for sy, sx in zip(*np.nonzero(mask)):
        if seen[sy, sx]:
            continue
        stack = [(sy, sx)]
        seen[sy, sx] = True
        comp = []
        while stack:
            y, x = stack.pop()
            comp.append((y, x))
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        if len(comp) > best_n:
            best_n, best = len(comp), comp
    out = np.zeros_like(mask)
    for y, x in best:
        out[y, x] = True
    return out


# --------------------------------------------------------------------------- held-out prompts


def heldout_prompts(n: int = 100, seed: int = 1234) -> list[dict]:
    """Evaluation prompts, from held-out triples only, full captions, each with a seed."""
    _, held = split_triples()
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        color, shape, bg = held[i % len(held)]
        size = SIZE_NAMES[rng.randint(len(SIZE_NAMES))]
        position = POSITION_NAMES[rng.randint(len(POSITION_NAMES))]
        a = dict(color=color, shape=shape, background=bg, size=size, position=position)
        out.append(dict(prompt=caption(a, full=True), color=color, shape=shape, background=bg,
                        size=size, position=position, seed=int(rng.randint(0, 2**31 - 1))))
    return out


def write_png(path: str, img: np.ndarray) -> None:
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def grid(images: np.ndarray, cols: int = 8) -> np.ndarray:
    n = len(images)
    rows = (n + cols - 1) // cols
    h, w = images.shape[1:3]
    g = np.full((rows * (h + 2), cols * (w + 2), 3), 128, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        g[r * (h + 2) : r * (h + 2) + h, c * (w + 2) : c * (w + 2) + w] = im
    return g


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preview", help="write a PNG grid of 32 samples")
    ap.add_argument("--check", action="store_true", help="measure() on 500 renders")
    ap.add_argument("--write-heldout", action="store_true")
    args = ap.parse_args()
    train, held = split_triples()
    if args.preview:
        imgs, attrs = make_dataset(32, 0, train)
        rng = np.random.RandomState(0)
        for a in attrs[:8]:
            print(caption(a, rng))
        write_png(args.preview, grid(imgs))
    if args.check:
        imgs, attrs = make_dataset(500, 1, all_triples())
        ok = 0
        for im, a in zip(imgs, attrs):
            m = measure(im)
            good = m["color"] == a["color"] and m["shape"] == a["shape"]
            ok += good
            if not good:
                print("miss", a, m)
        print(f"measure() on renders: {ok}/500")
    if args.write_heldout:
        # JSON lines: one prompt per line (prettier leaves .jsonl alone, so the file is stable).
        path = os.path.join(HERE, "heldout.jsonl")
        with open(path, "w") as f:
            for p in heldout_prompts():
                f.write(json.dumps(p) + "\n")
        print(path)

if __name__ == "__main__":
    main()
