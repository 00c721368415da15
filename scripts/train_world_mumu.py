#!/usr/bin/env python3
"""Trains the shapes world's tiny MUMU (issue 14, item 3; docs/world-models.md) on this CPU.

    python3 scripts/train_world_mumu.py train [--steps N] [--resume]
    python3 scripts/train_world_mumu.py export     # models/shapes/encoder/, mumu-decoder.safetensors, crops/

MUMU (arXiv 2406.18790) is an Idefics2 encoder, a connector and an SDXL UNet with a low-rank delta. Here:
- the encoder is an Idefics2 of tiny widths (ENCODER below: SigLIP 64 wide, 2 layers, 14-pixel patches; Mistral
  64 wide, 2 layers, grouped-query attention, Mistral's v1 tokenizer with Idefics2's three added tokens),
  prompt images resized to a longer edge of 42 (3x3 patches at most, `mumu_image_size` in its folder);
- the connector is docs/formats.md's (width 96 = the sdxl-tiny UNet's cross-attention width, 4 layers, MLP 384,
  pooled 64);
- the UNet is the trained base's (models/shapes/base.safetensors' run, /tmp/mumu-world/base.pt) with a rank-16
  LoRA on every attention and feed-forward projection, merged into it on export: the decoder's low-rank delta.
No pretrained vision-language model exists on these machines, so the encoder trains too (from seeded random
weights), jointly with the connector and the LoRA; the base UNet's own weights stay frozen.

Data: MUMU's bootstrap (docs/world.md, "Multimodal prompts"): the base's flat training images and captions, with
the crop of a shape inserted before its words (insert) or in place of them (replace), for one shape or all of
them; 40% of the samples keep the plain caption and 10% are empty prompts (BOS only, what an empty negative prompt
gives in `mumu generate --encoder`). Loss, schedule, time ids, min-SNR weighting, the foreground weight
(--fg-weight) and the EMA are the base's (train_world.py). Batches pad the token sequences; the connector and the
UNet's cross-attention mask the padding, so a padded sample computes what the unpadded one computes in mumu.
"""
import argparse
import json
import math
import os
import re
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_fixtures_encoder_networks as nets  # noqa: E402
import train_world as W  # noqa: E402
import world  # noqa: E402

TOKENIZER = os.path.join(W.ROOT, "Tests", "MumuEncoderTests", "Fixtures", "tokenizer", "tokenizer.json")
IMAGE_SIZE = 42
PATCH = 14
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              image_size=IMAGE_SIZE, patch_size=PATCH, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
TEXT = dict(model_type="mistral", vocab_size=32003, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, sliding_window=None, max_position_embeddings=256,
            rms_norm_eps=1e-5, hidden_act="silu", bos_token_id=1, eos_token_id=2, pad_token_id=0,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
CONNECTOR = dict(width=96, mlp=384, layers=4, pooled=64)
LORA_RANK = 16
FAKE, IMAGE, IMAGE_ID = "<fake_token_around_image>", "<image>", 32001


# --------------------------------------------------------------------------- the networks
def build_encoder(seed):
    from transformers import Idefics2Config, Idefics2Model
    config = Idefics2Config(vision_config=VISION, text_config=TEXT, perceiver_config=nets.PERCEIVER,
                            image_token_id=IMAGE_ID)
    torch.manual_seed(seed)
    model = Idefics2Model(config)
    nets.reinit(model, torch.Generator().manual_seed(seed), torch.float32)
    # MUMU has no perceiver: its (minimal) weights stay random and unused, kept so the folder is a complete Idefics2Model
    return model


def build_connector(seed):
    torch.manual_seed(seed)
    c = nets.Connector(TEXT["hidden_size"], CONNECTOR["width"], CONNECTOR["mlp"], CONNECTOR["layers"], CONNECTOR["pooled"])
    nets.reinit(c, torch.Generator().manual_seed(seed), torch.float32)
    return c


def connector_batch(c, h, mask):
    """nets.Connector over a padded batch: h [B, T, hidden], mask [B, T] (True: a real token). Padding is masked
    out of every attention and of the pooled mean, so each row equals the connector on its own tokens."""
    x = c.proj_in(h)
    b, t, w = x.shape
    heads = nets.heads_of(w)
    keep = mask[:, None, None, :]
    for layer in c.layers:
        a = layer.norm1(x)
        q, k, v = (f(a).view(b, t, heads, w // heads).transpose(1, 2) for f in (layer.attn.to_q, layer.attn.to_k, layer.attn.to_v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        x = x + layer.attn.to_out(o.transpose(1, 2).reshape(b, t, w))
        x = x + layer.mlp(layer.norm2(x))
    context = c.norm_out(x)
    m = mask.float()[..., None]
    return context, c.pooled_proj((context * m).sum(1) / m.sum(1))


class LoRALinear(nn.Module):
    """y = base(x) + up(down(x)); up starts at zero, so training starts from the base UNet."""

    def __init__(self, base, rank):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.zeros_(self.up.weight)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))

    def merged(self):
        return self.base.weight + self.up.weight @ self.down.weight


LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")


def add_lora(unet, rank):
    """Wraps every attention and feed-forward projection of the UNet's transformer blocks; returns {name: LoRALinear}."""
    wrapped = {}
    for name, module in list(unet.named_modules()):
        for target in LORA_TARGETS:
            parent_name, _, leaf = (name + "." + target).rpartition(".")
            try:
                parent = unet.get_submodule(parent_name)
                child = parent.get_submodule(leaf)
            except AttributeError:
                continue
            if isinstance(child, nn.Linear) and ".transformer_blocks." in parent_name + ".":
                lora = LoRALinear(child, rank)
                setattr(parent, leaf, lora) if not leaf.isdigit() else parent.__setitem__(int(leaf), lora)
                wrapped[parent_name + "." + leaf] = lora
    return wrapped


# --------------------------------------------------------------------------- the data
def target_size(w, h, size=IMAGE_SIZE):
    """MUMU's size (docs/multimodal-inputs.md): longer edge `size`, shorter by the same factor rounded to a multiple
    of 14 (halves up), at least 14."""
    long, short = max(w, h), min(w, h)
    m = max(1, (2 * short * size + PATCH * long) // (2 * PATCH * long))
    return (size, m * PATCH) if w >= h else (m * PATCH, size)


def pixel_values(im):
    tw, th = target_size(*im.size)
    if (tw, th) != im.size:
        im = im.resize((tw, th), Image.BILINEAR)
    x = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(((x - 0.5) / 0.5).transpose(2, 0, 1).copy())


def expand(prompt, counts):
    """Idefics2Processor's text for a prompt with `<image:...>`: fake, <image> x patches, fake (as mumu writes it)."""
    parts = re.split(r"<image:[^>]*>", prompt)
    out = parts[0]
    for n, rest in zip(counts, parts[1:]):
        out += FAKE + IMAGE * n + FAKE + rest
    out = out.replace(FAKE + FAKE, FAKE)
    return re.sub(f"{FAKE}(?=[^\\s<])", f"{FAKE} ", out)


class Bootstrap:
    """The flat training images' scenes and their crops' pixel values (seeds 0..count-1, the base's first images)."""

    def __init__(self, work, count):
        u8 = W.images(work, "flat", 0, 40000)[:count]
        self.scenes = [world.scene_for_seed(s) for s in range(count)]
        self.crops = [[pixel_values(c) for c in world.crops(Image.fromarray(u8[i]), self.scenes[i], W.SIZE)]
                      for i in range(count)]

    def prompt(self, i, rng):
        """(prompt, pixel values of its images in order) for sample i, drawn as the module docstring says."""
        scene, r = self.scenes[i], rng.random()
        if r < 0.1:
            return "", []
        if r < 0.5:
            return world.caption(scene), []
        n = len(scene["shapes"])
        form = ["insert", "replace", "insert_all", "replace_all"][int(rng.integers(4))]
        chosen = list(range(n)) if form.endswith("_all") else [int(rng.integers(n))]
        prompt = world.multimodal_prompt(scene, {j: f"#{j}" for j in chosen}, form.replace("_all", ""))
        return prompt, [self.crops[i][j] for j in chosen]


class Tokenizer:
    def __init__(self):
        from transformers import PreTrainedTokenizerFast
        self.tok = PreTrainedTokenizerFast(tokenizer_file=TOKENIZER)

    def batch(self, prompts, images):
        """Padded ids [B, T] and mask, for prompts whose images have the given pixel values."""
        texts = [expand(p, [(x.shape[1] // PATCH) * (x.shape[2] // PATCH) for x in ims]) for p, ims in zip(prompts, images)]
        rows = [self.tok(t)["input_ids"] for t in texts]
        t = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), t, dtype=torch.long)
        mask = torch.zeros(len(rows), t, dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = True
        return ids, mask


def encode(encoder, connector, ids, mask, images):
    """Context [B, T, 96] and pooled [B, 64]: vision per image (grouped by patch grid), projection, the <image>
    embeddings replaced in order, the text model, the connector."""
    flat = [x for ims in images for x in ims]
    feats = [None] * len(flat)
    groups = {}
    for k, x in enumerate(flat):
        groups.setdefault(tuple(x.shape), []).append(k)
    for _, ks in groups.items():
        v = encoder.vision_model(pixel_values=torch.stack([flat[k] for k in ks])).last_hidden_state
        p = encoder.connector.modality_projection(v)
        for j, k in enumerate(ks):
            feats[k] = p[j]
    embeds = encoder.text_model.embed_tokens(ids)
    if flat:
        slots = ids == IMAGE_ID
        embeds = embeds.masked_scatter(slots[..., None], torch.cat(feats).to(embeds.dtype))
    hidden = encoder.text_model(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
    return connector_batch(connector, hidden, mask)


# --------------------------------------------------------------------------- training
def state_path(work):
    return os.path.join(work, "mumu.pt")


def build_all(a):
    base = W.resume_state(a.work, "base")
    unet = W.build_unet()
    unet.load_state_dict(base["unet"])
    for p in unet.parameters():
        p.requires_grad_(False)
    torch.manual_seed(a.seed)  # the LoRA's down projections start from nn.Linear's init, drawn from torch's global RNG
    lora = add_lora(unet, LORA_RANK)
    encoder = build_encoder(a.seed + 1)
    connector = build_connector(a.seed + 2)
    return unet, lora, encoder, connector


def shipped_state(lora, rank=LORA_RANK):
    """The shipped tiny MUMU (models/shapes/encoder/, mumu-decoder.safetensors) back as a training state, for
    `train --resume` without the work folder's mumu.pt: the encoder (bf16) and the connector as shipped, and each
    LoRA of `lora` ({name: LoRALinear} on the base the run continues on) from its merged delta, the decoder's
    projection minus that base's, cut to its top `rank` singular directions (up = U sqrt(S), down = sqrt(S) V^T).
    On the base the decoder was exported on, that delta is the trained LoRA up to the two files' f16 rounding; on
    another base it also carries the difference of the bases, of which the cut keeps the part a LoRA can express."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    decoder_path = os.path.join(W.MODELS, "mumu-decoder.safetensors")
    decoder = W.shipped_state(decoder_path, parts=("unet",))
    with safe_open(decoder_path, "pt") as f:
        connector = {k[len("connector."):]: f.get_tensor(k).float() for k in f.keys() if k.startswith("connector.")}
    encoder = {k: v.float() for k, v in load_file(os.path.join(W.MODELS, "encoder", "model.safetensors")).items()}
    factors, kept = {}, []
    for k, m in lora.items():
        delta = decoder["unet"][k + ".weight"] - m.base.weight.detach()
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        root = s[:rank].sqrt()
        factors[k + ".up"] = (u[:, :rank] * root).contiguous()
        factors[k + ".down"] = (root[:, None] * vh[:rank]).contiguous()
        kept.append(float((s[:rank] ** 2).sum() / (s ** 2).sum().clamp_min(1e-30)))
    return {"encoder": encoder, "connector": connector, "lora": factors, "step": decoder["step"],
            "seconds": decoder["seconds"], "loss": decoder["loss"], "kept": kept}


def trainable_of(lora, encoder, connector):
    params = [p for m in lora.values() for p in (m.down.weight, m.up.weight)]
    return params + list(encoder.parameters()) + list(connector.parameters())


def cmd_train(a):
    torch.set_num_threads(a.threads)
    vae = W.load_vae(a.work)
    mean, std = W.latents(a.work, vae, "flat", 0, 40000)
    mean, std = mean[:a.count], std[:a.count]
    data = Bootstrap(a.work, a.count)
    fgw = W.foreground_weights(a.work, "flat", 0, a.count, a.fg_weight)
    tok = Tokenizer()
    unet, lora, encoder, connector = build_all(a)
    start, seconds = 0, 0.0
    if a.resume:
        if os.path.exists(state_path(a.work)):
            st = torch.load(state_path(a.work))
        else:
            st = shipped_state(lora)
            W.log(a.work, "mumu", f"no {state_path(a.work)}: continuing the shipped MUMU (its LoRA from the decoder's "
                  f"delta, rank {LORA_RANK} keeps {min(st['kept']):.6f}-{max(st['kept']):.6f} of each delta's energy)")
        encoder.load_state_dict(st["encoder"])
        connector.load_state_dict(st["connector"])
        for k, m in lora.items():
            m.down.weight.data.copy_(st["lora"][k + ".down"])
            m.up.weight.data.copy_(st["lora"][k + ".up"])
        start, seconds = st["step"], st["seconds"]
        W.log(a.work, "mumu", f"resuming at step {start} ({seconds:.0f}s so far)")
    trainable = trainable_of(lora, encoder, connector)
    W.log(a.work, "mumu", f"trainable {sum(p.numel() for p in trainable)} parameters "
          f"(LoRA {sum(m.down.weight.numel() + m.up.weight.numel() for m in lora.values())} on {len(lora)} projections)")
    sched = W.scheduler()
    snr = W.min_snr(sched)
    opt = torch.optim.AdamW(trainable, lr=a.lr, weight_decay=1e-2)
    ema = W.EMA(trainable, 0.999)
    g = torch.Generator().manual_seed(a.seed + start)
    rng = np.random.default_rng(a.seed + start)
    tid = W.time_ids(a.batch)
    t0, avg = time.time() - seconds, None
    for step in range(start, a.steps):
        for pg in opt.param_groups:
            pg["lr"] = W.resumed_lr(step, start, a.steps, a.lr, a.warmup, a.rewarm)
        idx = torch.randint(len(mean), (a.batch,), generator=g)
        zt, noise, t = W.noised_batch(mean, std, idx, sched, a.noise_offset, g)
        prompts, images = zip(*[data.prompt(int(i), rng) for i in idx])
        ids, mask = tok.batch(prompts, images)
        ctx, pooled = encode(encoder, connector, ids, mask, images)
        pred = unet(zt, t, encoder_hidden_states=ctx, encoder_attention_mask=mask.float(),
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": tid}).sample
        loss = W.loss_step(pred, noise, t, snr, opt, trainable, None if fgw is None else fgw[idx])
        ema.update(step)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 50 == 0 or step == a.steps - 1:
            W.log(a.work, "mumu", f"step {step} loss {avg:.4f} lr {opt.param_groups[0]['lr']:.2e} {time.time() - t0:.0f}s")
        if (step + 1) % 250 == 0 or step == a.steps - 1:
            with W.ema_weights(trainable, ema):
                torch.save({"encoder": encoder.state_dict(), "connector": connector.state_dict(),
                            "lora": {k + "." + part: getattr(m, part).weight.detach().clone() for k, m in lora.items()
                                     for part in ("down", "up")},
                            "step": step + 1, "seconds": time.time() - t0, "loss": avg}, state_path(a.work) + ".tmp")
            os.replace(state_path(a.work) + ".tmp", state_path(a.work))
    W.log(a.work, "mumu", f"done {time.time() - t0:.0f}s loss {avg:.4f}")


# --------------------------------------------------------------------------- export
def preprocessor_config():
    return {"do_convert_rgb": True, "do_image_splitting": False, "do_normalize": True, "do_pad": True,
            "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
            "image_processor_type": "Idefics2ImageProcessor", "image_std": [0.5, 0.5, 0.5],
            "mumu_image_size": IMAGE_SIZE, "resample": 2, "rescale_factor": 1 / 255,
            "size": {"longest_edge": 980, "shortest_edge": 378}}


# Crops for `mumu demo` (Sources/mumu/ShapesDemo.swift): a shape of a held-out scene (seed >= 10^9 + 1000, past
# eval_world.py's 200 prompts), cut from its true flat render as the bootstrap cuts training crops.
DEMO_CROPS = {"orange-star.png": (1_000_001_017, 0), "green-ring.png": (1_000_001_033, 0)}


def write_crops(out):
    folder = os.path.join(out, "crops")
    os.makedirs(folder, exist_ok=True)
    for name, (seed, i) in DEMO_CROPS.items():
        scene = world.scene_for_seed(seed)
        path = os.path.join(folder, name)
        world.crops(world.render(scene, "flat", W.SIZE), scene, W.SIZE)[i].save(path + ".tmp", format="PNG")
        os.replace(path + ".tmp", path)
        print(f"{path}: {world.shape_phrase(world.ordered(scene)[i])} of held-out scene {seed}")


def cmd_export(a):
    import sdxl_keys as K
    st = torch.load(state_path(a.work))
    unet, lora, encoder, connector = build_all(a)
    encoder.load_state_dict(st["encoder"])
    connector.load_state_dict(st["connector"])
    record = json.dumps({"size": W.SIZE, "steps": st["step"], "seconds": round(st["seconds"]), "loss": round(st["loss"], 5),
                         "lora_rank": LORA_RANK, "image_size": IMAGE_SIZE})

    # encoder/: the Idefics2 folder (bf16, Idefics2Model names as save_pretrained writes them) with its tokenizer
    folder = os.path.join(a.out, "encoder")
    tmp = folder + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    encoder.to(torch.bfloat16).save_pretrained(tmp)
    shutil.copy(TOKENIZER, os.path.join(tmp, "tokenizer.json"))
    with open(os.path.join(tmp, "preprocessor_config.json"), "w") as f:
        json.dump(preprocessor_config(), f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(tmp, "mumu_world.json"), "w") as f:
        f.write(record + "\n")
    for name in os.listdir(tmp):
        os.chmod(os.path.join(tmp, name), 0o644)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    print(f"{folder}: {sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)) / 1e6:.1f} MB")

    # mumu-decoder.safetensors: the base UNet with the LoRA merged, the shipped VAE, the connector
    sd = {}
    with torch.no_grad():
        for k, m in lora.items():
            m.up.weight.copy_(st["lora"][k + ".up"])
            m.down.weight.copy_(st["lora"][k + ".down"])
        for k, m in lora.items():
            parent, _, leaf = k.rpartition(".")
            p = unet.get_submodule(parent)
            merged = nn.Linear(m.base.in_features, m.base.out_features, bias=m.base.bias is not None)
            merged.weight.copy_(m.merged())
            if m.base.bias is not None:
                merged.bias.copy_(m.base.bias)
            setattr(p, leaf, merged) if not leaf.isdigit() else p.__setitem__(int(leaf), merged)
    sd.update(K.diffusers_to_sgm("unet", unet.state_dict()))
    sd.update(K.diffusers_to_sgm("vae", W.resume_vae_state(a.work)))
    sd.update({"connector." + k: v for k, v in connector.state_dict().items()})
    sd = {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}
    W.save(sd, os.path.join(a.out, "mumu-decoder.safetensors"),
           {"modelspec.title": "shapes tiny MUMU decoder", "mumu.world": record})
    write_crops(a.out)
    W.write_sums(a.out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train encoder + connector + UNet LoRA on the bootstrapped prompts")
    t.add_argument("--work", default="/tmp/mumu-world")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--lr", type=float, default=5e-4)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--count", type=int, default=16000, help="the base's first COUNT images and captions")
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--noise-offset", type=float, default=0.05)
    t.add_argument("--fg-weight", type=float, default=4.0,
                   help="extra loss weight of latent pixels under a shape, as train_world.py's (0: the plain loss)")
    t.add_argument("--resume", action="store_true", help="continue the work folder's mumu.pt")
    t.add_argument("--rewarm", type=int, default=100, help="a resumed run's fresh AdamW warms up over these steps")
    e = sub.add_parser("export", help="write models/shapes/encoder/ and mumu-decoder.safetensors")
    e.add_argument("--work", default="/tmp/mumu-world")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default=W.MODELS)
    a = p.parse_args(argv)
    {"train": cmd_train, "export": cmd_export}[a.cmd](a)


if __name__ == "__main__":
    main()
