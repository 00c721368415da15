#!/usr/bin/env python3
"""Extra LoRA fixtures for the bake-in tests (Tests/MumuMergeTests/LoraBakeTests.swift), for what
scripts/gen_fixtures_lora.py's files do not cover. Same base model (sdxl-tiny, seeded as there).

    python3 scripts/gen_fixtures_lora_bake.py

Output: Tests/MumuMergeTests/Fixtures/lora/
  kohya_diffusers_names.safetensors  kohya LoRA, F16, UNet modules under diffusers names
                            (`lora_unet_down_blocks_1_attentions_0_..._attn1_to_q`, mid block,
                            resnet conv1 3x3 (LoCon, rank 2), conv_shortcut 1x1, time embedding),
                            a conv-shaped LoRA (down [r,in,1,1], up [out,r,1,1]) on the Linear
                            proj_in [out,in]; te2 layer 1 q/k/v (three row slices of one fused
                            in_proj_weight), out_proj, fc1, fc2; te1 k_proj without an alpha
                            tensor and v_proj with alpha 0 (both scale 1); two modules that match
                            nothing in sdxl-tiny (listed under "unmatched")
  locon_tucker.safetensors  LyCORIS LoCon with Tucker (use_tucker): conv 3x3 down [r,in,1,1],
                            lora_mid [r,r,3,3], up [out,r,1,1]; one Linear without mid
  loha_tucker.safetensors   LyCORIS LoHa with Tucker: hada_w1_a [r,out], hada_w1_b [r,in],
                            hada_t1 [r,r,3,3] (same for w2/t2) on conv 3x3; one Linear without
  lokr_factors.safetensors  LyCORIS LoKr: lokr_w1_a @ lokr_w1_b with full lokr_w2 (scale
                            alpha / w1_b rank); full w1 with lokr_w2_a, lokr_w2_b, lokr_t2 (Tucker)
                            on conv 3x3; a module without alpha (scale 1)
  peft_dora.safetensors     PEFT DoRA (use_dora) written from PEFT's own get_peft_model_state_dict
                            under diffusers names: `.lora_A.weight`, `.lora_B.weight`,
                            `.lora_magnitude_vector`; UNet Linear + conv 3x3, te1 under the
                            transformers >= 5.6 spelling (`text_encoder.encoder.layers...`),
                            te2 v_proj (a row slice); lora_adapter_metadata with per-component
                            r / lora_alpha; expected values are PEFT's merge_and_unload
  lora_bake_expected.json   per file: modules (name in the file, sgm_weight, rows, weight_shape,
                            kind, scale) and unmatched module names
  lora_bake_expected_deltas.safetensors  F32, computed in float64 from the stored (decoded)
                            factors: '<stem>/<module>' = scale * dW in weight_shape; for DoRA
                            '<stem>.base/<module>' (W) and '<stem>.merged/<module>' (W' at m = 1)

It also copies scripts/gen_fixtures_lora.py's files (Tests/MumuFormatsTests/Fixtures/lora/*) here, so the
bake tests use the same bytes: rerun this script after regenerating those.

Formulas (ComfyUI comfy/weight_adapter, LyCORIS lycoris/functional):
  LoRA mid:  dW = einsum('pi,ijkl,jc->pckl', up, mid, down)
  LoHa t1:   dW1 = einsum('ijkl,ip,jc->pckl', t1, w1a, w1b); dW = dW1 * dW2 * alpha / r
  LoKr:      dW = kron(w1, w2) (w1 [a,b] as [a,b,1,1] for conv), w2 Tucker like LoHa;
             scale alpha / dim, dim the rank of the last decomposed factor; 1 without alpha
"""

import json
import os
import shutil
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_fixtures_lora as L  # noqa: E402
from gen_fixtures_safetensors import stable_save  # noqa: E402

ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "Tests", "MumuMergeTests", "Fixtures", "lora")


def entry(t, name, kind, scale, **kw):
    e = {"name": name, "component": t["component"], "sgm_weight": t["sgm_weight"], "sgm_shape": t["sgm_shape"],
         "rows": t["rows"], "weight_shape": t["weight_shape"], "kind": kind, "scale": scale}
    e.update(kw)
    return e


def kohya_diffusers_name(t):
    if t["component"] != "unet":
        return t["kohya"]
    return "lora_unet_" + t["diffusers"][: -len(".weight")].replace(".", "_")


def lowrank(g, shape, r, conv_factors):
    out_c, in_c = shape[0], shape[1]
    ks = list(shape[2:])
    if conv_factors:
        down = L.rnd(g, r, in_c, *(ks or [1, 1]))
        up = L.rnd(g, out_c, r, 1, 1, s=0.05)
    else:
        down, up = L.rnd(g, r, in_c), L.rnd(g, out_c, r, s=0.05)
    return down, up


# =========================================================================== files
def build_kohya_diffusers_names(tiny):
    g = torch.Generator().manual_seed(9101)
    dtype = torch.float16
    tensors, modules, deltas = {}, [], {}
    # (component, sgm module, rank, alpha (None: no tensor), conv-shaped factors)
    spec = [
        ("unet", "input_blocks.4.1.transformer_blocks.0.attn1.to_q", 4, 2.0, False),
        ("unet", "output_blocks.4.1.transformer_blocks.0.attn2.to_out.0", 4, 2.0, False),
        ("unet", "middle_block.1.proj_out", 4, 2.0, False),
        ("unet", "input_blocks.2.0.in_layers.2", 2, 1.0, True),        # conv 3x3
        ("unet", "output_blocks.6.0.skip_connection", 4, 2.0, True),   # conv 1x1
        ("unet", "input_blocks.5.1.proj_in", 4, 2.0, True),            # Linear [64,64], conv-shaped factors
        ("unet", "time_embed.0", 4, 2.0, False),
        ("te2", "text_model.encoder.layers.1.self_attn.q_proj", 4, 2.0, False),
        ("te2", "text_model.encoder.layers.1.self_attn.k_proj", 4, 2.0, False),
        ("te2", "text_model.encoder.layers.1.self_attn.v_proj", 4, 2.0, False),
        ("te2", "text_model.encoder.layers.1.self_attn.out_proj", 4, 2.0, False),
        ("te2", "text_model.encoder.layers.1.mlp.fc1", 4, 2.0, False),
        ("te2", "text_model.encoder.layers.1.mlp.fc2", 4, 2.0, False),
        ("te1", "text_model.encoder.layers.1.self_attn.k_proj", 4, None, False),   # no alpha: scale 1
        ("te1", "text_model.encoder.layers.1.self_attn.v_proj", 4, 0.0, False),    # alpha 0: scale 1
    ]
    for comp, path, r, alpha, conv in spec:
        t = tiny.target(comp, path)
        shape = t["weight_shape"]
        down, up = lowrank(g, shape, r, conv)
        down, up = down.to(dtype), up.to(dtype)
        n = kohya_diffusers_name(t)
        tensors[n + ".lora_down.weight"] = down
        tensors[n + ".lora_up.weight"] = up
        if alpha is not None:
            tensors[n + ".alpha"] = torch.tensor(alpha, dtype=dtype)
        scale = 1.0 if not alpha else alpha / r
        deltas[n] = (L.dec(up).flatten(1) @ L.dec(down).flatten(1)).reshape(shape) * scale
        modules.append(entry(t, n, "lora", scale, kohya=t["kohya"]))
    unmatched = {
        "lora_unet_down_blocks_3_attentions_0_proj_in": ([4, 64], [64, 4]),   # no 4th level in sdxl-tiny
        "lora_te1_text_model_encoder_layers_7_mlp_fc1": ([4, 32], [64, 4]),   # te1 has 3 layers
    }
    for n, (ds, us) in unmatched.items():
        tensors[n + ".lora_down.weight"] = L.rnd(g, *ds).to(dtype)
        tensors[n + ".lora_up.weight"] = L.rnd(g, *us).to(dtype)
        tensors[n + ".alpha"] = torch.tensor(2.0, dtype=dtype)
    meta = L.kohya_meta("kohya_diffusers_names")
    return tensors, modules, deltas, {}, sorted(unmatched), meta


def build_locon_tucker(tiny):
    g = torch.Generator().manual_seed(9202)
    tensors, modules, deltas = {}, [], {}
    spec = [("unet", "input_blocks.1.0.in_layers.2", 3, 1.5),        # [32,32,3,3]
            ("unet", "output_blocks.7.0.in_layers.2", 2, 1.0),       # [32,64,3,3]
            ("unet", "input_blocks.4.1.transformer_blocks.1.attn1.to_v", 4, 2.0)]   # Linear, no mid
    for comp, path, r, alpha in spec:
        t = tiny.target(comp, path)
        shape = t["weight_shape"]
        n = t["kohya"]
        if len(shape) == 4:
            down = L.rnd(g, r, shape[1], 1, 1).to(torch.float32)
            mid = L.rnd(g, r, r, *shape[2:], s=0.3).to(torch.float32)
            up = L.rnd(g, shape[0], r, 1, 1, s=0.05).to(torch.float32)
            tensors[n + ".lora_mid.weight"] = mid
            dW = torch.einsum("pi,ijkl,jc->pckl", L.dec(up).flatten(1), L.dec(mid), L.dec(down).flatten(1))
            # ComfyUI's formulation, as an independent check
            m2 = L.dec(down)
            fs = [m2.shape[1], m2.shape[0], mid.shape[2], mid.shape[3]]
            m2 = torch.mm(m2.transpose(0, 1).flatten(1), L.dec(mid).transpose(0, 1).flatten(1)).reshape(fs).transpose(0, 1)
            alt = torch.mm(L.dec(up).flatten(1), m2.flatten(1)).reshape(shape)
            assert torch.allclose(alt, dW, rtol=1e-12, atol=1e-15)
        else:
            down = L.rnd(g, r, shape[1]).to(torch.float32)
            up = L.rnd(g, shape[0], r, s=0.05).to(torch.float32)
            dW = L.dec(up) @ L.dec(down)
        tensors[n + ".lora_down.weight"] = down
        tensors[n + ".lora_up.weight"] = up
        tensors[n + ".alpha"] = torch.tensor(alpha, dtype=torch.float32)
        scale = alpha / r
        deltas[n] = dW.reshape(shape) * scale
        modules.append(entry(t, n, "locon-tucker" if len(shape) == 4 else "lora", scale))
    meta = L.kohya_meta("locon_tucker", module="lycoris.kohya", dim=4, alpha=2,
                        args={"algo": "locon", "use_tucker": "True", "conv_dim": "3", "conv_alpha": "1.5"})
    return tensors, modules, deltas, {}, [], meta


def tucker(t, wa, wb):
    return torch.einsum("ijkl,ip,jc->pckl", t, wa, wb)


def build_loha_tucker(tiny):
    g = torch.Generator().manual_seed(9303)
    tensors, modules, deltas = {}, [], {}
    spec = [("unet", "input_blocks.4.0.in_layers.2", 3, 1.0),     # [64,32,3,3]
            ("unet", "input_blocks.4.1.transformer_blocks.0.attn2.to_q", 4, 2.0)]   # Linear [64,64]
    for comp, path, r, alpha in spec:
        t = tiny.target(comp, path)
        shape = t["weight_shape"]
        n = t["kohya"]
        f = {}
        if len(shape) == 4:
            for i in ("1", "2"):
                f["hada_w" + i + "_a"] = L.rnd(g, r, shape[0], s=0.3)
                f["hada_w" + i + "_b"] = L.rnd(g, r, shape[1], s=0.3)
                f["hada_t" + i] = L.rnd(g, r, r, *shape[2:], s=0.3)
        else:
            for i in ("1", "2"):
                f["hada_w" + i + "_a"] = L.rnd(g, shape[0], r, s=0.3)
                f["hada_w" + i + "_b"] = L.rnd(g, r, shape[1], s=0.3)
        for k, v in f.items():
            tensors[f"{n}.{k}"] = v.to(torch.float32)
        tensors[n + ".alpha"] = torch.tensor(alpha, dtype=torch.float32)
        d = {k: L.dec(tensors[f"{n}.{k}"]) for k in f}
        if len(shape) == 4:
            dW = tucker(d["hada_t1"], d["hada_w1_a"], d["hada_w1_b"]) * tucker(d["hada_t2"], d["hada_w2_a"], d["hada_w2_b"])
            # ComfyUI's einsum spelling ('i j k l, j r, i p -> p r k l'), as a check
            alt = torch.einsum("ijkl,jr,ip->prkl", d["hada_t1"], d["hada_w1_b"], d["hada_w1_a"]) * \
                torch.einsum("ijkl,jr,ip->prkl", d["hada_t2"], d["hada_w2_b"], d["hada_w2_a"])
            assert torch.allclose(alt, dW, rtol=1e-12, atol=1e-15)
        else:
            dW = (d["hada_w1_a"] @ d["hada_w1_b"]) * (d["hada_w2_a"] @ d["hada_w2_b"])
        scale = alpha / r
        deltas[n] = dW.reshape(shape) * scale
        modules.append(entry(t, n, "loha-tucker" if len(shape) == 4 else "loha", scale))
    meta = L.kohya_meta("loha_tucker", module="lycoris.kohya", args={"algo": "loha", "use_tucker": "True"})
    return tensors, modules, deltas, {}, [], meta


def build_lokr_factors(tiny):
    g = torch.Generator().manual_seed(9404)
    tensors, modules, deltas = {}, [], {}

    def put(n, k, v):
        tensors[f"{n}.{k}"] = v.to(torch.float32)
        return L.dec(tensors[f"{n}.{k}"])

    # 1. Linear [64,256]: w1 = w1_a [8,2] @ w1_b [2,16], w2 full [8,16]; alpha 1, dim 2 -> 0.5
    t = tiny.target("unet", "input_blocks.4.1.transformer_blocks.0.ff.net.2")
    n = t["kohya"]
    w1 = put(n, "lokr_w1_a", L.rnd(g, 8, 2, s=0.3)) @ put(n, "lokr_w1_b", L.rnd(g, 2, 16, s=0.3))
    w2 = put(n, "lokr_w2", L.rnd(g, 8, 16, s=0.3))
    tensors[n + ".alpha"] = torch.tensor(1.0)
    deltas[n] = torch.kron(w1, w2).reshape(t["weight_shape"]) * 0.5
    modules.append(entry(t, n, "lokr", 0.5))

    # 2. conv [64,64,3,3]: w1 [8,8] full, w2 = tucker(t2 [4,4,3,3], w2_a [4,8], w2_b [4,8]); alpha 2, dim 4 -> 0.5
    t = tiny.target("unet", "input_blocks.5.0.in_layers.2")
    n = t["kohya"]
    w1 = put(n, "lokr_w1", L.rnd(g, 8, 8, s=0.3))
    w2 = tucker(put(n, "lokr_t2", L.rnd(g, 4, 4, 3, 3, s=0.3)), put(n, "lokr_w2_a", L.rnd(g, 4, 8, s=0.3)),
                put(n, "lokr_w2_b", L.rnd(g, 4, 8, s=0.3))).contiguous()
    tensors[n + ".alpha"] = torch.tensor(2.0)
    dW = torch.kron(w1[:, :, None, None], w2) * 0.5
    alt = torch.kron(w1, w2.reshape(8, -1)).reshape(t["weight_shape"]) * 0.5
    assert torch.allclose(alt, dW, rtol=1e-12, atol=1e-15)
    deltas[n] = dW
    modules.append(entry(t, n, "lokr-tucker", 0.5))

    # 3. te1 fc2 [32,64]: w1 [4,8], w2 = w2_a [8,2] @ w2_b [2,8], no alpha -> scale 1
    t = tiny.target("te1", "text_model.encoder.layers.1.mlp.fc2")
    n = t["kohya"]
    w1 = put(n, "lokr_w1", L.rnd(g, 4, 8, s=0.3))
    w2 = put(n, "lokr_w2_a", L.rnd(g, 8, 2, s=0.3)) @ put(n, "lokr_w2_b", L.rnd(g, 2, 8, s=0.3))
    deltas[n] = torch.kron(w1, w2).reshape(t["weight_shape"])
    modules.append(entry(t, n, "lokr", 1.0))

    meta = L.kohya_meta("lokr_factors", module="lycoris.kohya", args={"algo": "lokr", "use_tucker": "True"})
    return tensors, modules, deltas, {}, [], meta


def build_peft_dora(tiny):
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    g = torch.Generator().manual_seed(9505)
    cfg = {"unet": (4, 8), "text_encoder": (4, 2), "text_encoder_2": (2, 4)}   # component -> (r, lora_alpha)
    spec = [("unet", "input_blocks.4.1.transformer_blocks.1.attn2.to_q", "unet"),
            ("unet", "output_blocks.3.0.out_layers.3", "unet"),                     # conv 3x3 [64,64,3,3]
            ("te1", "text_model.encoder.layers.2.self_attn.q_proj", "text_encoder"),
            ("te2", "text_model.encoder.layers.2.self_attn.v_proj", "text_encoder_2")]
    tensors, modules, deltas, extra = {}, [], {}, {}
    for comp, path, pcomp in spec:
        r, alpha = cfg[pcomp]
        t = tiny.target(comp, path)
        shape = t["weight_shape"]
        W = t["base"].to(torch.float32).to(torch.float64)
        if len(shape) == 2:
            base = torch.nn.Sequential(torch.nn.Linear(shape[1], shape[0], bias=False))
        else:
            base = torch.nn.Sequential(torch.nn.Conv2d(shape[1], shape[0], shape[2:], padding=1, bias=False))
        base = base.double()
        with torch.no_grad():
            base[0].weight.copy_(W)
        m = get_peft_model(base, LoraConfig(r=r, lora_alpha=alpha, use_dora=True, target_modules=["0"]))
        layer = m.base_model.model[0]
        with torch.no_grad():
            A = layer.lora_A["default"].weight
            B = layer.lora_B["default"].weight
            A.copy_(L.rnd(g, *A.shape).to(torch.float32))
            B.copy_(L.rnd(g, *B.shape, s=0.05).to(torch.float32))
            mv = layer.lora_magnitude_vector["default"].weight
            mv.copy_((mv * (1 + 0.05 * torch.randn(mv.shape, generator=g, dtype=torch.float64))).to(torch.float32))
        sd = get_peft_model_state_dict(m)
        module = t["peft"]
        if comp == "te1":
            module = "text_encoder." + t["module"].removeprefix("text_model.")   # transformers >= 5.6 spelling
        for k, v in sd.items():
            suffix = k.split(".0.", 1)[1]            # base_model.model.0.lora_A.weight -> lora_A.weight
            tensors[f"{module}.{suffix}"] = v.detach().to(torch.float32).contiguous()
        merged = m.merge_and_unload()[0].weight.detach().to(torch.float64)
        extra[module] = (W, merged)
        deltas[module] = merged - W
        modules.append(entry(t, module, "dora", alpha / r, kohya=t["kohya"],
                             magnitude_shape=list(tensors[module + ".lora_magnitude_vector"].shape)))
    md = {}
    for pcomp, (r, alpha) in cfg.items():
        md.update({f"{pcomp}.r": r, f"{pcomp}.lora_alpha": alpha, f"{pcomp}.use_dora": True,
                   f"{pcomp}.peft_type": "LORA"})
    meta = {"format": "pt", "lora_adapter_metadata": json.dumps(md, indent=2, sort_keys=True)}
    return tensors, modules, deltas, extra, [], meta


# =========================================================================== main
def main():
    os.makedirs(OUT, exist_ok=True)
    tiny = L.Tiny()
    expected = {
        "architecture": "sdxl-tiny",
        "generator": "scripts/gen_fixtures_lora_bake.py",
        "notes": [
            "modules: name = the module's name in the file; rows = [begin,end) of sgm_weight (te2 q/k/v) or null",
            "deltas '<stem>/<name>' = scale * dW (multiplier 1) in weight_shape; DoRA: '<stem>.base/<name>' (W), "
            "'<stem>.merged/<name>' (W' at m = 1)",
            "unmatched: module names that fit no sdxl-tiny tensor",
        ],
        "files": {},
    }
    all_deltas = {}
    for fname, build in (("kohya_diffusers_names.safetensors", build_kohya_diffusers_names),
                         ("locon_tucker.safetensors", build_locon_tucker),
                         ("loha_tucker.safetensors", build_loha_tucker),
                         ("lokr_factors.safetensors", build_lokr_factors),
                         ("peft_dora.safetensors", build_peft_dora)):
        tensors, modules, deltas, extra, unmatched, meta = build(tiny)
        path = os.path.join(OUT, fname)
        stable_save(tensors, path, metadata=meta)
        stem = fname.rsplit(".", 1)[0]
        for k, v in deltas.items():
            if k in extra:
                continue
            all_deltas[f"{stem}/{k}"] = v.to(torch.float32).contiguous()
        for k, (W, merged) in extra.items():
            all_deltas[f"{stem}.base/{k}"] = W.to(torch.float32).contiguous()
            all_deltas[f"{stem}.merged/{k}"] = merged.to(torch.float32).contiguous()
        expected["files"][fname] = {"tensor_count": len(tensors),
                                    "modules": sorted(modules, key=lambda m: m["name"]),
                                    "unmatched": unmatched}
        print(f"  {os.path.relpath(path, ROOT)}: {os.path.getsize(path):,} bytes, {len(tensors)} tensors, "
              f"{len(modules)} modules, {len(unmatched)} unmatched")
    dp = os.path.join(OUT, "lora_bake_expected_deltas.safetensors")
    stable_save(all_deltas, dp, metadata={"generator": "scripts/gen_fixtures_lora_bake.py"})
    print(f"  {os.path.relpath(dp, ROOT)}: {len(all_deltas)} tensors")
    ep = os.path.join(OUT, "lora_bake_expected.json")
    with open(ep, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    copied = 0
    for name in sorted(os.listdir(L.OUT)):
        src, dst = os.path.join(L.OUT, name), os.path.join(OUT, name)
        if not os.path.exists(dst) or open(src, "rb").read() != open(dst, "rb").read():
            shutil.copyfile(src, dst)
            copied += 1
    print(f"  copied {copied} changed file(s) of {os.path.relpath(L.OUT, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
