#!/usr/bin/env python3
"""Compare two merge outputs tensor by tensor (streamed with safe_open: one tensor of each file in memory).

    python3 scripts/bench_merge_compare.py A.safetensors B.safetensors [--per-tensor] [--max-ulp 1]

Prints the key sets (missing on either side), dtype / shape mismatches, and for the common keys:
the max abs difference (in f32), the number of differing elements, the max difference in units in the
last place of the stored dtype (f16 / bf16: distance of the bit patterns in sign-magnitude order, so
+0 and -0 are 0 apart), non-finite counts, and the worst tensors. With --per-tensor every tensor's
line is printed. Exit status 1 when keys, dtypes or shapes differ or some element is more than
--max-ulp apart, else 0.
"""
import argparse
import sys

import numpy as np
import torch
from safetensors import safe_open


# exponent bits: all set = inf / NaN
EXP_MASK = {torch.float16: np.int16(0x7C00), torch.bfloat16: np.int16(0x7F80), torch.float32: np.int32(0x7F800000)}


def ordered_bits(t):
    """16-bit float bit patterns as integers in the order of the values they encode."""
    u = t.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    mag = u & 0x7FFF
    return torch.where((u & 0x8000) != 0, -mag, mag)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--per-tensor", action="store_true")
    ap.add_argument("--max-ulp", type=int, default=1)
    ap.add_argument("--top", type=int, default=5)
    args = ap.parse_args()

    bad = False
    rows = []
    total_elems = total_diff = 0
    max_abs = 0.0
    max_ulp = 0
    ulp_hist = {"1": 0, "2": 0, "3": 0, ">3": 0}
    nonfinite = [0, 0]
    with safe_open(args.a, "pt") as fa, safe_open(args.b, "pt") as fb:
        ka, kb = set(fa.keys()), set(fb.keys())
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        print(f"keys: {len(ka)} in A, {len(kb)} in B, {len(ka & kb)} common, "
              f"{len(only_a)} only in A, {len(only_b)} only in B")
        for k in only_a[:10]:
            print(f"  only in A: {k}")
        for k in only_b[:10]:
            print(f"  only in B: {k}")
        if only_a or only_b:
            bad = True
        for key in sorted(ka & kb):
            ta, tb = fa.get_tensor(key), fb.get_tensor(key)
            if ta.dtype != tb.dtype or ta.shape != tb.shape:
                print(f"  MISMATCH {key}: {ta.dtype}{list(ta.shape)} vs {tb.dtype}{list(tb.shape)}")
                bad = True
                continue
            n = ta.numel()
            total_elems += n
            if n == 0:
                rows.append((0.0, 0, 0, 0, key))
                continue
            va, vb = ta.reshape(-1), tb.reshape(-1)
            # bit patterns as numpy integers (zero-copy): numpy's int16 ops are much faster than
            # torch's CPU half ops (torch isfinite on f16 was ~5 s for 30 M elements)
            ity = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[ta.element_size()]
            ba, bb = va.view(ity).numpy(), vb.view(ity).numpy()
            neq_np = ba != bb
            if ta.dtype in EXP_MASK:
                m = EXP_MASK[ta.dtype]
                nonfinite[0] += int(np.count_nonzero((ba & m) == m))
                nonfinite[1] += int(np.count_nonzero((bb & m) == m))
            elif ta.is_floating_point():
                nonfinite[0] += int((~va.isfinite()).sum())
                nonfinite[1] += int((~vb.isfinite()).sum())
            if not neq_np.any():  # bit-identical: the common case, no float work
                rows.append((0.0, 0, 0, n, key))
                if args.per_tensor:
                    print(f"  {key}: identical ({n})")
                continue
            neq = torch.from_numpy(neq_np)
            # only the elements whose bits differ
            xa, xb = va[neq].float(), vb[neq].float()
            both_finite = xa.isfinite() & xb.isfinite()
            same = (xa == xb) | (xa.isnan() & xb.isnan())  # +0 / -0, or NaNs with other payloads
            diff = torch.where(both_finite, (xa - xb).abs(),
                               torch.where(same, torch.zeros_like(xa), torch.full_like(xa, float("inf"))))
            d_max = float(diff.max())
            n_diff = int((diff > 0).sum())
            if ta.dtype in (torch.float16, torch.bfloat16):
                ulp = (ordered_bits(va[neq]) - ordered_bits(vb[neq])).abs()
                ulp = torch.where(same, torch.zeros_like(ulp), ulp)
                u_max = int(ulp.max())
                for v in (1, 2, 3):
                    ulp_hist[str(v)] = ulp_hist.get(str(v), 0) + int((ulp == v).sum())
                ulp_hist[">3"] = ulp_hist.get(">3", 0) + int((ulp > 3).sum())
            else:
                u_max = -1
            total_diff += n_diff
            max_abs = max(max_abs, d_max)
            max_ulp = max(max_ulp, u_max)
            rows.append((d_max, u_max, n_diff, n, key))
            if args.per_tensor:
                print(f"  {key}: max|d| {d_max:.3e}, {n_diff}/{n} differ, max {u_max} ulp")
    print(f"elements: {total_elems:,} compared, {total_diff:,} differ "
          f"({100.0 * total_diff / max(1, total_elems):.4f}%), "
          f"tensors with a difference: {sum(1 for r in rows if r[2])}/{len(rows)}")
    print(f"max abs diff: {max_abs:.6e}; max ulp diff: {max_ulp}; "
          f"ulp histogram (ulp: elements): {ulp_hist}")
    print(f"non-finite elements: A {nonfinite[0]}, B {nonfinite[1]}")
    worst = sorted(rows, reverse=True)[: args.top]
    if worst and worst[0][0] > 0:
        print(f"worst {len(worst)} tensors by max abs diff:")
        for d_max, u_max, n_diff, n, key in worst:
            print(f"  {key}: max|d| {d_max:.3e}, {n_diff}/{n} differ, max {u_max} ulp")
    if max_ulp > args.max_ulp:
        bad = True
    print("AGREE (within %d ulp)" % args.max_ulp if not bad else "DISAGREE")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
