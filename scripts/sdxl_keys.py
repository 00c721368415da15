#!/usr/bin/env python3
"""diffusers <-> sgm ("original Stability single-file") key maps for SD-family checkpoints.

    diffusers_to_sgm(component, state_dict_or_shapes, prefix=None) -> {sgm_name: tensor | shape}

component:
  "unet"  diffusers UNet2DConditionModel state dict -> `model.diffusion_model.` names.
          Any number of levels and layers_per_block (both inferred from the names):
          SDXL base (3 levels), SDXL refiner / SD1.x (4 levels), sdxl-tiny.
  "vae"   diffusers AutoencoderKL -> `first_stage_model.` names. The mid-block attention
          q/k/v/proj_out weights become 1x1 convs: Linear [C,C] -> [C,C,1,1]
          (older diffusers names query/key/value/proj_attn are accepted as well).
  "te1"   (alias "clip_l") HF CLIPTextModel -> `conditioner.embedders.0.transformer.` + HF names.
          transformers >= 5.6 saves CLIPTextModel without the `text_model.` prefix; names are
          normalised to `text_model.*` (sgm files always carry it).
  "te2"   (aliases "bigg", "open_clip") HF CLIPTextModelWithProjection -> OpenCLIP names under
          `conditioner.embedders.1.model.`: q/k/v Linear -> fused `attn.in_proj_weight`
          [3C, C] / `in_proj_bias` [3C] (q, k, v stacked by rows); `text_projection.weight`
          [P, C] -> bare `text_projection` [C, P] (transposed); token/position embeddings ->
          `token_embedding.weight` / `positional_embedding`; `final_layer_norm` -> `ln_final`;
          `layer_norm1/2` -> `ln_1/2`; `mlp.fc1/fc2` -> `mlp.c_fc/c_proj`;
          `self_attn.out_proj` -> `attn.out_proj`. HF `position_ids` (a non-persistent buffer
          that OpenCLIP does not have) is dropped.

Values may be torch tensors (real or meta), numpy arrays, or shapes (tuple / list /
torch.Size); transforms are applied to whichever is given (shapes are transformed as
shapes). Unknown names raise KeyError: the maps are strict on purpose.

prefix: None -> the SDXL default for the component (PREFIXES), "" -> bare names; pass e.g.
"conditioner.embedders.0.model." for the refiner's bigG or "cond_stage_model.transformer."
for SD1.x CLIP-L.

Also: name_map(component, diffusers_names) -> {diffusers_name: bare sgm name} (te2's q/k/v
all map to the fused name), sgm_block(sgm_name_without_prefix, component, last_out) -> merge
block ("BASE", "VAE", "IN00".., "M00", "OUT00"..), and sgm_module_to_kohya(...).

Self-test: python3 scripts/sdxl_keys.py --selftest
  converts tiny random SDXL components (sdxl-tiny configs) to sgm with this module and
  back with diffusers' own single-file converters (diffusers.loaders.single_file_utils:
  convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint,
  convert_open_clip_checkpoint) and requires exactly the same names, shapes and values;
  then the same on the real SDXL base, SDXL refiner and SD 1.5 configs with meta tensors
  (names and shapes), plus diffusers' infer_diffusers_model_type on the real-shape dicts.
"""

import re
import sys

PREFIXES = {
    "unet": "model.diffusion_model.",
    "vae": "first_stage_model.",
    "te1": "conditioner.embedders.0.transformer.",
    "te2": "conditioner.embedders.1.model.",
}
_ALIASES = {"clip_l": "te1", "clip": "te1", "bigg": "te2", "open_clip": "te2", "openclip": "te2"}


def _canon(component):
    c = component.lower()
    c = _ALIASES.get(c, c)
    if c not in PREFIXES:
        raise ValueError(f"unknown component {component!r}")
    return c


# --------------------------------------------------------------------------- shape/value helpers
def _is_shape(v):
    try:
        import torch
        if isinstance(v, torch.Size):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(v, (tuple, list))


def _shape(v):
    return tuple(int(x) for x in (v if _is_shape(v) else v.shape))


def _to_conv1x1(v):
    """Linear [C_out, C_in] -> conv [C_out, C_in, 1, 1]; conv weights pass unchanged."""
    s = _shape(v)
    if len(s) == 4:
        return v
    if len(s) != 2:
        raise ValueError(f"expected a 2-D attention weight, got shape {s}")
    if _is_shape(v):
        return (s[0], s[1], 1, 1)
    return v.reshape(s[0], s[1], 1, 1)


def _transpose(v):
    s = _shape(v)
    if len(s) != 2:
        raise ValueError(f"text_projection must be 2-D, got {s}")
    if _is_shape(v):
        return (s[1], s[0])
    t = v.T
    return t.contiguous() if hasattr(t, "contiguous") else t.copy()


def _cat_rows(parts):
    shapes = [_shape(p) for p in parts]
    if any(s[1:] != shapes[0][1:] for s in shapes):
        raise ValueError(f"q/k/v shapes differ: {shapes}")
    if _is_shape(parts[0]):
        return (sum(s[0] for s in shapes),) + shapes[0][1:]
    try:
        import torch
        if isinstance(parts[0], torch.Tensor):
            return torch.cat(list(parts), 0)
    except ImportError:  # pragma: no cover
        pass
    import numpy as np
    return np.concatenate(list(parts), 0)


# --------------------------------------------------------------------------- UNet
_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",     # SDXL addition_embed_type text_time
    "add_embedding.linear_2": "label_emb.0.2",
    "class_embedding.linear_1": "label_emb.0.0",   # class_embed_type projection/timestep
    "class_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _resnet_rest(rest):
    for d, s in _RESNET:
        if rest == d or rest.startswith(d + "."):
            return s + rest[len(d):]
    raise KeyError(rest)


def _unet_layout(names):
    lpb = 0
    up_attn = set()
    mid_attn = False
    for n in names:
        m = re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", n)
        if m:
            lpb = max(lpb, int(m.group(2)) + 1)
        m = re.match(r"up_blocks\.(\d+)\.attentions\.", n)
        if m:
            up_attn.add(int(m.group(1)))
        if n.startswith("mid_block.attentions."):
            mid_attn = True
    if lpb == 0:
        raise KeyError("cannot infer layers_per_block: no down_blocks.N.resnets.M.* names")
    return lpb, up_attn, mid_attn


def _unet_name(n, lpb, up_attn, mid_attn):
    head, _, param = n.rpartition(".")
    if head in _UNET_TOP:
        return _UNET_TOP[head] + "." + param
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", n)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        idx = i * (lpb + 1) + j + 1
        if kind == "resnets":
            return f"input_blocks.{idx}.0.{_resnet_rest(rest)}"
        return f"input_blocks.{idx}.1.{rest}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", n)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        return f"input_blocks.{(i + 1) * (lpb + 1)}.0.op.{rest}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", n)
    if m:
        kind, k, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            if k != 0:
                raise KeyError(n)
            return f"middle_block.1.{rest}"
        idx = 2 * k if mid_attn else k
        return f"middle_block.{idx}.{_resnet_rest(rest)}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$", n)
    if m:
        i, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        idx = i * (lpb + 1) + j
        if kind == "resnets":
            return f"output_blocks.{idx}.0.{_resnet_rest(rest)}"
        return f"output_blocks.{idx}.1.{rest}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", n)
    if m:
        i, rest = int(m.group(1)), m.group(2)
        idx = i * (lpb + 1) + lpb
        sub = 2 if i in up_attn else 1
        return f"output_blocks.{idx}.{sub}.conv.{rest}"
    raise KeyError(f"unet: no sgm name for {n!r}")


# --------------------------------------------------------------------------- VAE
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
             # diffusers < 0.14 attention names
             "query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
_VAE_ATTN_W = {"q", "k", "v", "proj_out"}


def _vae_num_up(names):
    n = 0
    for k in names:
        m = re.match(r"decoder\.up_blocks\.(\d+)\.", k)
        if m:
            n = max(n, int(m.group(1)) + 1)
    return n


def _vae_name(n, num_up):
    """Returns (sgm_name, needs_conv1x1)."""
    m = re.match(r"(encoder|decoder)\.(conv_in|conv_out|conv_norm_out)\.(weight|bias)$", n)
    if m:
        part, layer, p = m.groups()
        return f"{part}.{'norm_out' if layer == 'conv_norm_out' else layer}.{p}", False
    m = re.match(r"(quant_conv|post_quant_conv)\.(weight|bias)$", n)
    if m:
        return n, False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", n)
    if m:
        i, j, rest = m.groups()
        return f"encoder.down.{i}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)$", n)
    if m:
        i, rest = m.groups()
        return f"encoder.down.{i}.downsample.conv.{rest}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)$", n)
    if m:
        i, j, rest = m.groups()
        return f"decoder.up.{num_up - 1 - int(i)}.block.{j}.{rest.replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)$", n)
    if m:
        i, rest = m.groups()
        return f"decoder.up.{num_up - 1 - int(i)}.upsample.conv.{rest}", False
    m = re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)$", n)
    if m:
        part, k, rest = m.groups()
        return f"{part}.mid.block_{int(k) + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}", False
    m = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", n)
    if m and m.group(2) in _VAE_ATTN:
        part, layer, p = m.groups()
        s = _VAE_ATTN[layer]
        return f"{part}.mid.attn_1.{s}.{p}", (p == "weight" and s in _VAE_ATTN_W)
    raise KeyError(f"vae: no sgm name for {n!r}")


# --------------------------------------------------------------------------- CLIP
def normalize_clip_name(n):
    """HF CLIP name -> the `text_model.`-prefixed form (transformers >= 5.6 CLIPTextModel
    state dicts have no `text_model.` prefix)."""
    if n.startswith("text_model.") or n.startswith("text_projection.") or n == "logit_scale":
        return n
    if n.split(".")[0] in ("embeddings", "encoder", "final_layer_norm"):
        return "text_model." + n
    raise KeyError(f"clip: unexpected name {n!r}")


def _te1_name(n):
    n = normalize_clip_name(n)
    if not n.startswith("text_model."):
        raise KeyError(f"te1 (CLIPTextModel): unexpected name {n!r}")
    return n


_OC_LAYER = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
             ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")]


def _te2_name(n):
    """Returns (sgm_name or None to drop, qkv_slot or None, transform or None)."""
    n = normalize_clip_name(n)
    if n == "text_model.embeddings.position_ids":
        return None, None, None
    if n == "text_model.embeddings.token_embedding.weight":
        return "token_embedding.weight", None, None
    if n == "text_model.embeddings.position_embedding.weight":
        return "positional_embedding", None, None
    m = re.match(r"text_model\.final_layer_norm\.(weight|bias)$", n)
    if m:
        return f"ln_final.{m.group(1)}", None, None
    if n == "text_projection.weight":
        return "text_projection", None, "T"
    m = re.match(r"text_model\.encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$", n)
    if m:
        L, layer, p = m.groups()
        base = f"transformer.resblocks.{L}."
        mq = re.match(r"self_attn\.(q|k|v)_proj$", layer)
        if mq:
            return base + f"attn.in_proj_{p}", "qkv".index(mq.group(1)), None
        for d, s in _OC_LAYER:
            if layer == d:
                return base + f"{s}.{p}", None, None
    raise KeyError(f"te2 (OpenCLIP): no sgm name for {n!r}")


# --------------------------------------------------------------------------- public API
def name_map(component, names):
    """{diffusers_name: bare sgm name (no prefix)}; te2 q/k/v share the fused name,
    te2 position_ids maps to None (dropped)."""
    c = _canon(component)
    names = list(names)
    out = {}
    if c == "unet":
        lay = _unet_layout(names)
        for n in names:
            out[n] = _unet_name(n, *lay)
    elif c == "vae":
        nu = _vae_num_up(names)
        for n in names:
            out[n] = _vae_name(n, nu)[0]
    elif c == "te1":
        for n in names:
            out[n] = _te1_name(n)
    else:
        for n in names:
            out[n] = _te2_name(n)[0]
    return out


def diffusers_to_sgm(component, state_dict_or_shapes, prefix=None):
    """Map a diffusers/HF state dict (or {name: shape}) to sgm names, with transforms."""
    c = _canon(component)
    if prefix is None:
        prefix = PREFIXES[c]
    sd = state_dict_or_shapes
    names = list(sd.keys())
    out = {}

    def put(k, v):
        k = prefix + k
        if k in out:
            raise KeyError(f"two diffusers names map to {k!r}")
        out[k] = v

    if c == "unet":
        lay = _unet_layout(names)
        for n in names:
            put(_unet_name(n, *lay), sd[n])
    elif c == "vae":
        nu = _vae_num_up(names)
        for n in names:
            s, conv = _vae_name(n, nu)
            put(s, _to_conv1x1(sd[n]) if conv else sd[n])
    elif c == "te1":
        for n in names:
            put(_te1_name(n), sd[n])
    else:
        qkv = {}
        for n in names:
            s, slot, tr = _te2_name(n)
            if s is None:
                continue
            if slot is not None:
                qkv.setdefault(s, [None, None, None])[slot] = sd[n]
            elif tr == "T":
                put(s, _transpose(sd[n]))
            else:
                put(s, sd[n])
        for s, parts in qkv.items():
            if any(p is None for p in parts):
                raise KeyError(f"te2: {s} needs q, k and v (got {[p is not None for p in parts]})")
            put(s, _cat_rows(parts))
    return dict(sorted(out.items()))


def sgm_block(name, component, last_out=8):
    """Merge block of a bare sgm name (prefix stripped) of `component`.
    BASE for text encoders (and the MUMU connector), VAE for the VAE; UNet:
    input_blocks.N -> IN%02d, middle_block -> M00, output_blocks.N -> OUT%02d,
    out. -> OUT{last_out}, time_embed./label_emb. -> IN00 (SuperMerger's convention)."""
    if component in ("te1", "te2", "connector"):
        return "BASE"
    if component == "vae":
        return "VAE"
    m = re.match(r"input_blocks\.(\d+)\.", name)
    if m:
        return "IN%02d" % int(m.group(1))
    if name.startswith("middle_block."):
        return "M00"
    m = re.match(r"output_blocks\.(\d+)\.", name)
    if m:
        return "OUT%02d" % int(m.group(1))
    if name.startswith("out."):
        return "OUT%02d" % last_out
    if name.startswith("time_embed.") or name.startswith("label_emb."):
        return "IN00"
    raise KeyError(f"no merge block for {component} {name!r}")


KOHYA_PREFIX = {"unet": "lora_unet_", "te1": "lora_te1_", "te2": "lora_te2_"}


def sgm_module_to_kohya(module, component):
    """kohya LoRA module name: `lora_unet_` + sgm module path (no prefix) with . -> _;
    text encoders use HF names (`text_model.encoder.layers.0.self_attn.q_proj`)."""
    return KOHYA_PREFIX[component] + module.replace(".", "_")


# =========================================================================== self-test
def _selftest():
    import torch
    from diffusers.loaders import single_file_utils as sfu
    import sdxl_configs as C

    problems = []

    def compare(tag, want, got, values):
        wk, gk = set(want), set(got)
        miss, extra = sorted(wk - gk), sorted(gk - wk)
        for k in miss:
            problems.append(f"{tag}: converter did not give back {k}")
        for k in extra:
            problems.append(f"{tag}: converter gave an extra {k}")
        nbad = 0
        for k in sorted(wk & gk):
            a, b = want[k], got[k]
            if tuple(a.shape) != tuple(b.shape):
                problems.append(f"{tag}: {k} shape {tuple(a.shape)} != {tuple(b.shape)}")
                nbad += 1
            elif values and not torch.equal(a, b):
                problems.append(f"{tag}: {k} values differ")
                nbad += 1
        what = "names, shapes, values" if values else "names, shapes"
        print(f"  {tag:34s} {len(wk):5d} tensors, {len(miss)} missing, {len(extra)} extra, "
              f"{nbad} mismatched ({what})")

    def roundtrip(title, parts, values, te1_prefix, te2_prefix, expect_type):
        """parts: dict comp -> (model, normalized diffusers sd)."""
        print(f"{title}:")
        ckpt = {}
        sgm_counts = {}
        for comp, (model, sd) in parts.items():
            pre = {"unet": PREFIXES["unet"], "vae": PREFIXES["vae"], "te1": te1_prefix, "te2": te2_prefix}[comp]
            s = diffusers_to_sgm(comp, sd, pre)
            # shapes mode must agree with tensor mode
            s2 = diffusers_to_sgm(comp, {k: tuple(v.shape) for k, v in sd.items()}, pre)
            assert list(s2) == list(s) and all(tuple(s[k].shape) == s2[k] for k in s), comp + " shapes mode"
            assert not (set(s) & set(ckpt))
            ckpt.update(s)
            sgm_counts[comp] = len(s)
        for comp, (model, sd) in parts.items():
            if comp == "unet":
                got = sfu.convert_ldm_unet_checkpoint(ckpt, dict(model.config))
            elif comp == "vae":
                got = sfu.convert_ldm_vae_checkpoint(ckpt, dict(model.config))
            elif comp == "te1":
                got = sfu.convert_ldm_clip_checkpoint(ckpt)
            else:
                got = sfu.convert_open_clip_checkpoint(model, ckpt, prefix=te2_prefix)
            compare(f"{comp} ({sgm_counts[comp]} sgm tensors)", sd, got, values)
            if values:
                # the converted dict must also load strictly into a fresh model of the config
                m2 = type(model)(model.config) if comp in ("te1", "te2") else type(model).from_config(model.config)
                ld = got
                if comp == "te1" and not hasattr(m2, "text_model"):
                    ld = {k.removeprefix("text_model."): v for k, v in got.items()}
                res = m2.load_state_dict(ld, strict=True)
                assert not res.missing_keys and not res.unexpected_keys, res
        if expect_type is not None:
            t = sfu.infer_diffusers_model_type(ckpt)
            print(f"  infer_diffusers_model_type -> {t!r} (expected {expect_type!r})")
            if t != expect_type:
                problems.append(f"{title}: infer_diffusers_model_type gave {t!r}")
        return ckpt

    def norm_clip(sd):
        return {normalize_clip_name(k): v for k, v in sd.items()}

    # ---------------- tiny, real tensors, values compared
    torch.manual_seed(0)
    unet = C.build("unet", C.SDXL_TINY_UNET)
    vae = C.build("vae", C.SDXL_TINY_VAE)
    te1 = C.build("clip", C.SDXL_TINY_TE1)
    te2 = C.build("clip_proj", C.SDXL_TINY_TE2)
    with torch.no_grad():
        for m in (unet, vae, te1, te2):
            for p in m.parameters():
                p.copy_(torch.randn_like(p))   # no all-ones norms: every value distinct
    parts = {"unet": (unet, dict(unet.state_dict())), "vae": (vae, dict(vae.state_dict())),
             "te1": (te1, norm_clip(te1.state_dict())), "te2": (te2, norm_clip(te2.state_dict()))}
    ck = roundtrip("sdxl-tiny (random values)", parts, True, PREFIXES["te1"], PREFIXES["te2"], None)
    # spot checks of the transforms
    p2 = PREFIXES["te2"]
    sd2 = parts["te2"][1]
    assert torch.equal(ck[p2 + "text_projection"], sd2["text_projection.weight"].T)
    assert torch.equal(ck[p2 + "transformer.resblocks.1.attn.in_proj_weight"][64:128],
                       sd2["text_model.encoder.layers.1.self_attn.k_proj.weight"])
    assert tuple(ck["first_stage_model.decoder.mid.attn_1.proj_out.weight"].shape) == (64, 64, 1, 1)
    # name-only map agrees
    nm = name_map("unet", parts["unet"][1])
    assert all(PREFIXES["unet"] + v in ck for v in nm.values())

    # ---------------- real configs, meta tensors, names and shapes
    def meta_parts(spec):
        out = {}
        for comp, (kind, cfg) in spec.items():
            m = C.build(kind, cfg, meta=True)
            sd = dict(m.state_dict())
            out[comp] = (m, norm_clip(sd) if comp.startswith("te") else sd)
        return out

    roundtrip("SDXL base 1.0 (meta)", meta_parts({
        "unet": ("unet", C.SDXL_BASE_UNET), "vae": ("vae", C.SDXL_VAE),
        "te1": ("clip", C.CLIP_L), "te2": ("clip_proj", C.CLIP_BIGG)}),
        False, PREFIXES["te1"], PREFIXES["te2"], "xl_base")
    roundtrip("SDXL refiner 1.0 (meta)", meta_parts({
        "unet": ("unet", C.SDXL_REFINER_UNET), "vae": ("vae", C.SDXL_VAE),
        "te2": ("clip_proj", C.CLIP_BIGG)}),
        False, None, "conditioner.embedders.0.model.", "xl_refiner")
    roundtrip("SD 1.5 (meta)", meta_parts({
        "unet": ("unet", C.SD15_UNET), "vae": ("vae", C.SD15_VAE), "te1": ("clip", C.SD15_CLIP_L)}),
        False, "cond_stage_model.transformer.", None, "v1")

    if problems:
        print("PROBLEMS:")
        for p in problems:
            print("  " + p)
        return 1
    print("selftest OK: diffusers' converters give back exactly the diffusers state dicts")
    return 0


if __name__ == "__main__":
    if "--selftest" in sys.argv[1:]:
        import os
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        sys.exit(_selftest())
    print(__doc__)
