#!/usr/bin/env python3
"""The diffusers side of scripts/bench_generate.sh: StableDiffusionXLPipeline text-to-image on a full-size SDXL
single file (sgm names), CPU, torch at THREADS threads, with the settings mumu is given in the same run.

  bench_generate_diffusers.py CHECKPOINT.safetensors OUT.png SIZE STEPS CFG SEED THREADS DTYPE [LORA.safetensors ...]

The pipeline is assembled from the file with diffusers' own converters (UNet, VAE, OpenCLIP bigG) and transformers'
CLIPTextModel (CLIP-L is stored in transformers' names), SDXL base's published configs (scripts/sdxl_configs.py),
CLIP's tokenizer built from vocab/clip_merges.txt (the vocabulary is the byte symbols, the merges and the two
specials), EulerDiscreteScheduler with SDXL's settings. DTYPE f32 or bf16 (the whole pipeline cast, as
`pipe.to(torch.bfloat16)`). LoRA files are loaded with load_lora_weights and rendered one after another with the
same prompt and seed (as `mumu generate --style A --style B`).
Prints load seconds, the pipeline call's seconds per render, and peak RSS (ru_maxrss).
"""
import json
import os
import resource
import sys
import tempfile
import time

import torch
from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sdxl_configs import CLIP_BIGG, CLIP_L, SDXL_BASE_UNET, SDXL_VAE  # noqa: E402

PROMPT = "a lighthouse on a cliff at dawn, oil painting, dramatic light"


def tokenizers():
    from transformers import CLIPTokenizer
    from gen_fixtures_tokenizer import bytes_to_unicode
    with open(os.path.join(HERE, "..", "vocab", "clip_merges.txt"), encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump({v: i for i, v in enumerate(vocab)}, f, ensure_ascii=False)
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        return (CLIPTokenizer.from_pretrained(d, model_max_length=77),
                CLIPTokenizer.from_pretrained(d, model_max_length=77, pad_token="!"))


def clean(cfg):
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def pipeline(ckpt):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint,
                                                     convert_open_clip_checkpoint)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def part(prefix):  # one component at a time: the f32 state of the whole file would not fit beside the models
        with safe_open(ckpt, "pt") as f:
            return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}  # f16; load_state_dict converts

    unet = UNet2DConditionModel(**clean(SDXL_BASE_UNET))
    unet.load_state_dict(convert_ldm_unet_checkpoint(part("model.diffusion_model."), clean(SDXL_BASE_UNET)))
    vae = AutoencoderKL(**clean(SDXL_VAE))
    vae.load_state_dict(convert_ldm_vae_checkpoint(part("first_stage_model."), clean(SDXL_VAE)))
    te1 = CLIPTextModel(CLIPTextConfig(**clean(CLIP_L)))
    prefix = "conditioner.embedders.0.transformer."
    te1_state = {k[len(prefix):]: v for k, v in part(prefix).items()}
    want = set(te1.state_dict().keys())
    te1_state = {(k if k in want else k.replace("text_model.", "", 1)): v for k, v in te1_state.items()}
    te1.load_state_dict({k: v for k, v in te1_state.items() if k in want})
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(**clean(CLIP_BIGG)))
    te2_state = convert_open_clip_checkpoint(te2, part("conditioner.embedders.1.model."), prefix="conditioner.embedders.1.model.")
    want2 = set(te2.state_dict().keys())
    te2_state = {(k if k in want2 else k.replace("text_model.", "", 1)): v for k, v in te2_state.items()}
    missing = want2 - set(te2_state)
    assert not [m for m in missing if "position_ids" not in m], sorted(missing)[:5]
    te2.load_state_dict({k: v for k, v in te2_state.items() if k in want2}, strict=False)
    tok, tok2 = tokenizers()
    sched = EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                   beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading",
                                   prediction_type="epsilon", interpolation_type="linear")
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
                                     unet=unet, scheduler=sched, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main():
    ckpt, out, size, steps, cfg, seed, threads, dtype = sys.argv[1:9]
    loras = sys.argv[9:]
    size, steps, cfg, seed, threads = int(size), int(steps), float(cfg), int(seed), int(threads)
    torch.set_num_threads(threads)
    t0 = time.time()
    pipe = pipeline(ckpt)
    if dtype == "bf16":
        pipe.to(torch.bfloat16)
    for i, path in enumerate(loras):
        pipe.load_lora_weights(os.path.dirname(path) or ".", weight_name=os.path.basename(path), adapter_name=f"style{i}")
    print(f"diffusers {dtype}: load {time.time() - t0:.1f} s", flush=True)
    renders = [None] if not loras else [f"style{i}" for i in range(len(loras))]
    for i, adapter in enumerate(renders):
        if adapter:
            pipe.set_adapters([adapter], adapter_weights=[1.0])
        t0 = time.time()
        with torch.inference_mode():
            image = pipe(PROMPT, num_inference_steps=steps, guidance_scale=cfg, width=size, height=size,
                         generator=torch.Generator("cpu").manual_seed(seed)).images[0]
        wall = time.time() - t0
        print(f"diffusers {dtype}: render {adapter or 'base'}: {wall:.1f} s ({wall / steps:.2f} s/step incl. text + VAE)", flush=True)
        image.save(out if len(renders) == 1 else out.replace(".png", f"-{i}.png"))
    print(f"diffusers {dtype}: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024:.2f} GB", flush=True)


if __name__ == "__main__":
    main()
