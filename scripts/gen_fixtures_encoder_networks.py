#!/usr/bin/env python3
"""Conformance fixtures for MUMU's encoder networks in Swift (Sources/MumuEncoder/Networks).

Writes Tests/MumuEncoderTests/Fixtures/networks/ (about 5 MB in all, 4.1 MB of it the text model's 32,003-row
token embedding):

  tiny-idefics2/            a tiny random Idefics2 as transformers' `Idefics2Model.save_pretrained` writes it:
                            config.json + model.safetensors (bf16 weights, keys WITHOUT the `model.` prefix that
                            Idefics2ForConditionalGeneration adds; the Swift tests derive the prefixed and sharded
                            forms from this folder). Vision: SigLIP hidden 32, MLP 48, 2 layers, 4 heads, patch 14,
                            image_size 56 (S = 4 position buckets a side, so grids of 1x5, 2x3 and 6x3 patches
                            exercise the fractional bucketing: smaller than S x S, non-square, and larger than S).
                            Text: Mistral, vocab 32,003 (the real tokenizer's), hidden 64, MLP 96, 2 layers, 4 heads
                            of 16, 2 KV heads (GQA), sliding window 16 (the test sequences are 31..52 tokens, so
                            the window masks), max_position_embeddings 128, RMSNorm eps 1e-5, RoPE theta 5000
                            under `rope_parameters` (not the default 10000, so a reader that ignores it fails).
                            Perceiver: minimal (1 layer, 4 latents); MUMU does not use it.
  connector-w128.safetensors  a random MUMU connector (docs/formats.md, `connector.` keys, f16): 64 -> width 128
                            (2 heads of 64), MLP 128, 2 layers, pooled 64.
  connector-w96.safetensors   one for the `sdxl-tiny` UNet (cross-attention 96, label_emb input 112 = pooled 64 +
                            6 x 8): width 96 (not a multiple of 64: one head of 96), MLP 192, 2 layers, pooled 64.
  networks_io.safetensors   inputs and f32 reference outputs:
      pixels_{a,b,c,d}      [3, H, W] normalized pixel values in [-1, 1]: a 2x3 patches (28x42), b 4x4 (56x56),
                            c 1x5 (14x70), d 6x3 (84x42)
      vision_{a,b,c,d}      vision_model(pixels[None]).last_hidden_state[0]      [n, 32]
      proj_{a,b,c,d}        connector.modality_projection(vision)                [n, 64]
      ids0, ids1, ids3      int64 token ids with 0, 1 (a) and 3 (a, c, b) images: BOS 1, text ids, and per image
                            <fake_token_around_image> 32000, n x <image> 32001, 32000 (ids3 also holds an
                            <end_of_utterance> 32002 as plain text)
      hidden0/1/3           text_model(inputs_embeds = inputs_merger(ids, embed_tokens(ids), proj of the images
                            in order)).last_hidden_state[0]   [T, 64] (the final RMSNorm applied)
      w128_context{0,3}, w128_pooled{0,3}, w96_context{0,3}, w96_pooled{0,3}
                            the connectors on hidden0 / hidden3: context [T, width], pooled [64]
      posids_s{S}_{nh}x{nw} int64 position ids transformers' Idefics2VisionEmbeddings gives an nh x nw grid (all
                            patches real) for S = 70 (idefics2-8b: 980 / 14) and S = 19 (where torch's float32 arange
                            of the bucket boundaries differs from a plain f32(k / S) by an ulp, which moves
                            patches of 19, 38 and 57-patch sides to another bucket)
  meta.json                 versions, seeds, configs, shapes and max |x| of every reference.

Weights. Every parameter is re-initialised from a seeded normal (nothing left at transformers' zero / one init,
which would hide a missing bias or norm): weights N(0, 1/fan_in), embeddings N(0, 0.5^2), biases N(0, 0.05^2),
LayerNorm / RMSNorm weights 1 + 0.1 N, LayerNorm biases 0.1 N. The Idefics2 values are rounded to bf16 and
the connectors' to f16 first; the references are computed in f32 with exactly those values, and the same
values are saved in bf16 / f16, so a reader that loads them and computes in f32 uses the references' weights.
The script reloads the saved folder (dtype float32) and recomputes every Idefics2 output bit for bit.

The connector (no public code: docs/formats.md defines it) is written here in torch:
    x = proj_in(h); per layer: x += to_out(attn(to_q, to_k, to_v of norm1(x)));  x += fc2(gelu_erf(fc1(norm2(x))))
    context = norm_out(x); pooled = pooled_proj(context.mean over T)
LayerNorm eps 1e-5, heads = width / 64 when width is a multiple of 64, else one head of the whole width; no
q/k/v bias, non-causal, no mask.

transformers runs attention with "sdpa" (recorded in meta.json); the script also runs the text model with
"eager" and checks it agrees (the sliding-window mask is the same in both).
Deterministic (fixed seeds, 2 torch threads). Run (CPU, a few seconds): python3 scripts/gen_fixtures_encoder_networks.py
"""
import copy
import json
import math
import os
import shutil
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

import transformers
from transformers import Idefics2Config, Idefics2Model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests", "MumuEncoderTests", "Fixtures", "networks")
SEEDS = {"idefics2": 201, "inputs": 202, "w128": 203, "w96": 204}
EMBED_STD, BIAS_STD = 0.5, 0.05

VISION = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              image_size=56, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
TEXT = dict(model_type="mistral", vocab_size=32003, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, sliding_window=16, max_position_embeddings=128,
            rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=0,
            rope_parameters={"rope_type": "default", "rope_theta": 5000.0})
PERCEIVER = dict(hidden_size=64, resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2,
                 resampler_head_dim=8, num_key_value_heads=1)
IMAGE_TOKEN, FAKE_TOKEN, END_OF_UTTERANCE, BOS = 32001, 32000, 32002, 1
GRIDS = {"a": (2, 3), "b": (4, 4), "c": (1, 5), "d": (6, 3)}


def reinit(module, generator, round_to):
    """Seeded normals for every parameter (see the docstring), rounded to `round_to` and back."""
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            leaf = name.split(".")[-1]
            is_norm = any(s in name for s in ("layer_norm", "layernorm", "norm1", "norm2", "norm_out", ".norm.",
                                              "input_layernorm", "post_attention_layernorm", "latents_norm",
                                              "context_norm")) or name.endswith("norm.weight")
            if is_norm and leaf == "weight":
                v = 1 + 0.1 * torch.randn(p.shape, generator=generator)
            elif is_norm and leaf == "bias":
                v = 0.1 * torch.randn(p.shape, generator=generator)
            elif leaf == "bias":
                v = BIAS_STD * torch.randn(p.shape, generator=generator)
            elif "embed" in name or leaf == "latents":
                v = EMBED_STD * torch.randn(p.shape, generator=generator)
            else:
                fan_in = p[0].numel()
                v = torch.randn(p.shape, generator=generator) / math.sqrt(fan_in)
            p.copy_(v.to(round_to).float())


def heads_of(width):
    return width // 64 if width % 64 == 0 else 1


class ConnectorAttention(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.heads = heads_of(width)
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_k = nn.Linear(width, width, bias=False)
        self.to_v = nn.Linear(width, width, bias=False)
        self.to_out = nn.Linear(width, width)

    def forward(self, x):  # x [T, C]
        t, c = x.shape
        d = c // self.heads
        q, k, v = (f(x).view(t, self.heads, d).transpose(0, 1) for f in (self.to_q, self.to_k, self.to_v))
        scores = (q @ k.transpose(1, 2)) / math.sqrt(d)
        out = scores.softmax(-1) @ v
        return self.to_out(out.transpose(0, 1).reshape(t, c))


class ConnectorMLP(nn.Module):
    def __init__(self, width, mlp):
        super().__init__()
        self.fc1 = nn.Linear(width, mlp)
        self.fc2 = nn.Linear(mlp, width)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU


class ConnectorLayer(nn.Module):
    def __init__(self, width, mlp):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-5)
        self.attn = ConnectorAttention(width)
        self.norm2 = nn.LayerNorm(width, eps=1e-5)
        self.mlp = ConnectorMLP(width, mlp)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Connector(nn.Module):
    """MUMU's connector as docs/formats.md defines it (16 layers, 4096 -> 2048, pooled 1280 at full size)."""

    def __init__(self, hidden, width, mlp, layers, pooled):
        super().__init__()
        self.proj_in = nn.Linear(hidden, width)
        self.layers = nn.ModuleList([ConnectorLayer(width, mlp) for _ in range(layers)])
        self.norm_out = nn.LayerNorm(width, eps=1e-5)
        self.pooled_proj = nn.Linear(width, pooled)

    def forward(self, h):  # h [T, hidden]
        x = self.proj_in(h)
        for layer in self.layers:
            x = layer(x)
        context = self.norm_out(x)
        return context, self.pooled_proj(context.mean(0))


class CapturePositions(nn.Module):
    """Stands in for the position embedding: records the ids it is asked for."""

    def forward(self, ids):
        self.ids = ids
        return torch.zeros(ids.shape + (1,))


def position_ids(s, nh, nw):
    from transformers.models.idefics2.modeling_idefics2 import Idefics2VisionEmbeddings
    from transformers.models.idefics2.configuration_idefics2 import Idefics2VisionConfig
    emb = Idefics2VisionEmbeddings(Idefics2VisionConfig(hidden_size=1, image_size=s * 14, patch_size=14))
    emb.position_embedding = CapturePositions()
    pixels = torch.zeros(1, 3, nh * 14, nw * 14)
    emb(pixels, torch.ones(1, nh, nw, dtype=torch.bool))
    return emb.position_embedding.ids[0].clone()


POSITION_GRIDS = {70: [(32, 23), (23, 32), (32, 32), (1, 1), (70, 70), (35, 70), (45, 13), (80, 3)],
                  19: [(19, 38), (57, 7), (10, 19), (12, 12)]}


def image_run(n):
    return [FAKE_TOKEN] + [IMAGE_TOKEN] * n + [FAKE_TOKEN]


def main():
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)

    config = Idefics2Config(vision_config=VISION, text_config=TEXT, perceiver_config=PERCEIVER,
                            image_token_id=IMAGE_TOKEN)
    torch.manual_seed(0)
    model = Idefics2Model(config).eval()
    reinit(model, torch.Generator().manual_seed(SEEDS["idefics2"]), torch.bfloat16)

    g = torch.Generator().manual_seed(SEEDS["inputs"])
    io, meta_out = {}, {}
    patch = VISION["patch_size"]

    def compute(m):
        out = {}
        with torch.no_grad():
            for key, (nh, nw) in GRIDS.items():
                pixels = io["pixels_" + key]
                vision = m.vision_model(pixel_values=pixels[None]).last_hidden_state[0]
                out["vision_" + key] = vision
                out["proj_" + key] = m.connector.modality_projection(vision)
            for key, images in (("0", []), ("1", ["a"]), ("3", ["a", "c", "b"])):
                ids = io["ids" + key]
                embeds = m.text_model.embed_tokens(ids[None])
                if images:
                    feats = torch.cat([out["proj_" + i] for i in images])
                    embeds = m.inputs_merger(ids[None], embeds, feats)
                out["hidden" + key] = m.text_model(inputs_embeds=embeds).last_hidden_state[0]
        return out

    for key, (nh, nw) in GRIDS.items():
        io["pixels_" + key] = torch.rand((3, nh * patch, nw * patch), generator=g) * 2 - 1

    def text(n):
        return torch.randint(3, 32000, (n,), generator=g).tolist()

    io["ids0"] = torch.tensor([BOS] + text(39))
    io["ids1"] = torch.tensor([BOS] + text(10) + image_run(6) + text(12))
    ids3 = [BOS] + text(5) + image_run(6) + text(4) + image_run(5) + text(2) + [END_OF_UTTERANCE] + image_run(16) + text(6)
    io["ids3"] = torch.tensor(ids3)

    refs = compute(model)
    with torch.no_grad():
        for s_, grids in POSITION_GRIDS.items():
            for nh, nw in grids:
                io[f"posids_s{s_}_{nh}x{nw}"] = position_ids(s_, nh, nw)

    # The same with eager attention: the sliding-window causal mask is built the same way.
    eager = copy.deepcopy(model)
    eager.text_model.config._attn_implementation = "eager"
    eager.vision_model.config._attn_implementation = "eager"
    eager_refs = compute(eager)
    for k, v in refs.items():
        assert torch.allclose(v, eager_refs[k], atol=1e-5, rtol=0), k

    # The window really masks: without it hidden3 changes.
    nowin = copy.deepcopy(model)
    nowin.text_model.config.sliding_window = None
    assert (compute(nowin)["hidden3"] - refs["hidden3"]).abs().max() > 1e-3

    folder = os.path.join(OUT, "tiny-idefics2")
    model.to(torch.bfloat16).save_pretrained(folder)
    model.float()
    reloaded = Idefics2Model.from_pretrained(folder, dtype=torch.float32).eval()
    again = compute(reloaded)
    for k, v in refs.items():
        assert torch.equal(v, again[k]), f"{k} differs after reloading the saved folder"
    io.update(refs)

    connectors = {}
    for name, (width, mlp, layers) in (("w128", (128, 128, 2)), ("w96", (96, 192, 2))):
        torch.manual_seed(0)
        c = Connector(TEXT["hidden_size"], width, mlp, layers, 64).eval()
        reinit(c, torch.Generator().manual_seed(SEEDS[name]), torch.float16)
        with torch.no_grad():
            for key in ("0", "3"):
                context, pooled = c(refs["hidden" + key])
                io[f"{name}_context{key}"] = context
                io[f"{name}_pooled{key}"] = pooled
        state = {"connector." + k: v.to(torch.float16).contiguous() for k, v in c.state_dict().items()}
        save_file(state, os.path.join(OUT, f"connector-{name}.safetensors"), metadata={"format": "pt"})
        connectors[name] = dict(width=width, mlp=mlp, layers=layers, pooled=64, heads=heads_of(width))

    for k, v in io.items():
        if v.is_floating_point():
            if not k.startswith(("pixels", "ids")):
                std = v.std().item()
                assert 0.1 < std < 10, f"{k}: std {std}"
            io[k] = v.float().contiguous()
        else:
            io[k] = v.to(torch.int64).contiguous()
        meta_out[k] = {"shape": list(v.shape), "max_abs": float(v.abs().max())}
    save_file(io, os.path.join(OUT, "networks_io.safetensors"))

    meta = {
        "generator": "scripts/gen_fixtures_encoder_networks.py",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "runtime": {"attn_implementation": model.text_model.config._attn_implementation, "threads": 2},
        "seeds": SEEDS,
        "idefics2": {"vision": VISION, "text": TEXT, "perceiver": PERCEIVER, "image_token_id": IMAGE_TOKEN},
        "connectors": connectors,
        "grids": GRIDS,
        "tensors": meta_out,
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(OUT):
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)  # safetensors' save_file writes 0600
            total += os.path.getsize(os.path.join(root, f))
    print(f"wrote {OUT}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
