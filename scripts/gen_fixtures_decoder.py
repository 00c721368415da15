#!/usr/bin/env python3
"""Conformance fixtures for the SDXL networks (UNet, VAE, both CLIP text encoders) in Swift.

Writes Tests/MumuSamplerTests/Fixtures/decoder/ (about 3.4 MB in all, 3.1 MB of it the UNet and VAE weights):

  tiny-sdxl/          a tiny random SDXL pipeline in the layout StableDiffusionXLPipeline.save_pretrained
                      writes (model_index.json; unet/, vae/: config.json + diffusion_pytorch_model.safetensors;
                      text_encoder/, text_encoder_2/: config.json + model.safetensors; scheduler/; tokenizer/,
                      tokenizer_2/). All weights are stored as float16.
  unet_io.safetensors the UNet's inputs and outputs (f32): sample [2,4,16,12] (non-square), timestep [2]
                      = [999, 37.5] (float, one per sample), encoder_hidden_states [2,77,32], text_embeds [2,16],
                      time_ids [2,6] -> out; and at batch 1 a different size: sample1 [1,4,8,8], timestep1 [1],
                      encoder_hidden_states1 [1,154,32] (two 77-token chunks, as long prompts give),
                      text_embeds1, time_ids1 -> out1.
  vae_io.safetensors  latents [1,4,8,6] -> decoded = vae.decode(latents).sample [1,3,64,48] (no scaling_factor
                      applied); image [1,3,32,24] in [-1,1] -> mean, logvar of vae.encode(image).latent_dist
                      ([1,4,4,3]; quant_conv applied, logvar clamped to [-30, 20] by diffusers).
  clip_io.safetensors ids [2,77] int64 (CLIP-L style: BOS 998, tokens < 998, EOS 999, padded with 999; row 0
                      has 10 tokens, row 1 has 75 = full length), ids2 (the same prompts padded with 0, as bigG's
                      tokenizer_2 pads with "!"), te1_penultimate = text_encoder(ids).hidden_states[-2],
                      te1_last = last_hidden_state, te2_penultimate = text_encoder_2(ids2).hidden_states[-2],
                      te2_pooled = text_embeds (projected pooled output), eos_index [2] int64.
  meta.json           versions, seeds, configs, and shape / max |x| / std of every reference output.

Weights. Every parameter is re-initialised from a seeded normal (nothing zero: diffusers zero-inits some
layers, which would hide bugs): weights N(0, (GAIN / sqrt(fan_in))^2) (std about 0.03..0.25 here, so the
activations stay O(1): every output's std is checked to lie in (0.1, 10)), embeddings N(0, EMBED_STD^2),
biases N(0, BIAS_STD^2), GroupNorm / LayerNorm weight 1 + 0.1 N and bias 0.1 N. The values are then rounded
to float16 and back (`.half().float()`), the references are computed in float32 with those weights, and the
same values are saved as float16: a reader that loads the f16 files and computes in f32 uses exactly the
weights the references were computed with. The script checks this by loading the saved pipeline back
(torch_dtype=float32) and recomputing every output bit for bit.

Pooling position. The text encoder configs keep the published SDXL ids (bos 0, pad 1, eos_token_id 2). With
eos_token_id == 2 transformers' CLIPTextModel takes the "legacy" branch: the pooled row is
last_hidden_state[b, input_ids[b].to(int32).argmax()], i.e. the first position of the largest id (EOS = 999,
the largest id in this vocabulary, as 49407 is in CLIP's), whatever the padding id; eos_index records it.

Key names (transformers 5.24): text_encoder/model.safetensors has NO `text_model.` prefix
(`embeddings.token_embedding.weight`, `encoder.layers.0.self_attn.q_proj.weight`, `final_layer_norm.weight`;
no `position_ids` buffer), while text_encoder_2/model.safetensors keeps it (`text_model.embeddings...`, plus
`text_projection.weight`). The published SDXL files prefix both; transformers 5 loads either form, and so
must a reader. UNet / VAE keys are diffusers' usual names (`down_blocks.1.attentions.0.transformer_blocks.1.
attn2.to_k.weight`, `decoder.mid_block.attentions.0.to_q.weight`, ...).

Tokenizers. tokenizer/ and tokenizer_2/ are a tiny CLIP BPE tokenizer whose vocabulary is a prefix of CLIP's:
the 512 byte symbols (with and without "</w>"), the first 486 merges of vocab/clip_merges.txt, then
<|startoftext|> = 998, <|endoftext|> = 999 (vocab 1000). tokenizer pads with <|endoftext|>, tokenizer_2
with "!" (id 0), as SDXL's. transformers 5 saves each as tokenizer.json + tokenizer_config.json only (no
vocab.json / merges.txt). They are small (42 KB), so the folder loads as is, and runs end to end:
    StableDiffusionXLPipeline.from_pretrained(".../decoder/tiny-sdxl", torch_dtype=torch.float32)

Everything else is SDXL's own configuration (scripts/sdxl_configs.py SDXL_BASE_UNET, SDXL_VAE, CLIP_L,
CLIP_BIGG) with small widths (UNet [16, 32, 48], VAE [8, 16, 16, 16]: see the comments at the configs, the
size budget is about 3 MB); upcast_attention stays null and force_upcast true, as SDXL's. The scheduler
has SDXL's EulerDiscreteScheduler settings. diffusers runs every attention with AttnProcessor2_0 (SDPA),
transformers with attn_implementation "sdpa" (recorded in meta.json "runtime").
Deterministic (fixed seeds, 2 torch threads): running it twice gives byte-identical files.
Run (CPU, about 20 s): python3 scripts/gen_fixtures_decoder.py
"""
import copy
import json
import math
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sdxl_configs import CLIP_BIGG, CLIP_L, SDXL_BASE_UNET, SDXL_VAE, build  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "MumuSamplerTests", "Fixtures", "decoder")
MERGES = os.path.join(ROOT, "vocab", "clip_merges.txt")

SEEDS = {"unet": 101, "vae": 102, "text_encoder": 103, "text_encoder_2": 104, "inputs": 105}
GAIN, EMBED_STD, BIAS_STD = 1.0, 0.5, 0.05
BOS, EOS, VOCAB = 998, 999, 1000

# --------------------------------------------------------------------------- configs (SDXL's, small widths)
UNET_CFG = copy.deepcopy(SDXL_BASE_UNET)
UNET_CFG.update({
    # [16, 32, 64] with [1, 2, 4] heads would be 2.1 M parameters (4.3 MB in f16); 48 keeps the widths
    # distinct and the head dim 16 (1.4 M parameters, 2.9 MB)
    "block_out_channels": [16, 32, 48],
    "attention_head_dim": [1, 2, 3],          # diffusers' name for the head COUNT in SDXL configs: head dim 16
    "transformer_layers_per_block": [1, 2, 2],
    "norm_num_groups": 4,
    "cross_attention_dim": 32,                # 16 (text_encoder) + 16 (text_encoder_2)
    "addition_time_embed_dim": 8,
    "projection_class_embeddings_input_dim": 16 + 6 * 8,   # pooled text_embeds + 6 time ids
    "sample_size": 16,
})

VAE_CFG = copy.deepcopy(SDXL_VAE)
# SDXL's width pattern (1, 2, 4, 4) at 8 channels ([16, 32, 32, 32] would be 0.9 MB in f16)
VAE_CFG.update({"block_out_channels": [8, 16, 16, 16], "norm_num_groups": 4, "sample_size": 64,
                "use_quant_conv": True, "use_post_quant_conv": True})

TE1_CFG = copy.deepcopy(CLIP_L)
TE1_CFG.update({"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 2, "num_hidden_layers": 3,
                "projection_dim": 16, "vocab_size": VOCAB})

TE2_CFG = copy.deepcopy(CLIP_BIGG)
TE2_CFG.update({"hidden_size": 16, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 3,
                "projection_dim": 16, "vocab_size": VOCAB})

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json (the fields Euler knows)
SCHEDULER_CFG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                 "num_train_timesteps": 1000, "prediction_type": "epsilon", "interpolation_type": "linear",
                 "timestep_spacing": "leading", "steps_offset": 1, "use_karras_sigmas": False}


# --------------------------------------------------------------------------- weights
def _std(name, p, module):
    if isinstance(module, torch.nn.Embedding):
        return EMBED_STD
    if name == "bias":
        return BIAS_STD
    fan_in = p[0].numel()
    return GAIN / math.sqrt(fan_in)


@torch.no_grad()
def randomize(model, seed):
    """Seeded re-init of every parameter (see the docstring), then rounding to f16 values (kept in f32)."""
    g = torch.Generator().manual_seed(seed)
    for _, module in model.named_modules():
        is_norm = isinstance(module, (torch.nn.GroupNorm, torch.nn.LayerNorm))
        for name, p in module.named_parameters(recurse=False):
            n = torch.randn(p.shape, generator=g)
            if is_norm:
                p.copy_(1 + 0.1 * n if name == "weight" else 0.1 * n)
            else:
                p.copy_(_std(name, p, module) * n)
            p.copy_(p.half().float())
    return model.eval()


def build_models():
    return {
        "unet": randomize(build("unet", UNET_CFG), SEEDS["unet"]),
        "vae": randomize(build("vae", VAE_CFG), SEEDS["vae"]),
        "text_encoder": randomize(build("clip", TE1_CFG), SEEDS["text_encoder"]),
        "text_encoder_2": randomize(build("clip_proj", TE2_CFG), SEEDS["text_encoder_2"]),
    }


# --------------------------------------------------------------------------- tokenizers
def tiny_tokenizers():
    """CLIP BPE over a 1000-entry prefix of CLIP's vocabulary (512 byte symbols, 486 merges, BOS, EOS)."""
    from transformers import CLIPTokenizer
    from gen_fixtures_tokenizer import bytes_to_unicode
    with open(MERGES, encoding="utf-8") as f:
        merges = f.read().split("\n")[1:1 + VOCAB - 512 - 2]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    table = {v: i for i, v in enumerate(vocab)}
    assert len(table) == VOCAB and table["<|startoftext|>"] == BOS and table["<|endoftext|>"] == EOS
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(table, f, ensure_ascii=False)
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        tok = CLIPTokenizer.from_pretrained(d, model_max_length=77)
        tok2 = CLIPTokenizer.from_pretrained(d, model_max_length=77, pad_token="!")
    return tok, tok2


def make_pipeline(models, tok, tok2):
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    return StableDiffusionXLPipeline(**models, tokenizer=tok, tokenizer_2=tok2,
                                     scheduler=EulerDiscreteScheduler(**SCHEDULER_CFG), add_watermarker=False)


# --------------------------------------------------------------------------- inputs
def make_inputs():
    g = torch.Generator().manual_seed(SEEDS["inputs"])
    r = lambda *s: torch.randn(s, generator=g)  # noqa: E731
    ids = torch.full((2, 77), EOS, dtype=torch.int64)
    ids2 = torch.zeros((2, 77), dtype=torch.int64)
    for row, n in enumerate([10, 75]):
        prompt = torch.cat([torch.tensor([BOS]), torch.randint(0, BOS, (n,), generator=g), torch.tensor([EOS])])
        ids[row, :n + 2] = prompt
        ids2[row, :n + 2] = prompt
    return {
        "unet": {"sample": r(2, 4, 16, 12), "timestep": torch.tensor([999.0, 37.5]),
                 "encoder_hidden_states": r(2, 77, 32), "text_embeds": r(2, 16),
                 "time_ids": torch.tensor([[1024, 1024, 0, 0, 1024, 1024], [768, 512, 16, 32, 512, 768]],
                                          dtype=torch.float32),
                 "sample1": r(1, 4, 8, 8), "timestep1": torch.tensor([500.0]),
                 "encoder_hidden_states1": r(1, 154, 32), "text_embeds1": r(1, 16),
                 "time_ids1": torch.tensor([[512, 512, 0, 0, 512, 512]], dtype=torch.float32)},
        "vae": {"latents": r(1, 4, 8, 6), "image": (torch.rand((1, 3, 32, 24), generator=g) * 2 - 1)},
        "clip": {"ids": ids, "ids2": ids2},
    }


# --------------------------------------------------------------------------- references
def run_unet(unet, x, suffix=""):
    cond = {"text_embeds": x["text_embeds" + suffix], "time_ids": x["time_ids" + suffix]}
    return unet(x["sample" + suffix], x["timestep" + suffix], encoder_hidden_states=x["encoder_hidden_states" + suffix],
                added_cond_kwargs=cond).sample


@torch.no_grad()
def references(models, inputs):
    x, v, c = inputs["unet"], inputs["vae"], inputs["clip"]
    te1 = models["text_encoder"](c["ids"], output_hidden_states=True)
    te2 = models["text_encoder_2"](c["ids2"], output_hidden_states=True)
    assert len(te1.hidden_states) == TE1_CFG["num_hidden_layers"] + 1
    dist = models["vae"].encode(v["image"]).latent_dist
    return {
        "unet": {"out": run_unet(models["unet"], x), "out1": run_unet(models["unet"], x, "1")},
        "vae": {"decoded": models["vae"].decode(v["latents"]).sample, "mean": dist.mean, "logvar": dist.logvar},
        "clip": {"te1_penultimate": te1.hidden_states[-2], "te1_last": te1.last_hidden_state,
                 "te2_penultimate": te2.hidden_states[-2], "te2_pooled": te2.text_embeds,
                 "eos_index": c["ids"].to(torch.int32).argmax(-1).to(torch.int64)},
    }


def scales(refs):
    out = {}
    for group in refs.values():
        for k, t in group.items():
            if t.is_floating_point():
                std = t.std().item()
                assert 0.1 < std < 10, (k, std)
                out[k] = {"shape": list(t.shape), "max_abs": t.abs().max().item(), "std": std}
    return out


# --------------------------------------------------------------------------- writing
def save_pipeline(pipe, folder):
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        getattr(pipe, name).to(torch.float16)
    pipe.save_pretrained(folder, safe_serialization=True)


@torch.no_grad()
def check_reload(folder, inputs, refs):
    """The saved f16 pipeline, loaded in f32, reproduces every reference bit for bit."""
    from diffusers import StableDiffusionXLPipeline
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    models = {n: getattr(pipe, n) for n in ("unet", "vae", "text_encoder", "text_encoder_2")}
    again = references(models, inputs)
    for group in refs:
        for k in refs[group]:
            assert torch.equal(again[group][k], refs[group][k]), (group, k)
    return pipe


def describe(models):
    unet_procs = sorted({type(p).__name__ for p in models["unet"].attn_processors.values()})
    vae_procs = sorted({type(p).__name__ for p in models["vae"].attn_processors.values()})
    return {"unet_attn_processors": unet_procs, "vae_attn_processors": vae_procs,
            "clip_attn_implementation": models["text_encoder"].config._attn_implementation,
            "parameters": {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}}


def main():
    import diffusers
    import transformers
    torch.set_num_threads(2)
    models = build_models()
    tok, tok2 = tiny_tokenizers()
    inputs = make_inputs()
    refs = references(models, inputs)
    meta = {"versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__},
            "seeds": SEEDS, "init": {"gain_over_sqrt_fan_in": GAIN, "embedding_std": EMBED_STD,
                                     "bias_std": BIAS_STD, "norm": "weight 1+0.1N, bias 0.1N"},
            "configs": {"unet": UNET_CFG, "vae": VAE_CFG, "text_encoder": TE1_CFG, "text_encoder_2": TE2_CFG,
                        "scheduler": SCHEDULER_CFG},
            "runtime": describe(models), "outputs": scales(refs)}

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    folder = os.path.join(OUT, "tiny-sdxl")
    save_pipeline(make_pipeline(models, tok, tok2), folder)
    for group in ("unet", "vae", "clip"):
        tensors = {**inputs[group], **refs[group]}
        save_file({k: t.contiguous() for k, t in tensors.items()}, os.path.join(OUT, f"{group}_io.safetensors"))
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    check_reload(folder, inputs, refs)

    total = 0
    for dirpath, _, files in sorted(os.walk(OUT)):
        for name in sorted(files):
            path = os.path.join(dirpath, name)
            total += os.path.getsize(path)
            print(f"{os.path.getsize(path):>9}  {os.path.relpath(path, OUT)}")
    print(f"{total:>9}  total in {os.path.relpath(OUT, ROOT)}")
    for k, s in meta["outputs"].items():
        print(f"  {k:16s} {str(s['shape']):18s} max|x| {s['max_abs']:.4g}  std {s['std']:.4g}")


if __name__ == "__main__":
    main()
