#!/usr/bin/env python3
"""Fixtures for mumu's torch-identical CPU generator (Sources/MumuSampler/Sampling/TorchGenerator.swift).

Writes Tests/MumuSamplerTests/Fixtures/seeds.safetensors (f32): what diffusers draws on CPU with
torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)):
  seed42_1x4x8x8   seed 42, shape [1, 4, 8, 8] (256 values: a multiple of 16)
  seed0_37         seed 0, 37 values (not a multiple of 16: torch redraws the last 16)
  seed7_a, seed7_b seed 7, two successive draws of [1, 4, 8, 6] from one generator (ancestral noise continues
                   the generator's stream)
  seed123456789_16 seed 123456789, 16 values
  seed2p40_1x4x16x16  seed 2**40 + 5 (seeds above 32 bits), [1, 4, 16, 16]
  small_N          seed 11, N values for N in 1..15 (torch's serial double-precision path below 16 values)
  small_seq_K      seed 3, five successive draws of [1, 4, 1, 1] from one generator (an 8x8 image's latents and
                   euler_a's noise: the second value of each Box-Muller pair carries over between draws), then
                   one draw of 16 values
Run: python3 scripts/gen_fixtures_seeds.py   (torch 2.x, CPU)
"""
import os
import torch
from safetensors.torch import save_file

out = {}
def draw(name, seed, shape, gen=None):
    g = gen or torch.Generator("cpu").manual_seed(seed)
    out[name] = torch.randn(shape, generator=g, dtype=torch.float32)
    return g

draw("seed42_1x4x8x8", 42, (1, 4, 8, 8))
draw("seed0_37", 0, (37,))
g = draw("seed7_a", 7, (1, 4, 8, 6))
draw("seed7_b", 7, (1, 4, 8, 6), gen=g)
draw("seed123456789_16", 123456789, (16,))
draw("seed2p40_1x4x16x16", 2**40 + 5, (1, 4, 16, 16))
for n in range(1, 16):
    draw(f"small_{n}", 11, (n,))
g = torch.Generator("cpu").manual_seed(3)
for k in range(5):
    draw(f"small_seq_{k}", 3, (1, 4, 1, 1), gen=g)
draw("small_seq_5", 3, (16,), gen=g)
path = os.path.join(os.path.dirname(__file__), "..", "Tests", "MumuSamplerTests", "Fixtures", "seeds.safetensors")
save_file(out, path, metadata={"torch": torch.__version__})
print("wrote", os.path.normpath(path), {k: list(v.shape) for k, v in out.items()})
