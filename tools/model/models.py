"""The three networks of latent-shapes, small enough to train on one CPU thread.

- VAE: 64x64x3 <-> 8x8x4 (8x downsampling, like SD's), KL-regularised with a tiny weight.
- Text encoder: CLIP-like (token + position embeddings, pre-LN transformer layers, final LN);
  input_ids [B,77] -> last_hidden_state [B,77,D], pooler_output [B,D] (the state at the EOS
  token, found as CLIP does by argmax of the ids, since EOS has the largest id).
- UNet: SD-like conditional UNet (ResNet blocks with a timestep embedding, transformer blocks
  with self- and cross-attention), epsilon prediction; any latent size (upsampling goes to the
  skip connection's size, as diffusers does for sizes that are not multiples of 2^levels).

Everything is written with ops that torch.onnx (opset 17) exports with dynamic batch and
spatial dimensions.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def gn(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4) if c >= 8 else 1, c, eps=1e-5)


# --------------------------------------------------------------------------- VAE


class VaeRes(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.n1, self.c1 = gn(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.n2, self.c2 = gn(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class Encoder(nn.Module):
    """64x64x3 -> pixel-unshuffle(4) -> 16x16 -> stride 2 -> 8x8 -> mean and logvar."""

    def __init__(self, c=(64, 128), z=4):
        super().__init__()
        self.conv_in = nn.Conv2d(3 * 16, c[0], 3, padding=1)
        self.res0 = VaeRes(c[0], c[0])
        self.down = nn.Conv2d(c[0], c[1], 3, stride=2, padding=1)
        self.res1 = VaeRes(c[1], c[1])
        self.norm = gn(c[1])
        self.conv_out = nn.Conv2d(c[1], 2 * z, 3, padding=1)

    def forward(self, x):
        h = self.res0(self.conv_in(F.pixel_unshuffle(x, 4)))
        h = self.res1(self.down(h))
        return self.conv_out(F.silu(self.norm(h)))  # [B, 2z, h, w]: mean, logvar


class Decoder(nn.Module):
    """8x8x4 -> 8x8 -> nearest 2x -> 16x16 -> 48 channels -> pixel-shuffle(4) -> 64x64x3."""

    def __init__(self, c=(128, 64), z=4):
        super().__init__()
        self.conv_in = nn.Conv2d(z, c[0], 3, padding=1)
        self.res0 = VaeRes(c[0], c[0])
        self.up = nn.Conv2d(c[0], c[1], 3, padding=1)
        self.res1 = VaeRes(c[1], c[1])
        self.res2 = VaeRes(c[1], c[1])
        self.norm = gn(c[1])
        self.conv_out = nn.Conv2d(c[1], 3 * 16, 3, padding=1)

    def forward(self, z):
        h = self.res0(self.conv_in(z))
        h = self.up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self.res2(self.res1(h))
        return F.pixel_shuffle(self.conv_out(F.silu(self.norm(h))), 4)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.decoder = Decoder()

    def encode(self, x):
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30, 20)


# --------------------------------------------------------------------------- attention


class Attention(nn.Module):
    """Multi-head attention. `key_bias` [B, L] is added to the logits (masking); `null_keys` (training
    only) stands for that many extra all-zero context rows: with no bias on k and v they add logit 0
    and value 0 each, so one extra column of logit log(null_keys) is exactly equivalent."""

    def __init__(self, dim: int, ctx_dim: int | None, heads: int):
        super().__init__()
        self.heads = heads
        ctx_dim = ctx_dim or dim
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(ctx_dim, dim, bias=False)
        self.v = nn.Linear(ctx_dim, dim, bias=False)
        self.o = nn.Linear(dim, dim)

    def forward(self, x, ctx=None, key_bias=None, null_keys: int = 0):
        ctx = x if ctx is None else ctx
        b, n, d = x.shape
        hd = d // self.heads
        q = self.q(x).reshape(b, -1, self.heads, hd).transpose(1, 2)
        k = self.k(ctx).reshape(b, -1, self.heads, hd).transpose(1, 2)
        v = self.v(ctx).reshape(b, -1, self.heads, hd).transpose(1, 2)
        logits = q @ k.transpose(-1, -2) * (hd ** -0.5)
        if key_bias is not None:
            logits = logits + key_bias[:, None, None, :]
        if null_keys > 0:
            extra = torch.full_like(logits[..., :1], math.log(null_keys))
            w = torch.softmax(torch.cat([logits, extra], dim=-1), dim=-1)[..., :-1]
        else:
            w = torch.softmax(logits, dim=-1)
        out = (w @ v).transpose(1, 2).reshape(b, -1, d)
        return self.o(out)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4, geglu: bool = True):
        super().__init__()
        self.geglu = geglu
        self.fc1 = nn.Linear(dim, dim * mult * (2 if geglu else 1))
        self.fc2 = nn.Linear(dim * mult, dim)

    def forward(self, x):
        h = self.fc1(x)
        if self.geglu:
            a, g = h.chunk(2, dim=-1)
            h = a * F.gelu(g)
        else:
            h = F.gelu(h)
        return self.fc2(h)


# --------------------------------------------------------------------------- text encoder


class TextLayer(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), Attention(d, None, heads)
        self.ln2, self.ff = nn.LayerNorm(d), FeedForward(d, 4, geglu=False)

    def forward(self, x, key_bias):
        x = x + self.attn(self.ln1(x), key_bias=key_bias)
        return x + self.ff(self.ln2(x))


class TextEncoder(nn.Module):
    """CLIP-like, with one difference that makes training cheap: the sequence ends at the EOS
    that starts the trailing run of EOS/padding tokens. Tokens attend only up to it, and the
    states after it are zero. (Unknown words also map to EOS, CLIP-style; inside the prompt
    they are ordinary tokens.) So the states of a prompt do not depend on how much padding
    follows, and training can run on the first L positions only."""

    def __init__(self, vocab: int, d: int = 128, layers: int = 2, heads: int = 4, length: int = 77):
        super().__init__()
        self.eos = vocab - 1
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(1, length, d))
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.01)
        self.layers = nn.ModuleList([TextLayer(d, heads) for _ in range(layers)])
        self.final_ln = nn.LayerNorm(d)

    def valid_mask(self, ids):
        """1.0 up to and including the first EOS of the trailing EOS run, else 0.0."""
        real = (ids != self.eos).float()
        after = real.flip(-1).cumsum(-1).flip(-1)  # real tokens at positions >= j
        return torch.cat([torch.ones_like(after[:, :1]), (after[:, :-1] > 0).float()], dim=-1)

    def forward(self, input_ids):
        ids = input_ids.long()
        valid = self.valid_mask(ids)
        key_bias = (valid - 1.0) * 1e9
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        for layer in self.layers:
            x = layer(x, key_bias)
        x = self.final_ln(x) * valid[:, :, None]
        last = valid.sum(-1).long() - 1  # the EOS that ends the prompt (CLIP pools there)
        pooled = x[torch.arange(x.shape[0]), last]
        return x, pooled


# --------------------------------------------------------------------------- UNet


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """diffusers' get_timestep_embedding with flip_sin_to_cos=True, shift 0: [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.n1, self.c1 = gn(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.t = nn.Linear(t_dim, c_out)
        self.n2, self.c2 = gn(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.c1(F.silu(self.n1(x)))
        h = h + self.t(F.silu(temb))[:, :, None, None]
        h = self.c2(F.silu(self.n2(h)))
        return self.skip(x) + h


class Transformer(nn.Module):
    def __init__(self, c: int, ctx_dim: int, heads: int):
        super().__init__()
        self.norm = gn(c)
        self.proj_in = nn.Conv2d(c, c, 1)
        self.ln1, self.self_attn = nn.LayerNorm(c), Attention(c, None, heads)
        self.ln2, self.cross_attn = nn.LayerNorm(c), Attention(c, ctx_dim, heads)
        self.ln3, self.ff = nn.LayerNorm(c), FeedForward(c, 4, geglu=True)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x, ctx, null_keys: int = 0):
        y = self.proj_in(self.norm(x))
        y = y.flatten(2).transpose(1, 2)  # [B, hw, c]
        y = y + self.self_attn(self.ln1(y))
        y = y + self.cross_attn(self.ln2(y), ctx, null_keys=null_keys)
        y = y + self.ff(self.ln3(y))
        y = y.transpose(1, 2).reshape(x.shape)
        return x + self.proj_out(y)


class UNet(nn.Module):
    def __init__(self, ch=(64, 128), ctx_dim: int = 128, heads: int = 4, in_ch: int = 4, out_ch: int = 4):
        super().__init__()
        c0, c1 = ch
        t_dim = 4 * c0
        self.t_freq = c0
        self.t_mlp = nn.Sequential(nn.Linear(c0, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.conv_in = nn.Conv2d(in_ch, c0, 3, padding=1)
        self.d0r, self.d0t = ResBlock(c0, c0, t_dim), Transformer(c0, ctx_dim, heads)
        self.down = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.d1r, self.d1t = ResBlock(c0, c1, t_dim), Transformer(c1, ctx_dim, heads)
        self.m1, self.mt, self.m2 = ResBlock(c1, c1, t_dim), Transformer(c1, ctx_dim, heads), ResBlock(c1, c1, t_dim)
        self.u1r0, self.u1t0 = ResBlock(c1 + c1, c1, t_dim), Transformer(c1, ctx_dim, heads)
        self.u1r1, self.u1t1 = ResBlock(c1 + c0, c1, t_dim), Transformer(c1, ctx_dim, heads)
        self.up = nn.Conv2d(c1, c1, 3, padding=1)
        self.u0r0, self.u0t0 = ResBlock(c1 + c0, c0, t_dim), Transformer(c0, ctx_dim, heads)
        self.u0r1, self.u0t1 = ResBlock(c0 + c0, c0, t_dim), Transformer(c0, ctx_dim, heads)
        self.norm_out = gn(c0)
        self.conv_out = nn.Conv2d(c0, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, sample, timestep, encoder_hidden_states, null_keys: int = 0):
        ctx = encoder_hidden_states
        temb = self.t_mlp(timestep_embedding(timestep, self.t_freq))
        s0 = self.conv_in(sample)
        s1 = self.d0t(self.d0r(s0, temb), ctx, null_keys)
        s2 = self.down(s1)
        s3 = self.d1t(self.d1r(s2, temb), ctx, null_keys)
        h = self.m2(self.mt(self.m1(s3, temb), ctx, null_keys), temb)
        h = self.u1t0(self.u1r0(torch.cat([h, s3], 1), temb), ctx, null_keys)
        h = self.u1t1(self.u1r1(torch.cat([h, s2], 1), temb), ctx, null_keys)
        h = self.up(F.interpolate(h, size=s1.shape[-2:], mode="nearest"))
        h = self.u0t0(self.u0r0(torch.cat([h, s1], 1), temb), ctx, null_keys)
        h = self.u0t1(self.u0r1(torch.cat([h, s0], 1), temb), ctx, null_keys)
        return self.conv_out(F.silu(self.norm_out(h)))


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
