#!/usr/bin/env python3
"""The transformers side of scripts/bench_encode.sh: the same prompt and image through transformers' Idefics2
vision model, modality projection and text model (bf16, CPU, THREADS threads), the work `mumu encode` does before
its connector. Inputs are built exactly as mumu builds them (PIL bilinear to the MUMU size, the processor's text
expansion with one <image> per 14x14 patch, the folder's tokenizer.json).

  bench_encode_transformers.py ENCODER_DIR IMAGE PROMPT IMAGE_SIZE THREADS
Prints the token count, seconds per stage (load, vision + projection, text) and peak RSS.
"""
import os
import re
import resource
import sys
import time

import numpy as np
import torch
from PIL import Image
from transformers import Idefics2Model, PreTrainedTokenizerFast

folder, image, prompt, size, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
torch.set_num_threads(threads)
FAKE, TOKEN = "<fake_token_around_image>", "<image>"

t = time.time()
model = Idefics2Model.from_pretrained(folder, dtype=torch.bfloat16).eval()
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(folder, "tokenizer.json"))
load = time.time() - t

im = Image.open(image).convert("RGB")
w, h = im.size
long, short = max(w, h), min(w, h)
m = max(1, (2 * short * size + 14 * long) // (28 * long))
tw, th = (size, m * 14) if w >= h else (m * 14, size)
if (tw, th) != (w, h):
    im = im.resize((tw, th), Image.BILINEAR)
x = (np.asarray(im, dtype=np.float32) / 255.0 - 0.5) / 0.5
pixels = torch.from_numpy(x.transpose(2, 0, 1).copy())[None].to(torch.bfloat16)
n = (tw // 14) * (th // 14)
text = re.sub(r"<image:[^>]*>", FAKE + TOKEN * n + FAKE, prompt).replace(FAKE + FAKE, FAKE)
text = re.sub(f"{FAKE}(?=[^\\s<])", f"{FAKE} ", text)
ids = torch.tensor(tok(text)["input_ids"])[None]

with torch.no_grad():
    t = time.time()
    feats = model.connector.modality_projection(model.vision_model(pixel_values=pixels).last_hidden_state[0])
    vision = time.time() - t
    t = time.time()
    embeds = model.inputs_merger(ids, model.text_model.embed_tokens(ids), feats)
    hidden = model.text_model(inputs_embeds=embeds).last_hidden_state
    text_s = time.time() - t
print(f"transformers {torch.__version__}: {ids.shape[1]} tokens ({n} image), load {load:.1f} s, vision+projection "
      f"{vision:.2f} s, text {text_s:.2f} s, forward {vision + text_s:.2f} s; peak RSS "
      f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")
