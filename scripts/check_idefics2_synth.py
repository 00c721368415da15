#!/usr/bin/env python3
"""Check a folder written by `mumu synth --arch idefics2-*` against transformers.

    python3 scripts/check_idefics2_synth.py DIR            # load it: Idefics2ForConditionalGeneration.from_pretrained
    python3 scripts/check_idefics2_synth.py DIR --keys     # config + key set and shapes only (for the 16 GB one)

Loading: every tensor in the folder must be taken by the model (no unexpected keys), the missing ones may only be
the optional perceiver / lm_head, and the weights must come back equal to the safetensors (bf16). --keys: the config
loads as Idefics2Config, and the shards' names and shapes equal a meta-device model's state dict (less the
optional components when absent).
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from transformers import Idefics2Config, Idefics2ForConditionalGeneration

OPTIONAL = ("model.connector.perceiver_resampler.", "lm_head.")


def folder_tensors(d):
    index = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index) else ["model.safetensors"]
    out = {}
    for f in files:
        with safe_open(os.path.join(d, f), "pt") as h:
            assert h.metadata().get("format") == "pt", f
            for k in h.keys():
                out[k] = (f, tuple(h.get_slice(k).get_shape()))
    return out


def main():
    d = sys.argv[1]
    keys_only = "--keys" in sys.argv[2:]
    cfg = Idefics2Config.from_pretrained(d)
    assert cfg.model_type == "idefics2"
    print(f"config: vision {cfg.vision_config.hidden_size} x {cfg.vision_config.num_hidden_layers}, "
          f"text {cfg.text_config.hidden_size} x {cfg.text_config.num_hidden_layers}, vocab {cfg.text_config.vocab_size}, "
          f"dtype {cfg.dtype}")
    stored = folder_tensors(d)
    with torch.device("meta"):
        meta = Idefics2ForConditionalGeneration(cfg)
    want = {k: tuple(v.shape) for k, v in meta.state_dict().items()}
    extra = sorted(set(stored) - set(want))
    missing = sorted(k for k in set(want) - set(stored))
    assert not extra, f"unexpected tensors: {extra[:5]}"
    assert all(k.startswith(OPTIONAL) for k in missing), f"missing required tensors: {[k for k in missing if not k.startswith(OPTIONAL)][:5]}"
    bad = [k for k in stored if stored[k][1] != want[k]]
    assert not bad, f"shapes differ: {bad[:5]}"
    print(f"keys: {len(stored)} tensors match ({len(missing)} optional absent)")
    if keys_only:
        return
    model = Idefics2ForConditionalGeneration.from_pretrained(d, dtype=torch.bfloat16)
    state = model.state_dict()
    for k, (f, _) in stored.items():
        with safe_open(os.path.join(d, f), "pt") as h:
            assert torch.equal(h.get_tensor(k), state[k]), k
    print(f"loaded with from_pretrained (bf16): {sum(p.numel() for p in model.parameters()):,} parameters, stored tensors equal")


if __name__ == "__main__":
    main()
