#!/usr/bin/env python3
"""A random SDXL LoRA for the generate benchmark, shaped like the common community kind: kohya's format with sgm
module names (sd-scripts' SDXL naming), rank RANK (alpha RANK / 2) on every UNet transformer linear layer (attn1/attn2
q, k, v, out, the feed-forward, proj_in / proj_out). Values are small random numbers (seeded), so the model output stays
in range. Written next to nothing else: only the LoRA file.

  bench_make_lora.py BASE.safetensors OUT.safetensors [RANK=32] [SEED=1]
"""
import re
import sys

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def main():
    base, out = sys.argv[1], sys.argv[2]
    rank = int(sys.argv[3]) if len(sys.argv) > 3 else 32
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    g = torch.Generator().manual_seed(seed)
    pattern = re.compile(r"^model\.diffusion_model\.(.*\.(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.(0\.proj|2)|proj_in|proj_out))\.weight$")
    sd = {}
    with safe_open(base, "pt") as f:
        for k in f.keys():
            m = pattern.match(k)
            if not m:
                continue
            shape = f.get_slice(k).get_shape()
            if len(shape) != 2:
                continue
            name = "lora_unet_" + m.group(1).replace(".", "_")
            out_f, in_f = shape
            sd[name + ".lora_down.weight"] = (torch.randn((rank, in_f), generator=g) / in_f ** 0.5).to(torch.float16)
            sd[name + ".lora_up.weight"] = (torch.randn((out_f, rank), generator=g) * 0.02 / rank ** 0.5).to(torch.float16)
            sd[name + ".alpha"] = torch.tensor(float(rank) / 2)
    save_file(sd, out, metadata={"ss_network_module": "networks.lora", "ss_network_dim": str(rank),
                                 "ss_network_alpha": str(rank / 2), "ss_base_model_version": "sdxl_base_v1-0"})
    print(f"wrote {out}: {len(sd) // 3} modules, rank {rank}")


if __name__ == "__main__":
    main()
