#!/usr/bin/env python3
"""Seeds for the image and tokenizer fuzz targets (fuzz/corpus/image, fuzz/corpus/tokenizer).

Images: copies of small fixtures from Tests/MumuEncoderTests/Fixtures/images (written by
scripts/gen_fixtures_encoder_images.py) plus bare EXIF blocks. Tokenizers: small tokenizer.json files in every
form the reader takes (Metaspace or Prepend+Replace, merges as strings or pairs, byte fallback, added tokens).
"""
import json, os, shutil, struct

HERE = os.path.dirname(os.path.abspath(__file__))
IMG = os.path.join(HERE, "corpus", "image")
TOK = os.path.join(HERE, "corpus", "tokenizer")
FIX = os.path.join(HERE, "..", "Tests", "MumuEncoderTests", "Fixtures", "images")
os.makedirs(IMG, exist_ok=True); os.makedirs(TOK, exist_ok=True)
for f in ["rgb.png", "rgba.png", "gray.png", "gray_alpha.png", "palette_trns.png", "bilevel.png", "gray4.png",
          "gray16.png", "rgba16.png", "rgb_trns.png", "exif6.png", "rgb420.jpg", "rgb444.jpg", "progressive.jpg",
          "gray.jpg", "cmyk.jpg", "exif6.jpg", "exif8.jpg", "truncated.png", "huge.png"]:
    shutil.copy(os.path.join(FIX, f), IMG)
for order, o in [("<", 6), (">", 3)]:
    bo = b"II" if order == "<" else b"MM"
    block = bo + struct.pack(order + "HI", 42, 8) + struct.pack(order + "H", 2)
    block += struct.pack(order + "HHI", 0x0110, 2, 4) + b"abc\0"
    block += struct.pack(order + "HHIH", 0x0112, 3, 1, o) + b"\0\0" + struct.pack(order + "I", 0)
    open(os.path.join(IMG, f"exif_{'le' if order == '<' else 'be'}.tiff"), "wb").write(b"Exif\0\0" + block)

vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4, "b": 5, "▁a": 6, "ab": 7, "▁ab": 8, "c": 9}
for i in range(256):
    vocab[f"<0x{i:02X}>"] = 10 + i
added = [{"id": 0, "content": "<unk>", "special": True, "normalized": False},
         {"id": 1, "content": "<s>", "special": True, "normalized": False},
         {"id": 300, "content": "<fake_token_around_image>", "special": True, "normalized": False},
         {"id": 301, "content": "<image>", "special": True, "normalized": False},
         {"id": 302, "content": "<end_of_utterance>", "special": True, "normalized": False}]
post = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
decoder = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                             {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
meta = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
legacy = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
for name, merges, norm, pre, fallback in [
    ("metaspace_pairs.json", [["▁", "a"], ["a", "b"], ["▁a", "b"]], None, meta, True),
    ("metaspace_strings.json", ["▁ a", "a b", "▁a b"], None, meta, True),
    ("legacy.json", ["▁ a", "a b"], legacy, None, True),
    ("split_always.json", ["▁ a"], None, dict(meta, prepend_scheme="always", split=True), False),
]:
    t = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": norm,
         "pre_tokenizer": pre, "post_processor": post, "decoder": decoder,
         "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>" if not fallback else None,
                   "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                   "byte_fallback": fallback, "ignore_merges": False, "vocab": vocab, "merges": merges}}
    with open(os.path.join(TOK, name), "w", encoding="utf-8") as f:
        json.dump(t, f, ensure_ascii=False, separators=(",", ":"))
print(len(os.listdir(IMG)), "image seeds,", len(os.listdir(TOK)), "tokenizer seeds")
