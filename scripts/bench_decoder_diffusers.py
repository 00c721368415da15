#!/usr/bin/env python3
"""The diffusers side of scripts/bench_decoder.sh: one SDXL UNet evaluation on a full-size checkpoint,
in float32 and bfloat16, CPU, torch at THREADS threads, on inputs this script writes for mumu to read.

  bench_decoder_diffusers.py CHECKPOINT.safetensors OUTDIR SIZE BATCH THREADS
  bench_decoder_diffusers.py vae CHECKPOINT.safetensors SIZE THREADS     (VAE decode only)

Loads only the UNet (model.diffusion_model.*) with diffusers' own converter (convert_ldm_unet_checkpoint)
into UNet2DConditionModel built from SDXL base's published config (scripts/sdxl_configs.py), times
REPEAT=2 evaluations per dtype (best reported), and writes OUTDIR/inputs-SIZE.safetensors (sample,
timestep, context, pooled, time_ids; seed 0) and OUTDIR/diffusers-{f32,bf16}-SIZE.safetensors (`out`).
Prints wall seconds per evaluation, the FLOP rate of the analytic UNet FLOPs passed in FLOPS, and
peak RSS (ru_maxrss).
"""
import os
import resource
import sys
import time

import torch
from safetensors import safe_open
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from sdxl_configs import SDXL_BASE_UNET  # noqa: E402


def vae_decode(ckpt, size, threads):
    """diffusers AutoencoderKL decode of seeded latents at `size` pixels, in f32 (the SDXL VAE is run in f32) or
    in the dtype VAE_PRECISION names (bf16)."""
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[os.environ.get("VAE_PRECISION", "f32")]
    torch.set_num_threads(threads)
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from sdxl_configs import SDXL_VAE
    prefix = "first_stage_model."
    with safe_open(ckpt, "pt") as f:
        state = {k: f.get_tensor(k).float() for k in f.keys() if k.startswith(prefix)}
    cfg = {k: v for k, v in SDXL_VAE.items() if not k.startswith("_")}
    vae = AutoencoderKL(**cfg)
    vae.load_state_dict(convert_ldm_vae_checkpoint(state, cfg))
    vae.eval()
    vae.to(dtype)
    latents = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(7)).to(dtype)
    with torch.inference_mode():
        for i in range(2):
            t0 = time.time()
            image = vae.decode(latents).sample
            print(f"diffusers VAE decode {i + 1} ({dtype}): {time.time() - t0:.2f} s, image {list(image.shape)}", flush=True)
    print(f"diffusers VAE: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GB", flush=True)


def main():
    if sys.argv[1] == "vae":
        vae_decode(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ckpt, outdir, size, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    flops = float(os.environ.get("FLOPS", "0"))
    torch.set_num_threads(threads)
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    t0 = time.time()
    prefix = "model.diffusion_model."
    state = {}
    with safe_open(ckpt, "pt") as f:
        for k in f.keys():
            if k.startswith(prefix):
                state[k] = f.get_tensor(k).float()
    cfg = {k: v for k, v in SDXL_BASE_UNET.items() if not k.startswith("_")}
    converted = convert_ldm_unet_checkpoint(state, cfg)
    del state
    unet = UNet2DConditionModel(**cfg)
    missing, unexpected = unet.load_state_dict(converted, strict=False)
    assert not missing and not unexpected, (missing[:3], unexpected[:3])
    del converted
    unet.eval()
    print(f"diffusers: load {time.time() - t0:.1f} s (UNet f32), attention processor {type(unet.attn_processors[next(iter(unet.attn_processors))]).__name__}", flush=True)

    g = torch.Generator().manual_seed(0)
    lat = size // 8
    inputs = {
        "sample": torch.randn(batch, 4, lat, lat, generator=g),
        "timestep": torch.full((batch,), 981.0),
        "context": torch.randn(batch, 77, 2048, generator=g),
        "pooled": torch.randn(batch, 1280, generator=g),
        "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * batch, dtype=torch.float32),
    }
    save_file(inputs, os.path.join(outdir, f"inputs-{size}.safetensors"))

    wanted = os.environ.get("PRECISIONS", "f32 bf16").split()
    repeats = int(os.environ.get("REPEATS", "2"))
    for dtype, name in [(torch.float32, "f32"), (torch.bfloat16, "bf16")]:
        if name not in wanted:
            continue
        unet.to(dtype)
        args = {k: v.to(dtype) for k, v in inputs.items()}
        best = None
        with torch.inference_mode():
            for i in range(repeats):
                t0 = time.time()
                out = unet(args["sample"], args["timestep"], encoder_hidden_states=args["context"],
                           added_cond_kwargs={"text_embeds": args["pooled"], "time_ids": args["time_ids"]}).sample
                wall = time.time() - t0
                best = wall if best is None else min(best, wall)
                rate = f", {flops / wall / 1e9:.1f} GFLOP/s" if flops else ""
                print(f"diffusers {name}: eval {i + 1}: {wall:.2f} s{rate} (latent {lat}x{lat}, batch {batch})", flush=True)
        save_file({"out": out.float().contiguous()}, os.path.join(outdir, f"diffusers-{name}-{size}.safetensors"))
        print(f"diffusers {name}: best {best:.2f} s; output finite: {bool(torch.isfinite(out).all())}", flush=True)
    print(f"diffusers: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
