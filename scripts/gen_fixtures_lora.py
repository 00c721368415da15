#!/usr/bin/env python3
"""Generate tiny LoRA fixtures for the `sdxl-tiny` architecture (formats/sdxl-tiny.json).

    python3 scripts/gen_fixtures_lora.py            # write + verify
    python3 scripts/gen_fixtures_lora.py --no-verify

Output: Tests/MumuFormatsTests/Fixtures/lora/
  kohya_lora.safetensors    kohya LoRA, F16, rank 4 alpha 2, 13 modules (UNet attn1 q/k/v/out,
                            attn2 to_k/to_v, ff, proj_in, mid attn1; te1 q_proj, out_proj; te2
                            k_proj, out_proj), kohya ss_* metadata
  kohya_locon.safetensors   kohya networks.lora with conv_dim 2 / conv_alpha 1 ("LoCon", LoRA-C3Lier),
                            BF16: 4 Linear (rank 4, alpha 2), 3 conv 3x3 (rank 2, alpha 1:
                            down [2,in,3,3], up [out,2,1,1]), 1 conv 1x1 (rank 4, alpha 2:
                            down [4,in,1,1], up [out,4,1,1])
  loha.safetensors          LyCORIS LoHa, F32, rank 4 alpha 2: hada_w1_a [out,r], hada_w1_b [r,in],
                            hada_w2_a, hada_w2_b, alpha; one conv 3x3 with w*_b [r, in*3*3] (no Tucker)
  lokr.safetensors          LyCORIS LoKr, F32, lora_dim 4 alpha 2, factors from LyCORIS'
                            factorization(dim, -1) and its decompose rule (w2 is split into
                            lokr_w2_a [c,r] @ lokr_w2_b [r,d] only when r < max(c,d)/2, w1 always
                            full): 3 modules with decomposed w2 (scale alpha/r = 0.5) and 2 with
                            both factors full (LyCORIS then stores alpha = lora_dim and uses scale 1)
  dora.safetensors          LyCORIS LoRA/LoCon with DoRA (dora_wd), F32, + `dora_scale`
  dora_input_axis.safetensors  same, older LyCORIS layout (norm over the input axis)
  peft.safetensors          diffusers/PEFT layout written by diffusers'
                            StableDiffusionXLPipeline.save_lora_weights: `unet.<diffusers path>.lora_A.weight`
                            (down) / `.lora_B.weight` (up), `text_encoder.text_model...`, `text_encoder_2...`,
                            __metadata__ {"format":"pt", "lora_adapter_metadata": JSON}
  lora_expected.json        per file: kind, layout, rank, alpha, dtype, target_count, targets (kohya
                            names, sorted), metadata, and per module: component, target sgm tensor,
                            rows (te2 q/k/v slice of the fused in_proj_weight), shapes, rank, alpha, scale
  lora_expected_deltas.safetensors   F32 ground truth at multiplier 1.0, computed in float64 from
                            the stored (decoded) factors: "<file stem>/<kohya name>" = scale * dW in
                            the target's shape (HF q/k/v shape for te2); for the DoRA files instead
                            "<stem>.base/<kohya>" = the base weight W used and "<stem>.merged/<kohya>" = W'.

Conventions (kohya-ss sd-scripts networks/lora.py, LyCORIS, PEFT; docs/merging.md):
  kohya names: `lora_unet_` + sgm module path (dots -> _), `lora_te1_` / `lora_te2_` + HF CLIP
    module path; `.lora_down.weight`, `.lora_up.weight`, `.alpha` (rank-0, file dtype);
    scale = alpha / rank.
  te2 targets are HF q_proj/k_proj/v_proj; in an sgm checkpoint they are rows
    [0:C], [C:2C], [2C:3C] of `conditioner.embedders.1.model.transformer.resblocks.N.attn.in_proj_weight`.
  DoRA: `dora_scale` is the magnitude vector. LyCORIS (wd_on_out=True, its default since 2.2/3.x)
    stores it per OUTPUT channel: [out, 1] for Linear, [out, 1, 1, 1] for conv; older LyCORIS
    stored it per INPUT channel: [1, in] / [1, in, 1, 1] (dora_input_axis.safetensors). PEFT keeps
    `lora_magnitude_vector` [out]. W' = dora_scale * (W + s*dW) / ||W + s*dW||, the norm taken
    per output row (over all other axes) when dora_scale.shape[0] == out, else per input column
    (over out and kernel axes); no epsilon in the expected values (LyCORIS/ComfyUI add the
    dtype's eps to the norm). Strength m: W + m*(W' - W) (docs/merging.md; LyCORIS itself rescales
    the magnitude instead, identical at m = 1 which is what the expected values use).
  PEFT: scale = lora_alpha / r from `lora_adapter_metadata` ("unet.r", "unet.lora_alpha",
    "text_encoder.r", ...: one flat JSON object, keys "<component>.<LoraConfig field>", written
    with json.dumps(indent=2, sort_keys=True)); the components here use different alphas
    (unet 2, text_encoder 4, text_encoder_2 8) so a reader must pick the right one.
    transformers >= 5.6 would name CLIPTextModel LoRA keys without `text_model.`
    (`text_encoder.encoder.layers...`); this file uses the long-standing
    `text_encoder.text_model.encoder...` form, which diffusers still reads; the metadata's
    target_modules name text-encoder modules without `text_model.` (PEFT matches them as
    suffixes, so they resolve with and without the wrapper: diffusers 0.42 + transformers 5.24
    fail to load a file whose te1 target_modules keep `text_model.`).

Verification (default): kohya_lora, kohya_locon and peft are loaded into a tiny diffusers SDXL
pipeline with diffusers' own `load_lora_weights` + `fuse_lora`; every fused weight must equal
base + expected delta (and nothing else may change). DoRA expected values are cross-checked
against PEFT's DoRA merge (use_dora=True) for the output-axis modules. LoHa/LoKr are checked
against a second, independent formulation (einsum / 4-D kron as LyCORIS builds it).
"""

import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sdxl_configs as C  # noqa: E402
import sdxl_keys as K  # noqa: E402
from gen_fixtures_safetensors import install_if_changed, stable_save  # noqa: E402

ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "Tests", "MumuFormatsTests", "Fixtures", "lora")

PFX = {"unet": "model.diffusion_model.", "te1": "conditioner.embedders.0.transformer.",
       "te2": "conditioner.embedders.1.model."}
DT = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32"}


# =========================================================================== base model
class Tiny:
    """sdxl-tiny with seeded weights; diffusers/HF state dicts and the sgm view."""

    def __init__(self):
        torch.manual_seed(1234)
        self.unet = C.build("unet", C.SDXL_TINY_UNET)
        self.vae = C.build("vae", C.SDXL_TINY_VAE)
        self.te1 = C.build("clip", C.SDXL_TINY_TE1)
        self.te2 = C.build("clip_proj", C.SDXL_TINY_TE2)
        with torch.no_grad():
            for m in (self.unet, self.te1, self.te2):
                for p in m.parameters():       # diffusers zero-inits some convs: make all non-trivial
                    p.copy_(torch.randn_like(p) * 0.05)
        self.sd = {
            "unet": {k: v.detach().clone() for k, v in self.unet.state_dict().items()},
            "te1": {K.normalize_clip_name(k): v.detach().clone() for k, v in self.te1.state_dict().items()},
            "te2": {K.normalize_clip_name(k): v.detach().clone() for k, v in self.te2.state_dict().items()},
        }
        self.unet_to_sgm = K.name_map("unet", self.sd["unet"])           # diffusers -> sgm (bare)
        self.sgm_to_unet = {v: k for k, v in self.unet_to_sgm.items()}
        self.sgm = {}
        for comp in ("unet", "te1", "te2"):
            self.sgm.update(K.diffusers_to_sgm(comp, self.sd[comp], PFX[comp]))

    def target(self, comp, path):
        """-> dict(component, module (sgm / HF path), kohya, sgm_weight, sgm_shape, rows,
        weight (the HF/diffusers-shaped base tensor), diffusers (param name in the diffusers
        component), peft (diffusers-pipeline module name))."""
        t = {"component": comp, "module": path, "kohya": K.sgm_module_to_kohya(path, comp)}
        if comp == "unet":
            dname = self.sgm_to_unet[path + ".weight"]
            w = self.sd["unet"][dname]
            t.update(sgm_weight=PFX["unet"] + path + ".weight", rows=None, diffusers=dname,
                     peft="unet." + dname[: -len(".weight")])
        else:
            hf = path + ".weight"
            w = self.sd[comp][hf]
            if comp == "te1":
                t.update(sgm_weight=PFX["te1"] + hf, rows=None)
            else:
                s, slot, _ = K._te2_name(hf)
                rows = None if slot is None else [slot * w.shape[0], (slot + 1) * w.shape[0]]
                t.update(sgm_weight=PFX["te2"] + s, rows=rows)
            t.update(diffusers=hf, peft=("text_encoder." if comp == "te1" else "text_encoder_2.") + path)
        t["sgm_shape"] = list(self.sgm[t["sgm_weight"]].shape)
        t["weight_shape"] = list(w.shape)
        t["base"] = w
        if t["rows"] is None:
            assert t["sgm_shape"] == t["weight_shape"]
        return t


# =========================================================================== helpers
def rnd(g, *shape, s=0.1):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * s


def dec(t):
    """decoded float64 value of a stored tensor."""
    return t.to(torch.float64)


def kind_of(shape):
    if len(shape) == 2:
        return "linear"
    return "conv1x1" if tuple(shape[2:]) == (1, 1) else "conv%dx%d" % tuple(shape[2:])


def factorization(dimension, factor=-1):
    """LyCORIS lycoris/functional/general.py factorization (m <= n, m*n = dimension)."""
    if factor > 0 and dimension % factor == 0:
        m, n = factor, dimension // factor
        return (n, m) if m > n else (m, n)
    if factor < 0:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n


def sshs_hashes(path):
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    full = hashlib.sha256(data[8 + n:]).hexdigest()
    legacy = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return full, legacy, n


def save_kohya(path, tensors, meta):
    """kohya writes sshs_model_hash = sha256 of the bytes after the header (the tensor data do
    not depend on the metadata) and sshs_legacy_hash = sha256 of bytes [0x100000, 0x110000)."""
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=meta)
    full, legacy, _ = sshs_hashes(tmp)
    os.remove(tmp)
    meta = dict(meta, sshs_model_hash=full, sshs_legacy_hash=legacy)
    stable_save(tensors, path, metadata=meta)
    assert sshs_hashes(path)[0] == full
    return meta


def kohya_meta(name, module="networks.lora", dim=4, alpha=2, args=None):
    m = {
        "ss_network_module": module,
        "ss_network_dim": str(dim),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_output_name": name,
        "ss_v2": "False",
        "ss_sd_model_name": "sdxl-tiny.safetensors",
        "ss_training_comment": "mumu test fixture (random weights)",
    }
    if args is not None:
        m["ss_network_args"] = json.dumps(args)
    return m


# =========================================================================== targets
KOHYA_LORA_TARGETS = [
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_k"),
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_v"),
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_out.0"),
    ("unet", "input_blocks.4.1.transformer_blocks.1.attn2.to_k"),
    ("unet", "input_blocks.4.1.proj_in"),
    ("unet", "input_blocks.5.1.transformer_blocks.1.attn2.to_v"),
    ("unet", "input_blocks.5.1.transformer_blocks.1.ff.net.2"),
    ("unet", "middle_block.1.transformer_blocks.0.attn1.to_q"),
    ("te1", "text_model.encoder.layers.0.self_attn.q_proj"),
    ("te1", "text_model.encoder.layers.0.self_attn.out_proj"),
    ("te2", "text_model.encoder.layers.0.self_attn.k_proj"),
    ("te2", "text_model.encoder.layers.0.self_attn.out_proj"),
]
LOCON_TARGETS = [
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("unet", "input_blocks.5.1.transformer_blocks.1.attn2.to_k"),
    ("te1", "text_model.encoder.layers.1.mlp.fc1"),
    ("te1", "text_model.encoder.layers.1.self_attn.out_proj"),
    ("unet", "input_blocks.2.0.out_layers.3"),       # conv 3x3 [32,32,3,3]
    ("unet", "output_blocks.8.0.in_layers.2"),       # conv 3x3 [32,64,3,3]
    ("unet", "input_blocks.3.0.op"),                 # downsampler conv 3x3 [32,32,3,3]
    ("unet", "output_blocks.5.0.skip_connection"),   # conv 1x1 [64,96,1,1]
]
LOHA_TARGETS = [
    ("unet", "input_blocks.5.1.transformer_blocks.0.attn1.to_q"),
    ("unet", "input_blocks.5.1.transformer_blocks.0.attn2.to_k"),
    ("unet", "output_blocks.4.1.proj_out"),          # [64,64]
    ("unet", "input_blocks.2.0.in_layers.2"),        # conv 3x3 [32,32,3,3]
    ("te1", "text_model.encoder.layers.2.mlp.fc2"),
    ("te2", "text_model.encoder.layers.1.self_attn.v_proj"),
]
LOKR_TARGETS = [
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),      # [64,64]: w1, w2 full
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn2.to_k"),      # [64,96]: w2 decomposed
    ("unet", "input_blocks.4.1.transformer_blocks.1.ff.net.2"),        # [64,256]: w2 decomposed
    ("unet", "input_blocks.1.0.out_layers.3"),                         # conv [32,32,3,3]: both full
    ("te2", "text_model.encoder.layers.2.mlp.fc1"),                    # [128,64]: w2 decomposed
]
DORA_TARGETS = [
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn2.to_v"),
    ("unet", "output_blocks.3.1.proj_in"),
    ("unet", "input_blocks.1.0.out_layers.3"),       # conv 3x3 [32,32,3,3], rank 2 alpha 1
    ("te1", "text_model.encoder.layers.0.self_attn.v_proj"),
]
DORA_IN_TARGETS = [
    ("unet", "input_blocks.4.1.transformer_blocks.0.attn2.to_k"),
    ("te2", "text_model.encoder.layers.0.self_attn.q_proj"),
]
PEFT_TARGETS = {   # component -> (r, lora_alpha, [targets])
    "unet": (4, 2, [
        ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
        ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_k"),
        ("unet", "input_blocks.4.1.transformer_blocks.0.attn2.to_v"),
        ("unet", "output_blocks.3.1.transformer_blocks.0.attn1.to_out.0"),
        ("unet", "output_blocks.3.1.proj_out"),
        ("unet", "output_blocks.7.0.out_layers.3"),  # conv 3x3 [32,32,3,3]
    ]),
    "text_encoder": (4, 4, [("te1", "text_model.encoder.layers.0.self_attn.q_proj")]),
    "text_encoder_2": (4, 8, [("te2", "text_model.encoder.layers.0.self_attn.k_proj")]),
}


# =========================================================================== builders
def module_entry(t, **kw):
    e = {k: t[k] for k in ("kohya", "component", "module", "sgm_weight", "sgm_shape", "rows", "weight_shape")}
    e["kind"] = kind_of(t["weight_shape"])
    e.update(kw)
    return e


def build_lora(tiny, targets, dtype, seed, conv_rank=2, conv_alpha=1.0, dora=None):
    """kohya LoRA / LoCon (+ DoRA). Returns tensors, modules, deltas (scale*dW, float64),
    and for DoRA also base and merged weights."""
    g = torch.Generator().manual_seed(seed)
    tensors, modules, deltas, extra = {}, [], {}, {}
    for comp, path in targets:
        t = tiny.target(comp, path)
        shape = t["weight_shape"]
        is3 = len(shape) == 4 and tuple(shape[2:]) != (1, 1)
        r, alpha = (conv_rank, conv_alpha) if is3 else (4, 2.0)
        out_c, in_c = shape[0], shape[1]
        if len(shape) == 2:
            down, up = rnd(g, r, in_c), rnd(g, out_c, r, s=0.05)
        else:
            kh, kw = shape[2], shape[3]
            down, up = rnd(g, r, in_c, kh, kw), rnd(g, out_c, r, 1, 1, s=0.05)
        down, up = down.to(dtype), up.to(dtype)
        a = torch.tensor(alpha, dtype=dtype)
        n = t["kohya"]
        tensors[n + ".lora_down.weight"] = down
        tensors[n + ".lora_up.weight"] = up
        tensors[n + ".alpha"] = a
        scale = float(dec(a)) / r
        dW = (dec(up).flatten(1) @ dec(down).flatten(1)).reshape(shape) * scale
        deltas[n] = dW
        names = {"down": [n + ".lora_down.weight", list(down.shape)], "up": [n + ".lora_up.weight", list(up.shape)],
                 "alpha": [n + ".alpha", []]}
        e = module_entry(t, rank=r, alpha=float(dec(a)), scale=scale, tensors=names)
        if dora is not None:
            W = t["base"].to(torch.float64)
            Wc = W + dW
            if dora == "out":
                norm = Wc.reshape(shape[0], -1).norm(dim=1).reshape(shape[0], *[1] * (len(shape) - 1))
            else:
                norm = Wc.transpose(0, 1).reshape(shape[1], -1).norm(dim=1) \
                    .reshape(shape[1], *[1] * (len(shape) - 1)).transpose(0, 1)
            mag = (norm * (1 + 0.05 * torch.randn(norm.shape, generator=g, dtype=torch.float64))).to(dtype)
            tensors[n + ".dora_scale"] = mag
            merged = dec(mag) * Wc / norm
            extra[n] = (W, merged)
            deltas[n] = merged - W
            names["dora_scale"] = [n + ".dora_scale", list(mag.shape)]
            e["dora_axis"] = dora
        modules.append(e)
    return tensors, modules, deltas, extra


def build_loha(tiny, targets, seed):
    g = torch.Generator().manual_seed(seed)
    tensors, modules, deltas = {}, [], {}
    r, alpha = 4, 2.0
    for comp, path in targets:
        t = tiny.target(comp, path)
        shape = t["weight_shape"]
        out_c, in_flat = shape[0], int(np.prod(shape[1:]))
        w1a, w1b = rnd(g, out_c, r, s=0.2), rnd(g, r, in_flat, s=0.2)
        w2a, w2b = rnd(g, out_c, r, s=0.2), rnd(g, r, in_flat, s=0.2)
        n = t["kohya"]
        ts = {"hada_w1_a": w1a, "hada_w1_b": w1b, "hada_w2_a": w2a, "hada_w2_b": w2b}
        for k, v in ts.items():
            tensors[f"{n}.{k}"] = v.to(torch.float32)
        tensors[n + ".alpha"] = torch.tensor(alpha, dtype=torch.float32)
        d = {k: dec(tensors[f"{n}.{k}"]) for k in ts}
        scale = alpha / r
        dW = ((d["hada_w1_a"] @ d["hada_w1_b"]) * (d["hada_w2_a"] @ d["hada_w2_b"])).reshape(shape) * scale
        # independent formulation
        alt = torch.einsum("or,ri,os,si->oi", d["hada_w1_a"], d["hada_w1_b"], d["hada_w2_a"], d["hada_w2_b"]) * scale
        assert torch.allclose(alt.reshape(shape), dW, rtol=1e-12, atol=1e-15)
        deltas[n] = dW
        names = {k: [f"{n}.{k}", list(v.shape)] for k, v in ts.items()}
        names["alpha"] = [n + ".alpha", []]
        modules.append(module_entry(t, rank=r, alpha=alpha, scale=scale, tensors=names))
    return tensors, modules, deltas


def build_lokr(tiny, targets, seed):
    g = torch.Generator().manual_seed(seed)
    tensors, modules, deltas = {}, [], {}
    lora_dim, alpha_arg = 4, 2.0
    for comp, path in targets:
        t = tiny.target(comp, path)
        shape = t["weight_shape"]
        out_c, in_c = shape[0], shape[1]
        ksz = shape[2:]
        in_m, in_n = factorization(in_c)
        out_l, out_k = factorization(out_c)
        w1 = rnd(g, out_l, in_m, s=0.3)
        decompose_w2 = lora_dim < max(out_k, in_n) / 2
        n = t["kohya"]
        names = {}
        tensors[n + ".lokr_w1"] = w1.to(torch.float32)
        names["lokr_w1"] = [n + ".lokr_w1", [out_l, in_m]]
        if decompose_w2:
            w2a = rnd(g, out_k, lora_dim, s=0.3)
            w2b = rnd(g, lora_dim, in_n * int(np.prod(ksz)) if ksz else in_n, s=0.3)
            tensors[n + ".lokr_w2_a"] = w2a.to(torch.float32)
            tensors[n + ".lokr_w2_b"] = w2b.to(torch.float32)
            names["lokr_w2_a"] = [n + ".lokr_w2_a", list(w2a.shape)]
            names["lokr_w2_b"] = [n + ".lokr_w2_b", list(w2b.shape)]
            alpha = alpha_arg
            w2 = dec(tensors[n + ".lokr_w2_a"]) @ dec(tensors[n + ".lokr_w2_b"])
            rank = lora_dim
        else:
            w2 = rnd(g, out_k, in_n, *ksz, s=0.3)
            tensors[n + ".lokr_w2"] = w2.to(torch.float32)
            names["lokr_w2"] = [n + ".lokr_w2", list(w2.shape)]
            alpha = float(lora_dim)      # LyCORIS: both factors full -> alpha = lora_dim, scale 1
            w2 = dec(tensors[n + ".lokr_w2"])
            rank = None
        tensors[n + ".alpha"] = torch.tensor(alpha, dtype=torch.float32)
        names["alpha"] = [n + ".alpha", []]
        scale = 1.0 if rank is None else alpha / rank
        w1d = dec(tensors[n + ".lokr_w1"])
        dW = torch.kron(w1d, w2.reshape(out_k, -1)).reshape(shape) * scale
        # independent formulation: LyCORIS' 4-D kron for conv
        if ksz:
            alt = torch.kron(w1d[:, :, None, None], w2.reshape(out_k, in_n, *ksz)) * scale
        else:
            alt = torch.einsum("ab,cd->acbd", w1d, w2).reshape(out_c, in_c) * scale
        assert torch.allclose(alt, dW, rtol=1e-12, atol=1e-15)
        deltas[n] = dW
        e = module_entry(t, rank=rank, alpha=alpha, scale=scale, tensors=names,
                         lokr_factors={"w1": [out_l, in_m], "w2": [out_k, in_n] + list(ksz), "w2_decomposed": decompose_w2})
        modules.append(e)
    return tensors, modules, deltas


def build_peft(tiny, seed, path):
    """Write with diffusers' own save path (StableDiffusionXLPipeline.save_lora_weights)."""
    from diffusers import StableDiffusionXLPipeline
    from peft import LoraConfig
    g = torch.Generator().manual_seed(seed)
    layers, metas, modules, deltas = {}, {}, [], {}
    for pcomp, (r, alpha, targets) in PEFT_TARGETS.items():
        sd = {}
        tmods = []
        for comp, p in targets:
            t = tiny.target(comp, p)
            shape = t["weight_shape"]
            inner = t["peft"].split(".", 1)[1]            # module path inside the component
            if len(shape) == 2:
                A, B = rnd(g, r, shape[1]), rnd(g, shape[0], r, s=0.05)
            else:
                A, B = rnd(g, r, shape[1], *shape[2:]), rnd(g, shape[0], r, 1, 1, s=0.05)
            A, B = A.to(torch.float32), B.to(torch.float32)
            sd[inner + ".lora_A.weight"] = A
            sd[inner + ".lora_B.weight"] = B
            scale = alpha / r
            deltas[t["kohya"]] = (dec(B).flatten(1) @ dec(A).flatten(1)).reshape(shape) * scale
            full = f"{pcomp}.{inner}"
            modules.append(module_entry(t, rank=r, alpha=float(alpha), scale=scale, peft_module=full,
                                        tensors={"down": [full + ".lora_A.weight", list(A.shape)],
                                                 "up": [full + ".lora_B.weight", list(B.shape)]}))
            # text encoders: target the path below `text_model.` so that PEFT's suffix match finds
            # the module both in CLIPTextModel with `text_model.` (transformers < 5.6) and flattened
            tmods.append(inner.removeprefix("text_model."))
        layers[pcomp] = sd
        cfg = LoraConfig(r=r, lora_alpha=alpha, init_lora_weights="gaussian", target_modules=sorted(tmods))
        md = cfg.to_dict()
        md["target_modules"] = sorted(md["target_modules"])   # a set in PEFT: make the order deterministic
        metas[pcomp] = md
    import tempfile
    d = tempfile.mkdtemp(prefix="mumu_peft_")
    StableDiffusionXLPipeline.save_lora_weights(
        d, unet_lora_layers=layers["unet"], text_encoder_lora_layers=layers["text_encoder"],
        text_encoder_2_lora_layers=layers["text_encoder_2"], weight_name=os.path.basename(path),
        unet_lora_adapter_metadata=metas["unet"], text_encoder_lora_adapter_metadata=metas["text_encoder"],
        text_encoder_2_lora_adapter_metadata=metas["text_encoder_2"])
    tmp = path + ".tmp"
    os.replace(os.path.join(d, os.path.basename(path)), tmp)
    os.rmdir(d)
    install_if_changed(tmp, path)
    return modules, deltas


# =========================================================================== verification
def tiny_pipeline(tiny):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    unet = C.build("unet", C.SDXL_TINY_UNET)
    unet.load_state_dict(tiny.sd["unet"])
    te1 = C.build("clip", C.SDXL_TINY_TE1)
    te1.load_state_dict({k.removeprefix("text_model.") if not hasattr(te1, "text_model") else k: v
                         for k, v in tiny.sd["te1"].items()})
    te2 = C.build("clip_proj", C.SDXL_TINY_TE2)
    te2.load_state_dict(tiny.sd["te2"])
    return StableDiffusionXLPipeline(vae=tiny.vae, text_encoder=te1, text_encoder_2=te2, tokenizer=None,
                                     tokenizer_2=None, unet=unet, scheduler=EulerDiscreteScheduler())


def verify_with_diffusers(tiny, path, modules, deltas):
    """Load with diffusers, read the scale PEFT resolved for every target, fuse, and require
    fused - base == expected delta * (diffusers scale / our scale). Returns the worst relative
    error, the number of changed tensors and the modules whose scale diffusers gets different."""
    pipe = tiny_pipeline(tiny)
    pipe.load_lora_weights(path)
    comps = {"unet": pipe.unet, "te1": pipe.text_encoder, "te2": pipe.text_encoder_2}
    dnames, scale_ratio, disagree = {}, {}, []
    for e in modules:
        comp = e["component"]
        dname = tiny.sgm_to_unet[e["module"] + ".weight"] if comp == "unet" else e["module"] + ".weight"
        dnames[e["kohya"]] = dname
        mpath = dname[: -len(".weight")]
        if comp == "te1" and not hasattr(comps[comp], "text_model"):
            mpath = mpath.removeprefix("text_model.")
        layer = comps[comp].get_submodule(mpath)
        (sc,) = list(layer.scaling.values())
        scale_ratio[e["kohya"]] = sc / e["scale"]
        if abs(sc - e["scale"]) > 1e-12:
            disagree.append((e["kohya"], e["scale"], sc))
    pipe.fuse_lora(lora_scale=1.0)
    pipe.unload_lora_weights()   # keeps the fused weights, removes the adapter layers
    fused = {"unet": dict(pipe.unet.state_dict()),
             "te1": {K.normalize_clip_name(k): v for k, v in pipe.text_encoder.state_dict().items()},
             "te2": {K.normalize_clip_name(k): v for k, v in pipe.text_encoder_2.state_dict().items()}}
    want_changed = set()
    worst = 0.0
    for e in modules:
        comp = e["component"]
        dname = dnames[e["kohya"]]
        want_changed.add((comp, dname))
        got = fused[comp][dname].to(torch.float64) - tiny.sd[comp][dname].to(torch.float64)
        want = deltas[e["kohya"]] * scale_ratio[e["kohya"]]
        err = (got - want).abs().max().item() / max(want.abs().max().item(), 1e-12)
        worst = max(worst, err)
        assert err < 1e-5, (path, e["kohya"], err)
    changed = set()
    for comp in ("unet", "te1", "te2"):
        for k, v in fused[comp].items():
            if k in tiny.sd[comp] and not torch.equal(v, tiny.sd[comp][k]):
                changed.add((comp, k))
    assert changed == want_changed, (sorted(changed ^ want_changed))[:10]
    return worst, len(changed), disagree


def verify_dora_with_peft(modules, extra, deltas, tensors):
    """PEFT DoRA merge on a stand-alone Linear/Conv2d (output-axis layout)."""
    from peft import LoraConfig, get_peft_model
    worst = 0.0
    n_checked = 0
    for e in modules:
        if e.get("dora_axis") != "out":
            continue
        n = e["kohya"]
        W, merged = extra[n]
        shape = list(W.shape)
        r = e["rank"]
        if len(shape) == 2:
            base = torch.nn.Sequential(torch.nn.Linear(shape[1], shape[0], bias=False))
        else:
            base = torch.nn.Sequential(torch.nn.Conv2d(shape[1], shape[0], shape[2:], bias=False))
        base = base.double()
        with torch.no_grad():
            base[0].weight.copy_(W)
        m = get_peft_model(base, LoraConfig(r=r, lora_alpha=e["alpha"], use_dora=True, target_modules=["0"]))
        layer = m.base_model.model[0]
        with torch.no_grad():
            layer.lora_A["default"].weight.copy_(dec(tensors[n + ".lora_down.weight"]))
            layer.lora_B["default"].weight.copy_(dec(tensors[n + ".lora_up.weight"]))
            mv = layer.lora_magnitude_vector["default"].weight
            mv.copy_(dec(tensors[n + ".dora_scale"]).reshape(mv.shape))
        merged_model = m.merge_and_unload()
        got = merged_model[0].weight.detach().to(torch.float64)
        err = (got - merged).abs().max().item() / merged.abs().max().item()
        worst = max(worst, err)
        assert err < 1e-9, (n, err)
        n_checked += 1
    return worst, n_checked


# =========================================================================== main
def main():
    verify = "--no-verify" not in sys.argv[1:]
    os.makedirs(OUT, exist_ok=True)
    tiny = Tiny()
    expected = {
        "architecture": "sdxl-tiny",
        "descriptor": "formats/sdxl-tiny.json",
        "multiplier": 1.0,
        "deltas_file": "lora_expected_deltas.safetensors",
        "notes": [
            "targets: kohya module names, sorted; PEFT modules are listed under their kohya names too",
            "rows: te2 q/k/v targets are row slices [begin,end) of the fused sgm in_proj_weight",
            "rank: the largest module rank (ranks lists all; null for LoKr modules with both factors full); "
            "alpha: null when modules differ (alphas lists all); per-module rank/alpha/scale are authoritative",
            "deltas '<stem>/<kohya>' = scale * dW (multiplier 1) in weight_shape",
            "DoRA files instead: '<stem>.base/<kohya>' (the W used) and '<stem>.merged/<kohya>' (W' at m = 1)",
        ],
        "files": {},
    }
    all_deltas = {}

    def record(fname, kind, layout, modules, deltas, meta, dtype, extra=None):
        path = os.path.join(OUT, fname)
        stem = fname.rsplit(".", 1)[0]
        with safe_open(path, "pt") as f:
            keys = list(f.keys())
            md = f.metadata()
        full, legacy, n = sshs_hashes(path)
        ranks = sorted({m["rank"] for m in modules if m["rank"] is not None})
        alphas = sorted({m["alpha"] for m in modules})
        expected["files"][fname] = {
            "kind": kind, "layout": layout, "dtype": dtype,
            "rank": ranks[-1] if ranks else None, "ranks": ranks,
            "alpha": alphas[0] if len(alphas) == 1 else None, "alphas": alphas,
            "target_count": len(modules),
            "targets": sorted(m["kohya"] for m in modules),
            "tensor_count": len(keys),
            "file_bytes": os.path.getsize(path), "header_len": n,
            "autov3": full[:12], "sha256_after_header": full,
            "metadata": dict(sorted(md.items())) if md else md,
            "modules": sorted(modules, key=lambda m: m["kohya"]),
        }
        for k, v in deltas.items():
            if extra and k in extra:
                continue     # DoRA: merged - base, both stored below
            all_deltas[f"{stem}/{k}"] = v.to(torch.float32).contiguous()
        for k, (W, merged) in (extra or {}).items():
            all_deltas[f"{stem}.base/{k}"] = W.to(torch.float32).contiguous()
            all_deltas[f"{stem}.merged/{k}"] = merged.to(torch.float32).contiguous()
        print(f"  {os.path.relpath(path, ROOT)}: {os.path.getsize(path):,} bytes, {len(keys)} tensors, "
              f"{len(modules)} modules")
        return path

    # ---- kohya LoRA
    ts, mods, dl, _ = build_lora(tiny, KOHYA_LORA_TARGETS, torch.float16, seed=101)
    p = os.path.join(OUT, "kohya_lora.safetensors")
    meta = kohya_meta("kohya_lora")
    meta.update({   # kohya also writes ModelSpec keys (sai_model_spec 1.0.0 in sd-scripts)
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": "mumu-sdxl-tiny/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": "kohya_lora",
        "modelspec.resolution": "256x256",
        "modelspec.date": "2024-06-01T00:00:00",
    })
    save_kohya(p, ts, meta)
    record("kohya_lora.safetensors", "lora", "kohya", mods, dl, None, "F16")
    kohya_lora = (p, mods, dl)

    # ---- kohya LoCon (networks.lora with conv_dim / conv_alpha)
    ts, mods, dl, _ = build_lora(tiny, LOCON_TARGETS, torch.bfloat16, seed=202, conv_rank=2, conv_alpha=1.0)
    p = os.path.join(OUT, "kohya_locon.safetensors")
    save_kohya(p, ts, kohya_meta("kohya_locon", args={"conv_dim": "2", "conv_alpha": "1"}))
    record("kohya_locon.safetensors", "locon", "kohya", mods, dl, None, "BF16")
    kohya_locon = (p, mods, dl)

    # ---- LoHa
    ts, mods, dl = build_loha(tiny, LOHA_TARGETS, seed=303)
    p = os.path.join(OUT, "loha.safetensors")
    save_kohya(p, ts, kohya_meta("loha", module="lycoris.kohya",
                                 args={"algo": "loha", "conv_dim": "4", "conv_alpha": "2"}))
    record("loha.safetensors", "loha", "kohya", mods, dl, None, "F32")

    # ---- LoKr
    ts, mods, dl = build_lokr(tiny, LOKR_TARGETS, seed=404)
    p = os.path.join(OUT, "lokr.safetensors")
    save_kohya(p, ts, kohya_meta("lokr", module="lycoris.kohya",
                                 args={"algo": "lokr", "factor": "-1", "conv_dim": "4", "conv_alpha": "2"}))
    record("lokr.safetensors", "lokr", "kohya", mods, dl, None, "F32")

    # ---- DoRA (output axis) and legacy input axis
    dora_ts, dora_mods, dl, dora_extra = build_lora(tiny, DORA_TARGETS, torch.float32, seed=505,
                                                    conv_rank=2, conv_alpha=1.0, dora="out")
    p = os.path.join(OUT, "dora.safetensors")
    save_kohya(p, dora_ts, kohya_meta("dora", module="lycoris.kohya",
                                      args={"algo": "lora", "dora_wd": "True", "conv_dim": "2", "conv_alpha": "1"}))
    record("dora.safetensors", "dora", "kohya", dora_mods, dl, None, "F32", dora_extra)

    ts, mods, dl, ex = build_lora(tiny, DORA_IN_TARGETS, torch.float32, seed=606, dora="in")
    p = os.path.join(OUT, "dora_input_axis.safetensors")
    save_kohya(p, ts, kohya_meta("dora_input_axis", module="lycoris.kohya",
                                 args={"algo": "lora", "dora_wd": "True", "wd_on_output": "False"}))
    record("dora_input_axis.safetensors", "dora", "kohya", mods, dl, None, "F32", ex)

    # ---- PEFT / diffusers
    p = os.path.join(OUT, "peft.safetensors")
    mods, dl = build_peft(tiny, seed=707, path=p)
    record("peft.safetensors", "lora", "peft", mods, dl, None, "F32")
    peft = (p, mods, dl)

    # ---- expected
    dp = os.path.join(OUT, "lora_expected_deltas.safetensors")
    stable_save(all_deltas, dp, metadata={"note": "scale*dW at multiplier 1 (DoRA: W'-W), float64 math, stored F32",
                                        "generator": "scripts/gen_fixtures_lora.py"})
    print(f"  {os.path.relpath(dp, ROOT)}: {os.path.getsize(dp):,} bytes, {len(all_deltas)} tensors")
    ep = os.path.join(OUT, "lora_expected.json")
    with open(ep, "w") as f:
        json.dump(expected, f, indent=1, sort_keys=False)
        f.write("\n")
    print(f"  {os.path.relpath(ep, ROOT)}: {os.path.getsize(ep):,} bytes")
    total = sum(os.path.getsize(os.path.join(OUT, x)) for x in os.listdir(OUT))
    print(f"  lora fixtures total: {total:,} bytes")

    if verify:
        print("verification:")
        for name, (path, mods, dl) in (("kohya_lora", kohya_lora), ("kohya_locon", kohya_locon), ("peft", peft)):
            worst, nchg, disagree = verify_with_diffusers(tiny, path, mods, dl)
            print(f"  {name}: diffusers load_lora_weights+fuse_lora == base + delta for all {len(mods)} targets "
                  f"(max rel err {worst:.2e}); {nchg} tensors changed, no others; "
                  f"scale agrees on {len(mods) - len(disagree)}/{len(mods)}")
            for k, ours, theirs in disagree:
                print(f"    diffusers scale differs: {k}: file alpha/rank = {ours}, diffusers/PEFT uses {theirs}")
        worst, nchk = verify_dora_with_peft(dora_mods, dora_extra, None, dora_ts)
        print(f"  dora: PEFT use_dora merge == expected W' for {nchk} output-axis modules (max rel err {worst:.2e})")
        print("  loha/lokr: checked against an independent einsum / 4-D kron formulation while generating")
    return 0


if __name__ == "__main__":
    sys.exit(main())
