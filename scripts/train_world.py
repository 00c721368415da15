#!/usr/bin/env python3
"""Trains the shapes world's models on this CPU (issue 14; docs/world.md, models/shapes/README.md).

    python3 scripts/train_world.py vae [--resume]      # the tiny VAE on every style (models/shapes/README.md: its runs)
    python3 scripts/train_world.py vae-eval            # its round trip on unseen scenes (docs/world-models.md's table)
    python3 scripts/train_world.py base                # UNet + both text encoders, flat style
    python3 scripts/train_world.py finetune --style outline [--resume]   # (striped, pixel, pastel)
    python3 scripts/train_world.py export              # models/shapes/*.safetensors (f16)

Every run is seeded (torch, the data seeds, the noise) and writes its state and a log under --work
(default /tmp/mumu-world); `export` turns the work folder into the shipped files. Rebuilding the
shipped weights is: vae, base, finetune for each style, export. Runs on 2 threads; torch's CPU
results vary slightly between machines and versions, so a rebuild is close to, not bit-identical
with, the committed files.

The architecture is sdxl-tiny (scripts/sdxl_configs.py: SDXL's block structure, both CLIP text encoders
with CLIP's full vocabulary) with a three-level 4x VAE (formats/sdxl-tiny-vae4x.json), at 64x64 images (16x16
latents); docs/world-models.md says why.
The text encoders train with the UNet from scratch (nothing pretrained exists on these machines).

Training follows diffusers' SDXL text-to-image recipe: epsilon prediction on SDXL's scaled-linear
1000-step schedule, the penultimate hidden states of both encoders as context, bigG's projected pooled
output, time ids (64, 64, 0, 0, 64, 64), 10% of captions dropped to zero conditioning (what an empty
negative prompt gives in diffusers and mumu), min-SNR-5 loss weighting and a small noise offset
(0.05) so that plain backgrounds keep their colors, EMA weights (0.999) as the result. A style whose
mark is fine texture trains on with `--snr-gamma 0` (the plain epsilon loss): min-SNR-5 weighs the
low-noise steps, where stripes are drawn, down to 5/SNR (docs/world-models.md).
"""

import argparse
import contextlib
import functools
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import sdxl_configs as C  # noqa: E402
import world  # noqa: E402

SIZE = 64
LATENT = SIZE // 4
SCALING = 0.13025          # SDXL's VAE scaling factor; the trained VAE is rescaled to it (see fix_latent_scale)
STYLES = ["outline", "striped", "pixel", "pastel"]
MODELS = os.path.join(ROOT, "models", "shapes")


def log(work, name, msg):
    line = f"{time.strftime('%H:%M:%S')} {msg}"
    print(line, flush=True)
    with open(os.path.join(work, name + ".log"), "a") as f:
        f.write(line + "\n")


# --------------------------------------------------------------------------- data
def _render(args):
    seed, style = args
    return np.asarray(world.render(world.scene_for_seed(seed), style, SIZE), np.uint8)


@functools.lru_cache(maxsize=None)
def render_digest(style):
    """A digest of how world.py draws a style (four scenes' renders): the caches below are keyed on it, so a change
    to a style's drawing (the stripes' period, say) renders and encodes afresh instead of reusing stale images."""
    import hashlib
    return hashlib.sha1(b"".join(_render((s, style)).tobytes() for s in range(4))).hexdigest()[:8]


def images(work, style, start, count):
    """uint8 [N, 64, 64, 3] of training seeds start..start+count-1 in a style, cached under work."""
    path = os.path.join(work, f"images-{style}-{start}-{count}-{render_digest(style)}.npy")
    if os.path.exists(path):
        return np.load(path)
    from multiprocessing import Pool
    with Pool(2) as pool:
        arr = np.stack(pool.map(_render, [(s, style) for s in range(start, start + count)], chunksize=256))
    np.save(path, arr)
    return arr


def to_tensor(u8):
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def clip_tokenizers(work):
    """transformers CLIPTokenizers over CLIP's vocabulary (derived from vocab/ as the fixtures do):
    CLIP-L pads with <|endoftext|>, bigG with "!" (id 0), both to 77 tokens."""
    from transformers import CLIPTokenizer
    import gen_fixtures_tokenizer as T
    folder = os.path.join(work, "clip-tokenizer")
    if not os.path.exists(os.path.join(folder, "merges.txt")):
        os.makedirs(folder, exist_ok=True)
        T.derive(folder)
    l = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"))
    g = CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"), pad_token="!")
    return l, g


def token_ids(tokenizers, captions):
    out = []
    for tok in tokenizers:
        out.append(torch.tensor(tok(captions, padding="max_length", max_length=77, truncation=True)["input_ids"]))
    return out


# --------------------------------------------------------------------------- models
def build_unet():
    return C.build("unet", C.SDXL_TINY_UNET)


def build_text_encoders():
    return C.build("clip", C.SDXL_TINY_TE1), C.build("clip_proj", C.SDXL_TINY_TE2)


# The VAE is sdxl-tiny's with three levels instead of four (C.SDXL_TINY_VAE4X, formats/sdxl-tiny-vae4x.json: 4x
# downsampling, 16x16 latents at 64x64). At 8x a small shape (10 px) falls on one or two latent pixels; a
# four-level tiny VAE trained here for 18 minutes reconstructed only colored blobs (mean |err| 16/255).
VAE_CONFIG = C.SDXL_TINY_VAE4X


def build_vae():
    return C.build("vae", VAE_CONFIG)


def encode_text(te1, te2, ids1, ids2):
    h1 = te1(ids1, output_hidden_states=True).hidden_states[-2]
    o2 = te2(ids2, output_hidden_states=True)
    return torch.cat([h1, o2.hidden_states[-2]], -1), o2.text_embeds


def time_ids(n):
    return torch.tensor([[SIZE, SIZE, 0, 0, SIZE, SIZE]] * n, dtype=torch.float32)


def scheduler():
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         prediction_type="epsilon")


class EMA:
    def __init__(self, params, decay=0.999):
        self.params = list(params)
        self.shadow = [p.detach().clone() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for s, p in zip(self.shadow, self.params):
            s.mul_(d).add_(p.detach(), alpha=1 - d)

    def state(self):
        return [s.clone() for s in self.shadow]


def lr_at(step, steps, peak, warmup):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def resumed_lr(step, start, steps, peak, warmup, rewarm):
    """lr_at, and for a run resumed at `start` (a fresh AdamW) a second linear warm-up over `rewarm` steps."""
    lr = lr_at(step, steps, peak, warmup)
    return lr * ((step - start + 1) / rewarm) if start and step - start < rewarm else lr


# --------------------------------------------------------------------------- VAE
@torch.no_grad()
def fix_latent_scale(vae, u8):
    """Rescale the latent space so that SCALING * latent has unit std (what SDXL's pipeline assumes):
    the encoder's quant_conv mean rows scale by k, its log-variance rows shift by 2 log k, and
    post_quant_conv's input columns scale by 1/k. The decoder's output is unchanged."""
    mean = vae.encode(to_tensor(u8[:2048])).latent_dist.mean
    k = 1.0 / (SCALING * mean.std().item())
    qc, pq = vae.quant_conv, vae.post_quant_conv
    lc = qc.out_channels // 2
    qc.weight[:lc] *= k
    qc.bias[:lc] *= k
    qc.bias[lc:] += 2 * math.log(k)
    pq.weight /= k
    return k


def edge_loss(r, x, w):
    """Weighted L1 between the horizontal and vertical neighbour differences of a reconstruction and its target.
    A squared or absolute pixel loss is content with an edge blurred over a pixel or two; this one is not, and it is
    what brought hollow outlines and 4x4 pixel blocks back sharp (docs/world-models.md, VAE runs 6-8; stripes stay
    lost in the frozen encoder)."""
    total = 0.0
    for dim in (2, 3):
        n = x.shape[dim] - 1
        dr, dx = r.diff(dim=dim), x.diff(dim=dim)
        wd = torch.maximum(w.narrow(dim, 0, n), w.narrow(dim, 1, n))
        total = total + ((dr - dx).abs() * wd).mean()
    return total


def cmd_vae(a):
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    repeat = {}
    for o in a.oversample or []:
        style, _, k = o.partition(":")
        if style not in world.STYLES or not k.isdigit() or int(k) < 1:
            sys.exit(f"--oversample {o}: expected STYLE:K with STYLE one of {', '.join(world.STYLES)} and K a whole number >= 1")
        repeat[style] = int(k)
    if (a.decoder_only or a.anchor) and not a.resume:
        sys.exit("--decoder-only and --anchor continue a trained VAE: give --resume")
    if a.anchor and a.decoder_only:
        sys.exit("--anchor holds a training encoder's latents; with --decoder-only the encoder is frozen (--decode-anchored?)")
    if a.decode_anchored and not (a.decoder_only and a.anchor_to):
        sys.exit("--decode-anchored trains the decoder on another encoder's latents: give --decoder-only and --anchor-to")
    drawn = [s for s in world.STYLES for _ in range(repeat.get(s, 1))]
    data = np.concatenate([images(a.work, s, 200_000 + world.STYLES.index(s) * a.per_style, a.per_style) for s in drawn])
    anchored_rows = torch.tensor(np.repeat([s in (a.anchor_styles or []) for s in drawn], a.per_style))
    vae = build_vae()
    if a.resume:
        vae.load_state_dict(resume_vae_state(a.work))
    if a.decoder_only:  # the latent space stays what the UNets were trained on: encoder and quant_conv frozen
        for p in list(vae.encoder.parameters()) + list(vae.quant_conv.parameters()):
            p.requires_grad_(False)
    anchor = None
    if a.anchor or a.decode_anchored:
        # --anchor: the encoder trains, but on the anchored styles' images (flat and pastel: what the base, the MUMU
        # and the pastel fine-tune learned) its posterior means are held to those of the anchor encoder (by default
        # base.safetensors' VAE, which encoded their training latents), so those models stay valid while the other
        # styles' latents learn to carry stripes, outlines and pixel blocks. --decode-anchored: the decoder learns
        # the anchored styles' images from the anchor encoder's latents (what the base's samples imitate).
        anchor = build_vae()
        anchor.load_state_dict(resume_vae_state(None, a.anchor_to or BASE_FILE))
        anchor.eval().requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=a.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.time()
    for step in range(a.steps):
        for pg in opt.param_groups:
            pg["lr"] = lr_at(step, a.steps, a.lr, 50)
        idx = torch.randint(len(data), (a.batch,), generator=g)
        x = to_tensor(data[idx.numpy()])
        if a.crop < SIZE:  # random crops on the latent grid (multiples of 8), a quarter of the pixels at 32
            oy, ox = (torch.randint(0, (SIZE - a.crop) // 8 + 1, (2,), generator=g) * 8).tolist()
            x = x[:, :, oy:oy + a.crop, ox:ox + a.crop]
        post = vae.encode(x).latent_dist
        mean, std = post.mean, post.std
        drift = torch.zeros(())
        rows = anchored_rows[idx]
        if anchor is not None and rows.any():
            with torch.no_grad():
                target = anchor.encode(x[rows]).latent_dist
            if a.decode_anchored:
                mean, std = mean.clone(), std.clone()
                mean[rows], std[rows] = target.mean, target.std
            else:  # in the UNet's units (SCALING x latent has unit std)
                drift = ((post.mean[rows] - target.mean) * SCALING).pow(2).mean() * rows.float().mean()
        z = mean if a.deterministic else mean + std * torch.randn(mean.shape, generator=g)
        r = vae.decode(z).sample
        # Shapes cover a few percent of the pixels: weight them (pixels unlike the corner's background color)
        # 1 + fg_weight, or the decoder learns backgrounds and draws every shape as the same blob.
        w = 1 + a.fg_weight * ((x - x[:, :, :1, :1]).abs().amax(1, keepdim=True) > 0.1).float()
        rec = ((r - x) ** 2 * w).mean() + 0.5 * ((r - x).abs() * w).mean()
        if a.edge_weight:  # the images' neighbour differences too: edges, outlines and pixel blocks, not only colors
            rec = rec + a.edge_weight * edge_loss(r, x, w)
        loss = rec + a.kl * post.kl().mean() + a.anchor * drift
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == a.steps - 1:
            log(a.work, "vae", f"step {step} rec {rec.item():.5f} kl {post.kl().mean().item():.1f}"
                + (f" drift {drift.item():.6f}" if a.anchor else "") + f" {time.time() - t0:.0f}s")
    vae.eval()
    k = 1.0 if a.decoder_only or a.anchor else fix_latent_scale(vae, data)
    with torch.no_grad():
        x = to_tensor(data[::50])
        r = vae.decode(vae.encode(x).latent_dist.mean).sample
        err = (r - x).abs().mul(127.5)
    log(a.work, "vae", f"done {time.time() - t0:.0f}s latent rescale {k:.4f} reconstruction mean |err| {err.mean():.2f}/255 "
        f"p99 {err.flatten().quantile(0.99):.1f}/255")
    prior = resume_vae_record(a.work) if a.resume else {"seconds": 0, "steps": 0}
    torch.save({"vae": vae.state_dict(), "seconds": prior["seconds"] + time.time() - t0, "loss": rec.item(),
                "steps": prior.get("steps", 700) + a.steps}, os.path.join(a.work, "vae.pt"))


@torch.no_grad()
def cmd_vae_eval(a):
    """The VAE's round trip (posterior mean, decoded) on scenes it never trained on: per style 100 scenes (seeds
    5,000-5,099) through world.py's checker (the style's palette) and the style classifiers, and the 200 held-out
    flat scenes. The table of docs/world-models.md."""
    from PIL import Image
    torch.set_num_threads(a.threads)
    vae = load_vae(a.work)

    def round_trip(u8):
        x = to_tensor(u8)
        r = vae.decode(vae.encode(x).latent_dist.mean).sample
        err = (r - x).abs().mul(127.5).mean().item()
        return [Image.fromarray(v) for v in r.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()], err

    out = {}
    for style in world.STYLES:
        scenes = [world.scene_for_seed(s) for s in range(5000, 5100)]
        u8 = np.stack([np.asarray(world.render(sc, style, SIZE)) for sc in scenes])
        images, err = round_trip(u8)
        ok = sum(sum(world.check(im, sc, style)) for im, sc in zip(images, scenes))
        n = sum(len(sc["shapes"]) for sc in scenes)
        claims = {k: sum(bool(fn(im, sc)) for im, sc in zip(images, scenes)) for k, fn in world.STYLE_CLASSIFIERS.items()}
        out[style] = {"mean_abs_err": round(err, 2), "shapes": f"{ok}/{n}", "classifiers": claims}
    scenes = world.heldout_scenes(200)
    images, err = round_trip(np.stack([np.asarray(world.render(sc, "flat", SIZE)) for sc in scenes]))
    ok = sum(sum(world.check(im, sc)) for im, sc in zip(images, scenes))
    out["heldout_flat"] = {"mean_abs_err": round(err, 2), "shapes": f"{ok}/{sum(len(sc['shapes']) for sc in scenes)}"}
    print(json.dumps(out, indent=1))


BASE_FILE = os.path.join(MODELS, "base.safetensors")   # the world's VAE ships inside it (first_stage_model.*)


def vae_sgm_names(state):
    """{diffusers name: bare sgm name} of the VAE (A1111's VAE-file naming: encoder.*, decoder.*, quant_conv.*)."""
    import sdxl_keys as K
    return K.name_map("vae", list(state))


def resume_vae_state(work, checkpoint=BASE_FILE):
    """The VAE to continue from: the work folder's, else (or with work None) a checkpoint's (first_stage_model.*,
    f16; by default the shipped base.safetensors')."""
    path = os.path.join(work, "vae.pt") if work else None
    if path and os.path.exists(path):
        return torch.load(path)["vae"]
    from safetensors.torch import load_file
    shipped = load_file(checkpoint)
    template = build_vae().state_dict()
    out = {}
    for n, sgm in vae_sgm_names(template).items():
        out[n] = shipped["first_stage_model." + sgm].float().reshape(template[n].shape)
    return out


def resume_vae_record(work):
    path = os.path.join(work, "vae.pt")
    if os.path.exists(path):
        return torch.load(path)
    from safetensors import safe_open
    with safe_open(BASE_FILE, "pt") as f:
        meta = json.loads(f.metadata()["mumu.vae"])
    return {"seconds": meta["seconds"], "steps": meta["steps"]}


# --------------------------------------------------------------------------- UNet training
@torch.no_grad()
def latents(work, vae, style, start, count):
    """(mean, std) of the VAE posterior for the images of the seeds, cached per style drawing (render_digest) and
    encoder (a digest of the weights the latents depend on: encoder and quant_conv, so training the decoder alone
    keeps the cache)."""
    import hashlib
    digest = hashlib.sha1(b"".join(v.detach().numpy().tobytes() for k, v in vae.state_dict().items()
                                   if k.startswith(("encoder.", "quant_conv.")))).hexdigest()[:10]
    path = os.path.join(work, f"latents-{style}-{start}-{count}-{render_digest(style)}-{digest}.pt")
    if os.path.exists(path):
        return torch.load(path)
    u8 = images(work, style, start, count)
    means, stds = [], []
    for i in range(0, len(u8), 512):
        d = vae.encode(to_tensor(u8[i:i + 512])).latent_dist
        means.append(d.mean)
        stds.append(d.std)
    out = (torch.cat(means), torch.cat(stds))
    torch.save(out, path)
    return out


def captions(start, count):
    return [world.caption(world.scene_for_seed(s)) for s in range(start, start + count)]


def load_vae(work):
    """The work folder's VAE, else the shipped one (base.safetensors' first_stage_model.*)."""
    vae = build_vae()
    vae.load_state_dict(resume_vae_state(work))
    return vae.eval()


def timestep_weights(strategy, multiplier, portion):
    """diffusers' `--timestep_bias_strategy` (train_text_to_image_sdxl.py's generate_timestep_weights): the
    probability of each of the 1,000 training timesteps, the first (`earlier`: the low-noise end, where fine detail
    is drawn) or last (`later`) `portion` of them `multiplier` times as likely as the rest; None when uniform."""
    if strategy == "none" or multiplier == 1:
        return None
    if multiplier <= 0 or not 0 < portion < 1:
        raise ValueError(f"--timestep-bias-multiplier {multiplier} / --timestep-bias-portion {portion}: need a "
                         "multiplier above 0 and a portion between 0 and 1")
    w = torch.ones(1000)
    biased = int(portion * 1000)
    w[slice(0, biased) if strategy == "earlier" else slice(1000 - biased, None)] *= multiplier
    return w / w.sum()


def noised_batch(mean, std, idx, sched, noise_offset, g, t_weights=None):
    """(noised latents, noise, timesteps) for the samples idx: latents drawn from their cached posteriors and scaled,
    noise with the offset, timesteps uniform over the schedule (or drawn with t_weights: timestep_weights); drawn from
    g in this order (a resumed or repeated run sees the same batches)."""
    z0 = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g)) * SCALING
    noise = torch.randn(z0.shape, generator=g) + noise_offset * torch.randn(z0.shape[0], z0.shape[1], 1, 1, generator=g)
    if t_weights is None:
        t = torch.randint(0, 1000, (len(idx),), generator=g)
    else:
        t = torch.multinomial(t_weights, len(idx), replacement=True, generator=g)
    return sched.add_noise(z0, noise, t), noise, t


def foreground_weights(work, style, start, count, fg_weight):
    """Per-sample loss weights on the latent grid [N, 1, 16, 16]: 1 + fg_weight where a 4x4 pixel block holds
    anything unlike the image's corner (its background), normalized to mean 1 per sample (the loss keeps its
    scale). Shapes cover a few percent of a frame; unweighted, the denoiser's error budget goes to backgrounds
    (docs/world-models.md). None when fg_weight is 0."""
    if not fg_weight:
        return None
    x = torch.from_numpy(images(work, style, start, count))
    out = []
    for i in range(0, len(x), 4096):
        b = x[i:i + 4096].permute(0, 3, 1, 2).float()
        fg = ((b - b[:, :, :1, :1]).abs().amax(1, keepdim=True) > 25.0).float()
        w = 1 + fg_weight * F.max_pool2d(fg, 4)
        out.append(w / w.mean(dim=(1, 2, 3), keepdim=True))
    return torch.cat(out)


def min_snr(sched):
    acp = sched.alphas_cumprod
    return acp / (1 - acp)


def loss_step(pred, noise, t, snr, opt, trainable, pixel_weights=None, snr_gamma=5.0):
    """The min-SNR-gamma weighted epsilon loss (plain epsilon MSE with gamma 0; latent pixels weighted by
    pixel_weights when given), then one AdamW step with gradients clipped at 1; returns the loss."""
    w = torch.clamp(snr[t], max=snr_gamma) / snr[t] if snr_gamma else torch.ones_like(snr[t])
    err = (pred - noise) ** 2
    if pixel_weights is not None:
        err = err * pixel_weights
    loss = err.mean(dim=(1, 2, 3)).mul(w).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    opt.step()
    return loss


@contextlib.contextmanager
def ema_weights(trainable, ema):
    """Inside the block the parameters hold the EMA weights (to save them), after it the training weights again."""
    if ema is None:
        yield
        return
    saved = [p.detach().clone() for p in trainable]
    with torch.no_grad():
        for p, s in zip(trainable, ema.shadow):
            p.copy_(s)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(trainable, saved):
                p.copy_(s)


class LowRankDelta(torch.nn.Module):
    """A layer's weight plus a trained low-rank delta, W + up @ down, as a parametrization of the weight: kohya's
    LoRA for linear layers and 1x1 convolutions, LoCon for 3x3 ones (down: the layer's kernel into `rank` channels,
    up: a 1x1 convolution back). up starts at zero (the layer starts as the base's), down at nn.Linear's init."""

    def __init__(self, weight, rank):
        super().__init__()
        self.shape = weight.shape
        self.down = torch.nn.Parameter(torch.empty(rank, weight[0].numel()))
        torch.nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.up = torch.nn.Parameter(torch.zeros(weight.shape[0], rank))

    def forward(self, w):
        return w + (self.up @ self.down).view(self.shape)


def add_lora(unet, rank, conv_rank):
    """Freezes the UNet and puts a LowRankDelta on every linear layer and convolution, the layers `mumu lora extract
    --layers full` extracts (kohya's LoCon targets plus the time and label embeddings, conv_in and conv_out): 3x3
    convolutions at conv_rank, the rest at rank. Returns {module name: its LowRankDelta}."""
    from torch.nn.utils import parametrize
    for p in unet.parameters():
        p.requires_grad_(False)
    deltas = {}
    for name, m in list(unet.named_modules()):
        if not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            continue
        r = conv_rank if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1) else rank
        if r == 0:
            continue
        delta = LowRankDelta(m.weight, min(r, m.weight.shape[0], m.weight[0].numel()))
        parametrize.register_parametrization(m, "weight", delta)
        deltas[name] = delta
    return deltas


def lora_state(unet, deltas):
    """The UNet's state with each delta merged into its weight (what `export` and quick-eval read, as a full
    fine-tune's), and the factors themselves (what --resume continues)."""
    from torch.nn.utils import parametrize
    modules = dict(unet.named_modules())
    sd = {k: v.detach().clone() for k, v in unet.state_dict().items() if ".parametrizations." not in k}
    with parametrize.cached():
        for name in deltas:
            sd[name + ".weight"] = modules[name].weight.detach().clone()
    return sd, {name: {"down": d.down.detach().clone(), "up": d.up.detach().clone()} for name, d in deltas.items()}


def train_unet(a, name, unet, te1, te2, trainable, mean, std, ids1, ids2, steps, lr, ema_decay, start=0, seconds=0.0,
               fgw=None, deltas=None):
    """Steps start..steps-1 (a resumed run continues the schedule; its data draws are seeded by seed + start; its
    fresh AdamW warms up again over --rewarm steps). fgw: per-sample latent pixel weights (foreground_weights).
    deltas: a LoRA's (add_lora), saved merged and as factors."""
    sched = scheduler()
    snr = min_snr(sched)
    opt = torch.optim.AdamW(trainable, lr=lr, weight_decay=1e-2)
    ema = EMA(trainable, ema_decay) if ema_decay else None
    g = torch.Generator().manual_seed(a.seed + start)
    n = len(mean)
    tid = time_ids(a.batch)
    t_weights = timestep_weights(a.timestep_bias_strategy, a.timestep_bias_multiplier, a.timestep_bias_portion)
    t0 = time.time() - seconds
    avg = None
    for step in range(start, steps):
        for pg in opt.param_groups:
            pg["lr"] = resumed_lr(step, start, steps, lr, a.warmup, a.rewarm)
        idx = torch.randint(n, (a.batch,), generator=g)
        zt, noise, t = noised_batch(mean, std, idx, sched, a.noise_offset, g, t_weights)
        ctx, pooled = encode_text(te1, te2, ids1[idx], ids2[idx])
        drop = (torch.rand(a.batch, generator=g) < a.uncond).float()
        ctx = ctx * (1 - drop)[:, None, None]
        pooled = pooled * (1 - drop)[:, None]
        pred = unet(zt, t, encoder_hidden_states=ctx, added_cond_kwargs={"text_embeds": pooled, "time_ids": tid}).sample
        loss = loss_step(pred, noise, t, snr, opt, trainable, None if fgw is None else fgw[idx], a.snr_gamma)
        if ema:
            ema.update(step)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 50 == 0 or step == steps - 1:
            log(a.work, name, f"step {step} loss {avg:.4f} lr {opt.param_groups[0]['lr']:.2e} {time.time() - t0:.0f}s")
        if (step + 1) % 500 == 0 or step == steps - 1:
            with ema_weights(trainable, ema):
                state = {"te1": te1.state_dict(), "te2": te2.state_dict(), "step": step + 1,
                         "seconds": time.time() - t0, "loss": avg}
                if deltas is None:
                    state["unet"] = unet.state_dict()
                else:
                    state["unet"], state["lora"] = lora_state(unet, deltas)
                    state["lora_ranks"] = [a.lora, a.conv_rank]
                torch.save(state, os.path.join(a.work, name + ".pt"))
    return time.time() - t0, avg


def cmd_base(a):
    torch.set_num_threads(a.threads)
    vae = load_vae(a.work)
    mean, std = latents(a.work, vae, "flat", 0, a.count)
    ids1, ids2 = token_ids(clip_tokenizers(a.work), captions(0, a.count))
    torch.manual_seed(a.seed)
    unet = build_unet()
    te1, te2 = build_text_encoders()
    start, seconds = 0, 0.0
    if a.resume:
        state = resume_state(a.work, "base")
        unet.load_state_dict(state["unet"])
        te1.load_state_dict(state["te1"])
        te2.load_state_dict(state["te2"])
        start, seconds = state["step"], state["seconds"]
        log(a.work, "base", f"resuming at step {start} ({seconds:.0f}s so far)")
    trainable = list(unet.parameters()) + list(te1.parameters()) + list(te2.parameters())
    fgw = foreground_weights(a.work, "flat", 0, a.count, a.fg_weight)
    if fgw is not None:
        log(a.work, "base", f"foreground weight {a.fg_weight} from step {start}")
    secs, loss = train_unet(a, "base", unet, te1, te2, trainable, mean, std, ids1, ids2, a.steps, a.lr, 0.999,
                            start=start, seconds=seconds, fgw=fgw)
    log(a.work, "base", f"done {secs:.0f}s loss {loss:.4f}")


def cmd_finetune(a):
    """A style fine-tune of the base's UNet (the text encoders stay the base's): every weight, or with --lora a
    LoRA trained directly (kohya-style; saved merged as well, so export and quick-eval read it as a fine-tune)."""
    torch.set_num_threads(a.threads)
    start, seconds = 0, 0.0
    if a.resume:  # the work folder's fine-tune continues to --steps in all; checked before the renders and
        # latents, which take minutes
        resumed = os.path.join(a.work, a.style + ".pt")
        if not os.path.exists(resumed):
            sys.exit(f"finetune --resume: no {resumed} to continue; train it first (finetune --style {a.style})")
        state = torch.load(resumed)
        start, seconds = state["step"], state["seconds"]
        if start >= a.steps:
            sys.exit(f"finetune --resume: {a.style}.pt is at step {start} already; give --steps above it")
        ranks = state.get("lora_ranks")
        if ranks != ([a.lora, a.conv_rank] if a.lora else None):
            was = f"a LoRA of rank {ranks[0]}, 3x3 convolutions {ranks[1]}" if ranks else "a full fine-tune"
            sys.exit(f"finetune --resume: {resumed} is {was}; resume it with the same --lora / --conv-rank")
        log(a.work, a.style, f"resuming at step {start} ({seconds:.0f}s so far)")
    # a LoRA trains on top of the base; a full fine-tune starts from the base or continues its own state
    base = resume_state(a.work, "base") if a.lora or not a.resume else None
    if not a.resume:
        state = base
    vae = load_vae(a.work)
    mean, std = latents(a.work, vae, a.style, 0, a.count)
    ids1, ids2 = token_ids(clip_tokenizers(a.work), captions(0, a.count))
    torch.manual_seed(a.seed)
    unet = build_unet()
    te1, te2 = build_text_encoders()
    unet.load_state_dict((base if a.lora else state)["unet"])
    te1.load_state_dict(state["te1"])
    te2.load_state_dict(state["te2"])
    for p in list(te1.parameters()) + list(te2.parameters()):
        p.requires_grad_(False)
    deltas = None
    if a.lora:
        deltas = add_lora(unet, a.lora, a.conv_rank)
        if a.resume:
            with torch.no_grad():
                for name, d in deltas.items():
                    d.down.copy_(state["lora"][name]["down"])
                    d.up.copy_(state["lora"][name]["up"])
        trainable = [p for d in deltas.values() for p in (d.down, d.up)]
        log(a.work, a.style, f"LoRA rank {a.lora}, 3x3 convolutions {a.conv_rank}: {len(deltas)} layers, "
                             f"{sum(p.numel() for p in trainable)} parameters")
    else:
        trainable = list(unet.parameters())
    secs, loss = train_unet(a, a.style, unet, te1, te2, trainable, mean, std, ids1, ids2,
                            a.steps, a.lr, 0, start, seconds,
                            fgw=foreground_weights(a.work, a.style, 0, a.count, a.fg_weight), deltas=deltas)
    log(a.work, a.style, f"done {secs:.0f}s loss {loss:.4f}")


@torch.no_grad()
def cmd_quick_eval(a):
    """A training run's state (--state, default the work folder's base.pt) on the first --count held-out prompts,
    through diffusers' SDXL pipeline in batches: the same prompts, seeds (10^9 + i), sampler (euler, leading
    spacing), 20 steps and cfg 7 as scripts/eval_world.py, which renders through mumu and gives the figures that
    count; this one takes a minute instead of ten, to follow a run while it trains. Prints one JSON line."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    torch.set_num_threads(a.threads)
    state = torch.load(a.state or os.path.join(a.work, "base.pt"))
    unet = build_unet()
    te1, te2 = build_text_encoders()
    unet.load_state_dict(state["unet"])
    te1.load_state_dict(state["te1"])
    te2.load_state_dict(state["te2"])
    vae = load_vae(a.work)
    vae.register_to_config(scaling_factor=SCALING)
    tok1, tok2 = clip_tokenizers(a.work)
    tok1.model_max_length = tok2.model_max_length = 77
    sched = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2,
                                     unet=unet.eval(), scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    scenes = world.heldout_scenes(a.count)
    t0 = time.time()
    ok = n = first = 0
    per_count = {1: [0, 0], 2: [0, 0], 3: [0, 0]}
    for b in range(0, a.count, a.batch):
        idx = range(b, min(a.count, b + a.batch))
        images = pipe(prompt=[world.caption(scenes[i]) for i in idx], negative_prompt=None,  # zeros, as an empty negative prompt in mumu
                      height=SIZE, width=SIZE, num_inference_steps=20, guidance_scale=a.cfg,
                      generator=[torch.Generator().manual_seed(world.HELDOUT_BASE + i) for i in idx]).images
        for i, img in zip(idx, images):
            r = world.check(img, scenes[i], "flat")
            ok += sum(r)
            n += len(r)
            first += r[0]
            per_count[len(r)][0] += sum(r)
            per_count[len(r)][1] += len(r)
            if a.save:
                os.makedirs(a.save, exist_ok=True)
                img.save(os.path.join(a.save, f"{i:04d}.png"))
    print(json.dumps({"state": a.state or "base.pt", "step": state.get("step"), "prompts": a.count,
                      "color_position": round(ok / n, 4),
                      "by_shape_count": {k: round(v[0] / v[1], 4) for k, v in per_count.items() if v[1]},
                      "first_shape_color_position": round(first / a.count, 4), "seconds": round(time.time() - t0, 1)}))


def wip_path(name):
    return os.path.join(MODELS, f"{name}-wip.safetensors")


def shipped_state(path, parts=("unet", "te1", "te2")):
    """A shipped checkpoint (sgm names, f16: `export`) back as the training modules' state dicts {unet, te1, te2}
    (those of `parts`) and its training record: the inverse of sgm_state (bigG's fused in_proj split into q, k, v
    by rows, its text_projection transposed back; position_ids, which sgm files leave out, kept from a fresh
    module)."""
    import sdxl_keys as K
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()["mumu.world"])
        te1, te2 = build_text_encoders()
        out = {}
        for part, module in (("unet", build_unet()), ("te1", te1), ("te2", te2)):
            if part not in parts:
                continue
            prefix, state = K.PREFIXES[part], {}
            for n, t in module.state_dict().items():
                if part == "te2":
                    sgm, slot, transform = K._te2_name(n)
                else:
                    sgm, slot, transform = K.name_map(part, [n] if part == "te1" else list(module.state_dict()))[n], None, None
                if sgm is None:
                    state[n] = t
                    continue
                v = f.get_tensor(prefix + sgm).float()
                if slot is not None:
                    v = v.chunk(3, 0)[slot]
                elif transform == "T":
                    v = v.t()
                state[n] = v.reshape(t.shape).contiguous()
            out[part] = state
    out.update(step=meta["steps"], seconds=meta["seconds"], loss=meta["loss"])
    return out


def resume_state(work, name):
    """A training run's state to continue: the work folder's <name>.pt, else the shipped work-in-progress file
    models/shapes/<name>-wip.safetensors (diffusers names under unet./te1./te2., f16; `export --wip`), else the
    shipped model (models/shapes/<name>.safetensors; the base: a finished run continued with more --steps)."""
    path = os.path.join(work, name + ".pt")
    if os.path.exists(path):
        return torch.load(path)
    if not os.path.exists(wip_path(name)):
        return shipped_state(os.path.join(MODELS, name + ".safetensors"))
    from safetensors import safe_open
    out = {"unet": {}, "te1": {}, "te2": {}}
    with safe_open(wip_path(name), "pt") as f:
        meta = json.loads(f.metadata()["mumu.world"])
        for k in f.keys():
            part, rest = k.split(".", 1)
            out[part][rest] = f.get_tensor(k).float()
    out.update(step=meta["steps"], seconds=meta["seconds"], loss=meta["loss"])
    return out


# --------------------------------------------------------------------------- export
def sgm_state(unet_sd, vae_sd, te1_sd, te2_sd):
    import sdxl_keys as K
    out = {}
    out.update(K.diffusers_to_sgm("unet", unet_sd))
    out.update(K.diffusers_to_sgm("vae", vae_sd))
    out.update(K.diffusers_to_sgm("te1", te1_sd))
    out.update(K.diffusers_to_sgm("te2", te2_sd))
    return {k: v.detach().to(torch.float16).contiguous() for k, v in out.items()}


def save(sd, path, meta, note=""):
    """Writes a safetensors file through a temporary name and prints its size."""
    from safetensors.torch import save_file
    save_file(sd, path + ".tmp", metadata=meta)
    os.chmod(path + ".tmp", 0o644)  # save_file writes 0600
    os.replace(path + ".tmp", path)
    print(f"{path}: {os.path.getsize(path) / 1e6:.1f} MB{note}")


def write_sums(out):
    """Rewrites out/SHA256SUMS (sha256sum's format, which mumu checks every shipped file against) over the shipped
    files: *.safetensors but work-in-progress ones, encoder/* and crops/*. Both scripts' `export` end with it."""
    import glob
    import hashlib
    names = [n for n in sorted(glob.glob("*.safetensors", root_dir=out)) if not n.endswith("-wip.safetensors")]
    names += sorted(glob.glob("encoder/*", root_dir=out)) + sorted(glob.glob("crops/*", root_dir=out))
    lines = []
    for n in names:
        with open(os.path.join(out, n), "rb") as f:
            lines.append(f"{hashlib.file_digest(f, 'sha256').hexdigest()}  {n}\n")
    with open(os.path.join(out, "SHA256SUMS.tmp"), "w") as f:
        f.writelines(lines)
    os.replace(os.path.join(out, "SHA256SUMS.tmp"), os.path.join(out, "SHA256SUMS"))
    print(f"{out}/SHA256SUMS: {len(names)} files")


def vae_record(work):
    """The VAE's training record (steps, seconds, last loss) as the shipped files' `mumu.vae` metadata."""
    ck = resume_vae_record(work)
    return json.dumps({"steps": ck.get("steps"), "seconds": round(ck["seconds"]),
                       **({"loss": round(ck["loss"], 5)} if "loss" in ck else {})})


def cmd_export(a):
    os.makedirs(a.out, exist_ok=True)
    vae = resume_vae_state(a.work)       # the work folder's VAE, else the shipped one
    trained = [s for s in ["base"] + STYLES if os.path.exists(os.path.join(a.work, s + ".pt"))]
    wanted = a.only.split(",") if a.only else trained
    if not set(wanted) <= {"base", *STYLES}:
        sys.exit(f"export --only {a.only}: models are base, {', '.join(STYLES)}")
    # The base may come from the shipped file (resume_state), e.g. to ship it with a retrained VAE; a style's
    # LoRA cannot give back its full fine-tune.
    missing = [s for s in wanted if s not in trained and s != "base"]
    if missing:
        sys.exit(f"export: no {', '.join(s + '.pt' for s in missing)} in {a.work}: train_world.py finetune --style NAME first")
    for name in wanted:
        ck = resume_state(a.work, name) if name == "base" else torch.load(os.path.join(a.work, name + ".pt"))
        if a.wip:  # a run still going: its state, to continue from in another session (train_world.py NAME --resume)
            sd = {f"{part}.{k}": v.detach().to(torch.float16).contiguous() for part in ("unet", "te1", "te2")
                  for k, v in ck[part].items()}
            meta = {"mumu.world": json.dumps({"steps": ck["step"], "seconds": round(ck["seconds"]),
                                              "loss": round(ck["loss"], 5), "state": "work in progress"})}
            save(sd, wip_path(name), meta, f" (step {ck['step']})")
            continue
        sd = sgm_state(ck["unet"], vae, ck["te1"], ck["te2"])
        record = {"size": SIZE, "style": "flat" if name == "base" else name, "steps": ck["step"],
                  "seconds": round(ck["seconds"]), "loss": round(ck["loss"], 5),
                  **({"lora_ranks": ck["lora_ranks"]} if "lora_ranks" in ck else {})}
        meta = {"modelspec.architecture": "mumu-sdxl-tiny-vae4x", "modelspec.title": f"shapes {name}",
                "mumu.world": json.dumps(record), "mumu.vae": vae_record(a.work)}
        if name == "base":
            save(sd, os.path.join(a.out, name + ".safetensors"), meta)
            continue
        # A style: the full fine-tune (a LoRA-trained one merged) stays in the work folder; what ships is mumu's LoRA
        # extraction of it (models/shapes/README.md: four full UNets do not fit the 60 MB budget).
        full = os.path.join(a.work, name + "-full.safetensors")
        save(sd, full, meta)
        out = os.path.join(a.out, name + ".safetensors")
        # a LoRA-trained style is extracted at the ranks it trained at (its delta has no more) and unclamped (kohya's
        # 0.99 clamp cuts the largest 1% of an exactly low-rank delta's factors: striped kept 84-89% of its fine-tune
        # with it, 99% without); a full fine-tune at 8 with kohya's clamp
        trained_rank, trained_conv_rank = ck.get("lora_ranks") or (8, 8)
        rank = a.style_rank if a.style_rank is not None else trained_rank
        conv_rank = a.style_conv_rank if a.style_conv_rank is not None else trained_conv_rank
        clamp = "1" if "lora_ranks" in ck else "0.99"
        subprocess.run([a.mumu, "lora", "extract", "--base", os.path.join(a.out, "base.safetensors"), "--tuned", full,
                        "--rank", str(rank), "--conv-rank", str(conv_rank), "--layers", a.style_layers,
                        "--clamp-quantile", clamp, "--quiet", "--force", "-o", out], check=True)
        print(f"{out}: rank {rank} (3x3 convs {conv_rank}, {a.style_layers} layers, clamp quantile {clamp}) LoRA of {full}, "
              f"{os.path.getsize(out) / 1e6:.2f} MB")
    if not a.wip:
        write_sums(a.out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp, steps, lr, batch):
        sp.add_argument("--work", default="/tmp/mumu-world")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--steps", type=int, default=steps)
        sp.add_argument("--lr", type=float, default=lr)
        sp.add_argument("--batch", type=int, default=batch)
        sp.add_argument("--threads", type=int, default=2)

    v = sub.add_parser("vae", help="train the VAE on every style")
    common(v, 700, 1e-3, 32)
    v.add_argument("--per-style", type=int, default=3000)
    v.add_argument("--kl", type=float, default=1e-6)
    v.add_argument("--fg-weight", type=float, default=4.0, help="extra loss weight of pixels that are not background")
    v.add_argument("--crop", type=int, default=SIZE, help="train on random crops of this side (a multiple of 8)")
    v.add_argument("--resume", action="store_true", help="start from the work folder's vae.pt")
    v.add_argument("--decoder-only", action="store_true", help="train the decoder only (the latent space stays)")
    v.add_argument("--edge-weight", type=float, default=0.0,
                   help="weight of an L1 loss on the images' neighbour differences (sharp edges, outlines, pixel blocks)")
    v.add_argument("--oversample", nargs="*", metavar="STYLE:K", help="draw a style's images K times as often")
    v.add_argument("--anchor", type=float, default=0.0,
                   help="train the encoder too, holding the anchored styles' latents to those of the --anchor-to encoder (weight)")
    v.add_argument("--anchor-to", help="the checkpoint whose VAE encoder --anchor holds to (default models/shapes/base.safetensors)")
    v.add_argument("--decode-anchored", action="store_true",
                   help="with --decoder-only and --anchor-to: decode the anchored styles' images from that encoder's latents")
    v.add_argument("--anchor-styles", nargs="*", default=["flat", "pastel"], metavar="STYLE",
                   help="the styles whose latents --anchor holds (default: flat pastel)")
    v.add_argument("--deterministic", action="store_true", help="decode the posterior mean (an autoencoder) instead of a sample")
    ve = sub.add_parser("vae-eval", help="the VAE's round trip on unseen scenes of every style (checker, classifiers)")
    ve.add_argument("--work", default="/tmp/mumu-world")
    ve.add_argument("--threads", type=int, default=2)
    b = sub.add_parser("base", help="train UNet + text encoders on the flat style")
    common(b, 3600, 5e-4, 32)
    b.add_argument("--count", type=int, default=40000)
    b.add_argument("--resume", action="store_true", help="continue the work folder's run (else models/shapes/base-wip.safetensors, when a paused run ships one)")
    f = sub.add_parser("finetune", help="fine-tune the base's UNet on another style")
    common(f, 1000, 1e-4, 32)
    f.add_argument("--style", required=True, choices=STYLES)
    f.add_argument("--count", type=int, default=8000)
    f.add_argument("--resume", action="store_true", help="continue the work folder's fine-tune of the style to --steps")
    f.add_argument("--lora", type=int, default=0, metavar="RANK",
                   help="train a LoRA of this rank on every linear layer and 1x1 convolution instead of every weight")
    f.add_argument("--conv-rank", type=int, metavar="RANK", help="with --lora: its rank on 3x3 convolutions (default --lora's; 0 leaves them out)")
    for sp in (b, f):
        sp.add_argument("--warmup", type=int, default=100)
        sp.add_argument("--uncond", type=float, default=0.1)
        sp.add_argument("--noise-offset", type=float, default=0.05)
        sp.add_argument("--fg-weight", type=float, default=0.0,
                        help="extra loss weight of latent pixels covering a shape (0: unweighted, the first runs)")
        sp.add_argument("--rewarm", type=int, default=100, help="a resumed run's fresh AdamW warms up over these steps")
        sp.add_argument("--snr-gamma", type=float, default=5.0,
                        help="min-SNR weighting's gamma (0: plain epsilon MSE, which weighs the low-noise steps that draw fine texture more)")
        sp.add_argument("--timestep-bias-strategy", choices=["none", "earlier", "later"], default="none",
                        help="diffusers' timestep bias: draw the earlier (low-noise, fine detail) or later timesteps more often")
        sp.add_argument("--timestep-bias-multiplier", type=float, default=1.0,
                        help="how many times as often the biased timesteps are drawn")
        sp.add_argument("--timestep-bias-portion", type=float, default=0.25, help="the share of the timesteps biased")
    q = sub.add_parser("quick-eval", help="follow a run: held-out prompts through diffusers (eval_world.py gives the figures)")
    q.add_argument("--work", default="/tmp/mumu-world")
    q.add_argument("--state", help="a training state (.pt); default the work folder's base.pt")
    q.add_argument("--count", type=int, default=200)
    q.add_argument("--batch", type=int, default=50)
    q.add_argument("--cfg", type=float, default=7.0)
    q.add_argument("--threads", type=int, default=2)
    q.add_argument("--save", help="a folder for the images")
    e = sub.add_parser("export", help="write models/shapes/*.safetensors from the work folder")
    e.add_argument("--work", default="/tmp/mumu-world")
    e.add_argument("--out", default=MODELS)
    e.add_argument("--wip", action="store_true", help="write unfinished runs as models/shapes/NAME-wip.safetensors")
    e.add_argument("--only", help="comma-separated models to export (base, outline, ...; default: every one trained)")
    e.add_argument("--style-rank", type=int,
                   help="rank of the styles' LoRA extractions (default: a LoRA-trained style's own rank, else 8)")
    e.add_argument("--style-conv-rank", type=int,
                   help="their rank on 3x3 convolutions (default: a LoRA-trained style's own, else 8; docs/world-models.md: "
                        "extracted from full fine-tunes, rank 0, kohya's default, keeps none of the outline and pastel "
                        "styles, 8 most of pastel at 6.7%% of the fine-tune's size)")
    e.add_argument("--style-layers", default="full", choices=["kohya", "full"],
                   help="the extractions' layers (mumu lora extract --layers; full adds the UNet's time and label "
                        "embeddings, conv_in and conv_out, which carry much of a style's timing here: docs/world-models.md)")
    e.add_argument("--mumu", default=os.path.join(ROOT, ".build", "release", "mumu"), help="the mumu binary (lora extract)")
    a = p.parse_args(argv)
    if a.cmd == "finetune":
        if a.lora < 0 or (a.conv_rank or 0) < 0:
            p.error("--lora and --conv-rank are ranks: at least 0")
        if not a.lora and a.conv_rank is not None:
            p.error("--conv-rank goes with --lora RANK")
        if a.conv_rank is None:
            a.conv_rank = a.lora
    if a.cmd in ("base", "finetune"):  # before the renders and latents, which take minutes
        try:
            timestep_weights(a.timestep_bias_strategy, a.timestep_bias_multiplier, a.timestep_bias_portion)
        except ValueError as e:
            p.error(str(e))
    os.makedirs(a.work, exist_ok=True)
    if hasattr(a, "threads"):
        torch.set_num_threads(a.threads)
    {"vae": cmd_vae, "vae-eval": cmd_vae_eval, "base": cmd_base, "finetune": cmd_finetune, "export": cmd_export,
     "quick-eval": cmd_quick_eval}[a.cmd](a)


if __name__ == "__main__":
    main()
