#!/usr/bin/env python3
"""Fixtures for the sgm <-> diffusers layout tests (Tests/MumuFormatsTests/LayoutTests.swift).

Writes Tests/MumuFormatsTests/Fixtures/layouts/:

  micro_diffusers/      a MICRO random SDXL-like pipeline saved the way diffusers / transformers 5
                        save it: save_pretrained for unet (sharded: 2+ shards + index), vae,
                        text_encoder (CLIPTextModel: transformers 5 drops `text_model.`),
                        text_encoder_2 (CLIPTextModelWithProjection), and a model_index.json.
  micro_sgm.safetensors the same weights as one sgm single file, made with scripts/sdxl_keys.py;
                        the script asserts that diffusers' own single-file converters
                        (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                        convert_ldm_clip_checkpoint, convert_open_clip_checkpoint) map it back to
                        exactly the saved state dicts (names, shapes, dtypes, values).
  <arch>.diffusers.txt  for sdxl-base, sdxl-refiner, sd1 and sdxl-tiny: the flat diffusers names
                        (`unet.`, `vae.`, `text_encoder.`, `text_encoder_2.`) and shapes of the real
                        configs (meta tensors, nothing allocated), one `name<TAB>d0,d1,..` per line.
                        The tests convert formats/<arch>.json (sgm names and shapes) and compare.
                        The script asserts that sdxl_keys maps these to exactly formats/<arch>.json's
                        required tensors.

Weights: f16, except text_encoder_2 in f32 (so the fused/transposed bigG tensors are checked with
4-byte elements and the rest with 2-byte ones); values from torch.manual_seed(0) randn, so every
tensor is distinct and a wrong mapping cannot pass. The UNet has block_out_channels (4, 8, 16)
(SDXL's block structure, transformer depths (1, 2, 2), heads (1, 2, 4)) to keep the two copies near 1 MB.

Needs diffusers >= 0.42, transformers >= 5, torch, safetensors. Run from the repository root:
    python3 scripts/gen_fixtures_layouts.py
"""

import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import sdxl_keys  # noqa: E402
import sdxl_configs as C  # noqa: E402

OUT = os.path.join(ROOT, "Tests", "MumuFormatsTests", "Fixtures", "layouts")

MICRO_UNET = dict(
    sample_size=8, in_channels=4, out_channels=4,
    block_out_channels=(4, 8, 16), layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 2), attention_head_dim=(1, 2, 4),
    cross_attention_dim=24, norm_num_groups=4,
    addition_embed_type="text_time", addition_time_embed_dim=4,
    projection_class_embeddings_input_dim=16 + 6 * 4,
    use_linear_projection=True,
)
MICRO_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4,
    block_out_channels=(8, 8, 16, 16),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1, norm_num_groups=4, sample_size=32,
)
MICRO_TE1 = dict(vocab_size=1000, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=16, max_position_embeddings=77)
MICRO_TE2 = dict(vocab_size=1000, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=32, projection_dim=16, max_position_embeddings=77)


def build_micro():
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**MICRO_UNET)
    vae = AutoencoderKL(**MICRO_VAE)
    te1 = CLIPTextModel(CLIPTextConfig(**MICRO_TE1))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**MICRO_TE2))
    with torch.no_grad():
        for m in (unet, vae, te1, te2):
            for p in m.parameters():
                p.copy_(torch.randn_like(p))
    return unet.half().eval(), vae.half().eval(), te1.half().eval(), te2.float().eval()


def saved_state(folder, component):
    """The state dict as save_pretrained wrote it (all shards), for comparisons."""
    d = os.path.join(folder, component)
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    sd = {}
    for f in files:
        sd.update(load_file(os.path.join(d, f)))
    return sd


def write_micro():
    from diffusers.loaders import single_file_utils as sfu

    unet, vae, te1, te2 = build_micro()
    folder = os.path.join(OUT, "micro_diffusers")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    unet.save_pretrained(os.path.join(folder, "unet"), max_shard_size="100KB")
    vae.save_pretrained(os.path.join(folder, "vae"))
    te1.save_pretrained(os.path.join(folder, "text_encoder"))
    te2.save_pretrained(os.path.join(folder, "text_encoder_2"))
    import diffusers
    model_index = {
        "_class_name": "StableDiffusionXLPipeline",
        "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": True,
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(model_index, f, indent=2, sort_keys=True)
        f.write("\n")

    unet_files = [f for f in os.listdir(os.path.join(folder, "unet")) if f.endswith(".safetensors")]
    assert len(unet_files) >= 2, f"unet should be sharded, got {unet_files}"
    assert os.path.exists(os.path.join(folder, "unet", "diffusion_pytorch_model.safetensors.index.json"))

    saved = {c: saved_state(folder, c) for c in ("unet", "vae", "text_encoder", "text_encoder_2")}
    assert not any(k.startswith("text_model.") for k in saved["text_encoder"]), \
        "expected transformers >= 5 to save CLIPTextModel without text_model."

    # sgm single file with sdxl_keys (text encoders in their text_model. form)
    norm = lambda sd: {sdxl_keys.normalize_clip_name(k): v for k, v in sd.items()}
    sgm = {}
    for comp, sd in (("unet", saved["unet"]), ("vae", saved["vae"]),
                     ("te1", norm(saved["text_encoder"])), ("te2", norm(saved["text_encoder_2"]))):
        part = sdxl_keys.diffusers_to_sgm(comp, sd)
        assert not (set(part) & set(sgm))
        sgm.update(part)
    sgm = {k: v.contiguous() for k, v in sgm.items()}
    sgm_path = os.path.join(OUT, "micro_sgm.safetensors")
    save_file(sgm, sgm_path, metadata={"format": "pt"})

    # diffusers' own converters must give back exactly what save_pretrained wrote
    back = load_file(sgm_path)
    checks = {
        "unet": (sfu.convert_ldm_unet_checkpoint(back, dict(unet.config)), saved["unet"]),
        "vae": (sfu.convert_ldm_vae_checkpoint(back, dict(vae.config)), saved["vae"]),
        "text_encoder": (sfu.convert_ldm_clip_checkpoint(back), norm(saved["text_encoder"])),
        "text_encoder_2": (sfu.convert_open_clip_checkpoint(te2, back, prefix=sdxl_keys.PREFIXES["te2"]),
                           saved["text_encoder_2"]),
    }
    for comp, (got, want) in checks.items():
        assert set(got) == set(want), (comp, sorted(set(got) ^ set(want))[:10])
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, (comp, k)
            assert torch.equal(got[k], want[k]), (comp, k)
        print(f"  micro {comp:15s} {len(want):4d} tensors: diffusers' converter gives back the saved state dict")
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(OUT) for f in fs
                if "micro" in dp or f.startswith("micro"))
    print(f"  micro_sgm.safetensors: {len(sgm)} tensors; micro fixtures total {total} bytes")


ARCHS = {
    # arch: {component: (builder kind, config)}, te1 / te2 sgm prefixes
    "sdxl-base": ({"unet": ("unet", C.SDXL_BASE_UNET), "vae": ("vae", C.SDXL_VAE),
                   "te1": ("clip", C.CLIP_L), "te2": ("clip_proj", C.CLIP_BIGG)},
                  "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."),
    "sdxl-refiner": ({"unet": ("unet", C.SDXL_REFINER_UNET), "vae": ("vae", C.SDXL_VAE),
                      "te2": ("clip_proj", C.CLIP_BIGG)},
                     None, "conditioner.embedders.0.model."),
    "sd1": ({"unet": ("unet", C.SD15_UNET), "vae": ("vae", C.SD15_VAE), "te1": ("clip", C.SD15_CLIP_L)},
            "cond_stage_model.transformer.", None),
    "sdxl-tiny": ({"unet": ("unet", C.SDXL_TINY_UNET), "vae": ("vae", C.SDXL_TINY_VAE),
                   "te1": ("clip", C.SDXL_TINY_TE1), "te2": ("clip_proj", C.SDXL_TINY_TE2)},
                  "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."),
}
FLAT = {"unet": "unet.", "vae": "vae.", "te1": "text_encoder.", "te2": "text_encoder_2."}


def write_key_lists():
    for arch, (spec, te1_prefix, te2_prefix) in ARCHS.items():
        diffusers_rows = []
        sgm_shapes = {}
        for comp, (kind, cfg) in spec.items():
            model = C.build(kind, cfg, meta=True)
            sd = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            if comp.startswith("te"):
                sd = {sdxl_keys.normalize_clip_name(k): v for k, v in sd.items()}
                # a non-persistent buffer: transformers never saves it, OpenCLIP has no counterpart
                sd.pop("text_model.embeddings.position_ids", None)
            prefix = {"te1": te1_prefix, "te2": te2_prefix}.get(comp)
            sgm_shapes.update(sdxl_keys.diffusers_to_sgm(comp, sd, prefix))
            diffusers_rows += [(FLAT[comp] + k, s) for k, s in sd.items()]
        with open(os.path.join(ROOT, "formats", arch + ".json")) as f:
            formats = json.load(f)
        required = {row[0]: tuple(row[1]) for row in formats["tensors"]
                    if not (len(row) > 4 and row[4].get("optional"))}
        assert sgm_shapes == required, (arch, sorted(set(sgm_shapes) ^ set(required))[:10])
        diffusers_rows.sort()
        path = os.path.join(OUT, arch + ".diffusers.txt")
        with open(path, "w") as f:
            for name, shape in diffusers_rows:
                f.write(f"{name}\t{','.join(str(d) for d in shape)}\n")
        print(f"  {arch:13s} {len(required):5d} sgm tensors (formats/{arch}.json) <-> "
              f"{len(diffusers_rows):5d} diffusers tensors -> {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    write_micro()
    write_key_lists()
