"""Public model configs (diffusers / transformers config.json contents) used by
sdxl_keys.py (self-test) and gen_formats.py (architecture descriptors).

Sources (public Hugging Face repos, copied by hand, keys that only carry bookkeeping
such as `_diffusers_version`, `transformers_version`, `torch_dtype`, `architectures`
kept where they appear in the published file only when they matter for parsing):
  stabilityai/stable-diffusion-xl-base-1.0     unet/, vae/, text_encoder/, text_encoder_2/
  stabilityai/stable-diffusion-xl-refiner-1.0  unet/, text_encoder_2/ (vae identical to base)
  stable-diffusion-v1-5/stable-diffusion-v1-5  unet/, vae/, text_encoder/
The parameter counts asserted in gen_formats.py (the usually quoted ones, docs/formats.md) check that
the structural fields are right.

SDXL_TINY_* are this project's own tiny test architecture (same block structure as
SDXL, small widths), used by the Swift tests and the demo.
"""

import copy

# --------------------------------------------------------------------------- SDXL base
SDXL_BASE_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}

SDXL_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

CLIP_L = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}

CLIP_BIGG = {
    "architectures": ["CLIPTextModelWithProjection"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "gelu",
    "hidden_size": 1280,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 5120,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "pad_token_id": 1,
    "projection_dim": 1280,
    "vocab_size": 49408,
}

# --------------------------------------------------------------------------- SDXL refiner
SDXL_REFINER_UNET = copy.deepcopy(SDXL_BASE_UNET)
SDXL_REFINER_UNET.update({
    "attention_head_dim": [6, 12, 24, 24],
    "block_out_channels": [384, 768, 1536, 1536],
    "cross_attention_dim": 1280,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "projection_class_embeddings_input_dim": 2560,
    "transformer_layers_per_block": 4,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
})

# --------------------------------------------------------------------------- SD 1.5
SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

SD15_VAE = copy.deepcopy(SDXL_VAE)
SD15_VAE.pop("force_upcast")
SD15_VAE.update({"sample_size": 512, "scaling_factor": 0.18215})

SD15_CLIP_L = copy.deepcopy(CLIP_L)   # openai/clip-vit-large-patch14 text tower, same shapes

# --------------------------------------------------------------------------- MUMU connector
MUMU_CONNECTOR = {"input_dim": 4096, "width": 2048, "layers": 16, "heads": 32, "mlp_dim": 8192, "pooled_dim": 1280}

# --------------------------------------------------------------------------- sdxl-tiny
SDXL_TINY_UNET = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 8,
    "attention_head_dim": [2, 4, 8],
    "block_out_channels": [32, 64, 128],
    "cross_attention_dim": 96,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_eps": 1e-05,
    "norm_num_groups": 8,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 112,
    "sample_size": 32,
    "transformer_layers_per_block": [1, 2, 2],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}

SDXL_TINY_TE1 = {
    # token ids as in the published SDXL text encoder configs (legacy eos_token_id 2 -> argmax pooling)
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "architectures": ["CLIPTextModel"],
    "hidden_act": "quick_gelu",
    "hidden_size": 32,
    "intermediate_size": 64,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 2,
    "num_hidden_layers": 3,
    "vocab_size": 49408,
}

SDXL_TINY_TE2 = {
    # token ids as in the published SDXL text encoder configs (legacy eos_token_id 2 -> argmax pooling)
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "architectures": ["CLIPTextModelWithProjection"],
    "hidden_act": "gelu",
    "hidden_size": 64,
    "intermediate_size": 128,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "projection_dim": 64,
    "vocab_size": 49408,
}

SDXL_TINY_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [16, 32, 64, 64],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 8,
    "out_channels": 3,
    "sample_size": 256,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# The shapes world's VAE (models/shapes): sdxl-tiny's with three levels, 4x downsampling (16x16 latents at 64x64).
SDXL_TINY_VAE4X = dict(SDXL_TINY_VAE, block_out_channels=[16, 32, 64], down_block_types=["DownEncoderBlock2D"] * 3,
                       up_block_types=["UpDecoderBlock2D"] * 3, sample_size=64)


# --------------------------------------------------------------------------- model builders
def _clip_kwargs(cfg):
    skip = {"architectures", "model_type", "torch_dtype", "transformers_version", "_name_or_path"}
    return {k: v for k, v in cfg.items() if k not in skip}


def build(kind, cfg, meta=False):
    """Instantiate a model from a config. kind: unet | vae | clip | clip_proj.
    meta=True allocates nothing (accelerate.init_empty_weights)."""
    import contextlib
    if meta:
        from accelerate import init_empty_weights
        ctx = init_empty_weights()
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        if kind == "unet":
            from diffusers import UNet2DConditionModel
            return UNet2DConditionModel.from_config(cfg)
        if kind == "vae":
            from diffusers import AutoencoderKL
            return AutoencoderKL.from_config(cfg)
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
        c = CLIPTextConfig(**_clip_kwargs(cfg))
        if kind == "clip":
            return CLIPTextModel(c)
        if kind == "clip_proj":
            return CLIPTextModelWithProjection(c)
    raise ValueError(kind)
