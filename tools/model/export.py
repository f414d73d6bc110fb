"""Export trained latent-shapes weights to the diffusers ONNX layout the studio loads.

    /usr/bin/python3 tools/model/export.py [--work .cache/model-train] [--out resources/models/latent-shapes]
    /usr/bin/python3 tools/model/export.py --inpaint [--out resources/models/latent-shapes-inpainting]

Reads vae.pt and unet.pt (or, with --inpaint, inpaint.pt; the EMA weights) from the training
folder and writes:

  model_index.json                 OnnxStableDiffusionPipeline (OnnxStableDiffusionInpaintPipeline)
  text_encoder/model.onnx          input_ids int32 [batch,sequence] -> last_hidden_state, pooler_output
  unet/model.onnx                  sample [batch,4 (9),height,width], timestep float32 [batch],
                                   encoder_hidden_states [batch,sequence,128] -> out_sample
  vae_encoder/model.onnx           sample [batch,3,H,W] in [-1,1] -> latent_sample (the posterior mean)
  vae_decoder/model.onnx           latent_sample -> sample [batch,3,8h,8w]
  */config.json                    optimum-style: unet sample_size 8 (so 64x64 native), VAE scaling_factor
  tokenizer/                       CLIP-format vocab.json, merges.txt, special_tokens_map.json, tokenizer_config.json
  scheduler/scheduler_config.json  SD 1.5's PNDM config (scaled_linear 0.00085-0.012, epsilon, leading, offset 1)
  README.md, about.json            the model card

The VAE graphs carry the per-channel latent normalisation, so `latent_sample * 0.18215` (SD's scaling
factor, which the engine also assumes when a VAE has no config) is the zero-mean, unit-variance latent
the UNet was trained on.

Weights are stored as float16 and computed in float32: every float32 initializer of 64 or more
values becomes a float16 initializer and a Cast node, which ONNX Runtime folds back into float32
constants when the session is created. Inputs, outputs and arithmetic stay float32, and the files
are half the size (both models fit the 25 MB budget). Measured on the held-out prompts: the same
images are recognised as with the float32 files (0 of 300 verdicts changed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import dataset  # noqa: E402
from models import VAE, UNet, count  # noqa: E402

OPSET = 17
SCALING = 0.18215


class TextEncoderGraph(nn.Module):
    def __init__(self, te):
        super().__init__()
        self.te = te

    def forward(self, input_ids):
        return self.te(input_ids)


class UNetGraph(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states):
        return self.unet(sample, timestep, encoder_hidden_states)


class VaeEncoderGraph(nn.Module):
    def __init__(self, vae, mean, std):
        super().__init__()
        self.encoder = vae.encoder
        self.register_buffer("mu", mean.view(1, -1, 1, 1).clone())
        self.register_buffer("inv", (1.0 / (std * SCALING)).view(1, -1, 1, 1).clone())

    def forward(self, sample):
        mean = self.encoder(sample)[:, :4]
        return (mean - self.mu) * self.inv


class VaeDecoderGraph(nn.Module):
    def __init__(self, vae, mean, std):
        super().__init__()
        self.decoder = vae.decoder
        self.register_buffer("mu", mean.view(1, -1, 1, 1).clone())
        self.register_buffer("scale", (std * SCALING).view(1, -1, 1, 1).clone())

    def forward(self, latent_sample):
        return self.decoder(latent_sample * self.scale + self.mu)


def onnx_export(module: nn.Module, args: tuple, path: str, inputs: list, outputs: list, axes: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    module.eval()
    torch.onnx.export(module, args, path, input_names=inputs, output_names=outputs, dynamic_axes=axes,
                      opset_version=OPSET, do_constant_folding=True)
    import onnx

    model = onnx.load(path)
    onnx.checker.check_model(model)
    model.producer_name = "latent-studio tools/model/export.py"
    onnx.save(model, path)
    store_half(path)


def store_half(path: str, min_values: int = 64) -> None:
    """Float16 storage for the graph's float32 weights, cast back to float32 inside the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(path)
    graph = model.graph
    casts, initializers = [], []
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT and int(np.prod(init.dims)) >= min_values:
            weights = numpy_helper.to_array(init)
            if np.abs(weights).max() > 60000:
                initializers.append(init)  # outside float16's range: leave it as it is
                continue
            half = numpy_helper.from_array(weights.astype(np.float16), init.name + "::fp16")
            initializers.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "::to_float"))
        else:
            initializers.append(init)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def write_json(path: str, value) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def export(work: str, out: str, evaluation: dict | None = None, inpaint: bool = False) -> None:
    from train import CONFIG, make_models

    torch.set_num_threads(1)
    tok = dataset.Tokenizer()
    ck = torch.load(os.path.join(work, "inpaint.pt" if inpaint else "unet.pt"))
    te, unet = make_models(tok)
    channels = 9 if inpaint else 4
    if inpaint:
        u = CONFIG["unet"]
        unet = UNet(tuple(u["channels"]), ctx_dim=CONFIG["text"]["width"], heads=u["heads"], in_ch=9)
    te.load_state_dict(ck["text_encoder"])
    unet.load_state_dict(ck["unet"])
    vae = VAE()
    vae.load_state_dict(torch.load(os.path.join(work, "vae.pt")))
    for m in (te, unet, vae):
        m.eval()
    mean, std = ck["latent_mean"], ck["latent_std"]
    width = CONFIG["text"]["width"]

    # Keep about.json's evaluation figure across re-exports unless a new one is given.
    about_path = os.path.join(out, "about.json")
    if evaluation is None and os.path.exists(about_path):
        evaluation = json.load(open(about_path)).get("evaluation")
    if os.path.isdir(out):
        shutil.rmtree(out)
    os.makedirs(out)

    ids = torch.tensor([tok.encode("a small red circle in the top left on a blue background")], dtype=torch.int32)
    onnx_export(TextEncoderGraph(te), (ids,), os.path.join(out, "text_encoder", "model.onnx"),
                ["input_ids"], ["last_hidden_state", "pooler_output"],
                {"input_ids": {0: "batch", 1: "sequence"}, "last_hidden_state": {0: "batch", 1: "sequence"},
                 "pooler_output": {0: "batch"}})
    sample = torch.randn(2, channels, 8, 8)
    ctx = torch.randn(2, 77, width)
    onnx_export(UNetGraph(unet), (sample, torch.tensor([500.0, 20.0]), ctx), os.path.join(out, "unet", "model.onnx"),
                ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
                {"sample": {0: "batch", 2: "height", 3: "width"}, "timestep": {0: "batch"},
                 "encoder_hidden_states": {0: "batch", 1: "sequence"},
                 "out_sample": {0: "batch", 2: "height", 3: "width"}})
    onnx_export(VaeEncoderGraph(vae, mean, std), (torch.randn(1, 3, 64, 64),),
                os.path.join(out, "vae_encoder", "model.onnx"), ["sample"], ["latent_sample"],
                {"sample": {0: "batch", 2: "height", 3: "width"},
                 "latent_sample": {0: "batch", 2: "latent_height", 3: "latent_width"}})
    onnx_export(VaeDecoderGraph(vae, mean, std), (torch.randn(1, 4, 8, 8),),
                os.path.join(out, "vae_decoder", "model.onnx"), ["latent_sample"], ["sample"],
                {"latent_sample": {0: "batch", 2: "latent_height", 3: "latent_width"},
                 "sample": {0: "batch", 2: "height", 3: "width"}})

    # optimum-style configs beside the graphs: the engine reads unet sample_size (native size)
    # and the VAE's scaling_factor from them.
    u = CONFIG["unet"]
    write_json(os.path.join(out, "unet", "config.json"), {
        "_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": channels, "out_channels": 4,
        "block_out_channels": u["channels"], "cross_attention_dim": width,
        "attention_head_dim": [c // u["heads"] for c in u["channels"]], "layers_per_block": 1})
    vae_cfg = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
               "sample_size": 64, "scaling_factor": SCALING, "force_upcast": False}
    write_json(os.path.join(out, "vae_encoder", "config.json"), vae_cfg)
    write_json(os.path.join(out, "vae_decoder", "config.json"), vae_cfg)
    t = CONFIG["text"]
    write_json(os.path.join(out, "text_encoder", "config.json"), {
        "_class_name": "CLIPTextModel", "hidden_size": width, "num_hidden_layers": t["layers"],
        "num_attention_heads": t["heads"], "max_position_embeddings": 77, "vocab_size": tok.size,
        "bos_token_id": tok.bos, "eos_token_id": tok.eos, "pad_token_id": tok.eos})
    dataset.write_tokenizer(os.path.join(out, "tokenizer"))
    s = CONFIG["schedule"]
    write_json(os.path.join(out, "scheduler", "scheduler_config.json"), {
        "_class_name": "PNDMScheduler", "beta_start": s["beta_start"], "beta_end": s["beta_end"],
        "beta_schedule": "scaled_linear", "num_train_timesteps": s["steps"], "prediction_type": "epsilon",
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False,
        "trained_betas": None})
    write_json(os.path.join(out, "model_index.json"), {
        "_class_name": "OnnxStableDiffusionInpaintPipeline" if inpaint else "OnnxStableDiffusionPipeline",
        "_diffusers_version": "0.30.0", "_name_or_path": os.path.basename(out), "feature_extractor": [None, None], "requires_safety_checker": False,
        "safety_checker": [None, None], "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["diffusers", "OnnxRuntimeModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "OnnxRuntimeModel"], "vae_decoder": ["diffusers", "OnnxRuntimeModel"],
        "vae_encoder": ["diffusers", "OnnxRuntimeModel"]})

    params = {"text_encoder": count(te), "unet": count(unet), "vae_encoder": count(vae.encoder),
              "vae_decoder": count(vae.decoder)}
    made = ("Trained from scratch on one CPU thread with tools/model/train.py (PyTorch), then exported to ONNX "
            "with tools/model/export.py (weights stored as float16, computed in float32). A VAE (8x "
            "downsampling, 4 latent channels), a 2-layer CLIP-style text encoder with its own 600-token BPE "
            "vocabulary and a conditional UNet with cross-attention (epsilon prediction, SD 1.5's noise "
            "schedule, EMA weights). No outside data or weights.")
    about = {
        "name": os.path.basename(out),
        "title": "Latent Shapes Inpainting (built-in)" if inpaint else "Latent Shapes (built-in)",
        "description": describe(inpaint),
        "how_made": made + (f" The inpainting UNet is the text-to-image one with 5 more input channels (the mask "
                            f"and the masked image's latents, diffusers' 9-channel layout), fine-tuned for "
                            f"{ck['steps']} steps on object, rectangle and full masks with the text encoder "
                            f"frozen." if inpaint else ""),
        "native_size": [64, 64],
        "vocabulary": {"colors": dataset.COLOR_NAMES, "shapes": dataset.SHAPES,
                       "sizes": [w for s in dataset.SPEC["sizes"].values() for w in s["synonyms"]],
                       "positions": [p for v in dataset.SPEC["positions"].values() for p in v["phrases"]]},
        "kind": "inpainting" if inpaint else "text-to-image",
        "example_prompts": ["a small red circle in the top left on a blue background",
                            "a large yellow star in the center on a purple background",
                            "a green triangle on the right on a white background"],
        "recommended": {"sampler": "euler_a", "steps": 20, "guidance": 5, **({"strength": 1} if inpaint else {})},
        "parameters": params,
        "training": ({"unet_steps": ck["base_steps"], "inpaint_steps": ck["steps"], "config": CONFIG} if inpaint
                     else {"unet_steps": ck["steps"], "config": CONFIG}),
        "evaluation": evaluation,
        "license": "MIT",
    }
    write_json(about_path, about)
    write_card(out, about)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"exported to {out}: {total / 1e6:.1f} MB, parameters {params}")


WORLD = ("procedurally drawn shapes: one circle, square, triangle or star, in one of 8 colours, small or large, "
         "at one of 9 positions, on a plain background of another colour. 64x64 pixels.")


def describe(inpaint: bool) -> str:
    """The model card's first paragraph, which the studio's Models view shows: what it is and how it
    was made."""
    if inpaint:
        return ("The inpainting variant of Latent Shapes (9 input channels: latents, mask, masked image), "
                "fine-tuned from it by the Latent Studio project with tools/model/train.py; it repaints the "
                f"painted part of a picture of {WORLD}")
    return ("A small latent diffusion model trained from scratch by the Latent Studio project, on one CPU "
            "thread with no outside data or weights (tools/model/train.py), on " + WORLD)


def write_card(out: str, about: dict) -> None:
    ev = about.get("evaluation")
    seeds = ev.get("seeds_per_prompt", 1) if ev else 1
    prompts = f" ({ev['images'] // seeds} prompts, {seeds} seeds each)" if ev and seeds > 1 else ""
    inpaint = about.get("kind") == "inpainting"
    if not ev:
        figure = "Not evaluated yet: run `npm run eval-model`."
    elif inpaint:
        base = ev.get("baseline")
        figure = (f"Replacing the object of a generated picture: the object's box (grown by 4 pixels) is masked "
                  f"and a held-out prompt asks for another colour and shape in its place. In "
                  f"{ev['both_percent']:.1f}% of {ev['images']} cases{prompts} the result shows the asked colour "
                  f"and shape (colour {ev['color_percent']:.1f}%, shape {ev['shape_percent']:.1f}%; "
                  f"{ev['sampler']}, {ev['steps']} steps, guidance {ev['guidance']}, strength {ev.get('strength', 1)})"
                  + (f"; the text-to-image model with the engine's 4-channel latent blending manages "
                     f"{base['both_percent']:.1f}% of the same cases" if base else "")
                  + ". Measured from pixels by tools/model/eval.ts --task inpaint through the studio's engine.")
    else:
        figure = (f"{ev['both_percent']:.1f}% of {ev['images']} images from held-out prompts{prompts} show the "
                  f"asked colour and shape (colour {ev['color_percent']:.1f}%, shape {ev['shape_percent']:.1f}%; "
                  f"{ev['sampler']}, {ev['steps']} steps, guidance {ev['guidance']}), measured from pixels "
                  f"by tools/model/eval.ts through the studio's engine.")
    p = about["parameters"]
    intro = ("Use it in the Inpaint mode: paint over the part to change (for example the object) and describe "
             "the whole picture as it should be. In the other modes the engine masks everything (as "
             "AUTOMATIC1111 does), so it also draws from text alone. It loads through the same code as any "
             "downloaded inpainting model (diffusers ONNX layout, SD 1.x inpainting pipeline: 9 input "
             "channels)."
             if inpaint else
             "It is what a fresh install of Latent Studio generates with before any other model is added, and "
             "it loads through the same code as any downloaded model (diffusers ONNX layout, SD 1.x pipeline).")
    text = f"""# {about['title'].replace(' (built-in)', '')} (built-in model)

{about['description']}

{intro}

- Native size: 64x64 (8x8x4 latents). Other sizes run but were never trained.
- Prompts: `a [small|large] <colour> <shape> [<position>] [on a <colour> background]`, e.g.
  "{about['example_prompts'][0]}".
  Colours: {', '.join(about['vocabulary']['colors'])}. Shapes: {', '.join(about['vocabulary']['shapes'])}.
  Positions: {', '.join(about['vocabulary']['positions'])}.
  Other words are not understood.
- Recommended: Euler a, 20 steps, guidance 5{', strength 1' if inpaint else ''}.

## How it was made

{about['how_made']}

Parameters: text encoder {p['text_encoder']:,}, UNet {p['unet']:,}, VAE encoder {p['vae_encoder']:,},
VAE decoder {p['vae_decoder']:,}. Reproduce with `/usr/bin/python3 tools/model/train.py`
(see tools/model/README.md).

## Evaluation

{figure}

## Limits

One object per image; no scenes, textures or photographs; 64x64 pixels. The text encoder knows
only the words above.
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def update_evaluation(out: str, evaluation: dict) -> None:
    """Record an evaluation summary (eval.ts's *.summary.json) in about.json and README.md."""
    about_path = os.path.join(out, "about.json")
    about = json.load(open(about_path))
    about["evaluation"] = evaluation
    about["description"] = describe(about.get("kind") == "inpainting")
    write_json(about_path, about)
    write_card(out, about)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=os.path.join(ROOT, ".cache", "model-train"))
    ap.add_argument("--out", help="default: resources/models/latent-shapes (-inpainting with --inpaint)")
    ap.add_argument("--evaluation", help="summary JSON written by eval.ts to record in about.json/README.md")
    ap.add_argument("--card-only", action="store_true", help="with --evaluation: only update the model card")
    ap.add_argument("--inpaint", action="store_true", help="export the inpainting variant (inpaint.pt)")
    args = ap.parse_args()
    if not args.out:
        name = "latent-shapes-inpainting" if args.inpaint else "latent-shapes"
        args.out = os.path.join(ROOT, "resources", "models", name)
    evaluation = json.load(open(args.evaluation)) if args.evaluation else None
    if args.evaluation and args.card_only:
        update_evaluation(args.out, evaluation)
        return
    export(args.work, args.out, evaluation, inpaint=args.inpaint)


if __name__ == "__main__":
    main()
