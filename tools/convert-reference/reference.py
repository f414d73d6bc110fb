"""PyTorch references of the architectures the checkpoint converter emits.

Written from the papers and public descriptions, with module names that reproduce the
checkpoint keys people's files hold (ldm, Hugging Face CLIP, OpenCLIP), so a state_dict of these
modules is a single-file checkpoint at whatever width the config asks for.

- UNetModel: Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"
  (the ldm UNet: ResBlocks with a time embedding, SpatialTransformers with self- and
  cross-attention and a GEGLU feed-forward); SDXL's label embedding of Podell et al. 2023, sec. 2.2.
- ControlNet: Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion Models"
  (a copy of the UNet's encoder and middle block, a hint conv stack, zero convs), in the key
  naming of lllyasviel/ControlNet's cldm.py; UNetModel takes its residuals as cldm's
  ControlledUnetModel does.
- AutoencoderKL: the same paper, sec. 3.1 (ResnetBlocks, one mid attention, asymmetric padding
  before each stride-2 downsampling conv, quant_conv / post_quant_conv around the latent).
- CLIP text transformers: Radford et al. 2021, sec. 2.4 (pre-LN causal transformer, EOS pooling),
  in Hugging Face's naming (separate q/k/v) and OpenCLIP's (fused in_proj, text_projection as a
  matrix).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------------------------------------
# UNet


def timestep_embedding(t, dim, max_period=10000):
    """[cos(t f) | sin(t f)], f_i = max_period^(-i / half) (Vaswani et al. 2017, sec. 3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def group_norm(c, eps):
    return nn.GroupNorm(32, c, eps=eps)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, emb):
        super().__init__()
        self.in_layers = nn.Sequential(group_norm(cin, 1e-5), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb, cout))
        self.out_layers = nn.Sequential(
            group_norm(cout, 1e-5), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(cout, cout, 3, padding=1)
        )
        self.skip_connection = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x, emb):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        h = self.out_layers(h)
        return self.skip_connection(x) + h


class CrossAttention(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(ctx_dim, dim, bias=False)
        self.to_v = nn.Linear(ctx_dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(0.0))

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        q, k, v = self.to_q(x), self.to_k(ctx), self.to_v(ctx)
        return self.to_out(attention(q, k, v, self.heads))


def attention(q, k, v, heads, mask=None):
    """Scaled dot-product attention (Vaswani et al. 2017, eq. 1) with heads split from the width."""
    b, n, d = q.shape
    dh = d // heads
    q, k, v = (t.reshape(b, -1, heads, dh).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    if mask is not None:
        scores = scores + mask
    out = scores.softmax(dim=-1) @ v
    return out.transpose(1, 2).reshape(b, n, d)


class GEGLU(nn.Module):
    """Shazeer 2020: value * GELU(gate), value first, gate second, exact GELU."""

    def __init__(self, din, dout):
        super().__init__()
        self.proj = nn.Linear(din, dout * 2)

    def forward(self, x):
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, 4 * dim), nn.Dropout(0.0), nn.Linear(4 * dim, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, ctx_dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x, ctx):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), ctx) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    def __init__(self, c, ctx_dim, heads, depth, linear):
        super().__init__()
        self.linear = linear
        self.norm = group_norm(c, 1e-6)
        self.proj_in = nn.Linear(c, c) if linear else nn.Conv2d(c, c, 1)
        self.transformer_blocks = nn.ModuleList(BasicTransformerBlock(c, ctx_dim, heads) for _ in range(depth))
        self.proj_out = nn.Linear(c, c) if linear else nn.Conv2d(c, c, 1)

    def forward(self, x, ctx):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        if not self.linear:
            h = self.proj_in(h)
        h = h.reshape(b, c, hh * ww).transpose(1, 2)
        if self.linear:
            h = self.proj_in(h)
        for blk in self.transformer_blocks:
            h = blk(h, ctx)
        if self.linear:
            h = self.proj_out(h)
        h = h.transpose(1, 2).reshape(b, c, hh, ww)
        if not self.linear:
            h = self.proj_out(h)
        return h + x


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.op = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, size):
        # To the skip's size, so odd latent sizes work (diffusers' upsample_size).
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class Seq(nn.ModuleList):
    """ldm's TimestepEmbedSequential: passes emb to ResBlocks and the context to transformers."""

    def forward(self, x, emb, ctx, size=None):
        for m in self:
            if isinstance(m, ResBlock):
                x = m(x, emb)
            elif isinstance(m, SpatialTransformer):
                x = m(x, ctx)
            elif isinstance(m, Upsample):
                x = m(x, size)
            else:
                x = m(x)
        return x


class UNetModel(nn.Module):
    """cfg keys as src/engine/convert/types.ts UNetArchitecture."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        mc = cfg["modelChannels"]
        emb = 4 * mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        if cfg["admInChannels"] is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(cfg["admInChannels"], emb), nn.SiLU(), nn.Linear(emb, emb))
            )

        def heads(c):
            return cfg["numHeads"] if cfg["numHeads"] is not None else c // cfg["headChannels"]

        def st(c, depth):
            return SpatialTransformer(c, cfg["contextDim"], heads(c), depth, cfg["linearProjection"])

        self.input_blocks = nn.ModuleList([Seq([nn.Conv2d(cfg["inChannels"], mc, 3, padding=1)])])
        chans = [mc]
        ch = mc
        levels = len(cfg["channelMult"])
        for level, mult in enumerate(cfg["channelMult"]):
            for _ in range(cfg["numResBlocks"]):
                layers = [ResBlock(ch, mult * mc, emb)]
                ch = mult * mc
                if cfg["attentionLevels"][level]:
                    layers.append(st(ch, cfg["transformerDepth"][level]))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != levels - 1:
                self.input_blocks.append(Seq([Downsample(ch)]))
                chans.append(ch)
        self.middle_block = Seq([ResBlock(ch, ch, emb), st(ch, cfg["transformerDepth"][-1]), ResBlock(ch, ch, emb)])
        self.skip_channels = list(chans)
        self.output_blocks = nn.ModuleList()
        for level in reversed(range(levels)):
            mult = cfg["channelMult"][level]
            for i in range(cfg["numResBlocks"] + 1):
                layers = [ResBlock(ch + chans.pop(), mult * mc, emb)]
                ch = mult * mc
                if cfg["attentionLevels"][level]:
                    layers.append(st(ch, cfg["transformerDepth"][level]))
                if level and i == cfg["numResBlocks"]:
                    layers.append(Upsample(ch))
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(group_norm(ch, 1e-5), nn.SiLU(), nn.Conv2d(ch, cfg["outChannels"], 3, padding=1))

    def embed(self, timesteps, y):
        emb = self.time_embed(timestep_embedding(timesteps, self.cfg["modelChannels"]))
        return emb if y is None else emb + self.label_emb(y)

    def forward(self, x, timesteps, context, y=None, control=None):
        """control: a ControlNet's residuals, one per skip then the middle (cldm's ControlledUnetModel)."""
        emb = self.embed(timesteps, y)
        hs = []
        h = x
        for blk in self.input_blocks:
            h = blk(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        if control is not None:
            hs = [s + c for s, c in zip(hs, control[:-1])]
            h = h + control[-1]
        for blk in self.output_blocks:
            h = torch.cat([h, hs.pop()], dim=1)
            size = hs[-1].shape[-2:] if hs else None
            h = blk(h, emb, context, size)
        return self.out(h)


class ControlNet(UNetModel):
    """Zhang et al. 2023, "Adding Conditional Control to Text-to-Image Diffusion Models", sec. 3:
    a trainable copy of the UNet's encoder and middle block; the control image passes a small conv
    stack (the hint, cldm's input_hint_block: pairs of 3x3 convs, the second of each inner pair
    stride 2, SiLU between) whose output is added after conv_in; each skip and the middle output
    leave through a 1x1 "zero conv". Keys as lllyasviel/ControlNet's cldm.ControlNet."""

    def __init__(self, cfg, hint_in, hint_channels):
        super().__init__(cfg)
        del self.output_blocks, self.out
        layers, cin, n = [], hint_in, len(hint_channels)
        for j, c in enumerate(hint_channels):
            if j:
                layers.append(nn.SiLU())
            stride = 2 if j % 2 == 0 and 0 < j < n - 1 else 1
            layers.append(nn.Conv2d(cin, c, 3, padding=1, stride=stride))
            cin = c
        self.input_hint_block = nn.Sequential(*layers)
        self.zero_convs = nn.ModuleList([nn.Sequential(nn.Conv2d(c, c, 1)) for c in self.skip_channels])
        ch = self.skip_channels[-1]
        self.middle_block_out = nn.Sequential(nn.Conv2d(ch, ch, 1))

    def forward(self, x, timesteps, context, hint, scale, y=None):
        emb = self.embed(timesteps, y)
        guided = self.input_hint_block(hint)
        outs, h = [], x
        for i, blk in enumerate(self.input_blocks):
            h = blk(h, emb, context)
            if i == 0:
                h = h + guided
            outs.append(self.zero_convs[i](h))
        h = self.middle_block(h, emb, context)
        outs.append(self.middle_block_out(h))
        return [o * scale for o in outs]


def sdxl_label(text_embeds, time_ids):
    """y = [pooled text embeds | sinusoidal(time_ids, 256) flattened per sample]."""
    b = time_ids.shape[0]
    return torch.cat([text_embeds, timestep_embedding(time_ids.flatten(), 256).reshape(b, -1)], dim=1)


# ---------------------------------------------------------------------------------------------
# AutoencoderKL


def vae_norm(c):
    return nn.GroupNorm(32, c, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = vae_norm(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = vae_norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = vae_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(b, c, -1).transpose(1, 2) for m in (self.q, self.k, self.v))
        out = attention(q, k, v, 1).transpose(1, 2).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class Mid(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block_1 = ResnetBlock(c, c)
        self.attn_1 = AttnBlock(c)
        self.block_2 = ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class DownLevel(nn.Module):
    def __init__(self, blocks, down_c):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if down_c:
            self.downsample = nn.Module()
            self.downsample.conv = nn.Conv2d(down_c, down_c, 3, stride=2, padding=0)


class UpLevel(nn.Module):
    def __init__(self, blocks, up_c):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        if up_c:
            self.upsample = nn.Module()
            self.upsample.conv = nn.Conv2d(up_c, up_c, 3, padding=1)


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, n = cfg["ch"], cfg["chMult"], cfg["numResBlocks"]
        self.conv_in = nn.Conv2d(cfg["inChannels"], ch, 3, padding=1)
        self.down = nn.ModuleList()
        c = ch
        for level, m in enumerate(mult):
            blocks = []
            for _ in range(n):
                blocks.append(ResnetBlock(c, ch * m))
                c = ch * m
            self.down.append(DownLevel(blocks, c if level != len(mult) - 1 else 0))
        self.mid = Mid(c)
        self.norm_out = vae_norm(c)
        self.conv_out = nn.Conv2d(c, 2 * cfg["zChannels"], 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in self.down:
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample.conv(F.pad(h, (0, 1, 0, 1)))  # right and bottom only
        return self.conv_out(F.silu(self.norm_out(self.mid(h))))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, n = cfg["ch"], cfg["chMult"], cfg["numResBlocks"]
        c = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg["zChannels"], c, 3, padding=1)
        self.mid = Mid(c)
        ups = []
        for level in reversed(range(len(mult))):
            blocks = []
            for _ in range(n + 1):
                blocks.append(ResnetBlock(c, ch * mult[level]))
                c = ch * mult[level]
            ups.insert(0, UpLevel(blocks, c if level != 0 else 0))
        self.up = nn.ModuleList(ups)
        self.norm_out = vae_norm(c)
        self.conv_out = nn.Conv2d(c, cfg["outChannels"], 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for lvl in reversed(self.up):
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg["zChannels"], 2 * cfg["embedDim"], 1)
        self.post_quant_conv = nn.Conv2d(cfg["embedDim"], cfg["zChannels"], 1)

    def encode_moments(self, x):
        """Mean and log-variance, [B, 2 embed, h, w] (the latent scale is outside)."""
        return self.quant_conv(self.encoder(x))

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ---------------------------------------------------------------------------------------------
# CLIP text transformers


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def causal_mask(n):
    return torch.full((n, n), float("-inf")).triu(1)


class HFAttention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mask):
        return self.out_proj(attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.heads, mask))


class HFMlp(nn.Module):
    def __init__(self, d, act):
        super().__init__()
        self.act = act
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class HFLayer(nn.Module):
    def __init__(self, d, heads, act):
        super().__init__()
        self.self_attn = HFAttention(d, heads)
        self.layer_norm1 = nn.LayerNorm(d)
        self.mlp = HFMlp(d, act)
        self.layer_norm2 = nn.LayerNorm(d)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class HFEmbeddings(nn.Module):
    def __init__(self, vocab, positions, d):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, d)
        self.position_embedding = nn.Embedding(positions, d)


class HFEncoder(nn.Module):
    def __init__(self, d, layers, heads, act):
        super().__init__()
        self.layers = nn.ModuleList(HFLayer(d, heads, act) for _ in range(layers))


class HFTextModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["width"]
        act = quick_gelu if cfg["activation"] == "quick_gelu" else F.gelu
        self.embeddings = HFEmbeddings(cfg["vocabSize"], cfg["maxPositions"], d)
        self.encoder = HFEncoder(d, cfg["layers"], cfg["heads"], act)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, ids, layers=None):
        """Hidden states of every layer (embeddings first), and the final-LN'd output of `layers`."""
        n = ids.shape[1]
        x = self.embeddings.token_embedding(ids) + self.embeddings.position_embedding.weight[:n]
        mask = causal_mask(n)
        hidden = [x]
        for layer in self.encoder.layers[: layers or len(self.encoder.layers)]:
            x = layer(x, mask)
            hidden.append(x)
        return hidden, self.final_layer_norm(x)


class HFClip(nn.Module):
    """`<prefix>text_model.*`, as SD 1.x and SDXL's first encoder store it."""

    def __init__(self, cfg):
        super().__init__()
        self.text_model = HFTextModel(cfg)

    def forward(self, ids, layers=None):
        return self.text_model(ids, layers)


class OpenClipAttention(nn.Module):
    """nn.MultiheadAttention's parameters: in_proj_weight [3d, d] (q, k, v rows), out_proj."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
        self.out_proj = nn.Linear(d, d)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.normal_(self.in_proj_bias, std=0.02)

    def forward(self, x, mask):
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        return self.out_proj(attention(q, k, v, self.heads, mask))


class OpenClipMlp(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.c_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        return self.c_proj(F.gelu(self.c_fc(x)))


class OpenClipBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = OpenClipAttention(d, heads)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = OpenClipMlp(d)

    def forward(self, x, mask):
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class OpenClipTransformer(nn.Module):
    def __init__(self, d, layers, heads):
        super().__init__()
        self.resblocks = nn.ModuleList(OpenClipBlock(d, heads) for _ in range(layers))


class OpenClip(nn.Module):
    """`<prefix>*` as SD 2.x (cond_stage_model.model.) and SDXL (conditioner.embedders.1.model.)."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg["width"]
        self.token_embedding = nn.Embedding(cfg["vocabSize"], d)
        self.positional_embedding = nn.Parameter(torch.randn(cfg["maxPositions"], d) * 0.01)
        self.transformer = OpenClipTransformer(d, cfg["layers"], cfg["heads"])
        self.ln_final = nn.LayerNorm(d)
        self.text_projection = nn.Parameter(torch.randn(d, cfg["projectionDim"] or d) * d**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, ids, layers=None):
        n = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:n]
        mask = causal_mask(n)
        hidden = [x]
        for blk in self.transformer.resblocks[: layers or len(self.transformer.resblocks)]:
            x = blk(x, mask)
            hidden.append(x)
        return hidden, self.ln_final(x)


def pool_eos(last, ids):
    """Features at the first position of the highest id (CLIP's text.argmax(dim=-1))."""
    return last[torch.arange(last.shape[0]), ids.argmax(dim=-1)]


# ---------------------------------------------------------------------------------------------
# Stable Diffusion's safety checker: a CLIP vision tower (Radford et al. 2021; Dosovitskiy et al.
# 2021, "An Image is Worth 16x16 Words": patches, a class token, learned positions) in Hugging
# Face's naming, with `pre_layrnorm` (sic) before the encoder and `post_layernorm` on the class
# token, then diffusers' StableDiffusionSafetyChecker head: a bias-free visual_projection and the
# cosines against the concept embeddings.


class HFVisionEmbeddings(nn.Module):
    def __init__(self, d, patch, image):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.randn(d) * 0.5)
        self.patch_embedding = nn.Conv2d(3, d, patch, stride=patch, bias=False)
        self.position_embedding = nn.Embedding((image // patch) ** 2 + 1, d)

    def forward(self, x):
        p = self.patch_embedding(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, p], dim=1) + self.position_embedding.weight


class HFVisionTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["width"]
        self.embeddings = HFVisionEmbeddings(d, cfg["patch"], cfg["imageSize"])
        self.pre_layrnorm = nn.LayerNorm(d)
        self.encoder = HFEncoder(d, cfg["layers"], cfg["heads"], quick_gelu)
        self.post_layernorm = nn.LayerNorm(d)

    def forward(self, x):
        x = self.pre_layrnorm(self.embeddings(x))
        for layer in self.encoder.layers:
            x = layer(x, None)
        return self.post_layernorm(x[:, 0])


class HFVisionModel(nn.Module):
    """transformers' CLIPVisionModel wraps the transformer as `.vision_model`."""

    def __init__(self, cfg):
        super().__init__()
        self.vision_model = HFVisionTransformer(cfg)


class SafetyChecker(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.vision_model = HFVisionModel(cfg)
        self.visual_projection = nn.Linear(cfg["width"], cfg["projectionDim"], bias=False)
        self.concept_embeds = nn.Parameter(torch.randn(cfg["concepts"], cfg["projectionDim"]))
        self.special_care_embeds = nn.Parameter(torch.randn(cfg["specialConcepts"], cfg["projectionDim"]))
        self.concept_embeds_weights = nn.Parameter(torch.full((cfg["concepts"],), 0.2))
        self.special_care_embeds_weights = nn.Parameter(torch.full((cfg["specialConcepts"],), 0.2))

    def image_embeds(self, clip_input):
        return self.visual_projection(self.vision_model.vision_model(clip_input))

    def cosines(self, embeds):
        """diffusers' cosine_distance against both concept sets."""
        img = F.normalize(embeds)
        return img @ F.normalize(self.special_care_embeds).t(), img @ F.normalize(self.concept_embeds).t()


def safety_decisions(special_cos, cos, special_w, concept_w):
    """The loop of diffusers' StableDiffusionSafetyChecker.forward, per image: (flagged,
    special scores, concept scores)."""
    out = []
    for i in range(special_cos.shape[0]):
        adjustment = 0.0
        special = []
        for k in range(special_cos.shape[1]):
            s = round(float(special_cos[i, k]) - float(special_w[k]) + adjustment, 3)
            special.append(s)
            if s > 0:
                adjustment = 0.01
        concepts = [round(float(cos[i, k]) - float(concept_w[k]) + adjustment, 3) for k in range(cos.shape[1])]
        out.append((any(c > 0 for c in concepts), special, concepts))
    return out
