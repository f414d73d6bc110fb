"""Records textual-inversion embedding files as the tools that make them write them, for the
engine's reader tests (tests/unit/embeddings-file.test.ts).

Run with Debian's python3-torch (1.13):  /usr/bin/python3 tools/reference/record_embeddings.py

- a1111.pt, a1111-fp16.pt: AUTOMATIC1111's layout (modules/textual_inversion/textual_inversion.py,
  Embedding.save): string_to_token, string_to_param {'*': vectors}, name, step, sd_checkpoint,
  sd_checkpoint_name. The vectors are an nn.Parameter, as a trained embedding's are.
- diffusers-1d.bin, diffusers-bf16.bin: diffusers' textual_inversion script (learned_embeds.bin,
  {placeholder_token: tensor}), one 1-D vector and a bf16 [2, 8] block.
- two-terms.pt: string_to_param with two terms (refused: one term per file).
- hostile.pt: a torch.save whose pickle calls os.system (must be refused without running).
expected.json holds each file's vectors as float32 after torch's own conversion.
"""
import hashlib
import json
import os
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/fixtures/reference/embeddings"
OUT.mkdir(parents=True, exist_ok=True)
g = torch.Generator().manual_seed(12)


def vectors(rows, dim):
    return torch.randn(rows, dim, generator=g)


expected = {}


def a1111(name, vec):
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.nn.Parameter(vec)},
        "name": name,
        "step": 1500,
        "sd_checkpoint": "7460a6fa",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
    }
    torch.save(data, OUT / f"{name}.pt")
    expected[f"{name}.pt"] = {"shape": list(vec.shape), "values": vec.float().flatten().tolist()}


a1111("a1111", vectors(3, 8))
a1111("a1111-fp16", vectors(2, 8).half())

v = torch.randn(8, generator=g)
torch.save({"<cat-toy>": v}, OUT / "diffusers-1d.bin")
expected["diffusers-1d.bin"] = {"shape": [1, 8], "values": v.flatten().tolist()}

v = vectors(2, 8).bfloat16()
torch.save({"<style>": v}, OUT / "diffusers-bf16.bin")
expected["diffusers-bf16.bin"] = {"shape": [2, 8], "values": v.float().flatten().tolist()}

torch.save(
    {"string_to_param": {"*": vectors(1, 8), "#": vectors(1, 8)}, "name": "two-terms"},
    OUT / "two-terms.pt",
)


class Hostile:
    def __reduce__(self):
        return (os.system, ("echo hostile-pickle-ran > /tmp/hostile-pickle-ran",))


torch.save({"string_to_param": {"*": Hostile()}}, OUT / "hostile.pt")

for name in sorted(expected):
    expected[name]["sha256"] = hashlib.sha256((OUT / name).read_bytes()).hexdigest()
(OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
print("wrote", sorted(p.name for p in OUT.iterdir()))
