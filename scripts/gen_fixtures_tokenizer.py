#!/usr/bin/env python3
"""Generate the CLIP tokenizer fixtures read by Tests/MumuSamplerTests.

README
======
Regenerate (CPU only, about a second; no network):

    pip install transformers tokenizers            # the reference (checked with transformers 5.24.0, tokenizers 0.23.3)
    pip install open-clip-torch --no-deps ftfy     # optional: the open_clip cross-check
    python3 scripts/gen_fixtures_tokenizer.py                   # writes Tests/MumuSamplerTests/Fixtures/tokenizer.json
    python3 scripts/gen_fixtures_tokenizer.py --out /tmp/t.json # somewhere else (to diff against the committed file)

The reference is transformers' `CLIPTokenizer`, loaded with `from_pretrained` from a folder holding
`vocab.json` and `merges.txt` derived here from `vocab/bpe_simple_vocab_16e6.txt.gz` (the file shipped
in the open-clip-torch wheel) the way open_clip and the Hugging Face CLIP repos derive them:
    merges = the file's lines [1 : 49152 - 256 - 2 + 1]          (48,894 merges; line 0 is a header)
    vocab  = bytes_to_unicode() symbols, the same + "</w>", "".join(merge) for each merge,
             "<|startoftext|>", "<|endoftext|>"                   (49,408 entries, ids in that order)
The script also checks that `vocab/clip_merges.txt` (what the build embeds) is exactly that
`merges.txt`. SDXL's diffusers `tokenizer` pads with "<|endoftext|>" (49407), `tokenizer_2` with "!" (0):
both are built (the second with `pad_token="!"`).

If open_clip's `SimpleTokenizer` (open_clip/tokenizer.py, loaded by path: importing the package needs
torchvision) and ftfy are installed, every prompt is also encoded by it, and the prompts where it
differs from transformers are listed in the output (`open_clip_differs`) and printed. It differs by
design: ftfy.fix_text (NFC plus fixes such as uncurled quotes, fullwidth -> ASCII), html.unescape
twice, Python's str.split()/lower() (final sigma, U+001C..U+001F as spaces), and open_clip 3.x
names its special tokens `<start_of_text>`/`<end_of_text>`, so a literal `<|endoftext|>` is text.

Output: Tests/MumuSamplerTests/Fixtures/tokenizer.json
  {"reference": "...versions...", "merges_sha256": ..., "length": 77, "short_length": 10,
   "cases": [{"name", "text", "ids" (no BOS/EOS, untruncated), "clip_l" (77 ids, pad 49407),
              "clip_g" (77 ids, pad 0), "short" (10 ids, pad 49407), "truncated" (at 77),
              "eos" (argmax of clip_l == argmax of clip_g), "decoded" (decode(clip_l, skip_special_tokens=True))}],
   "random": [{"text", "ids"}],           300 seeded random strings over a mixed alphabet
   "open_clip_differs": [case names]}
"""
import argparse
import gzip
import hashlib
import importlib.util
import json
import os
import random
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GZ = os.path.join(ROOT, "vocab", "bpe_simple_vocab_16e6.txt.gz")
EMBEDDED = os.path.join(ROOT, "vocab", "clip_merges.txt")
OUT = os.path.join(ROOT, "Tests", "MumuSamplerTests", "Fixtures", "tokenizer.json")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2 ** 8):
        if b not in bs:
            bs.append(b)
            cs.append(2 ** 8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def derive(folder):
    lines = gzip.open(GZ).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    table = dict(zip(vocab, range(len(vocab))))
    assert len(table) == 49408, len(table)
    merges_txt = "#version: 0.2\n" + "\n".join(merges) + "\n"
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(table, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write(merges_txt)
    with open(EMBEDDED, "rb") as f:
        embedded = f.read()
    assert embedded == merges_txt.encode("utf-8"), "vocab/clip_merges.txt differs from the merges derived from the .gz"
    return hashlib.sha256(embedded).hexdigest()


def prompts():
    long_tags = ", ".join(["masterpiece", "best quality", "ultra detailed", "8k", "photorealistic", "1girl",
                           "solo", "long hair", "blue eyes", "looking at viewer", "smile", "outdoors",
                           "cherry blossoms", "sunset", "dramatic lighting", "depth of field", "bokeh",
                           "sharp focus", "intricate details", "highly detailed face", "film grain",
                           "cinematic composition", "volumetric fog", "rim light", "golden hour"] * 2)
    return [
        ("empty", ""),
        ("simple", "a photo of a cat"),
        ("tags", "masterpiece, best quality, 1girl, solo, looking at viewer"),
        ("a1111_weights", "(masterpiece:1.2), [bad], <lora:x:0.8>"),
        ("a1111_nested", "((best quality)), (ultra-detailed:1.3), [[blurry]], {extra}, (a:b:c)"),
        ("a1111_negative", "(worst quality, low quality:1.4), (deformed, distorted, disfigured:1.3), bad anatomy"),
        ("a1111_networks", "<lora:add_detail:0.5> <lyco:foo_bar-v2:1> <hypernet:baz:0.3> embedding:EasyNegative"),
        ("a1111_schedule", "[cat:dog:0.5] [from:to:10] [cat|dog|bird] AND a forest"),
        ("break", "a cat BREAK a dog BREAK"),
        ("break_lower", "a cat break a dog,BREAK,x"),
        ("pony", "score_9, score_8_up, score_7_up, source_anime, rating_safe"),
        ("newlines_tabs", "line one\nline two\ttabbed  double  spaces\n\n\nend"),
        ("crlf", "photo of a woman\r\nwearing a hat\r\n"),
        ("leading_trailing", "   leading and trailing   "),
        ("only_spaces", "     "),
        ("only_whitespace", "\n\t\r\n \x0b\x0c"),
        ("accents", "Café crème brûlée à la française"),
        ("accents2", "naïve résumé façade coöperate Ünïcödé ÜBER"),
        ("decomposed", "e\u0301clair A\u030angstro\u0308m"),
        ("nfc_singletons", "\u212b (angstrom sign) \u2126 (ohm) \u212a (kelvin)"),
        ("combining_stack", "a\u0308\u0301 o\u0302\u0323 q\u0307\u0323"),
        ("vietnamese", "Tiếng Việt có dấu, phở bò"),
        ("japanese", "東京タワーの夜景、美しい"),
        ("chinese", "一只可爱的猫，坐在窗台上。"),
        ("korean", "한국어 프롬프트 테스트"),
        ("cyrillic", "Привет мир, МОСКВА"),
        ("greek_sigma", "Ελληνικά ΣΟΦΟΣ σοφός ΟΔΟΣ."),
        ("turkish", "İstanbul DİYARBAKIR ıi Iİ"),
        ("german", "Straße STRASSE ß ẞ"),
        ("devanagari", "हिन्दी भाषा"),
        ("arabic", "العربية نص ١٢٣ ٤٥٦"),
        ("hebrew", "עברית שלום"),
        ("thai", "ภาษาไทย สวัสดี"),
        ("emoji", "emoji 😀🎉🔥 cat🐱dog"),
        ("emoji_zwj", "family 👨\u200d👩\u200d👧\u200d👦 flag 🇯🇵 thumbs 👍🏽 heart ❤️"),
        ("numbers", "numbers 1234567890 3.14159 1,000,000 2024-01-01 16:9 4k 8k uhd"),
        ("number_forms", "Ⅻ ½ ² ³ ① ⑩ ٣"),
        ("mixed_alnum", "mixed123abc456 1girl 2boys 3d"),
        ("contractions", "don't can't won't it's we're they've I'm you'll he'd"),
        ("contractions_upper", "DON'T IT'S WE'RE THEY'VE I'M YOU'LL HE'D"),
        ("apostrophes", "''s rock'n'roll 'quoted' \"double\" !'s 's 'sup 'll've"),
        ("typography", "“curly quotes” ‘single’ — em dash – en dash … ellipsis « guillemets »"),
        ("fullwidth", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３ Ｈｅｌｌｏ　ｗｏｒｌｄ"),
        ("ligatures", "ﬁ ligature ﬂ ﬀ"),
        ("html_entities", "html &amp; entities &lt;tag&gt; &quot;x&quot; &#39;"),
        ("special_literal", "<|startoftext|>hello<|endoftext|>"),
        ("special_upper", "<|ENDOFTEXT|> upper special <|StartOfText|>"),
        ("special_adjacent", "x<|endoftext|>> a <|endoftext|> b <<|endoftext|>"),
        ("special_in_word", "abc<|startoftext|>def <|endoftext"),
        ("special_combining", "<|endoftext|>\u0301 e<|endoftext|>\u0301"),
        ("url", "url https://example.com/path?q=1&x=2#frag"),
        ("email", "user.name+tag@example.co.uk"),
        ("code_case", "snake_case_word camelCaseWord kebab-case-word C++ C# .NET node.js"),
        ("punct_runs", "!!!??? ... --- ___ *** ### @@@ $$$ %%% ^^^ ~~~ ``` |||"),
        ("paths", "~/path/to/file.png C:\\Users\\me\\x.safetensors"),
        ("pipes", "tag1|tag2 | tag3"),
        ("unicode_spaces", "\u00a0nbsp\u2003emspace\u3000ideographic\u2028ls\u2029ps\u0085nel\u1680ogham\u202fnnbsp\u205fmmsp"),
        ("not_spaces", "zero\u200bwidth\u200cnonjoiner\u200djoiner\ufeffbom\u180emvs"),
        ("info_separators", "a\x1cb\x1dc\x1ed\x1fe"),
        ("controls", "\x00\x01\x7f bell\x07 esc\x1b[0m"),
        ("math_alnum", "ℌ𝔢𝔩𝔩𝔬 𝐁𝐨𝐥𝐝 𝕕𝕠𝕦𝕓𝕝𝕖"),
        ("circled", "Ⓐⓑⓒ ⒜"),
        ("titlecase", "ǅungla ǈ ǋ"),
        ("private_use", "\ue000 \U000f0000 \U0010fffd"),
        ("unicode17_letter", "x\u088fy \U00010940z"),  # letters only from Unicode 17: not \p{L} in the reference
        ("long_word", "a" * 300),
        ("long_mixed_word", "supercalifragilisticexpialidocious" * 4),
        ("exactly_75", " ".join(["a"] * 75)),
        ("exactly_76", " ".join(["a"] * 76)),
        ("exactly_74", " ".join(["a"] * 74)),
        ("long_tags", long_tags),
        ("long_cjk", "東京タワーの夜景、美しい" * 8),       # truncation inside a character's bytes
        ("long_emoji", "😀🎉🔥🐱👍🏽" * 20),
        ("cut_mid_char", " ".join(["a"] * 74) + " 龘龘"),  # the 75th id is the first byte of a character
        ("long_sentence", "A breathtaking panoramic view of an ancient mountain monastery perched on a cliff, "
                          "surrounded by swirling mist and waterfalls, with monks in saffron robes walking along "
                          "stone paths, prayer flags fluttering in the wind, snow-capped peaks in the background "
                          "under a sky painted with the soft pinks and oranges of dawn, ultra realistic, 8k."),
        ("real_sdxl", "cinematic photo of a (red fox:1.1) in a snowy forest, <lora:detail_tweaker:0.6>, "
                      "35mm photograph, film, bokeh, professional, 4k, highly detailed"),
    ]


ALPHABET = (list("abcXYZ019 '") + ["'s", "'ll", "<|endoftext|>", "<|startoftext|>", "<|", "|>", "\n", "\t",
            "\u00a0", "\u3000", "é", "e\u0301", "É", "İ", "Σ", "ß", "ẞ", "東", "ア", "한", "😀", "👍🏽", "\u200d",
            "１", "½", "٣", "Ⅻ", "(", ")", ":", ",", ".", "!", "-", "_", "\\", "\"", "“", "’", "\x1c", "\x00",
            "\u0307", "\u088f", "ǅ", "Ω", "\u2126"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()

    import tokenizers
    import transformers
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        merges_sha = derive(folder)
        tok_l = CLIPTokenizer.from_pretrained(folder)
        tok_g = CLIPTokenizer.from_pretrained(folder, pad_token="!")
    assert (tok_l.bos_token_id, tok_l.eos_token_id, tok_l.pad_token_id) == (49406, 49407, 49407)
    assert tok_g.pad_token_id == 0

    simple = None
    try:
        import ftfy  # noqa: F401
        spec = importlib.util.find_spec("open_clip")
        if spec is not None:
            path = os.path.join(os.path.dirname(spec.origin), "tokenizer.py")
            mod_spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
            mod = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(mod)
            simple = mod.SimpleTokenizer(bpe_path=GZ)
    except Exception as e:  # the cross-check is optional
        print(f"open_clip cross-check skipped: {e}", file=sys.stderr)

    L = 77
    S = 10
    cases = []
    differs = []
    g_differs = []
    names = set()
    for name, text in prompts():
        assert name not in names, name
        names.add(name)
        ids = tok_l(text, add_special_tokens=False)["input_ids"]
        clip_l = tok_l(text, padding="max_length", max_length=L, truncation=True)["input_ids"]
        clip_g = clip_l[:len(ids[:L - 2]) + 2] + [0] * (L - 2 - len(ids[:L - 2]))
        diffusers_g = tok_g(text, padding="max_length", max_length=L, truncation=True)["input_ids"]
        if diffusers_g != clip_g:
            assert "!" in text, name  # the only way they differ: "!" is tokenizer_2's (special) pad token
            g_differs.append(name)
        short = tok_l(text, padding="max_length", max_length=S, truncation=True)["input_ids"]
        assert len(clip_l) == L and len(clip_g) == L and len(short) == S
        assert clip_l == [49406] + ids[:L - 2] + [49407] + [49407] * (L - 2 - len(ids[:L - 2]))
        assert clip_g == [49406] + ids[:L - 2] + [49407] + [0] * (L - 2 - len(ids[:L - 2])), (name, ids, clip_g)
        eos_l = max(range(L), key=lambda i: (clip_l[i], -i))  # argmax, first occurrence
        eos_g = max(range(L), key=lambda i: (clip_g[i], -i))
        assert eos_l == eos_g == clip_l.index(49407)
        case = {"name": name, "text": text, "ids": ids, "clip_l": clip_l, "clip_g": clip_g, "short": short,
                "truncated": len(ids) > L - 2, "eos": eos_l,
                "decoded": tok_l.decode(clip_l, skip_special_tokens=True)}
        if simple is not None:
            oc = simple(text, context_length=L)[0].tolist()
            if oc != clip_g:
                differs.append(name)
        cases.append(case)

    rng = random.Random(20240601)
    rand = []
    for _ in range(300):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24)))
        rand.append({"text": text, "ids": tok_l(text, add_special_tokens=False)["input_ids"]})

    out = {
        "reference": f"transformers {transformers.__version__} CLIPTokenizer (tokenizers {tokenizers.__version__})",
        "merges_sha256": merges_sha,
        "length": L,
        "short_length": S,
        "cases": cases,
        "random": rand,
        "open_clip_differs": differs if simple is not None else None,
        "diffusers_tokenizer_2_differs": g_differs,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    print(f"diffusers tokenizer_2 (pad_token '!', a special token) differs on {len(g_differs)}: {', '.join(g_differs)}")
    print(f"{len(cases)} prompts ({sum(c['truncated'] for c in cases)} truncated), {len(rand)} random strings -> {args.out}")
    if simple is not None:
        print(f"open_clip SimpleTokenizer (ftfy, padded with 0) differs on {len(differs)}: {', '.join(differs)}")
        for name in differs:
            text = dict(prompts())[name]
            hf = tok_l(text, add_special_tokens=False)["input_ids"]
            oc = simple.encode(text)
            print(f"  {name}: {text[:60]!r}\n    transformers {hf[:16]}\n    open_clip    {oc[:16]}")


if __name__ == "__main__":
    main()
