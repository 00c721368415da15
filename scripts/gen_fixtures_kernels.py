#!/usr/bin/env python3
"""Fixtures for the f32 CPU kernels in Sources/MumuTensor/Kernels (Tests/MumuTensorTests/KernelTests.swift).

Writes small safetensors files (all F32, total well under 500 KB) to Tests/MumuTensorTests/Fixtures/kernels/,
each holding the inputs, the parameters (as tensors) and torch's output of one kernel case.
Run with torch (CPU): python3 scripts/gen_fixtures_kernels.py
"""
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "MumuTensorTests", "Fixtures", "kernels")
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(1234)
torch.set_num_threads(1)


def save(name, tensors):
    tensors = {k: v.contiguous().to(torch.float32) for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT, name + ".safetensors"))


def scalar(v):
    return torch.tensor([float(v)], dtype=torch.float32)


# conv2d: (name, N, Cin, H, W, Cout, k, stride, padding)
conv_cases = [
    ("conv_3x3_s2_p1_odd", 2, 3, 9, 11, 5, 3, 2, 1),
    ("conv_3x3_s1_p1", 1, 4, 7, 8, 6, 3, 1, 1),
    ("conv_3x3_s2_p0_odd", 1, 4, 9, 7, 4, 3, 2, 0),
    ("conv_3x3_s1_p0", 2, 3, 6, 5, 7, 3, 1, 0),
    ("conv_1x1_s1", 2, 6, 5, 7, 3, 1, 1, 0),
    ("conv_1x1_s2_odd", 1, 5, 7, 9, 4, 1, 2, 0),
]
for name, n, cin, h, w, cout, k, s, p in conv_cases:
    x = torch.randn(n, cin, h, w)
    wt = torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k)
    b = torch.randn(cout)
    y = F.conv2d(x, wt, b, stride=s, padding=p)
    save(name, {"x": x, "weight": wt, "bias": b, "y": y, "stride": scalar(s), "padding": scalar(p)})

# group norm: 4 groups of 2 channels, SDXL's eps 1e-5 (UNet) and 1e-6 (VAE), with an offset mean
for name, eps in [("groupnorm_g4_eps1e-5", 1e-5), ("groupnorm_g4_eps1e-6", 1e-6)]:
    x = torch.randn(2, 8, 5, 6) * 3 + 1.5
    wt = torch.randn(8)
    b = torch.randn(8)
    y = F.group_norm(x, 4, wt, b, eps)
    save(name, {"x": x, "weight": wt, "bias": b, "y": y, "groups": scalar(4), "eps": scalar(eps)})

# layer norm over the last dim
x = torch.randn(2, 7, 32) * 2 - 0.5
wt = torch.randn(32)
b = torch.randn(32)
save("layernorm", {"x": x, "weight": wt, "bias": b, "eps": scalar(1e-5),
                   "y": F.layer_norm(x, (32,), wt, b, 1e-5)})

# activations: a sweep over [-12, 12] plus random values
x = torch.cat([torch.linspace(-12, 12, 601), torch.randn(399) * 3])
save("activations", {"x": x, "silu": F.silu(x), "gelu": F.gelu(x), "gelu_tanh": F.gelu(x, approximate="tanh")})

# nearest 2x upsampling
x = torch.randn(2, 3, 4, 5)
save("upsample", {"x": x, "y": F.interpolate(x, scale_factor=2.0, mode="nearest")})


# diffusers.models.embeddings.get_timestep_embedding (copied; flip_sin_to_cos=True, shift=0 as SDXL's UNet)
def get_timestep_embedding(timesteps, embedding_dim, flip_sin_to_cos=False, downscale_freq_shift=1,
                           scale=1, max_period=10000):
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * torch.arange(start=0, end=half_dim, dtype=torch.float32,
                                                    device=timesteps.device)
    exponent = exponent / (half_dim - downscale_freq_shift)
    emb = torch.exp(exponent)
    emb = timesteps[:, None].float() * emb[None, :]
    emb = scale * emb
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half_dim:], emb[:, :half_dim]], dim=-1)
    if embedding_dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1, 0, 0))
    return emb


t = torch.tensor([0.0, 1.0, 13.0, 250.5, 500.0, 999.0])
save("timestep", {"t": t, "y": get_timestep_embedding(t, 320, flip_sin_to_cos=True, downscale_freq_shift=0)})


# attention: softmax(q k^T / sqrt(d)) v per head, [B, T, C] with C = heads * d
def attn(q, k, v, heads):
    b, tq, c = q.shape
    tk = k.shape[1]
    d = c // heads
    qh = q.view(b, tq, heads, d).transpose(1, 2)
    kh = k.view(b, tk, heads, d).transpose(1, 2)
    vh = v.view(b, tk, heads, d).transpose(1, 2)
    o = F.scaled_dot_product_attention(qh, kh, vh)
    return o.transpose(1, 2).reshape(b, tq, c)


# self-attention, T = 300, 3 heads of 16; inputs scaled so the softmax is peaked (tests stability)
q = torch.randn(1, 300, 48) * 1.5
k = torch.randn(1, 300, 48) * 1.5
v = torch.randn(1, 300, 48)
save("attention_self", {"q": q, "k": k, "v": v, "heads": scalar(3), "y": attn(q, k, v, 3)})
# cross-attention, batch 2, Tq = 130 against Tk = 77 (the CLIP context length), 2 heads of 16
q = torch.randn(2, 130, 32)
k = torch.randn(2, 77, 32)
v = torch.randn(2, 77, 32)
save("attention_cross", {"q": q, "k": k, "v": v, "heads": scalar(2), "y": attn(q, k, v, 2)})

total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
print(f"wrote {len(os.listdir(OUT))} files, {total} bytes, to {os.path.normpath(OUT)}")
