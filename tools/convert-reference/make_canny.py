"""Records OpenCV's Canny on a fixture image, for src/engine/image/canny.ts to match.

    /usr/bin/python3 tools/convert-reference/make_canny.py [--out tests/fixtures/reference/canny.json]

The image (a disc, a ramp, a checkerboard and seeded noise, in three channels) and the edge maps
of cv2.Canny(image, low, high) for a few threshold pairs, as base64 bytes.
"""

import argparse
import base64
import json

import cv2
import numpy as np


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/reference/canny.json")
    out = ap.parse_args().out
    rng = np.random.default_rng(7)
    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.int64)
    img[..., 0] = ((xx - 30) ** 2 + (yy - 22) ** 2 < 15**2) * 200
    img[..., 1] = np.clip(xx * 4, 0, 255)
    img[..., 2] = (((xx + yy) // 8) % 2) * 150
    img = np.clip(img + rng.integers(-20, 20, img.shape), 0, 255).astype(np.uint8)
    cases = []
    for lo, hi in [(100, 200), (50, 120), (20, 60), (150.5, 300.7)]:
        e = cv2.Canny(img, lo, hi)
        cases.append(dict(low=lo, high=hi, edges=base64.b64encode(e.tobytes()).decode()))
        print(lo, hi, int((e > 0).sum()), "edge pixels")
    doc = dict(source=f"OpenCV {cv2.__version__} cv2.Canny(rgb, low, high)", width=w, height=h,
               rgb=base64.b64encode(img.tobytes()).decode(), cases=cases)
    with open(out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
