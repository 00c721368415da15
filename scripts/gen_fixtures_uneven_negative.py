#!/usr/bin/env python3
"""Fixture for guidance with a negative prompt of another length than the prompt (MUMU conditioning, A1111's
separate passes): diffusers' UNet of the tiny pipeline (Tests/MumuSamplerTests/Fixtures/decoder/tiny-sdxl) called
twice, once on the negative context [1, 3, C] and once on the prompt's [1, 5, C], combined as
uncond + cfg (cond - uncond).

Writes Tests/MumuSamplerTests/Fixtures/generate/uneven_negative.safetensors (f32): sample [1,4,8,8] (the UNet's
input, already scaled), timestep [1], context [1,5,C], pooled [1,P], negative_context [1,3,C], negative_pooled
[1,P], time_ids [1,6], cfg [1], and guided [1,4,8,8].
Run: python3 scripts/gen_fixtures_uneven_negative.py   (diffusers 0.42, torch 2.x)
"""
import os

import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "Tests", "MumuSamplerTests", "Fixtures")
unet = UNet2DConditionModel.from_pretrained(os.path.join(FIX, "decoder", "tiny-sdxl", "unet"), torch_dtype=torch.float32).eval()
g = torch.Generator().manual_seed(2024)
C = unet.config.cross_attention_dim
P = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
r = lambda *s: torch.randn(*s, generator=g)
x = dict(sample=r(1, 4, 8, 8), timestep=torch.tensor([421.0]), context=r(1, 5, C), pooled=r(1, P),
         negative_context=r(1, 3, C), negative_pooled=r(1, P), time_ids=torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]]),
         cfg=torch.tensor([4.5]))


def run(ctx, pooled):
    with torch.no_grad():
        return unet(x["sample"], x["timestep"], encoder_hidden_states=ctx,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": x["time_ids"]}).sample


u = run(x["negative_context"], x["negative_pooled"])
c = run(x["context"], x["pooled"])
x["guided"] = u + x["cfg"] * (c - u)
path = os.path.join(FIX, "generate", "uneven_negative.safetensors")
save_file({k: v.contiguous().float() for k, v in x.items()}, path)
print("wrote", os.path.normpath(path))
