#!/usr/bin/env python3
"""Record the full-size key sets (names and shapes) of SD 1.5, SD 2.1 and SDXL base checkpoints.

Not run by CI. It instantiates the UNet and the AutoencoderKL of the public original sources
(CompVis/stable-diffusion, Stability-AI/stablediffusion, Stability-AI/generative-models) with
their inference yaml's parameters, on torch's meta device (no memory for the weights), and dumps
their state_dict names and shapes under the prefixes a checkpoint uses. The text encoders are
written from their public configs (Hugging Face CLIPTextModel naming for CLIP ViT-L/14;
OpenCLIP's text tower naming for ViT-H/14 and ViT-bigG/14, its vision tower deleted as the
ldm/sgm embedders do), and the ldm/sgm buffers that checkpoints carry are added by name.

  python3 tools/convert/record_keysets.py SOURCES_DIR OUT_DIR

SOURCES_DIR holds the three repositories unpacked as CompVis+stable-diffusion,
Stability-AI+stablediffusion and Stability-AI+generative-models. Needs python3-torch (1.13).
"""
import gzip
import importlib
import json
import os
import sys
import tempfile
import types

import torch

SRC, OUT = sys.argv[1], sys.argv[2]


def stub_modules():
    """Modules imported at the top of the sources but not needed to build the modules."""
    for name in ['einops', 'fsspec', 'omegaconf', 'omegaconf.listconfig', 'safetensors', 'safetensors.torch']:
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.rearrange = m.repeat = m.load_file = lambda *a, **k: None
            m.ListConfig = m.OmegaConf = m.DictConfig = type('Config', (), {})
            sys.modules[name] = m
    if 'packaging' not in sys.modules:
        try:
            import packaging.version  # noqa: F401
        except ImportError:
            pkg = types.ModuleType('packaging')
            pkg.version = types.ModuleType('packaging.version')
            pkg.version.parse = lambda s: tuple(int(x) for x in s.split('+')[0].split('.')[:3] if x.isdigit())
            sys.modules['packaging'] = pkg
            sys.modules['packaging.version'] = pkg.version
    # sgm/ldm package __init__ files import Lightning; bare packages avoid that.


def bare_package(name, path):
    m = types.ModuleType(name)
    m.__path__ = [path]
    sys.modules[name] = m


_factories = {}


def meta_factories(on):
    """Make torch's factories allocate on the meta device while the modules are built."""
    names = ['empty', 'zeros', 'ones', 'randn', 'rand', 'full', 'arange', 'tensor']
    if on:
        for n in names:
            f = getattr(torch, n)
            _factories[n] = f

            def wrapped(*a, _f=f, **k):
                if k.get('device') is None:
                    k['device'] = 'meta'
                return _f(*a, **k)

            setattr(torch, n, wrapped)
    else:
        for n, f in _factories.items():
            setattr(torch, n, f)


def load_from(repo, pkg, modules):
    for k in list(sys.modules):
        if k == pkg or k.startswith(pkg + '.'):
            del sys.modules[k]
    root = os.path.join(SRC, repo, pkg)
    bare_package(pkg, root)
    for sub in ['modules', 'modules/diffusionmodules', 'models']:
        bare_package(pkg + '.' + sub.replace('/', '.'), os.path.join(root, sub))
    loaded = [importlib.import_module(pkg + '.' + m) for m in modules]
    attention = sys.modules.get(pkg + '.modules.attention')
    if attention is not None and hasattr(attention, 'SDP_IS_AVAILABLE'):
        # sgm refuses plain softmax attention on torch < 2 at construction; the parameters are
        # the same either way, and nothing runs here.
        attention.SDP_IS_AVAILABLE = True
    model = sys.modules.get(pkg + '.modules.diffusionmodules.model')
    if model is not None and hasattr(model, 'XFORMERS_IS_AVAILABLE'):
        # Same for the VAE's attention block (q, k, v, proj_out in both forms).
        model.XFORMERS_IS_AVAILABLE = True
    return loaded


def state(prefix, module):
    return [(prefix + k, list(v.shape)) for k, v in module.state_dict().items()]


def vae(Encoder, Decoder):
    dd = dict(double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
              ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    keys = state('first_stage_model.encoder.', Encoder(**dd))
    keys += state('first_stage_model.decoder.', Decoder(**dd))
    keys += [('first_stage_model.quant_conv.weight', [8, 8, 1, 1]),
             ('first_stage_model.quant_conv.bias', [8]),
             ('first_stage_model.post_quant_conv.weight', [4, 4, 1, 1]),
             ('first_stage_model.post_quant_conv.bias', [4])]
    return keys


def hf_clip(prefix, width=768, layers=12, mlp=3072):
    """transformers' CLIPTextModel (openai/clip-vit-large-patch14 text config)."""
    p = prefix + 'text_model.'
    keys = [(p + 'embeddings.token_embedding.weight', [49408, width]),
            (p + 'embeddings.position_embedding.weight', [77, width]),
            (p + 'embeddings.position_ids', [1, 77])]
    for i in range(layers):
        q = f'{p}encoder.layers.{i}.'
        for proj in ['k_proj', 'v_proj', 'q_proj', 'out_proj']:
            keys += [(f'{q}self_attn.{proj}.weight', [width, width]), (f'{q}self_attn.{proj}.bias', [width])]
        keys += [(q + 'layer_norm1.weight', [width]), (q + 'layer_norm1.bias', [width]),
                 (q + 'mlp.fc1.weight', [mlp, width]), (q + 'mlp.fc1.bias', [mlp]),
                 (q + 'mlp.fc2.weight', [width, mlp]), (q + 'mlp.fc2.bias', [width]),
                 (q + 'layer_norm2.weight', [width]), (q + 'layer_norm2.bias', [width])]
    keys += [(p + 'final_layer_norm.weight', [width]), (p + 'final_layer_norm.bias', [width])]
    return keys


def open_clip_text(prefix, width, layers, embed):
    """open_clip's CLIP text tower (model configs ViT-H-14 and ViT-bigG-14), visual deleted."""
    keys = [(prefix + 'positional_embedding', [77, width]),
            (prefix + 'text_projection', [width, embed]),
            (prefix + 'logit_scale', []),
            (prefix + 'token_embedding.weight', [49408, width])]
    for i in range(layers):
        q = f'{prefix}transformer.resblocks.{i}.'
        keys += [(q + 'ln_1.weight', [width]), (q + 'ln_1.bias', [width]),
                 (q + 'attn.in_proj_weight', [3 * width, width]), (q + 'attn.in_proj_bias', [3 * width]),
                 (q + 'attn.out_proj.weight', [width, width]), (q + 'attn.out_proj.bias', [width]),
                 (q + 'ln_2.weight', [width]), (q + 'ln_2.bias', [width]),
                 (q + 'mlp.c_fc.weight', [4 * width, width]), (q + 'mlp.c_fc.bias', [4 * width]),
                 (q + 'mlp.c_proj.weight', [width, 4 * width]), (q + 'mlp.c_proj.bias', [width])]
    keys += [(prefix + 'ln_final.weight', [width]), (prefix + 'ln_final.bias', [width])]
    return keys


DDPM_BUFFERS = ['betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_alphas_cumprod',
                'sqrt_one_minus_alphas_cumprod', 'log_one_minus_alphas_cumprod',
                'sqrt_recip_alphas_cumprod', 'sqrt_recipm1_alphas_cumprod', 'posterior_variance',
                'posterior_log_variance_clipped', 'posterior_mean_coef1', 'posterior_mean_coef2']


def write(name, source, keys):
    os.makedirs(OUT, exist_ok=True)
    data = {'name': name, 'source': source, 'tensors': keys}
    with gzip.open(os.path.join(OUT, name + '.json.gz'), 'wt') as f:
        json.dump(data, f, separators=(',', ':'))
    print(name, len(keys), 'tensors')


def main():
    stub_modules()
    meta_factories(True)
    try:
        # SD 1.5: configs/stable-diffusion/v1-inference.yaml
        oa, mdl = load_from('CompVis+stable-diffusion', 'ldm',
                            ['modules.diffusionmodules.openaimodel', 'modules.diffusionmodules.model'])
        unet = oa.UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320,
                            attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4],
                            num_heads=8, use_spatial_transformer=True, transformer_depth=1,
                            context_dim=768, use_checkpoint=True, legacy=False)
        keys = state('model.diffusion_model.', unet) + vae(mdl.Encoder, mdl.Decoder)
        keys += hf_clip('cond_stage_model.transformer.')
        keys += [(b, [1000]) for b in DDPM_BUFFERS]
        write('sd15', 'CompVis/stable-diffusion configs/stable-diffusion/v1-inference.yaml', keys)

        # SD 2.1 (768-v): configs/stable-diffusion/v2-inference-v.yaml
        oa, mdl = load_from('Stability-AI+stablediffusion', 'ldm',
                            ['modules.diffusionmodules.openaimodel', 'modules.diffusionmodules.model'])
        unet = oa.UNetModel(use_checkpoint=True, use_fp16=False, image_size=32, in_channels=4,
                            out_channels=4, model_channels=320, attention_resolutions=[4, 2, 1],
                            num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_head_channels=64,
                            use_spatial_transformer=True, use_linear_in_transformer=True,
                            transformer_depth=1, context_dim=1024, legacy=False)
        keys = state('model.diffusion_model.', unet) + vae(mdl.Encoder, mdl.Decoder)
        keys += open_clip_text('cond_stage_model.model.', 1024, 24, 1024)
        keys += [(b, [1000]) for b in DDPM_BUFFERS]
        write('sd21', 'Stability-AI/stablediffusion configs/stable-diffusion/v2-inference-v.yaml', keys)

        # SDXL base: configs/inference/sd_xl_base.yaml
        oa, mdl = load_from('Stability-AI+generative-models', 'sgm',
                            ['modules.diffusionmodules.openaimodel', 'modules.diffusionmodules.model'])
        unet = oa.UNetModel(adm_in_channels=2816, num_classes='sequential', use_checkpoint=True,
                            in_channels=4, out_channels=4, model_channels=320,
                            attention_resolutions=[4, 2], num_res_blocks=2, channel_mult=[1, 2, 4],
                            num_head_channels=64, use_linear_in_transformer=True,
                            transformer_depth=[1, 2, 10], context_dim=2048,
                            spatial_transformer_attn_type='softmax')
        keys = state('model.diffusion_model.', unet) + vae(mdl.Encoder, mdl.Decoder)
        keys += hf_clip('conditioner.embedders.0.transformer.')
        keys += open_clip_text('conditioner.embedders.1.model.', 1280, 32, 1280)
        keys += [('denoiser.sigmas', [1000])]
        write('sdxl', 'Stability-AI/generative-models configs/inference/sd_xl_base.yaml', keys)
    finally:
        meta_factories(False)


main()
