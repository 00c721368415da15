#!/usr/bin/env python3
"""Generate the architecture descriptors formats/NAME.json (data, parsed by the Swift side).

    python3 scripts/gen_formats.py            # writes formats/*.json, prints sizes
    python3 scripts/gen_formats.py --check    # regenerate in memory, compare with files on disk

Every descriptor is derived from the public configs in sdxl_configs.py: each component is
instantiated on the meta device (nothing allocated), its diffusers/HF state dict is mapped
to sgm names with sdxl_keys.diffusers_to_sgm (round-trip-verified against diffusers'
converters by `sdxl_keys.py --selftest`), and the resulting names and shapes are listed.

Schema (schema 1):
  {"schema":1, "name", "title", "family", "detection_only", "modelspec":{architecture,
   implementation, resolution}, "prediction", "components":{comp:{prefix, optional, config}},
   "param_counts":{comp:N}, "tensors":[[sgm_name, shape, comp, block(, {extra})], ...]}
  Rows are sorted by name. A row is required when its component is present (a
  component with optional:false must be present) unless the row has "optional": true.
  The 5th element appears only when needed: "dtype" (safetensors dtype) for tensors that
  are not floating point; rows without it are floating point of any precision
  (F32/F16/BF16 all occur in real files). "optional": true for tensors some real files
  carry and others do not.
  param_counts = sum of numel over the non-optional rows of each component (all of them
  floating point), i.e. the numbers usually quoted (the diffusers / transformers models' counts).

Decisions on optional tensors:
  * CLIP-L `text_model.embeddings.position_ids` [1,77] I64: optional. transformers < 4.31
    saved it as a persistent buffer, so Stability's sd_xl_base_1.0 / SD 1.5 files carry it;
    newer transformers make it non-persistent, diffusers' converter passes it through
    and the HF model does not need it, and files saved by newer tools lack it. Some old
    SD1 merges carry it as F32/F16 (even with corrupted non-integer values): readers
    should accept any dtype here and may regenerate arange(77).
  * OpenCLIP bigG `logit_scale` [] (rank-0 float): optional. sgm builds the full OpenCLIP
    CLIP model (visual tower deleted), whose `logit_scale` Parameter lands in the state
    dict, so Stability's SDXL base and refiner files carry it (sgm tensor count of the
    base file: 1680 UNet + 248 VAE + 196 CLIP-L + 389 bigG = 2513, + position_ids +
    logit_scale = the 2515 of sd_xl_base_1.0.safetensors); diffusers'
    convert_open_clip_checkpoint ignores it (HF CLIPTextModelWithProjection has no such
    parameter) and diffusers-converted or retrained files lack it. It is not counted in
    param_counts (the quoted 694,659,840 is the HF count).
  * The OpenCLIP `attn_mask` buffer is non-persistent in open_clip and never saved; HF
    `position_ids` of bigG has no OpenCLIP counterpart and is dropped.
  * Not listed (outside every component, ignored by the tool): SD1.x files often carry the
    DDPM schedule buffers (`betas`, `alphas_cumprod`, `alphas_cumprod_prev`,
    `sqrt_alphas_cumprod`, ..., `posterior_*`, [1000] each) and `model_ema.*`; SDXL files
    may carry `denoiser.*`; `v_pred`/`ztsnr`/`edm_vpred.*` marker keys flag prediction
    variants (docs/formats.md, "Detection").

Merge blocks: BASE for text encoders and the MUMU connector, VAE for the VAE; UNet:
input_blocks.N -> IN%02d, middle_block -> M00, output_blocks.N -> OUT%02d, `out.` -> the last
OUT block (OUT08 for 3-level SDXL, OUT11 for the 4-level refiner and SD 1.x), and
`time_embed.` / `label_emb.` -> IN00 (SuperMerger's convention; sd-mecha puts them in BASE).

Other decisions:
  * sd1's te1 prefix is `cond_stage_model.transformer.` (the HF names below it start with
    `text_model.`), the exact analogue of SDXL's `conditioner.embedders.0.transformer.`, so
    prefix + HF name = sgm name for every CLIP-L component.
  * The refiner's only text encoder (OpenCLIP bigG under `conditioner.embedders.0.model.`)
    is component "te2": component names say which encoder (and which converter) it is,
    the prefix says where it lives.
  * modelspec implementation is "sgm" for all (SD1's CompVis layout is sgm's ancestor and
    the keys are the same style).
  * The MUMU connector (optional component, block BASE) follows this project's definition
    (defined by this project; the MUMU weights are not public): 16 pre-norm layers, bias-free
    q/k/v, width 2048, heads 32, MLP 8192; proj_in 4096 -> 2048; pooled_proj 2048 -> 1280.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sdxl_configs as C  # noqa: E402
import sdxl_keys as K  # noqa: E402

ROOT = os.path.dirname(HERE)
OUT_DIR = os.path.join(ROOT, "formats")

SGM_PREFIX = {"unet": "model.diffusion_model.", "vae": "first_stage_model.",
              "te1": "conditioner.embedders.0.transformer.", "te2": "conditioner.embedders.1.model.",
              "connector": "connector."}

# component -> (builder kind, config)
SDXL_BASE = {"unet": ("unet", C.SDXL_BASE_UNET), "te1": ("clip", C.CLIP_L),
             "te2": ("clip_proj", C.CLIP_BIGG), "vae": ("vae", C.SDXL_VAE)}

ARCHS = [
    {
        "name": "sdxl-base", "title": "Stable Diffusion XL 1.0 base", "family": "sdxl",
        "detection_only": False,
        "modelspec": {"architecture": "stable-diffusion-xl-v1-base", "implementation": "sgm",
                      "resolution": "1024x1024"},
        "prediction": "epsilon",
        "components": [("unet", SGM_PREFIX["unet"], False), ("te1", SGM_PREFIX["te1"], False),
                       ("te2", SGM_PREFIX["te2"], False), ("vae", SGM_PREFIX["vae"], False)],
        "models": SDXL_BASE,
        "expect": {"unet": 2_567_463_684, "te1": 123_060_480, "te2": 694_659_840, "vae": 83_653_863},
    },
    {
        "name": "sdxl-refiner", "title": "Stable Diffusion XL 1.0 refiner", "family": "sdxl",
        "detection_only": False,
        "modelspec": {"architecture": "stable-diffusion-xl-v1-refiner", "implementation": "sgm",
                      "resolution": "1024x1024"},
        "prediction": "epsilon",
        "components": [("unet", SGM_PREFIX["unet"], False), ("te2", "conditioner.embedders.0.model.", False),
                       ("vae", SGM_PREFIX["vae"], False)],
        "models": {"unet": ("unet", C.SDXL_REFINER_UNET), "te2": ("clip_proj", C.CLIP_BIGG),
                   "vae": ("vae", C.SDXL_VAE)},
        # refiner UNet: no commonly quoted figure; 2,259,526,660 is what the published
        # config instantiates to (also found in an unrelated public project's pinned values)
        "expect": {"unet": 2_259_526_660, "te2": 694_659_840, "vae": 83_653_863},
    },
    {
        "name": "sd1", "title": "Stable Diffusion 1.5", "family": "sd1",
        "detection_only": True,
        "modelspec": {"architecture": "stable-diffusion-v1", "implementation": "sgm",
                      "resolution": "512x512"},
        "prediction": "epsilon",
        "components": [("unet", SGM_PREFIX["unet"], False), ("te1", "cond_stage_model.transformer.", False),
                       ("vae", SGM_PREFIX["vae"], False)],
        "models": {"unet": ("unet", C.SD15_UNET), "te1": ("clip", C.SD15_CLIP_L), "vae": ("vae", C.SD15_VAE)},
        "expect": {"unet": 859_520_964, "te1": 123_060_480, "vae": 83_653_863},
    },
    {
        "name": "mumu-decoder", "title": "MUMU decoder (SDXL UNet + VAE, optional connector)",
        "family": "sdxl", "detection_only": False,
        "modelspec": {"architecture": "mumu-decoder", "implementation": "sgm", "resolution": "1024x1024"},
        "prediction": "epsilon",
        "components": [("unet", SGM_PREFIX["unet"], False), ("vae", SGM_PREFIX["vae"], False),
                       ("connector", SGM_PREFIX["connector"], True)],
        "models": {"unet": SDXL_BASE["unet"], "vae": SDXL_BASE["vae"], "connector": ("connector", C.MUMU_CONNECTOR)},
        "expect": {"unet": 2_567_463_684, "vae": 83_653_863, "connector": 816_651_520},
    },
    {
        "name": "sdxl-tiny", "title": "SDXL-tiny (SDXL block structure, small widths; tests and demo)",
        "family": "sdxl", "detection_only": False,
        "modelspec": {"architecture": "mumu-sdxl-tiny", "implementation": "sgm", "resolution": "256x256"},
        "prediction": "epsilon",
        "components": [("unet", SGM_PREFIX["unet"], False), ("te1", SGM_PREFIX["te1"], False),
                       ("te2", SGM_PREFIX["te2"], False), ("vae", SGM_PREFIX["vae"], False)],
        "models": {"unet": ("unet", C.SDXL_TINY_UNET), "te1": ("clip", C.SDXL_TINY_TE1),
                   "te2": ("clip_proj", C.SDXL_TINY_TE2), "vae": ("vae", C.SDXL_TINY_VAE)},
        "expect": {},
    },
]

# The shapes world's models (models/shapes, scripts/train_world.py): sdxl-tiny with a three-level VAE (4x
# downsampling), trained at 64x64.
_tiny = next(a for a in ARCHS if a["name"] == "sdxl-tiny")
ARCHS.append({**_tiny, "name": "sdxl-tiny-vae4x", "title": "SDXL-tiny with a 4x VAE (the shapes world, models/shapes)",
              "modelspec": {**_tiny["modelspec"], "architecture": "mumu-sdxl-tiny-vae4x", "resolution": "64x64"},
              "models": {**_tiny["models"], "vae": ("vae", C.SDXL_TINY_VAE4X)}})


def connector_shapes(cfg):
    d_in, w, L, mlp, pooled = cfg["input_dim"], cfg["width"], cfg["layers"], cfg["mlp_dim"], cfg["pooled_dim"]
    s = {"proj_in.weight": (w, d_in), "proj_in.bias": (w,)}
    for i in range(L):
        p = f"layers.{i}."
        s[p + "norm1.weight"] = (w,)
        s[p + "norm1.bias"] = (w,)
        for q in ("to_q", "to_k", "to_v"):
            s[p + f"attn.{q}.weight"] = (w, w)
        s[p + "attn.to_out.weight"] = (w, w)
        s[p + "attn.to_out.bias"] = (w,)
        s[p + "norm2.weight"] = (w,)
        s[p + "norm2.bias"] = (w,)
        s[p + "mlp.fc1.weight"] = (mlp, w)
        s[p + "mlp.fc1.bias"] = (mlp,)
        s[p + "mlp.fc2.weight"] = (w, mlp)
        s[p + "mlp.fc2.bias"] = (w,)
    s["norm_out.weight"] = (w,)
    s["norm_out.bias"] = (w,)
    s["pooled_proj.weight"] = (pooled, w)
    s["pooled_proj.bias"] = (pooled,)
    return s


def component_rows(comp, kind, cfg, prefix):
    """-> list of (sgm_name, shape, extra or None) for one component."""
    if kind == "connector":
        return [(prefix + n, list(s), None) for n, s in connector_shapes(cfg).items()]
    m = C.build(kind, cfg, meta=True)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    sgm = K.diffusers_to_sgm(comp, shapes, prefix)
    rows = [(n, list(s), None) for n, s in sgm.items()]
    if comp == "te1":
        n_pos = cfg["max_position_embeddings"]
        rows.append((prefix + "text_model.embeddings.position_ids", [1, n_pos], {"dtype": "I64", "optional": True}))
    if comp == "te2":
        rows.append((prefix + "logit_scale", [], {"optional": True}))
    return rows


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def build_descriptor(a):
    comps = {}
    rows = []
    counts = {}
    last_out = None
    unet_cfg = a["models"]["unet"][1]
    last_out = 3 * len(unet_cfg["block_out_channels"]) - 1  # layers_per_block 2 -> 3 output blocks per level
    assert unet_cfg["layers_per_block"] == 2
    for comp, prefix, optional in a["components"]:
        kind, cfg = a["models"][comp]
        comps[comp] = {"prefix": prefix, "optional": optional, "config": cfg}
        crow = component_rows(comp, kind, cfg, prefix)
        counts[comp] = sum(numel(s) for n, s, x in crow if not (x and x.get("optional")))
        for n, s, x in crow:
            assert n.startswith(prefix)
            block = K.sgm_block(n[len(prefix):], comp, last_out)
            rows.append([n, s, comp, block] + ([x] if x else []))
    rows.sort(key=lambda r: r[0])
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), "duplicate tensor names"
    for comp, want in a["expect"].items():
        got = counts[comp]
        status = "OK" if got == want else "MISMATCH"
        print(f"    {a['name']:13s} {comp:9s} params {got:>15,} expected {want:>15,}  {status}")
        assert got == want, (a["name"], comp, got, want)
    for comp in counts:
        if comp not in a["expect"]:
            print(f"    {a['name']:13s} {comp:9s} params {counts[comp]:>15,} (no published figure asserted)")
    # every UNet block present exactly as expected
    ub = sorted({r[3] for r in rows if r[2] == "unet"})
    want_blocks = sorted(["IN%02d" % i for i in range(last_out + 1)] + ["M00"] + ["OUT%02d" % i for i in range(last_out + 1)])
    assert ub == want_blocks, ub
    d = {
        "schema": 1,
        "name": a["name"], "title": a["title"], "family": a["family"],
        "detection_only": a["detection_only"],
        "modelspec": a["modelspec"],
        "prediction": a["prediction"],
        "components": comps,
        "param_counts": counts,
        "tensors": rows,
    }
    return d


def dumps(d):
    """Compact JSON, one tensor row per line; deterministic."""
    c = lambda x: json.dumps(x, separators=(",", ":"), ensure_ascii=True)  # noqa: E731
    head = []
    for k, v in d.items():
        if k == "components":
            parts = [f"    {c(ck)}:{c(cv)}" for ck, cv in v.items()]
            head.append(f'  "components":{{\n' + ",\n".join(parts) + "\n  }")
        elif k == "tensors":
            continue
        else:
            head.append(f"  {c(k)}:{c(v)}")
    rows = ",\n".join("    " + c(r) for r in d["tensors"])
    return "{\n" + ",\n".join(head) + ',\n  "tensors":[\n' + rows + "\n  ]\n}\n"

# --- Idefics2 (the MUMU encoder) -------------------------------------------------------------
# Descriptors of kind "encoder": a transformers folder (config.json + model.safetensors or shards),
# not an SDXL checkpoint. Names are Idefics2ForConditionalGeneration's state-dict keys (prefix
# `model.`; an Idefics2Model folder's bare names are read with `model.` added). "kind" tells
# SDXL-only code (merge, generate, styles) that this is no decoder; the family `idefics2` keeps it
# apart from `sdxl` in merges. "config" holds the folder's config.json exactly as transformers'
# save_pretrained writes it (so `mumu synth` writes a folder transformers loads). Components: the
# perceiver resampler and lm_head are listed but optional (MUMU drops the perceiver; the encoder
# returns hidden states, not logits). Every row is in merge block BASE.

IDEFICS2_COMPONENTS = [("vision", "model.vision_model.", False),
                       ("connector", "model.connector.modality_projection.", False),
                       ("perceiver", "model.connector.perceiver_resampler.", True),
                       ("text", "model.text_model.", False),
                       ("lm_head", "lm_head.", True)]
IDEFICS2_SUBCONFIG = {"vision": "vision_config", "text": "text_config", "perceiver": "perceiver_config"}

IDEFICS2_ARCHS = [
    {
        # HuggingFaceM4/idefics2-8b's config.json (on the Hugging Face Hub): SigLIP-so400m (980 px, 27 layers),
        # Mistral-7B with the three added tokens (vocabulary 32003); everything else transformers' defaults.
        "name": "idefics2-8b", "title": "Idefics2-8b (MUMU's encoder: SigLIP vision, modality projection, Mistral-7B)",
        "family": "idefics2", "kind": "encoder",
        "modelspec": {"architecture": "idefics2-8b", "implementation": "transformers", "resolution": "980x980"},
        "config": dict(vision_config=dict(hidden_size=1152, image_size=980, intermediate_size=4304,
                                          num_attention_heads=16, num_hidden_layers=27, patch_size=14),
                       text_config=dict(model_type="mistral", vocab_size=32003, max_position_embeddings=32768,
                                        sliding_window=4096, rms_norm_eps=1e-05, pad_token_id=0,
                                        tie_word_embeddings=False),
                       perceiver_config=dict(resampler_n_latents=64, resampler_depth=3, resampler_n_heads=16,
                                             resampler_head_dim=96, num_key_value_heads=4),
                       image_token_id=32001, tie_word_embeddings=False),
        # text: Mistral-7B's published 7,241,732,096 less its lm_head (32000 x 4096) plus 3 x 4096 for the added tokens.
        "expect": {"text": 7_110_672_384},
    },
    {
        # Small widths, for tests: the vocabulary stays 32003 (the real v1 tokenizer + the three added tokens
        # works with it); image 28 px = a 2x2 grid of positions, so it differs from the encoder fixture
        # (Tests/MumuEncoderTests/Fixtures/networks/tiny-idefics2, image 56) that inspect must not take for it.
        "name": "idefics2-tiny", "title": "Idefics2-tiny (Idefics2 structure, small widths; tests)",
        "family": "idefics2", "kind": "encoder",
        "modelspec": {"architecture": "mumu-idefics2-tiny", "implementation": "transformers", "resolution": "28x28"},
        "config": dict(vision_config=dict(hidden_size=32, image_size=28, intermediate_size=48, num_attention_heads=4,
                                          num_hidden_layers=2, patch_size=14),
                       text_config=dict(model_type="mistral", vocab_size=32003, hidden_size=64, intermediate_size=96,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                        max_position_embeddings=256, sliding_window=16, rms_norm_eps=1e-05,
                                        pad_token_id=0, tie_word_embeddings=False),
                       perceiver_config=dict(resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                                             resampler_head_dim=8, num_key_value_heads=1, hidden_size=64,
                                             rms_norm_eps=1e-06),
                       image_token_id=32001, tie_word_embeddings=False),
        "expect": {},
    },
]


def idefics2_config_json(kw, architectures):
    """config.json as Idefics2ForConditionalGeneration.save_pretrained writes it (a diff against the defaults)."""
    import tempfile
    from transformers import Idefics2Config
    cfg = Idefics2Config(**kw)
    cfg.architectures = architectures
    with tempfile.TemporaryDirectory() as d:
        cfg.save_pretrained(d)
        with open(os.path.join(d, "config.json"), encoding="utf-8") as f:
            return json.load(f), cfg


def build_idefics2_descriptor(a):
    import torch
    from transformers import Idefics2ForConditionalGeneration
    config_json, cfg = idefics2_config_json(a["config"], ["Idefics2ForConditionalGeneration"])
    with torch.device("meta"):
        model = Idefics2ForConditionalGeneration(cfg)
    state = model.state_dict()
    comps, rows, counts = {}, [], {}
    full = cfg.to_dict()
    for comp, prefix, optional in IDEFICS2_COMPONENTS:
        sub = IDEFICS2_SUBCONFIG.get(comp)
        comps[comp] = {"prefix": prefix, "optional": optional, "config": full[sub] if sub else None}
        counts[comp] = 0
    for name, t in state.items():
        owner = [c for c, p, _ in IDEFICS2_COMPONENTS if name.startswith(p)]
        assert len(owner) == 1, (name, owner)
        assert t.dtype.is_floating_point, (name, t.dtype)
        rows.append([name, list(t.shape), owner[0], "BASE"])
        counts[owner[0]] += t.numel()
    rows.sort(key=lambda r: r[0])
    assert len({r[0] for r in rows}) == len(rows)
    for comp in counts:
        assert counts[comp] > 0, (a["name"], comp)
        want = a["expect"].get(comp)
        note = "(no published figure asserted)" if want is None else ("expected %s  %s" % (f"{want:,}", "OK" if want == counts[comp] else "MISMATCH"))
        print(f"    {a['name']:13s} {comp:9s} params {counts[comp]:>15,} {note}")
        assert want is None or want == counts[comp], (a["name"], comp, counts[comp], want)
    return {
        "schema": 1,
        "name": a["name"], "title": a["title"], "family": a["family"],
        "detection_only": False,
        "kind": a["kind"],
        "modelspec": a["modelspec"],
        "prediction": "none",
        "config": config_json,
        "components": comps,
        "param_counts": counts,
        "tensors": rows,
    }



def main():
    check = "--check" in sys.argv[1:]
    os.makedirs(OUT_DIR, exist_ok=True)
    bad = 0
    for a in ARCHS + IDEFICS2_ARCHS:
        d = build_idefics2_descriptor(a) if a.get("kind") == "encoder" else build_descriptor(a)
        text = dumps(d)
        assert json.loads(text) == json.loads(json.dumps(d))  # the writer is lossless
        path = os.path.join(OUT_DIR, a["name"] + ".json")
        if check:
            same = os.path.exists(path) and open(path, encoding="utf-8").read() == text
            print(f"  {path}: {'up to date' if same else 'DIFFERS'}")
            bad += 0 if same else 1
            continue
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        n_opt = sum(1 for r in d["tensors"] if len(r) > 4 and r[4].get("optional"))
        print(f"  wrote {os.path.relpath(path, ROOT)}: {len(text.encode()):,} bytes, "
              f"{len(d['tensors'])} tensors ({n_opt} optional)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
