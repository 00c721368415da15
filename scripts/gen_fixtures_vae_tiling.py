#!/usr/bin/env python3
"""Fixture for mumu's tiled VAE decode (`--vae-tile`): diffusers' AutoencoderKL.tiled_decode on the tiny SDXL
pipeline's VAE (Tests/MumuSamplerTests/Fixtures/decoder/tiny-sdxl/vae, scripts/gen_fixtures_decoder.py).

Writes Tests/MumuSamplerTests/Fixtures/decoder/vae_tiled.safetensors:
  latents        [1, 4, 14, 11] seeded normal (no scaling_factor applied, as vae_io's)
  tiled_64       vae.tiled_decode(latents) with tile_sample_min_size 64 (8 latents), diffusers' overlap factor
                 0.25: tiles at latent strides of 6, blended over 16 pixels, cropped to 48 (last tiles smaller)
  tiled_32       the same with 32-pixel tiles (4 latents, stride 3, blend 8, keep 24)

    python3 scripts/gen_fixtures_vae_tiling.py
"""
import os

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(ROOT, "Tests", "MumuSamplerTests", "Fixtures", "decoder")


def main():
    torch.manual_seed(0)
    vae = AutoencoderKL.from_pretrained(os.path.join(FOLDER, "tiny-sdxl", "vae"), torch_dtype=torch.float32).eval()
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    g = torch.Generator().manual_seed(2024)
    latents = torch.randn((1, 4, 14, 11), generator=g)
    out = {"latents": latents}
    with torch.no_grad():
        whole = vae.decode(latents).sample
        for tile in (64, 32):
            vae.enable_tiling()
            vae.tile_sample_min_size = tile
            vae.tile_latent_min_size = tile // factor
            vae.tile_overlap_factor = 0.25
            out[f"tiled_{tile}"] = vae.decode(latents).sample
            assert out[f"tiled_{tile}"].shape == whole.shape, out[f"tiled_{tile}"].shape
            print(f"tiled_{tile}: max |tiled - untiled| {(out[f'tiled_{tile}'] - whole).abs().max().item():.3f}")
    out = {k: v.contiguous() for k, v in out.items()}
    save_file(out, os.path.join(FOLDER, "vae_tiled.safetensors"),
              metadata={"script": "scripts/gen_fixtures_vae_tiling.py", "overlap_factor": "0.25"})


if __name__ == "__main__":
    main()
