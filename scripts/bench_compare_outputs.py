#!/usr/bin/env python3
"""Max abs and relative (to the reference's max |x|) difference of tensor `out` in two safetensors files.
   bench_compare_outputs.py LABEL REFERENCE OTHER"""
import sys
from safetensors.numpy import load_file

label, ref, other = sys.argv[1], load_file(sys.argv[2])["out"], load_file(sys.argv[3])["out"]
assert ref.shape == other.shape, (ref.shape, other.shape)
d = abs(ref.astype("float64") - other.astype("float64"))
scale = abs(ref).max()
print(f"   {label}: max abs diff {d.max():.3g} (reference max |x| {scale:.3g}, relative {d.max() / scale:.2e}; mean abs diff {d.mean():.3g})")
