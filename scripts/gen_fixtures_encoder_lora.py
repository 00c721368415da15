#!/usr/bin/env python3
"""Fixture for `--encoder-lora`: a PEFT LoRA on the tiny Idefics2's text model and modality projector (what MUMU
trains: the LM and the projector as LoRAs), and the encoder's output with it, computed by PEFT's own forward.

Inputs: the tiny random Idefics2 (scripts/gen_fixtures_encoder_networks.py), the tokenizer and the prompt images and
helpers of scripts/gen_fixtures_encode.py.

Writes Tests/MumuEncoderTests/Fixtures/encode/lora/:
  adapter_model.safetensors, adapter_config.json   PEFT's save_pretrained of a rank-4 LoRA (lora_alpha 6: scale 1.5)
                                                   on q/k/v/o and gate/up/down of every text layer and on the
                                                   projector's gate/up/down; init_lora_weights=False (random A and
                                                   B, so the LoRA changes the output)
  kohya.safetensors                                the same factors under kohya's names (lora_down / lora_up and an
                                                   alpha tensor of 6 per module), without adapter_config.json's help
  expected.safetensors                             hidden [T, 64] of the encoder with the LoRA for the "one" prompt
                                                   of gen_fixtures_encode.py, and hidden_base without it
Run: python3 scripts/gen_fixtures_encoder_lora.py   (torch 2.x, transformers 5, peft: 0.13 and 0.21 give the same tensors, pillow)
"""
import importlib.util
import json
import os
import re
import shutil

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import Idefics2Model, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("encode", os.path.join(HERE, "gen_fixtures_encode.py"))
enc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(enc)
FIX, IMAGES = enc.FIX, enc.OUT
OUT = os.path.join(IMAGES, "lora")
PROMPT = next(c for c in enc.CASES if c["name"] == "one")["prompt"]


def hidden(model, tok, prompt):
    paths = [p.strip() for p in re.findall(r"<image:([^>]*)>", prompt)]
    with torch.no_grad():
        feats = [model.connector.modality_projection(model.vision_model(pixel_values=enc.pixel_values(os.path.join(IMAGES, p))[None]).last_hidden_state[0])
                 for p in paths]
        text, _ = enc.expand(prompt, [f.shape[0] for f in feats])
        ids = torch.tensor(tok(text)["input_ids"])
        embeds = model.text_model.embed_tokens(ids[None])
        if feats:
            embeds = model.inputs_merger(ids[None], embeds, torch.cat(feats))
        return model.text_model(inputs_embeds=embeds).last_hidden_state[0]


def main():
    torch.manual_seed(11)
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(FIX, "tokenizer", "tokenizer.json"))
    model = Idefics2Model.from_pretrained(os.path.join(FIX, "networks", "tiny-idefics2"), dtype=torch.float32).eval()
    base = hidden(model, tok, PROMPT)
    config = LoraConfig(r=4, lora_alpha=6, init_lora_weights=False, lora_dropout=0.0,
                        target_modules=r".*(text_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
                                       r"|connector\.modality_projection\.(gate|up|down)_proj)")
    peft = get_peft_model(model, config).eval()
    with torch.no_grad():   # PEFT's random B is small; make the LoRA's effect clear of the tolerance
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.mul_(4)
    lora = hidden(peft.base_model.model, tok, PROMPT)
    peft.save_pretrained(OUT)
    os.remove(os.path.join(OUT, "README.md"))   # PEFT's model card template
    cfg_path = os.path.join(OUT, "adapter_config.json")
    cfg = json.load(open(cfg_path))
    cfg["base_model_name_or_path"] = "tiny-idefics2"   # not this machine's path
    json.dump(cfg, open(cfg_path, "w"), indent=2, sort_keys=True)
    print("LoRA changes the hidden states by", (lora - base).abs().max().item(), "of max", lora.abs().max().item())

    # The same factors under kohya's names, with the scale as alpha tensors.
    state = load_file(os.path.join(OUT, "adapter_model.safetensors"))
    kohya = {}
    for k, v in state.items():
        module = k.replace("base_model.model.", "", 1).rsplit(".lora_", 1)[0]
        kohya[module + (".lora_down.weight" if ".lora_A." in k else ".lora_up.weight")] = v
        kohya[module + ".alpha"] = torch.tensor(6.0)
    save_file(kohya, os.path.join(OUT, "kohya.safetensors"))
    save_file({"hidden": lora.contiguous(), "hidden_base": base.contiguous()}, os.path.join(OUT, "expected.safetensors"))
    print(len(state) // 2, "modules; keys like", sorted(state)[0])


if __name__ == "__main__":
    main()
