#!/usr/bin/env python3
"""Write the small torch.save checkpoints the converter's reader tests open.

Not run by CI (which has no torch); the files it writes are committed under
tests/fixtures/reference/checkpoints/. Values are arange-based so the tests compute the
expected numbers themselves.

  /usr/bin/python3 tools/convert/make_torch_fixtures.py OUT_DIR
"""
import collections
import os
import sys
import types

import torch

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)


def arange(n, dtype):
    return (torch.arange(n, dtype=torch.float32) * 0.25 - 1).to(dtype)


# What Lightning leaves in a training checkpoint (its callback state), registered under the
# real module path so the pickle names it exactly as a real ldm checkpoint does.
mod_names = ['pytorch_lightning', 'pytorch_lightning.callbacks',
             'pytorch_lightning.callbacks.model_checkpoint']
for n in mod_names:
    sys.modules.setdefault(n, types.ModuleType(n))


class ModelCheckpoint:
    def __init__(self):
        self.monitor = None
        self.best_model_score = None


ModelCheckpoint.__module__ = 'pytorch_lightning.callbacks.model_checkpoint'
sys.modules['pytorch_lightning.callbacks.model_checkpoint'].ModelCheckpoint = ModelCheckpoint

base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
shared = torch.arange(10, dtype=torch.float32)
state = collections.OrderedDict()
state['f32'] = arange(6, torch.float32).reshape(2, 3)
state['f16'] = arange(8, torch.float16).reshape(2, 2, 2)
state['bf16'] = arange(5, torch.bfloat16)
state['f64'] = arange(3, torch.float64)
state['i64'] = torch.arange(77, dtype=torch.int64).reshape(1, 77)
state['transposed'] = base.t()  # a strided view saved as is: shape [6, 4], stride [1, 6]
state['slice_a'] = shared[2:5]  # two views of one storage at offsets 2 and 6
state['slice_b'] = shared[6:10]
state['scalar'] = torch.tensor(4.5)
state['param'] = torch.nn.Parameter(arange(4, torch.float32))
torch.save({'state_dict': state, 'global_step': 875000, 'epoch': 3,
            'callbacks': {ModelCheckpoint: {'best_model_path': ''}}},
           os.path.join(OUT, 'tiny.ckpt'))

# A plain state dict (no 'state_dict' wrapper), as many .pt/.bin files are.
torch.save(collections.OrderedDict(w=arange(4, torch.float16)), os.path.join(OUT, 'plain.pt'))


class Evil:
    def __reduce__(self):
        return (os.system, ('touch /tmp/latent-studio-pwned',))


torch.save({'state_dict': {'w': torch.zeros(2)}, 'payload': Evil()}, os.path.join(OUT, 'evil.ckpt'))
print('wrote', sorted(os.listdir(OUT)))
