#!/usr/bin/env python3
"""Records the watermark fixtures in tests/fixtures/watermark with the invisible-watermark
library (github.com/ShieldMnt/invisible-watermark, v0.2.0), the one Stable Diffusion's scripts
use. Not run in CI: it needs that library's source, OpenCV and PyWavelets
(Debian: python3-opencv python3-pywt).

  python3 tools/watermark/record.py sources           # synthetic source images (PNG)
  python3 tools/watermark/record.py library LIBDIR    # the library marks the sources
  npm run watermark-fixtures                          # we mark the sources (ours-*.png)
  python3 tools/watermark/record.py check LIBDIR      # the library reads them all -> library-read.json
                                                      # (and OpenCV's q90 JPEG of ours: *.q90.jpg)

LIBDIR is a checkout of the library (the folder holding imwatermark/).
"""
import json
import os
import sys

import cv2
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, '..', '..', 'tests', 'fixtures', 'watermark')

SD1_TEXT = b'StableDiffusionV1'
# Stability-AI/generative-models sgm/inference/helpers.py: WATERMARK_MESSAGE = 0xB3EC907BB19E
SDXL_BITS = [int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]]

# name -> (width, height, seed)
SOURCES = {'source-512x384': (512, 384, 1), 'source-256': (256, 256, 2)}


def synthetic(width, height, seed):
    """Something like a generated picture: smooth colour fields, soft shapes, a little grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 6.28)]
        img[..., c] = 128 + 70 * np.sin(fx * x / width * 6.28 + ph) * np.cos(fy * y / height * 6.28)
    for _ in range(12):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(10, min(width, height) / 4)
        col = rng.uniform(0, 255, 3)
        d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2)
        a = np.clip((r - d) / 3, 0, 1)[..., None] * 0.8
        img = img * (1 - a) + col * a
    img += rng.normal(0, 3, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_png(name, rgb):
    cv2.imwrite(os.path.join(OUT, name + '.png'), rgb[:, :, ::-1])


def read_rgb(name):
    bgr = cv2.imread(os.path.join(OUT, name), cv2.IMREAD_COLOR)
    return bgr[:, :, ::-1].copy()


def load_library(libdir):
    sys.path.insert(0, libdir)
    from imwatermark import WatermarkDecoder, WatermarkEncoder
    return WatermarkEncoder, WatermarkDecoder


def cmd_sources():
    os.makedirs(OUT, exist_ok=True)
    for name, (w, h, seed) in SOURCES.items():
        write_png(name, synthetic(w, h, seed))


def cmd_library(libdir):
    Encoder, _ = load_library(libdir)
    for msg in ('sd1', 'sdxl'):
        enc = Encoder()
        if msg == 'sd1':
            enc.set_watermark('bytes', SD1_TEXT)  # CompVis scripts/txt2img.py
        else:
            enc.set_watermark('bits', SDXL_BITS)  # sgm WatermarkEmbedder
        for src in SOURCES:
            rgb = read_rgb(src + '.png')
            # txt2img.py put_watermark: RGB -> BGR, encode, back to RGB
            marked = enc.encode(np.ascontiguousarray(rgb[:, :, ::-1]), 'dwtDct')[:, :, ::-1]
            write_png(f'lib-{msg}-{src[7:]}', marked)


def bits_of(decoder_cls, bgr, n):
    return [int(b) for b in decoder_cls('bits', n).decode(bgr, 'dwtDct')]


def cmd_check(libdir):
    """What the library's decoder reads from every fixture PNG (sources, its marks, ours), and
    from ours after re-encoding and resizing with OpenCV."""
    _, Decoder = load_library(libdir)
    result = {}
    for name in sorted(os.listdir(OUT)):
        if not name.endswith('.png'):
            continue
        bgr = np.ascontiguousarray(read_rgb(name)[:, :, ::-1])
        variants = {'png': bgr}
        if name.startswith('ours-'):
            # OpenCV's default JPEG has 4:2:0 chroma; the file is kept for our own reader's test.
            ok, jpg = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
            variants['jpeg90'] = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
            with open(os.path.join(OUT, name[:-4] + '.q90.jpg'), 'wb') as f:
                f.write(jpg.tobytes())
        h, w = bgr.shape[:2]
        for s in (0.5, 2.0) if name.startswith('ours-') else ():
            small = cv2.resize(bgr, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            if small.shape[0] * small.shape[1] >= 256 * 256:
                variants[f'resized{s}'] = small
        result[name] = {
            k: {'sd1': bits_of(Decoder, v, 136), 'sdxl': bits_of(Decoder, v, 48)}
            for k, v in variants.items()
        }
    with open(os.path.join(OUT, 'library-read.json'), 'w') as f:
        json.dump(result, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    cmd = sys.argv[1] if len(sys.argv) > 1 else ''
    if cmd == 'sources':
        cmd_sources()
    elif cmd in ('library', 'check') and len(sys.argv) > 2:
        (cmd_library if cmd == 'library' else cmd_check)(sys.argv[2])
    else:
        print(__doc__)
        sys.exit(2)
