#!/usr/bin/env python3
"""Records the TAESD decoder's reference output on formula weights, for
tests/integration/taesd.test.ts (src/engine/convert/emit/taesd.ts).

Usage: python3 tools/convert-reference/taesd_decoder.py TAESD_CHECKOUT OUT.json

TAESD_CHECKOUT is a checkout of github.com/madebyollin/taesd (MIT); its taesd.py's `Decoder` is
the reference, imported from there, not copied. Every parameter is filled from the formula
the test uses too (see `formula` below), so no weight file needs to be kept in the repository:
value j of the tensor at position t of the state dict (in state-dict order) is
    u = frac(sin(12.9898 * j + 78.233 * t) * 43758.5453)   (a hash in [0, 1))
    value = (2 * u - 1) * sqrt(6 / fan_in)                  (He-uniform scale)
computed in float64 and rounded to float32 (fan_in is 64 for the biases). The latent is sin(0.11 * j) * 2.5 (float32), shape
[1, 4, 6, 5] (so upsampling and non-square sizes are both exercised), and the output is the
decoder's, mapped x * 2 - 1 as the engine's graph does.
"""
import json
import math
import sys

import numpy as np
import torch


def formula(t: int, shape) -> np.ndarray:
    n = int(np.prod(shape))
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 64
    j = np.arange(n, dtype=np.float64)
    h = np.sin(12.9898 * j + 78.233 * t) * 43758.5453
    u = h - np.floor(h)
    return ((2 * u - 1) * math.sqrt(6 / fan_in)).astype(np.float32).reshape(shape)


def main() -> None:
    checkout, out = sys.argv[1], sys.argv[2]
    sys.path.insert(0, checkout)
    from taesd import Decoder  # noqa: E402

    dec = Decoder(4).eval()
    state = dec.state_dict()
    names = list(state.keys())
    filled = {k: torch.from_numpy(formula(t, tuple(state[k].shape))) for t, k in enumerate(names)}
    dec.load_state_dict(filled)
    shape = (1, 4, 6, 5)
    j = np.arange(int(np.prod(shape)), dtype=np.float64)
    latent = (np.sin(0.11 * j) * 2.5).astype(np.float32).reshape(shape)
    with torch.no_grad():
        y = dec(torch.from_numpy(latent)).double() * 2 - 1
    json.dump(
        {
            "source": "madebyollin/taesd taesd.py Decoder(4), formula weights (see this script)",
            "torch": torch.__version__,
            "tensors": [{"name": k, "shape": list(state[k].shape)} for k in names],
            "latentShape": list(shape),
            "outputShape": list(y.shape),
            "output": [float(f"{v:.7g}") for v in y.flatten().tolist()],
        },
        open(out, "w"),
    )


if __name__ == "__main__":
    main()
