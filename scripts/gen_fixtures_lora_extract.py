#!/usr/bin/env python3
"""Fixtures for LoRA extraction (Sources/MumuMerge/Lora/LoraExtractor.swift,
Tests/MumuMergeTests/LoraExtractTests.swift).

    python3 scripts/gen_fixtures_lora_extract.py

Output: Tests/MumuMergeTests/Fixtures/lora_extract/
  base.safetensors     a tiny "model" under real SDXL sgm names (F16): UNet transformer linears
                       (proj_in as a 1x1 conv [o, i, 1, 1], attn1 to_q / to_out.0, attn2 to_k,
                       ff.net.0.proj, ff.net.2), ResBlock convs (in_layers.2 3x3, skip_connection 1x1,
                       emb_layers.1 Linear), a Downsample op and an Upsample conv (3x3), CLIP-L q_proj and
                       fc1, bigG fused attn.in_proj_weight [3H, H] + out_proj + mlp.c_fc, and tensors that
                       are not LoRA targets (biases, norms, conv_in, time_embed, text_projection, a VAE conv)
  tuned.safetensors    base + a rank-6 delta (well separated singular values) + small noise, F32, on every
                       target except attn1.to_out.0 and the v block (rows 2H:3H) of in_proj_weight, which are
                       unchanged (zero delta: not extracted); the non-targets change too (must be ignored)
  expected.safetensors F32, per extracted module `<kohya name>.<what>`, all [out, in*kh*kw]:
                       `delta`        tuned - base (f32)
                       `product`      up @ down at rank 4 / conv rank 2 (kohya's algorithm, below)
                       `product16`    the same from the factors rounded to F16 (what a default file holds)
                       `product_full` the same at full rank (r = min(out, in*kh*kw))
                       `product_raw`  rank 4 / 2 with the signs torch's LAPACK (MKL here) happened to return,
                                      i.e. without the sign convention (informational: see below)
                       __metadata__: `modules` (JSON: per module its sgm key, row block, kind, rank, the
                       shapes of lora_down / lora_up), `keys` (the kohya tensor names, sorted),
                       `relative_error` (the aggregate below, from the F16-rounded factors, at rank 4 / 2),
                       `relative_error_full`.

Algorithm: kohya-ss sd-scripts networks/extract_lora_from_models.py `svd()` (identical to ComfyUI
comfy_extras/nodes_lora_extract.py `extract_lora`): delta = tuned - base in f32; 3x3 convs flattened to
[out, in*kh*kw], 1x1 convs squeezed; U, S, Vh = torch.linalg.svd(delta); U = U[:, :r] @ diag(S[:r]),
Vh = Vh[:r]; hi = torch.quantile(cat(U.flatten(), Vh.flatten()), 0.99) (the quantile of the SIGNED values,
as kohya and ComfyUI do, not of |values|); U, Vh = clamp(-hi, hi); conv: up [out, r, 1, 1],
down [r, in, kh, kw]; alpha = r. Two deliberate choices, both also made by the Swift code:
  - r = min(rank, out, in*kh*kw): kohya caps at min(rank, in_channels, out) (less than the flattened
    matrix's rank only for a 3x3 conv asked for a rank above its input channels).
  - Sign convention: the sign of each singular pair (U[:, i], Vh[i]) is arbitrary in LAPACK's contract, and
    the signed quantile (so the clamp, so kohya's output) depends on it: kohya's result changes with the
    LAPACK build (MKL, OpenBLAS, cuSOLVER). Both sides flip each pair so that the entry of U[:, i] of
    largest magnitude is positive (scikit-learn's svd_flip), which is one of the outputs kohya itself can
    produce, and then agree to f32 rounding. `product_raw` shows how far one LAPACK's signs move it.
Module set: kohya networks/lora.py LoRANetwork targets for SDXL: Linear children of Transformer2DModel
(`lora_unet_<sgm path>`), and with conv_dim the Conv2d / Linear children of ResnetBlock2D, Downsample2D,
Upsample2D (Linear and 1x1 conv at the linear rank, 3x3 at the conv rank); CLIPAttention q/k/v/out_proj and
CLIPMLP fc1/fc2 for `lora_te1_` (CLIP-L, HF names) and `lora_te2_` (bigG: q/k/v are rows 0:H, H:2H, 2H:3H of
in_proj_weight; out_proj = attn.out_proj, fc1 = mlp.c_fc, fc2 = mlp.c_proj).
Relative error: sqrt(sum over modules ||delta - up16 @ down16||_F^2) / sqrt(sum ||delta||_F^2), with the
factors rounded to F16 as written.
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "MumuMergeTests", "Fixtures", "lora_extract")
RANK, CONV_RANK = 4, 2
CLAMP_QUANTILE = 0.99

U = "model.diffusion_model."
T1 = "conditioner.embedders.0.transformer.text_model.encoder.layers.0."
T2 = "conditioner.embedders.1.model.transformer.resblocks.0."
H = 16   # bigG width here

# (sgm key, shape, is LoRA target)
TENSORS = [
    (U + "input_blocks.4.1.proj_in.weight", [16, 16, 1, 1], True),
    (U + "input_blocks.4.1.proj_in.bias", [16], False),
    (U + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", [16, 16], True),
    (U + "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0.weight", [16, 16], True),   # zero delta
    (U + "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0.bias", [16], False),
    (U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight", [16, 24], True),
    (U + "input_blocks.4.1.transformer_blocks.0.ff.net.0.proj.weight", [64, 16], True),
    (U + "input_blocks.4.1.transformer_blocks.0.ff.net.2.weight", [16, 32], True),
    (U + "input_blocks.4.1.transformer_blocks.0.norm1.weight", [16], False),
    (U + "input_blocks.4.1.norm.weight", [16], False),
    (U + "input_blocks.4.0.in_layers.2.weight", [16, 8, 3, 3], True),
    (U + "input_blocks.4.0.in_layers.0.weight", [8], False),
    (U + "input_blocks.4.0.emb_layers.1.weight", [16, 32], True),
    (U + "input_blocks.4.0.skip_connection.weight", [16, 8, 1, 1], True),
    (U + "input_blocks.3.0.op.weight", [8, 8, 3, 3], True),
    (U + "output_blocks.2.2.conv.weight", [8, 8, 3, 3], True),
    (U + "input_blocks.0.0.weight", [8, 4, 3, 3], False),          # conv_in: not a kohya target
    (U + "time_embed.0.weight", [32, 8], False),
    (T1 + "self_attn.q_proj.weight", [16, 16], True),
    (T1 + "mlp.fc1.weight", [32, 16], True),
    (T1 + "layer_norm1.weight", [16], False),
    (T2 + "attn.in_proj_weight", [3 * H, H], True),                 # v rows unchanged
    (T2 + "attn.in_proj_bias", [3 * H], False),
    (T2 + "attn.out_proj.weight", [H, H], True),
    (T2 + "mlp.c_fc.weight", [4 * H, H], True),
    (T2 + "ln_1.weight", [H], False),
    ("conditioner.embedders.1.model.ln_final.weight", [H], False),
    ("conditioner.embedders.1.model.text_projection", [H, H], False),
    ("first_stage_model.decoder.conv_in.weight", [8, 4, 3, 3], False),
]
ZERO = {U + "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0.weight"}
ZERO_ROWS = {T2 + "attn.in_proj_weight": (2 * H, 3 * H)}


def underscored(s):
    return s.replace(".", "_")


def modules():
    """(kohya name, sgm key, rows) of every target, in the Swift code's naming."""
    out = []
    for key, shape, target in TENSORS:
        if not target:
            continue
        if key.startswith(U):
            out.append(("lora_unet_" + underscored(key[len(U):-len(".weight")]), key, None))
        elif key.startswith(T1):
            local = key[len("conditioner.embedders.0.transformer."):-len(".weight")]
            out.append(("lora_te1_" + underscored(local), key, None))
        elif key.endswith("attn.in_proj_weight"):
            for i, p in enumerate(["q_proj", "k_proj", "v_proj"]):
                out.append((f"lora_te2_text_model_encoder_layers_0_self_attn_{p}", key, (i * H, (i + 1) * H)))
        else:
            local = {"attn.out_proj.weight": "self_attn_out_proj", "mlp.c_fc.weight": "mlp_fc1",
                     "mlp.c_proj.weight": "mlp_fc2"}[key[len(T2):]]
            out.append(("lora_te2_text_model_encoder_layers_0_" + local, key, None))
    return out


def low_rank_delta(g, out_dim, inner, scale):
    """A rank-6 delta with well separated singular values, plus small full-rank noise."""
    k = min(6, out_dim, inner)
    q1, _ = torch.linalg.qr(torch.randn(out_dim, k, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(inner, k, generator=g, dtype=torch.float64))
    s = torch.tensor([1.0, 0.7, 0.5, 0.35, 0.25, 0.18][:k], dtype=torch.float64) * scale
    noise = torch.randn(out_dim, inner, generator=g, dtype=torch.float64) * scale * 0.01
    return (q1 * s) @ q2.T + noise


def svd_flip(u, vh):
    """Make the largest-|value| entry of each column of u positive (scikit-learn's svd_flip, u-based)."""
    idx = u.abs().argmax(dim=0)
    signs = torch.sign(u[idx, torch.arange(u.shape[1])])
    signs[signs == 0] = 1
    return u * signs, vh * signs[:, None]


def kohya_extract(delta, rank, flip=True):
    """kohya-ss sd-scripts networks/extract_lora_from_models.py, svd(), per module (= ComfyUI
    nodes_lora_extract.py extract_lora), on the [out, in*kh*kw] delta; returns (up, down) as 2-D."""
    mat = delta.float()
    out_dim, inner = mat.shape
    rank = min(rank, out_dim, inner)          # kohya: min(rank, in_channels, out_dim); see the docstring
    Uf, S, Vh = torch.linalg.svd(mat)         # kohya: U, S, Vh = torch.linalg.svd(mat)
    Uf, Vh = Uf[:, :rank], Vh[:rank, :]
    if flip:
        Uf, Vh = svd_flip(Uf, Vh)
    up = Uf @ torch.diag(S[:rank])            # kohya: U = U @ torch.diag(S)
    dist = torch.cat([up.flatten(), Vh.flatten()])
    hi_val = torch.quantile(dist, CLAMP_QUANTILE)   # kohya: signed values, CLAMP_QUANTILE = 0.99
    low_val = -hi_val
    return up.clamp(low_val, hi_val), Vh.clamp(low_val, hi_val)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(20240611)
    base, tuned = {}, {}
    for key, shape, target in TENSORS:
        w = (torch.randn(*shape, generator=g, dtype=torch.float64) * 0.2).to(torch.float16)
        base[key] = w
        wt = w.double()
        if key in ZERO:
            tuned[key] = wt.float()
            continue
        out_dim = shape[0]
        inner = 1
        for d in shape[1:]:
            inner *= d
        if target and len(shape) >= 2:
            d = low_rank_delta(g, out_dim, inner, 0.05).reshape(shape)
            if key in ZERO_ROWS:
                a, b = ZERO_ROWS[key]
                d[a:b] = 0
            wt = wt + d
        else:
            wt = wt + torch.randn(*shape, generator=g, dtype=torch.float64) * 0.01
        tuned[key] = wt.float()
    base_meta = {"modelspec.title": "lora-extract base"}
    save_file(base, os.path.join(OUT, "base.safetensors"), metadata=base_meta)
    save_file(tuned, os.path.join(OUT, "tuned.safetensors"), metadata={"modelspec.title": "lora-extract tuned"})

    expected, info, keys = {}, {}, []
    err = {"r": [0.0, 0.0], "full": [0.0, 0.0]}
    for name, key, rows in modules():
        shape = next(s for k, s, _ in TENSORS if k == key)
        delta = tuned[key].float() - base[key].float()
        if rows:
            delta = delta[rows[0]:rows[1]]
        mat = delta.reshape(delta.shape[0], -1)
        if torch.count_nonzero(mat) == 0:
            continue
        conv3 = len(shape) == 4 and shape[2] * shape[3] > 1
        r_req = CONV_RANK if conv3 else RANK
        out_dim, inner = mat.shape
        r = min(r_req, out_dim, inner)
        up, down = kohya_extract(mat, r_req)
        up_raw, down_raw = kohya_extract(mat, r_req, flip=False)
        full_rank = min(out_dim, inner)
        up_f, down_f = kohya_extract(mat, full_rank)
        expected[name + ".delta"] = mat.contiguous()
        expected[name + ".product"] = (up.double() @ down.double()).float().contiguous()
        expected[name + ".product16"] = (up.half().double() @ down.half().double()).float().contiguous()
        expected[name + ".product_full"] = (up_f.double() @ down_f.double()).float().contiguous()
        expected[name + ".product_raw"] = (up_raw.double() @ down_raw.double()).float().contiguous()
        for tag, (u, v) in (("r", (up, down)), ("full", (up_f, down_f))):
            p = u.half().double() @ v.half().double()
            err[tag][0] += float(((mat.double() - p) ** 2).sum())
            err[tag][1] += float((mat.double() ** 2).sum())
        if len(shape) == 4:
            down_shape, up_shape = [r, shape[1], shape[2], shape[3]], [out_dim, r, 1, 1]
        else:
            down_shape, up_shape = [r, inner], [out_dim, r]
        info[name] = {"key": key, "rows": list(rows) if rows else None, "rank": r,
                      "kind": "conv3x3" if conv3 else ("conv1x1" if len(shape) == 4 else "linear"),
                      "down_shape": down_shape, "up_shape": up_shape, "full_rank": full_rank}
        keys += [name + ".alpha", name + ".lora_down.weight", name + ".lora_up.weight"]
        # sanity: kohya's product and the raw one are close (signs only move the clamp threshold)
        rel = float((expected[name + ".product"] - expected[name + ".product_raw"]).norm() / expected[name + ".product"].norm())
        print(f"{name}: r={r} rel(flip vs raw)={rel:.2e} rel(product vs delta)="
              f"{float((expected[name + '.product'] - mat).norm() / mat.norm()):.3f}")
    meta = {
        "modules": json.dumps(info, sort_keys=True),
        "keys": json.dumps(sorted(keys)),
        "relative_error": repr((err["r"][0] / err["r"][1]) ** 0.5),
        "relative_error_full": repr((err["full"][0] / err["full"][1]) ** 0.5),
        "rank": str(RANK), "conv_rank": str(CONV_RANK),
    }
    save_file(expected, os.path.join(OUT, "expected.safetensors"), metadata=meta)
    print(f"{len(info)} modules; relative error {meta['relative_error']} (rank {RANK}/{CONV_RANK}), "
          f"{meta['relative_error_full']} (full rank)")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"fixtures: {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
