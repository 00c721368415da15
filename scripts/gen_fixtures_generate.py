#!/usr/bin/env python3
"""Fixtures for `mumu generate` (Sources/MumuSampler/Pipeline): whole text-to-image runs of diffusers'
StableDiffusionXLPipeline on the tiny random SDXL pipeline of scripts/gen_fixtures_decoder.py
(Tests/MumuSamplerTests/Fixtures/decoder/tiny-sdxl, loaded in f32 on the CPU), one per sampler setting.

Writes Tests/MumuSamplerTests/Fixtures/generate/:
  cases.json              the settings of each case (what mumu is asked for) and diffusers' scheduler class
  <case>.safetensors      `latents` (the final latents, before the VAE), `image` (output_type "np": [B, H, W, 3]
                          floats in [0, 1]) and `pixels` (the PIL image's bytes, uint8 [B, H, W, 3])
  tiny-lora.safetensors   a random LoRA (rank 4, alpha 2) in kohya's format with diffusers module names, on the UNet's
                          attention, feed-forward and resnet convs (3x3: LoCon) and on both text encoders' attention
                          and MLP
  lora.safetensors        the euler case again with that LoRA fused into the weights at scale 0.8 (see lora_case)

Cases: the issue's conformance runs (seed 42, 4 steps, 64x64, cfg 5, no negative prompt: zero embeddings) for
euler (EulerDiscreteScheduler, leading), euler_a (EulerAncestralDiscreteScheduler: ancestral noise drawn from
the same generator) and dpmpp_2m with Karras sigmas (DPMSolverMultistepScheduler, dpmsolver++, order 2); plus
ddim (DDIMScheduler, set_alpha_to_one False as SDXL's scheduler config has it) with v-prediction, trailing
spacing, a negative prompt and a 64x48 image, two images per prompt; and a one-step cfg-1 trailing euler run
(Turbo/Lightning settings: no classifier-free guidance).

Run (CPU, seconds): python3 scripts/gen_fixtures_generate.py   (diffusers 0.42, torch 2.x, transformers 5)
"""
import json
import os

import numpy as np
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, StableDiffusionXLPipeline)
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "Tests", "MumuSamplerTests", "Fixtures")
PIPE = os.path.join(FIX, "decoder", "tiny-sdxl")
OUT = os.path.join(FIX, "generate")

PROMPT = "a watercolor fox, snow at dusk"
CASES = [
    dict(name="euler", sampler="euler", spacing="leading", karras=False, prediction="epsilon", steps=4, cfg=5.0,
         seed=42, width=64, height=64, prompt=PROMPT, negative="", images=1),
    dict(name="euler_a", sampler="euler_a", spacing="leading", karras=False, prediction="epsilon", steps=4, cfg=5.0,
         seed=42, width=64, height=64, prompt=PROMPT, negative="", images=1),
    dict(name="dpmpp_2m_karras", sampler="dpmpp_2m", spacing="leading", karras=True, prediction="epsilon", steps=4,
         cfg=5.0, seed=42, width=64, height=64, prompt=PROMPT, negative="", images=1),
    dict(name="ddim_v", sampler="ddim", spacing="trailing", karras=False, prediction="v_prediction", steps=5,
         cfg=3.5, seed=7, width=64, height=48, prompt="two cats on a roof", negative="blurry, low quality", images=2),
    dict(name="turbo", sampler="euler", spacing="trailing", karras=False, prediction="epsilon", steps=1, cfg=1.0,
         seed=123, width=64, height=64, prompt=PROMPT, negative="", images=1),
]


def scheduler(pipe, case):
    cfg = dict(pipe.scheduler.config)
    cfg.update(timestep_spacing=case["spacing"], prediction_type=case["prediction"])
    if case["sampler"] == "euler":
        return EulerDiscreteScheduler.from_config(cfg, use_karras_sigmas=case["karras"])
    if case["sampler"] == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(cfg)
    if case["sampler"] == "dpmpp_2m":
        return DPMSolverMultistepScheduler.from_config(cfg, use_karras_sigmas=case["karras"],
                                                       algorithm_type="dpmsolver++", solver_order=2)
    if case["sampler"] == "ddim":
        return DDIMScheduler.from_config(cfg, set_alpha_to_one=False, clip_sample=False)
    raise ValueError(case["sampler"])


@torch.no_grad()
def main():
    torch.set_num_threads(2)
    pipe = StableDiffusionXLPipeline.from_pretrained(PIPE, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    os.makedirs(OUT, exist_ok=True)
    meta = []
    for case in CASES:
        pipe.scheduler = scheduler(pipe, case)
        args = dict(prompt=case["prompt"], negative_prompt=case["negative"] or None,
                    num_inference_steps=case["steps"], guidance_scale=case["cfg"], width=case["width"],
                    height=case["height"], num_images_per_prompt=case["images"])
        run = lambda kind: pipe(**args, output_type=kind,  # noqa: E731
                                generator=torch.Generator("cpu").manual_seed(case["seed"])).images
        latents = run("latent")
        image = run("np")
        pil = run("pil")
        pixels = np.stack([np.asarray(p) for p in pil])
        assert np.abs(pixels.astype(np.float32) / 255 - image).max() <= 0.5 / 255 + 1e-6
        save_file({"latents": latents.contiguous(), "image": torch.from_numpy(np.ascontiguousarray(image)),
                   "pixels": torch.from_numpy(pixels)}, os.path.join(OUT, case["name"] + ".safetensors"))
        meta.append(dict(case, scheduler=type(pipe.scheduler).__name__,
                         timesteps=[float(t) for t in pipe.scheduler.timesteps],
                         image_std=float(image.std()), image_range=[float(image.min()), float(image.max())]))
        print(case["name"], type(pipe.scheduler).__name__, "std", round(float(image.std()), 4),
              "latents", tuple(latents.shape))
    lora_case(pipe, meta)
    import diffusers, transformers
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump({"diffusers": diffusers.__version__, "torch": torch.__version__,
                   "transformers": transformers.__version__, "cases": meta}, f, indent=1)


def lora_case(pipe, meta):
    """A random LoRA in kohya's format (diffusers module names, `.alpha` tensors), and the euler case rendered with it
    fused into the weights at scale 0.8: W += 0.8 · alpha / rank · up @ down, which is what diffusers' fuse_lora and
    PEFT's forward compute (peft here is too old for transformers 5's text-encoder adapters, so the reference applies
    the definition itself)."""
    rank, alpha, scale = 4, 2.0, 0.8
    unet_targets = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "conv1", "conv2")
    text_targets = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    fused = StableDiffusionXLPipeline.from_pretrained(PIPE, torch_dtype=torch.float32)
    fused.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(99)
    sd = {}

    def add(prefix, name, m):
        if isinstance(m, torch.nn.Linear):
            down = torch.randn((rank, m.in_features), generator=g) * 0.2
            up = torch.randn((m.out_features, rank), generator=g) * 0.2
            delta = up @ down
        else:  # Conv2d: LoCon, a k x k down and a 1 x 1 up
            down = torch.randn((rank, m.in_channels) + tuple(m.kernel_size), generator=g) * 0.2
            up = torch.randn((m.out_channels, rank, 1, 1), generator=g) * 0.2
            delta = (up.flatten(1) @ down.flatten(1)).reshape(m.weight.shape)
        # kohya (sd-scripts) spells text-encoder modules with transformers' `text_model.` path; transformers 5 names
        # CLIPTextModel's modules without it.
        if prefix != "lora_unet" and not name.startswith("text_model."):
            name = "text_model." + name
        key = prefix + "_" + name.replace(".", "_")
        sd[key + ".lora_down.weight"] = down.contiguous()
        sd[key + ".lora_up.weight"] = up.contiguous()
        sd[key + ".alpha"] = torch.tensor(alpha)
        with torch.no_grad():
            m.weight += scale * alpha / rank * delta

    for prefix, model, targets in [("lora_unet", fused.unet, unet_targets), ("lora_te1", fused.text_encoder, text_targets),
                                   ("lora_te2", fused.text_encoder_2, text_targets)]:
        for name, m in model.named_modules():
            if name.endswith(targets) and isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                add(prefix, name, m)
    save_file(sd, os.path.join(OUT, "tiny-lora.safetensors"), metadata={"ss_network_dim": str(rank), "ss_network_alpha": str(alpha)})
    case = dict(CASES[0], name="lora", lora="tiny-lora.safetensors", lora_scale=scale, lora_modules=len(sd) // 3)
    fused.scheduler = scheduler(fused, case)
    args = dict(prompt=case["prompt"], negative_prompt=None, num_inference_steps=case["steps"],
                guidance_scale=case["cfg"], width=case["width"], height=case["height"])
    run = lambda kind: fused(**args, output_type=kind,  # noqa: E731
                             generator=torch.Generator("cpu").manual_seed(case["seed"])).images
    latents, image, pil = run("latent"), run("np"), run("pil")
    pixels = np.stack([np.asarray(p) for p in pil])
    from safetensors.torch import load_file
    base = load_file(os.path.join(OUT, "euler.safetensors"))
    moved = int((base["pixels"].int() - torch.from_numpy(pixels).int()).abs().max())
    assert moved > 20, moved  # the LoRA visibly changes the image
    save_file({"latents": latents.contiguous(), "image": torch.from_numpy(np.ascontiguousarray(image)),
               "pixels": torch.from_numpy(pixels)}, os.path.join(OUT, "lora.safetensors"))
    meta.append(dict(case, scheduler=type(fused.scheduler).__name__, pixels_moved_from_base=moved,
                     image_std=float(image.std())))
    print("lora:", len(sd) // 3, "modules; pixels moved from the base image by up to", moved, "std", float(image.std()))


if __name__ == "__main__":
    main()
