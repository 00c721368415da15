#!/usr/bin/env python3
"""Generate the merge-method fixtures read by Tests/MumuMergeTests.

README
======
Regenerate (CPU only, a few seconds; needs torch, safetensors, PyYAML, numpy and sd-mecha 1.1.8):

    python3 scripts/gen_fixtures_merge.py                 # writes Tests/MumuMergeTests/Fixtures/merge/
    python3 scripts/gen_fixtures_merge.py --out /tmp/m    # somewhere else (e.g. to diff against the committed files)

The script computes every case twice where sd-mecha has the method (its undecorated function,
`<merge_method>.__wrapped__`, called on plain tensors, plus this file's own implementation of the
semantics below), asserts that the two agree and prints the max abs difference; the committed values
of those cases come from sd-mecha. All other cases come from the torch/numpy reference here.
Running it twice writes byte-identical files (seeded torch.Generator, no safetensors metadata).
It prints one line per case: the source, the max |output|, sd-mecha vs reference differences, and
TIES / DARE statistics for the [80,64] tensor.

Output: Tests/MumuMergeTests/Fixtures/merge/
  models/base.safetensors, models/ft1.safetensors, models/ft2.safetensors
        F16, 16 tensors with real SDXL sgm names (see KEYS): a 0-d tensor (logit_scale), 1-D biases,
        2-D linears, 4-D convs, one [80,64] tensor; base = randn*0.05, ft1 = base + 0.01*n1,
        ft2 = base + 0.02*(0.6*n1 + 0.8*n2) (all rounded to f16; logit_scale: base log(100), both
        deltas positive). ft2's middle_block.1.proj_in.weight == base
        (whole tensor, delta 0); ft1 has ~10% zero deltas in the [80,64] tensor and in proj_in,
        ft2 ~10% in input_blocks.4 ... to_q. Duplicate |delta| values (ties at the TIES threshold)
        occur naturally through f16.
  expected/<case>.f32.safetensors   per key, the float32 result (same key names as the inputs)
  expected/<case>.f16.safetensors   per key, that result rounded to f16 (torch .half(), RNE)
  cases.json                        the manifest (schema below)

Manifest (cases.json): a JSON list, one object per case:
  name        str, also the file stem of the expected files
  recipe      str, YAML text of the recipe (paths relative to the Fixtures/merge folder)
  expected    {"f32": "expected/<name>.f32.safetensors", "f16": "expected/<name>.f16.safetensors"}
  source      "sd-mecha" (committed values from sd-mecha's function) or "reference" (this script)
  notes       str: what the case exercises and the exact evaluation order used
  tolerance   {"f32_abs": float, "f16_ulp": int}: what a faithful implementation should meet
              (f16_ulp 1: results at an f16 rounding boundary may land on the neighbour)
  optional:
  sdmecha_vs_reference {"max_abs_f32": float, "f16_mismatches": int}  (sd-mecha cases only)
  per_key     {key: {...}} debugging aids (block-map, ties, dare, slerp and model_stock cases):
              "block"; "resolved": [{method, param, value, rule}] for block-map arguments;
              "trim": per model {k, threshold, kept, ties_at_threshold}; "dare": per model {kept};
              "branch" (slerp: lerp or slerp, with the dot); "t" (model_stock: t, or [min, max] per row)
  dare_rng_probe (dare case only): {"seed", "key", "model_index", "keyhash", "mix_seed", "stream",
              "mix_values" (hex strings, the first 8 mix(stream + j)), "u" (first 8 floats)}

Semantics (per key, from the f16 inputs upcast to f32; all intermediates f32, only the final result
is rounded to f16; scalars are Python floats = f64 unless said otherwise):
  weighted_sum(a,b,alpha)  torch.lerp(a,b,alpha), which on CPU is w = f32(alpha), d = b - a (f32),
                           |w| < 0.5: fma(w, d, a) else fma(w - 1, d, b)  (fused, one rounding).
  add_difference(a,b,c,alpha)  a + f32(alpha)*(b - c)            (sd-mecha: a.addcmul(b - c, alpha))
  triple_sum(a,b,c,alpha,beta) ((ca*a + al*b) + be*c), al = f32(alpha), be = f32(beta),
                           ca = (1 - al) - be in f32 arithmetic; every op rounded, no FMA
  sum_twice(a,b,c,alpha,beta)  cb*((1-al)*a + al*b) + be*c, (1-al), cb = (1-be) in f32; no FMA
  train_difference(a,b,c,alpha) a + s*((b - c)*|b - a| / (|b - c| + |b - a|)), s = f32(1.8*alpha)
                           (1.8*alpha in f64), q = 0 where the denominator is 0; no FMA
  ties                      see ties_ref(); k = max(int((1 - density) * numel), 1) computed in f64
                           from the f64 density (0.3: 1600 -> 1120, 5120 -> 3584; a density held as f32
                           and widened to f64 gives 1119 and 3583), thr = kthvalue(|d| flattened, k)
                           (1-based k-th smallest), keep |d| >= thr
  dare / dare_ties          see dare_ref() and dare_u(); keep iff u < density compared in f64;
                           rescale: d*mask / f32(density) as a true per-element division
  slerp                     see slerp_ref() (rescale false: mergekit) / slerp_rescale_ref() (sd-mecha)
  model_stock               see model_stock_ref()
  block maps                see resolve(); block order BASE, IN00..IN08, M00, OUT00..OUT08, VAE
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from sd_mecha.extensions.builtin.merge_methods import linear as sdm_linear
from sd_mecha.extensions.builtin.merge_methods import ties as sdm_ties

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "Tests", "MumuMergeTests", "Fixtures", "merge")

UNET = "model.diffusion_model."
BIG = UNET + "input_blocks.7.1.transformer_blocks.0.attn2.to_k.weight"
TO_Q = UNET + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
PROJ_IN = UNET + "middle_block.1.proj_in.weight"
LOGIT = "conditioner.embedders.1.model.logit_scale"

# (key, shape); real SDXL sgm names, shapes shrunk
KEYS = [
    (LOGIT, ()),
    ("conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight", (32, 16)),
    ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", (48, 16)),
    ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_bias", (48,)),
    (UNET + "time_embed.0.weight", (32, 16)),
    (UNET + "time_embed.0.bias", (32,)),
    (UNET + "input_blocks.1.0.in_layers.2.weight", (16, 8, 3, 3)),
    (UNET + "input_blocks.1.0.in_layers.2.bias", (16,)),
    (TO_Q, (40, 40)),
    (BIG, (80, 64)),
    (PROJ_IN, (16, 16)),
    (UNET + "output_blocks.3.0.out_layers.3.weight", (8, 8, 3, 3)),
    (UNET + "out.2.weight", (4, 8, 3, 3)),
    (UNET + "out.2.bias", (4,)),
    ("first_stage_model.decoder.conv_in.weight", (8, 4, 3, 3)),
    ("first_stage_model.decoder.conv_in.bias", (8,)),
]

MODELS_YAML = """version: 1
models:
  base: models/base.safetensors
  ft1: models/ft1.safetensors
  ft2: models/ft2.safetensors
"""
OUTPUT_YAML = """output:
  dtype: f16
"""


# ============================================================================ inputs
def make_inputs():
    g = torch.Generator().manual_seed(20261201)
    base, ft1, ft2 = {}, {}, {}
    for key, shape in KEYS:
        b = (torch.randn(shape, generator=g) * 0.05).half()
        n1 = torch.randn(shape, generator=g)
        # correlated fine-tunes (corr 0.6): keeps model_stock's per-row t = 2cos/(1+cos) away from
        # the cos -> -1 pole, where f32 reduction order alone changes the result by 1e-3
        n2 = 0.6 * n1 + 0.8 * torch.randn(shape, generator=g)
        if key == LOGIT:
            # realistic log(100); both deltas positive (sd-mecha's model_stock turns cos = -1 into +-3.4e38)
            b = torch.tensor(math.log(100.0)).half()
            n1, n2 = n1.abs() + 0.5, n2.abs() + 0.5
        f1 = (b.float() + n1 * 0.01).half()
        f2 = (b.float() + n2 * 0.02).half()
        if key in (BIG, PROJ_IN):  # ~10% zero deltas in ft1
            idx = torch.randperm(b.numel(), generator=g)[: b.numel() // 10]
            f1.view(-1)[idx] = b.view(-1)[idx]
        if key == TO_Q:  # ~10% zero deltas in ft2
            idx = torch.randperm(b.numel(), generator=g)[: b.numel() // 10]
            f2.view(-1)[idx] = b.view(-1)[idx]
        if key == PROJ_IN:  # whole tensor delta 0 in ft2
            f2 = b.clone()
        base[key], ft1[key], ft2[key] = b.contiguous(), f1.contiguous(), f2.contiguous()
    return {"base": base, "ft1": ft1, "ft2": ft2}


# ============================================================================ blocks
BLOCK_ORDER = ["BASE"] + ["IN%02d" % i for i in range(9)] + ["M00"] + ["OUT%02d" % i for i in range(9)] + ["VAE"]


def block_of(key):
    if key.startswith("conditioner.embedders."):
        return "BASE"
    if key.startswith("first_stage_model."):
        return "VAE"
    if not key.startswith(UNET):
        raise KeyError(key)
    name = key[len(UNET):]
    m = re.match(r"input_blocks\.(\d+)\.", name)
    if m:
        return "IN%02d" % int(m.group(1))
    if name.startswith("middle_block."):
        return "M00"
    m = re.match(r"output_blocks\.(\d+)\.", name)
    if m:
        return "OUT%02d" % int(m.group(1))
    if name.startswith("out."):
        return "OUT08"
    if name.startswith("time_embed.") or name.startswith("label_emb."):
        return "IN00"
    raise KeyError(key)


def resolve(value, key):
    """Scalar or block map -> (value, rule). The first `re:` entry (map order) whose regex
    re.search-matches the key wins; else the first block name / inclusive range A-B containing the
    key's block; else `default`."""
    if not isinstance(value, dict):
        return value, None
    for name, v in value.items():
        if isinstance(name, str) and name.startswith("re:") and re.search(name[3:], key):
            return v, name
    blk = block_of(key)
    for name, v in value.items():
        if name == "default" or name.startswith("re:"):
            continue
        if "-" in name:
            lo, hi = name.split("-")
            if BLOCK_ORDER.index(lo) <= BLOCK_ORDER.index(blk) <= BLOCK_ORDER.index(hi):
                return v, name
        elif name == blk:
            return v, name
    return value["default"], "default"


# ============================================================================ reference methods
def f32(x):
    return float(np.float32(x))


def lerp_ref(a, b, alpha):
    out = torch.lerp(a, b, float(alpha))
    # torch.lerp on CPU is the fused form; check it (f64 emulation of fma: w*d is exact in f64)
    w = f32(alpha)
    d = (b - a).double()
    fma = (a.double() + w * d) if abs(w) < 0.5 else (b.double() + f32(np.float32(w) - np.float32(1)) * d)
    assert torch.equal(out, fma.float()), "torch.lerp is not fma(w, b - a, a) here"
    return out


def add_difference_ref(a, b, c, alpha=1.0):
    return a + f32(alpha) * (b - c)


def triple_sum_ref(a, b, c, alpha, beta):
    al, be = np.float32(alpha), np.float32(beta)
    ca = float(np.float32(np.float32(1) - al) - be)
    return (ca * a + float(al) * b) + float(be) * c


def sum_twice_ref(a, b, c, alpha, beta):
    al, be = np.float32(alpha), np.float32(beta)
    inner = float(np.float32(1) - al) * a + float(al) * b
    return float(np.float32(1) - be) * inner + float(be) * c


def train_difference_ref(a, b, c, alpha=1.0):
    bc = b - c
    ba = (b - a).abs()
    den = bc.abs() + ba
    q = (bc * ba) / den
    q = torch.where(den == 0, torch.zeros_like(q), q)
    return a + f32(1.8 * alpha) * q


def trim_top_k(d, density):
    """sd-mecha's filter_top_k: keep |d| >= the k-th smallest |d|, k = max(int((1-density)*n), 1)."""
    n = d.numel()
    k = max(int((1.0 - density) * n), 1)
    thr = d.flatten().abs().kthvalue(k).values
    keep = d.abs() >= thr
    stats = {"k": k, "threshold": float(thr), "kept": int(keep.sum()),
             "ties_at_threshold": int((d.abs() == thr).sum())}
    return torch.where(keep, d, torch.zeros_like(d)), stats


def ties_merge(taus, weights, vote):
    """TIES election + disjoint merge of already weighted task vectors tau_i (f32)."""
    if vote == "sum":
        total = taus[0]
        for t in taus[1:]:
            total = total + t
        s = torch.sign(total)
    elif vote == "count":
        total = torch.sign(taus[0])
        for t in taus[1:]:
            total = total + torch.sign(t)
        s = torch.sign(total)
    else:
        raise ValueError(vote)
    num = torch.zeros_like(taus[0])
    div = torch.zeros_like(taus[0])
    for t, w in zip(taus, weights):
        agree = (torch.sign(t) == s) & (s != 0)
        num = num + torch.where(agree, t, torch.zeros_like(t))
        div = div + torch.where(agree, torch.full_like(t, f32(w)), torch.zeros_like(t))
    merged = num / div
    return torch.where(div == 0, torch.zeros_like(merged), merged)


def ties_ref(models, base, weights=None, density=1.0, lam=1.0, vote="sum", stats=None):
    weights = weights or [1.0] * len(models)
    taus = []
    for i, (m, w) in enumerate(zip(models, weights)):
        d, st = trim_top_k(m - base, density)
        if stats is not None:
            stats.append(st)
        taus.append(f32(w) * d)
    return base + f32(lam) * ties_merge(taus, weights, vote)


# ---- DARE RNG (splitmix64 finaliser; all arithmetic mod 2^64)
M64 = (1 << 64) - 1


def mix_int(z):
    z = (z + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mix_np(z):
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for byte in s.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & M64
    return h


def dare_stream(seed, key, i):
    return mix_int(mix_int(seed & M64) ^ fnv1a64(key) ^ mix_int(i + 1))


def dare_u(seed, key, i, n):
    """u(j) for j in 0..n-1, float64 (exact: 24-bit values)."""
    stream = np.uint64(dare_stream(seed, key, i))
    with np.errstate(over="ignore"):
        z = mix_np(stream + np.arange(n, dtype=np.uint64))
    return (z >> np.uint64(40)).astype(np.float64) * 2.0 ** -24


def dare_drop(d, seed, key, i, density, rescale):
    u = dare_u(seed, key, i, d.numel())
    keep = torch.from_numpy(u < float(density)).reshape(d.shape)
    out = torch.where(keep, d, torch.zeros_like(d))
    if rescale:
        out = out / torch.full_like(out, f32(density))  # true division, not * (1/density)
    return out, int(keep.sum())


def dare_ref(models, base, key, weights=None, density=0.5, seed=0, rescale=True, lam=1.0, stats=None):
    weights = weights or [1.0] * len(models)
    total = None
    for i, (m, w) in enumerate(zip(models, weights)):
        dd, kept = dare_drop(m - base, seed, key, i, density, rescale)
        if stats is not None:
            stats.append({"kept": kept})
        t = f32(w) * dd
        total = t if total is None else total + t
    return base + f32(lam) * total


def dare_ties_ref(models, base, key, weights=None, density=0.5, seed=0, rescale=True, lam=1.0,
                  vote="sum", stats=None):
    weights = weights or [1.0] * len(models)
    taus = []
    for i, (m, w) in enumerate(zip(models, weights)):
        dd, kept = dare_drop(m - base, seed, key, i, density, rescale)
        if stats is not None:
            stats.append({"kept": kept})
        taus.append(f32(w) * dd)
    return base + f32(lam) * ties_merge(taus, weights, vote)


def slerp_ref(a, b, alpha):
    """mergekit slerp (rescale false). Norms and dot: f64 sums -> f32 scalars na, nb, ab;
    dot = clamp(ab / (na*nb), -1, 1) in f32; |dot| > 0.9995 (or na/nb < 1e-8) -> torch.lerp;
    else theta = acos(dot) and the coefficients in f64, rounded to f32:
    ca = f32(sin((1-alpha)theta)/sin theta), cb = f32(sin(alpha theta)/sin theta); out = ca*a + cb*b
    (f32, no FMA)."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    na = np.float32(math.sqrt(float((a64 * a64).sum())))
    nb = np.float32(math.sqrt(float((b64 * b64).sum())))
    if na < 1e-8 or nb < 1e-8:
        return lerp_ref(a, b, alpha), "lerp (norm)"
    ab = np.float32(float((a64 * b64).sum()))
    dot = np.float32(ab / np.float32(na * nb))
    dot = np.float32(min(max(dot, np.float32(-1)), np.float32(1)))
    if abs(float(dot)) > 0.9995:
        return lerp_ref(a, b, alpha), "lerp (|dot| %.7f)" % float(dot)
    theta = math.acos(float(dot))
    st = math.sin(theta)
    ca = f32(math.sin((1.0 - alpha) * theta) / st)
    cb = f32(math.sin(alpha * theta) / st)
    return ca * a + cb * b, "slerp (dot %.7f)" % float(dot)


def slerp_rescale_ref(a, b, alpha):
    """sd-mecha slerp: (a/na*sin((1-alpha)w) + b/nb*sin(alpha w))/sin w * lerp(na, nb, alpha),
    w = acos(clamp(a/na . b/nb)); torch.lerp(a, b, alpha) when the result has a NaN. Computed in f64."""
    a64, b64 = a.double(), b.double()
    na, nb = a64.norm(), b64.norm()
    an, bn = a64 / na, b64 / nb
    w = torch.arccos((an * bn).sum().clamp(-1, 1))
    res = (an * torch.sin((1 - alpha) * w) + bn * torch.sin(alpha * w)) / torch.sin(w)
    res = res * (na + alpha * (nb - na))
    if res.isnan().any():
        return lerp_ref(a, b, alpha)
    return res.float()


def model_stock_ref(models, base, filter_wise=False, info=None):
    """d_i = m_i - base; per row (filter_wise: rows of the last dim, 0-d/1-D = one row; else the
    whole flattened tensor) cos = mean over pairs i<j of clamp(d_i.d_j / max(|d_i||d_j|, 1e-6), -1, 1)
    with dots and norms in f64; t = N cos / (1 + (N-1) cos) in f64, 0 if not finite, then f32;
    result = base + t * ((d_1 + ... + d_N) / N) in f32 (no FMA)."""
    n = len(models)
    ds = [m - base for m in models]
    if filter_wise and base.dim() >= 2:
        rows = [d.double().reshape(-1, d.shape[-1]) for d in ds]
    else:
        rows = [d.double().reshape(1, -1) for d in ds]
    cos_sum = torch.zeros(rows[0].shape[0], dtype=torch.float64)
    pairs = 0
    for i in range(n):
        for j in range(i + 1, n):
            dot = (rows[i] * rows[j]).sum(-1)
            den = torch.clamp(rows[i].norm(dim=-1) * rows[j].norm(dim=-1), min=1e-6)
            cos_sum = cos_sum + (dot / den).clamp(-1, 1)
            pairs += 1
    cos = cos_sum / pairs
    t = n * cos / (1 + (n - 1) * cos)
    t = torch.where(torch.isfinite(t), t, torch.zeros_like(t)).float()
    if info is not None:
        info["t"] = float(t[0]) if t.numel() == 1 else [float(t.min()), float(t.max())]
    mean = ds[0]
    for d in ds[1:]:
        mean = mean + d
    mean = mean / torch.full_like(mean, float(n))
    if filter_wise and base.dim() >= 2:
        tt = t.reshape(*base.shape[:-1], 1)
    else:
        tt = t.reshape([1] * base.dim()) if base.dim() else t.reshape(())
    return base + tt * mean


# ============================================================================ recipe evaluation
def evaluate(node, key, models, cache, info):
    if isinstance(node, str):
        return models[node][key].float()
    if id(node) in cache:
        return cache[id(node)]
    m = node["method"]

    def sub(name):
        return evaluate(node[name], key, models, cache, info)

    def sc(name, default):
        v, rule = resolve(node.get(name, default), key)
        if isinstance(node.get(name), dict):
            info.setdefault("resolved", []).append({"method": m, "param": name, "value": v, "rule": rule})
        return v

    def lst(name):
        return [evaluate(x, key, models, cache, info) for x in node[name]]

    def wts():
        w = node.get("weights")
        return None if w is None else [resolve(x, key)[0] for x in w]

    if m == "weighted_sum":
        out = lerp_ref(sub("a"), sub("b"), sc("alpha", 0.5))
    elif m == "add_difference":
        out = add_difference_ref(sub("a"), sub("b"), sub("c"), sc("alpha", 1.0))
    elif m == "triple_sum":
        out = triple_sum_ref(sub("a"), sub("b"), sub("c"), sc("alpha", 1 / 3), sc("beta", 1 / 3))
    elif m == "sum_twice":
        out = sum_twice_ref(sub("a"), sub("b"), sub("c"), sc("alpha", 0.5), sc("beta", 0.5))
    elif m == "train_difference":
        out = train_difference_ref(sub("a"), sub("b"), sub("c"), sc("alpha", 1.0))
    elif m == "ties":
        st = info.setdefault("trim", [])
        out = ties_ref(lst("models"), sub("base"), wts(), sc("density", 1.0), sc("lambda", 1.0),
                       sc("vote", "sum"), stats=st)
    elif m == "dare":
        st = info.setdefault("dare", [])
        out = dare_ref(lst("models"), sub("base"), key, wts(), sc("density", 0.5), sc("seed", 0),
                       sc("rescale", True), sc("lambda", 1.0), stats=st)
    elif m == "dare_ties":
        st = info.setdefault("dare", [])
        out = dare_ties_ref(lst("models"), sub("base"), key, wts(), sc("density", 0.5), sc("seed", 0),
                            sc("rescale", True), sc("lambda", 1.0), sc("vote", "sum"), stats=st)
    elif m == "slerp":
        if sc("rescale", False):
            out = slerp_rescale_ref(sub("a"), sub("b"), sc("alpha", 0.5))
        else:
            out, branch = slerp_ref(sub("a"), sub("b"), sc("alpha", 0.5))
            info["branch"] = branch
    elif m == "model_stock":
        out = model_stock_ref(lst("models"), sub("base"), sc("filter_wise", False), info)
    else:
        raise ValueError(m)
    assert out.dtype == torch.float32 and out.shape == models["base"][key].shape, (m, key, out.shape)
    cache[id(node)] = out
    return out


# ============================================================================ sd-mecha (raw functions)
def sdm_case(name, key, M):
    b, f1, f2 = (M[x][key].float() for x in ("base", "ft1", "ft2"))
    T = torch.tensor
    if name == "weighted_sum":
        return sdm_linear.weighted_sum.__wrapped__({key: f1}, {key: f2}, alpha=T(0.3), key=key)
    if name == "add_difference":
        delta = sdm_linear.subtract.__wrapped__(f2, b)
        return sdm_linear.add_difference.__wrapped__({key: f1}, {key: delta}, alpha=T(1.0), key=key)
    if name == "ties_count":
        merged = sdm_ties.ties_sum.__wrapped__(f1 - b, f2 - b, k=0.5, vote_sgn=False)
        return sdm_linear.add_difference.__wrapped__({key: b}, {key: merged}, alpha=T(1.0), key=key)
    if name == "slerp_rescale":
        return sdm_linear.slerp.__wrapped__(f1, f2, alpha=T(0.3))
    if name == "model_stock_filter_wise":
        delta = sdm_ties.model_stock.__wrapped__(f1 - b, f2 - b, cos_eps=1e-6)
        return (b + delta).reshape(b.shape)  # sd-mecha returns shape [1] for a 0-d tensor
    raise KeyError(name)


def sdm_train_difference(key, M):
    """sd-mecha has no train_difference method; its building blocks give
    add_difference(a, b - c, alpha=train_difference_mask(a, b, c)) = a + (b-c) * 1.8*alpha*|b-a|/(|b-a|+|b-c|)."""
    b, f1, f2 = (M[x][key].float() for x in ("base", "ft1", "ft2"))
    mask = sdm_linear.train_difference_mask.__wrapped__(f1, f2, b, alpha=torch.tensor(1.0))
    return sdm_linear.add_difference.__wrapped__({key: f1}, {key: f2 - b}, alpha=mask, key=key)


# ============================================================================ cases
def R(merge_yaml):
    return MODELS_YAML + "merge:\n" + merge_yaml + OUTPUT_YAML


EXACT = {"f32_abs": 1e-6, "f16_ulp": 1}
CASES = [
    ("weighted_sum", """  method: weighted_sum
  a: ft1
  b: ft2
  alpha: 0.3
""", "sd-mecha", "sd-mecha weighted_sum = torch.lerp(a, b, alpha) (CPU: fma(w, b - a, a) for |w| < 0.5).", EXACT),
    ("weighted_sum_blocks", """  method: weighted_sum
  a: ft1
  b: ft2
  alpha:
    default: 0.3
    OUT00-OUT08: 0.7
    BASE: 0.0
    're:\\.bias$': 1.0
""", "reference", "Block map: regex beats block (te2 in_proj_bias, VAE bias, out.2.bias -> 1.0), out.* -> OUT08, "
     "time_embed -> IN00 (default), BASE keys -> 0.0 (exactly ft1), 1.0 -> exactly ft2. alpha >= 0.5 uses "
     "fma(alpha - 1, b - a, b). per_key lists the resolved alpha and the rule.", EXACT),
    ("add_difference", """  method: add_difference
  a: ft1
  b: ft2
  c: base
  alpha: 1.0
""", "sd-mecha", "sd-mecha: a.addcmul(subtract(b, c), alpha).", EXACT),
    ("add_difference_half", """  method: add_difference
  a: ft1
  b: ft2
  c: base
  alpha: 0.5
""", "reference", "a + f32(alpha)*(b - c).", EXACT),
    ("triple_sum", """  method: triple_sum
  a: base
  b: ft1
  c: ft2
  alpha: 0.3
  beta: 0.2
""", "reference", "((ca*a + al*b) + be*c), al = f32(alpha), be = f32(beta), ca = (1 - al) - be in f32; no FMA.", EXACT),
    ("sum_twice", """  method: sum_twice
  a: base
  b: ft1
  c: ft2
  alpha: 0.4
  beta: 0.3
""", "reference", "(1-be)*((1-al)*a + al*b) + be*c, al/be f32, (1-x) in f32; no FMA.", EXACT),
    ("train_difference", """  method: train_difference
  a: ft1
  b: ft2
  c: base
  alpha: 1.0
""", "reference", "a + f32(1.8*alpha) * ((b-c)*|b-a| / (|b-c|+|b-a|)), 0 where the denominator is 0 "
     "(proj_in: ft2 == base and ft1 == base at ~10% of elements -> 0/0).", EXACT),
    ("ties_count", """  method: ties
  models: [ft1, ft2]
  base: base
  density: 0.5
  vote: count
""", "sd-mecha", "sd-mecha ties_sum(d1, d2, k=0.5, vote_sgn=False) + base (add_difference alpha 1). Trim: "
     "k = max(int((1-density)*n), 1), thr = kthvalue(|d|, k), keep |d| >= thr (ties kept); per_key.trim.", EXACT),
    ("ties_sum_weighted", """  method: ties
  models: [ft1, ft2]
  base: base
  weights: [1.0, 0.5]
  density: 0.3
  lambda: 0.8
  vote: sum
""", "reference", "tau_i = w_i*trim(d_i); s = sign(tau_1 + tau_2); merged = sum agreeing tau / sum agreeing w "
     "(0 where none); base + f32(lambda)*merged (no FMA). k = int((1 - density)*n) from the f64 density "
     "(1600 -> 1120, 5120 -> 3584; Double(Float(0.3)) would give 1119, 3583).", EXACT),
    ("dare", """  method: dare
  models: [ft1, ft2]
  base: base
  density: 0.6
  seed: 7
""", "reference", "keep d_i[j] iff u(seed, key, i, j) < density (f64 compare); d~ = d*mask / f32(density) "
     "(true division); base + lambda*sum_i w_i d~_i (left to right). dare_rng_probe checks the RNG alone.", EXACT),
    ("dare_ties_count", """  method: dare_ties
  models: [ft1, ft2]
  base: base
  density: 0.7
  seed: 3
  vote: count
""", "reference", "DARE drop + rescale as in `dare`, then the TIES count election / disjoint merge (no trim).", EXACT),
    ("slerp", """  method: slerp
  a: ft1
  b: ft2
  alpha: 0.3
  rescale: false
""", "reference", "mergekit slerp; norms/dot as f64 sums -> f32 scalars; dot = clamp(ab/(na*nb)) f32; "
     "|dot| > 0.9995 -> torch.lerp (the 0-d logit_scale takes it, per_key.branch); trig in f64, coefficients "
     "rounded to f32; out = ca*a + cb*b (no FMA).", {"f32_abs": 1e-6, "f16_ulp": 1}),
    ("slerp_rescale", """  method: slerp
  a: ft1
  b: ft2
  alpha: 0.3
  rescale: true
""", "sd-mecha", "sd-mecha slerp (f32 torch ops; NaN -> lerp). Reduction order differs between "
     "implementations: compare with tolerance.", {"f32_abs": 2e-6, "f16_ulp": 1}),
    ("model_stock", """  method: model_stock
  models: [ft1, ft2]
  base: base
""", "reference", "Whole tensor: cos = clamp(d1.d2 / max(|d1||d2|, 1e-6)) (f64), t = N cos/(1+(N-1)cos) -> f32, "
     "base + t*((d1+d2)/N). proj_in: d2 = 0 -> cos 0 -> t 0 -> base.", {"f32_abs": 1e-6, "f16_ulp": 1}),
    ("model_stock_filter_wise", """  method: model_stock
  models: [ft1, ft2]
  base: base
  filter_wise: true
""", "sd-mecha", "sd-mecha model_stock (torch CosineSimilarity(dim=-1, eps=1e-6): a t per row of the last "
     "dimension; 0-d and 1-D tensors are one row; convs [O,I,3,3] have rows of 3). + base. Rows of 3 "
     "elements can have cos near -1, so t reaches -359 (per_key.t = [min, max]): there f32 reduction order "
     "alone moves the result by ~4e-6, hence the looser tolerance.",
     {"f32_abs": 1e-5, "f16_ulp": 1}),
    ("nested_shared", """  method: add_difference
  a: &mix
    method: weighted_sum
    a: ft1
    b: ft2
    alpha: 0.5
  b:
    method: weighted_sum
    a: *mix
    b: ft2
    alpha: 0.75
  c: base
  alpha: 0.5
""", "reference", "mix = lerp(ft1, ft2, 0.5) is shared (YAML anchor) by a and by b's inner weighted_sum; "
     "intermediates stay f32 (no f16 rounding until the output).", EXACT),
    ("nested_blocks", """  method: weighted_sum
  a: base
  b:
    method: add_difference
    a: ft1
    b: ft2
    c: base
    alpha:
      default: 1.0
      M00: 0.5
      IN03-IN05: 0.25
      're:^conditioner\\.': 0.0
  alpha:
    default: 0.5
    're:attn': 0.6
    're:to_k': 0.1
    IN00-IN08: 0.2
    VAE: 0.0
    OUT08: 0.9
""", "reference", "Block maps on the outer and on the nested expression. Map order matters: the first matching "
     "`re:` wins (attn2.to_k matches 're:attn' first -> 0.6, not 0.1); regexes before blocks (te2 attn -> 0.6); "
     "per_key.resolved lists every resolved value.", EXACT),
]


def save(tensors, path):
    save_file({k: v.contiguous() for k, v in tensors.items()}, path)


def f16_mismatches(x, y):
    return sum(int((x[k].half() != y[k].half()).sum()) for k in x)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.join(out, "models"), exist_ok=True)
    os.makedirs(os.path.join(out, "expected"), exist_ok=True)

    inputs = make_inputs()
    for name, sd in inputs.items():
        save(sd, os.path.join(out, "models", name + ".safetensors"))
    # read back what the Swift side will read
    M = {name: load_file(os.path.join(out, "models", name + ".safetensors")) for name in inputs}
    for name in M:
        assert all(v.dtype == torch.float16 for v in M[name].values())
    keys = [k for k, _ in KEYS]
    zero_t = [k for k in keys if torch.equal(M["ft2"][k], M["base"][k])]
    assert zero_t == [PROJ_IN], zero_t
    print("inputs: %d keys, %d elements each; ft2 == base on %s; zero deltas ft1 %s: %d, ft2 to_q: %d" % (
        len(keys), sum(v.numel() for v in M["base"].values()), PROJ_IN.split(".")[-2],
        "big/proj_in", int((M["ft1"][BIG] == M["base"][BIG]).sum()), int((M["ft2"][TO_Q] == M["base"][TO_Q]).sum())))

    # RNG self-check: vectorised == scalar
    for key in (keys[0], BIG):
        for i in range(2):
            s = dare_stream(7, key, i)
            u = dare_u(7, key, i, 8)
            assert all(u[j] == (mix_int((s + j) & M64) >> 40) * 2.0 ** -24 for j in range(8))

    manifest = []
    for name, merge_yaml, source, notes, tol in CASES:
        recipe = R(merge_yaml)
        doc = yaml.safe_load(recipe)
        assert doc["version"] == 1 and doc["output"]["dtype"] == "f16"
        ref, per_key = {}, {}
        for key in keys:
            info = {}
            ref[key] = evaluate(doc["merge"], key, M, {}, info)
            pk = {"block": block_of(key)}
            pk.update(info)
            per_key[key] = pk
        entry = {"name": name, "recipe": recipe,
                 "expected": {"f32": "expected/%s.f32.safetensors" % name,
                              "f16": "expected/%s.f16.safetensors" % name},
                 "source": source, "notes": notes, "tolerance": tol}
        result = ref
        summary = ""
        if source == "sd-mecha":
            sdm = {key: sdm_case(name, key, M) for key in keys}
            for key in keys:
                assert sdm[key].dtype == torch.float32 and sdm[key].shape == ref[key].shape, (name, key)
            diff = max(float((sdm[k] - ref[k]).abs().max()) for k in keys)
            mism = f16_mismatches(sdm, ref)
            assert diff <= tol["f32_abs"], (name, diff)
            entry["sdmecha_vs_reference"] = {"max_abs_f32": diff, "f16_mismatches": mism}
            summary = "sd-mecha vs reference: max abs %.3g, f16 mismatches %d" % (diff, mism)
            result = sdm
        if name == "train_difference":
            sdm = {key: sdm_train_difference(key, M) for key in keys}
            diff = max(float((sdm[k] - ref[k]).abs().max()) for k in keys)
            summary = "sd-mecha building blocks (a + (b-c)*mask) vs reference: max abs %.3g, f16 mismatches %d" % (
                diff, f16_mismatches(sdm, ref))
            assert diff <= 1e-6
        if name == "dare":
            key = BIG
            s = dare_stream(7, key, 0)
            entry["dare_rng_probe"] = {
                "seed": 7, "key": key, "model_index": 0,
                "keyhash": "0x%016x" % fnv1a64(key), "mix_seed": "0x%016x" % mix_int(7),
                "stream": "0x%016x" % s,
                "mix_values": ["0x%016x" % mix_int((s + j) & M64) for j in range(8)],
                "u": [float(x) for x in dare_u(7, key, 0, 8)],
            }
        # compact per_key: only what is informative for the case
        for key, pk in per_key.items():
            if "trim" in pk:
                pk["trim"] = [dict(st) for st in pk["trim"]]
        if name in ("weighted_sum_blocks", "nested_blocks", "ties_count", "ties_sum_weighted", "dare",
                    "dare_ties_count", "slerp", "model_stock", "model_stock_filter_wise"):
            entry["per_key"] = per_key
        manifest.append(entry)

        save(result, os.path.join(out, "expected", name + ".f32.safetensors"))
        save({k: v.half() for k, v in result.items()}, os.path.join(out, "expected", name + ".f16.safetensors"))
        extra = ""
        if "trim" in per_key[BIG]:
            extra = " | big: " + ", ".join("k %d thr %.6g kept %d ties %d" % (
                t["k"], t["threshold"], t["kept"], t["ties_at_threshold"]) for t in per_key[BIG]["trim"])
        if "dare" in per_key[BIG]:
            extra = " | big kept " + ", ".join(str(t["kept"]) for t in per_key[BIG]["dare"])
        print("%-24s %-9s max|out| %.4f %s%s" % (name, source, max(float(v.abs().max()) for k, v in result.items()
                                                                     if k != LOGIT), summary, extra))

    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(out):
        total += sum(os.path.getsize(os.path.join(root, x)) for x in files)
    print("wrote %s (%d cases, %.0f KiB)" % (out, len(manifest), total / 1024))


if __name__ == "__main__":
    sys.exit(main())
