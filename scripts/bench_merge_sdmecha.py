#!/usr/bin/env python3
"""The sd-mecha side of scripts/bench_merge.sh: the same two recipes as `mumu merge`, run with sd-mecha.

    python3 scripts/bench_merge_sdmecha.py add_difference DIR OUT.safetensors [--threads 2] [--config sdxl-sgm]
    python3 scripts/bench_merge_sdmecha.py ties DIR OUT.safetensors ...

DIR holds base.safetensors, ft1.safetensors and ft2.safetensors.

Recipes (sd-mecha 1.1.8 public API):
  add_difference   ft1 + 1.0 * (ft2 - base)
                   = sd_mecha.add_difference(ft1, ft2, base, alpha=1.0)  (the public wrapper; it builds
                   merge method add_difference(ft1, subtract(ft2, base), alpha), i.e. a.addcmul(b - c, alpha))
                   mumu: merge --method add_difference --a ft1 --b ft2 --c base --alpha 1.0
  ties             base + 1.0 * ties_sum(ft1 - base, ft2 - base, k=0.3, vote_sgn=False)
                   = add_difference(base, sd_mecha.ties_sum(sd_mecha.subtract(ft1, base),
                         sd_mecha.subtract(ft2, base), k=0.3, vote_sgn=False), alpha=1.0)
                   with add_difference the registered merge method (merge_methods.resolve), because the
                   public wrappers sd_mecha.add_difference(base, tau) and sd_mecha.add_difference_ties
                   raise AttributeError in 1.1.8 when given a merge node (see below)
                   (k is the kept fraction, like mumu's --density; vote_sgn=False votes by sign count,
                   mumu's --vote count)
                   mumu: merge --method ties --base base --models ft1,ft2 --density 0.3 --vote count

Merge settings: merge_dtype=torch.float32, output_dtype=torch.float16, merge_device="cpu" (sd-mecha's
defaults, spelled out), threads=--threads (sd-mecha's own default would be
min(max(open files, 2), cpu_count, 4) = 2 on a 2-core machine), torch.set_num_threads(--threads),
total_buffer_size left at sd-mecha's default (2**28 bytes shared by all open safetensors files), all other
options at their defaults (memoize_intermediates=True, check_finite_output=True,
omit_non_finite_inputs=True, ...). The progress bar is off (tqdm replaced by a no-op) so its cost
and output do not enter the figures, like mumu's --quiet.
"""
import argparse
import os
import sys
import time

import torch
import sd_mecha
from sd_mecha.extensions import merge_methods


class _NoTqdm:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args, **kwargs):
        pass

    def close(self):
        pass

    def set_postfix(self, *args, **kwargs):
        pass

    def set_description(self, *args, **kwargs):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe", choices=["add_difference", "ties"])
    ap.add_argument("dir")
    ap.add_argument("out")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default=None,
                    help="model config for sd_mecha.model (default: let sd-mecha infer it)")
    ap.add_argument("--progress", action="store_true", help="show sd-mecha's tqdm progress bar")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)

    def model(name):
        return sd_mecha.model(os.path.join(args.dir, name + ".safetensors"), config=args.config)

    base, ft1, ft2 = model("base"), model("ft1"), model("ft2")
    if args.recipe == "add_difference":
        # the public wrapper, 3-argument form: add_difference(ft1, subtract(ft2, base), alpha) | ft1
        recipe = sd_mecha.add_difference(ft1, ft2, base, alpha=1.0)
    else:
        # The public wrappers sd_mecha.add_difference(base, <merge node>) and
        # sd_mecha.add_difference_ties(base, ft1, ft2, k=...) raise in sd-mecha 1.1.8
        # (AttributeError: 'NoneType' object has no attribute 'identifier': MergeSpace.__eq__ against
        # the not yet finalized merge space of a merge node), so the registered merge method
        # add_difference(a, delta, alpha) is used directly, the way the wrapper itself calls it.
        add_difference = merge_methods.resolve("add_difference")
        tau = sd_mecha.ties_sum(sd_mecha.subtract(ft1, base), sd_mecha.subtract(ft2, base),
                                k=0.3, vote_sgn=False)
        recipe = add_difference(base, tau, alpha=1.0)

    if os.path.exists(args.out):
        os.remove(args.out)
    t0 = time.perf_counter()
    extra = {} if args.progress else {"tqdm": _NoTqdm}
    sd_mecha.merge(
        recipe,
        merge_device="cpu",
        merge_dtype=torch.float32,
        output_device="cpu",
        output_dtype=torch.float16,
        threads=args.threads,
        output=args.out,
        **extra,
    )
    dt = time.perf_counter() - t0
    print(f"sd-mecha {args.recipe}: merge() {dt:.2f} s, torch threads "
          f"{torch.get_num_threads()}, merge threads {args.threads}, config {args.config or 'inferred'}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
