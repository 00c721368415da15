#!/usr/bin/env python3
"""End-to-end fixture for `mumu encode` (MUMU's encoder: prompt with <image:PATH> -> conditioning), computed with
PIL, transformers' tokenizer and Idefics2 modules, and the connector written in torch from docs/formats.md.

Inputs (committed by the other scripts): the tiny random Idefics2 folder and connectors of
scripts/gen_fixtures_encoder_networks.py (Tests/MumuEncoderTests/Fixtures/networks), the real Mistral v1 tokenizer
with Idefics2's added tokens of scripts/gen_fixtures_encoder_tokenizer.py (Fixtures/tokenizer/tokenizer.json).

Writes Tests/MumuEncoderTests/Fixtures/encode/:
  a.png (40x30 RGB), b.png (90x120 RGBA: alpha composited on white), c.jpg (70x70, quality 90)   prompt images
  cases.json               per case: prompt, negative, image size (56: the tiny vision model's 14-pixel patches)
  <case>.safetensors       context [1, T, 96], pooled [1, 64] and negative_context [1, T', 96], negative_pooled
                           [1, 64] through connector-w96 (the sdxl-tiny UNet's widths), ids and negative_ids (f32)
Steps as the Swift code does them: PIL convert("RGB") with alpha on white (Idefics2's convert_to_rgb), the MUMU size
(longer edge = image size, shorter rounded to a multiple of 14, halves up), PIL BILINEAR resize, x/255, (x-0.5)/0.5;
the vision model, the modality projection; Idefics2Processor's text expansion (fake + <image> x n + fake, adjacent
fakes merged, a space after a fake token followed by anything but whitespace or '<'); the tokenizer with BOS; the
projected patches scattered over the <image> embeddings (inputs_merger); the text model's final normed states;
the connector.
Run: python3 scripts/gen_fixtures_encode.py   (torch 2.x, transformers 5, pillow)
"""
import importlib.util
import json
import os
import re

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import Idefics2Model, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "Tests", "MumuEncoderTests", "Fixtures")
OUT = os.path.join(FIX, "encode")
spec = importlib.util.spec_from_file_location("nets", os.path.join(HERE, "gen_fixtures_encoder_networks.py"))
nets = importlib.util.module_from_spec(spec)
spec.loader.exec_module(nets)

FAKE, IMAGE = "<fake_token_around_image>", "<image>"
SIZE = 56
CASES = [
    dict(name="text", prompt="a large red circle on the left, on a white background", negative=""),
    dict(name="one", prompt="a <image:a.png> next to a blue square", negative="blurry, low quality"),
    dict(name="three", prompt="<image:b.png><image:c.jpg> and a <image:a.png>  at the top right",
         negative="a <image:c.jpg> on the left"),
]


def make_images():
    g = np.random.default_rng(7)
    Image.fromarray(g.integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB").save(os.path.join(OUT, "a.png"))
    Image.fromarray(g.integers(0, 256, (120, 90, 4), dtype=np.uint8), "RGBA").save(os.path.join(OUT, "b.png"))
    Image.fromarray(g.integers(0, 256, (70, 70, 3), dtype=np.uint8), "RGB").save(os.path.join(OUT, "c.jpg"), quality=90)


def to_rgb(im):
    if im.mode == "RGB":
        return im
    im = im.convert("RGBA")
    white = Image.new("RGBA", im.size, (255, 255, 255))
    white.alpha_composite(im)
    return white.convert("RGB")


def pixel_values(path):
    im = to_rgb(Image.open(path))
    w, h = im.size
    long, short = max(w, h), min(w, h)
    m = max(1, (2 * short * SIZE + 14 * long) // (28 * long))
    tw, th = (SIZE, m * 14) if w >= h else (m * 14, SIZE)
    if (tw, th) != (w, h):
        im = im.resize((tw, th), Image.BILINEAR)
    x = np.asarray(im, dtype=np.float32) / 255.0
    return torch.from_numpy(((x - 0.5) / 0.5).transpose(2, 0, 1).copy())


def expand(prompt, counts):
    images = re.findall(r"<image:([^>]*)>", prompt)
    assert len(images) == len(counts)
    parts = re.split(r"<image:[^>]*>", prompt)
    out = parts[0]
    for n, rest in zip(counts, parts[1:]):
        out += FAKE + IMAGE * n + FAKE + rest
    out = out.replace(FAKE + FAKE, FAKE)
    return re.sub(f"{FAKE}(?=[^\\s<])", f"{FAKE} ", out), [p.strip() for p in images]


def main():
    os.makedirs(OUT, exist_ok=True)
    make_images()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(FIX, "tokenizer", "tokenizer.json"))
    model = Idefics2Model.from_pretrained(os.path.join(FIX, "networks", "tiny-idefics2"), dtype=torch.float32).eval()
    meta = json.load(open(os.path.join(FIX, "networks", "meta.json")))["connectors"]["w96"]
    connector = nets.Connector(model.config.text_config.hidden_size, meta["width"], meta["mlp"], meta["layers"], meta["pooled"])
    state = {k[len("connector."):]: v.float() for k, v in load_file(os.path.join(FIX, "networks", "connector-w96.safetensors")).items()}
    connector.load_state_dict(state)
    connector.eval()

    def encode(prompt):
        paths = [p.strip() for p in re.findall(r"<image:([^>]*)>", prompt)]
        with torch.no_grad():
            feats = [model.connector.modality_projection(model.vision_model(pixel_values=pixel_values(os.path.join(OUT, p))[None]).last_hidden_state[0])
                     for p in paths]
            text, _ = expand(prompt, [f.shape[0] for f in feats])
            ids = torch.tensor(tok(text)["input_ids"])
            embeds = model.text_model.embed_tokens(ids[None])
            if feats:
                embeds = model.inputs_merger(ids[None], embeds, torch.cat(feats))
            hidden = model.text_model(inputs_embeds=embeds).last_hidden_state[0]
            context, pooled = connector(hidden)
        return ids, context[None], pooled[None]

    cases = []
    for case in CASES:
        ids, context, pooled = encode(case["prompt"])
        nids, ncontext, npooled = encode(case["negative"])
        save_file({"context": context.contiguous(), "pooled": pooled.contiguous(), "negative_context": ncontext.contiguous(),
                   "negative_pooled": npooled.contiguous(), "ids": ids.float(), "negative_ids": nids.float()},
                  os.path.join(OUT, case["name"] + ".safetensors"))
        cases.append(dict(case, image_size=SIZE, tokens=len(ids), negative_tokens=len(nids)))
        print(case["name"], "tokens", len(ids), "negative", len(nids))
    json.dump({"cases": cases}, open(os.path.join(OUT, "cases.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
