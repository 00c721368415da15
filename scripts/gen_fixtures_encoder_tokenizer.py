#!/usr/bin/env python3
"""Fixtures for MumuEncoder's tokenizer and prompt tests (Tests/MumuEncoderTests/Fixtures/tokenizer/).

Builds the real Idefics2 tokenizer from public parts: Mistral's v1 sentencepiece model from
mistral-common, converted by transformers 5 (LlamaTokenizer, legacy=False, add_bos_token=True) plus the three
added special tokens, saved as tokenizer.json. Then tokenizes a corpus of strings with
PreTrainedTokenizerFast(tokenizer_file=...) and writes corpus.json: [{"text": ..., "ids": [...]}, ...].
prompts.json holds processor-style strings (images expanded to <fake_token_around_image><image>*n
<fake_token_around_image>, as Idefics2Processor.__call__ builds them) and their ids.

Run: python3 scripts/gen_fixtures_encoder_tokenizer.py
"""
import json, os, shutil, tempfile
import mistral_common
from transformers import LlamaTokenizer, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "MumuEncoderTests", "Fixtures", "tokenizer")
os.makedirs(OUT, exist_ok=True)

model = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
with tempfile.TemporaryDirectory() as d:
    shutil.copy(model, os.path.join(d, "tokenizer.model"))
    tok = LlamaTokenizer.from_pretrained(d, legacy=False, add_bos_token=True)
    tok.add_tokens(["<fake_token_around_image>", "<image>", "<end_of_utterance>"], special_tokens=True)
    save = os.path.join(d, "saved")
    tok.save_pretrained(save)
    # Re-written compactly (same content; save_pretrained indents it to 3.5 MB).
    with open(os.path.join(save, "tokenizer.json"), encoding="utf-8") as f:
        data = json.load(f)
    with open(os.path.join(OUT, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))

fast = PreTrainedTokenizerFast(tokenizer_file=os.path.join(OUT, "tokenizer.json"))

corpus = [
    "", " ", "  ", "\n", "\t", "a", "A", "hello", "Hello world", "hello  world", "hello   world", " hello",
    "  hello", "hello ", "hello  ", " hello world ", "a\nb", "a\n\nb", "line one\nline two\n", "tab\tseparated\tvalues",
    "\thello", "hello\t", "trailing newline\n", "\nleading newline", "mixed \t\n whitespace", "a  b  c  d",
    "The quick brown fox jumps over the lazy dog.", "THE QUICK BROWN FOX", "camelCaseWord", "snake_case_word",
    "kebab-case-word", "dots.in.words", "Hello, world!", "What?!", "(parentheses) [brackets] {braces}",
    "quotes \"double\" and 'single'", "semi;colon:colon", "a/b\\c", "email@example.com", "https://example.com/path?q=1&r=2",
    "#hashtag @mention", "$100.00", "50% off", "1+1=2", "x*y^z", "~tilde`backtick", "<html><body>hi</body></html>",
    "0", "1", "12", "123", "1234", "12345", "3.14159", "2024-01-01", "1,000,000", "007", "v1.2.3", "a1b2c3",
    "phone: +1 (555) 123-4567", "café", "naïve", "résumé", "Ångström", "Zürich", "São Paulo", "niño", "façade",
    "crème brûlée", "ÀÉÎÕÜ", "Straße", "œuvre", "Ελληνικά", "Русский язык", "עברית", "العربية", "हिन्दी",
    "ไทย", "日本語", "日本語のテキスト", "中文", "简体中文测试", "한국어", "汉字 and English", "東京タワー",
    "😀", "😀😀", "emoji 🎉 party", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🦄 unicorn", "I ❤ NY", "★☆✓✗", "→ ← ↑ ↓",
    "∑∫∂√∞", "©®™", "½ ¼ ¾", "\u00a0non-breaking", "zero\u200bwidth", "\u3000ideographic space", "a\u2028b",
    "control\u0001char", "\u0000nul", "\u00ad soft hyphen", "\ufeffbom", "e\u0301 combining", "ﬁ ligature",
    "<image>", "<fake_token_around_image>", "<end_of_utterance>", "a<image>b", "word<image>word",
    "<fake_token_around_image><image><image><fake_token_around_image>", " <image> ", "<image> text",
    "text <image>", "text<image>", "<image>text", "in<fake_token_around_image>side", "<im age>", "<image",
    "image>", "<imag>", "<IMAGE>", "<<image>>", "<image><end_of_utterance>", "hello<end_of_utterance>",
    "<s>", "</s>", "<unk>", "a <s> b", "text </s> more", "▁", "▁hello", "hello▁world", "▁▁", "<0x41>",
    "a" * 50, "ab" * 40, " " * 10 + "x", "x" + " " * 10, "\n" * 5, "!!!!!", "?????", "......", "-----",
    "=====", "_____", "*****", "a photo of a cat", "a man and his dog in an animated style",
    "a painting of a sunset over the ocean, highly detailed, 4k", "portrait, oil on canvas, by an old master",
    "User: What is in this image?", "Assistant: A cat sitting on a mat.", "User:<image>What's this?<end_of_utterance>\nAssistant:",
    "don't", "won't", "it's", "I'm", "you're", "we've", "they'd", "O'Brien", "rock 'n' roll",
    "antidisestablishmentarianism", "supercalifragilisticexpialidocious", "pneumonoultramicroscopicsilicovolcanoconiosis",
    "GPT-4", "COVID-19", "iPhone 15 Pro Max", "C++ and C#", "node.js", "x86_64", "UTF-8", "ASCII",
    "def f(x):\n    return x * 2\n", "for i in range(10):\n\tprint(i)", "if (a && b || !c) { return; }",
    "SELECT * FROM table WHERE id = 1;", "{\"key\": \"value\", \"n\": 1}", "<tag attr=\"v\"/>", "$$E = mc^2$$",
    "The year 1999 and 2000.", "Pi is approximately 3.14.", "He said: \"Hello!\"", "Wait... what?",
    "Mr. Smith went to Washington.", "e.g. i.e. etc.", "A.B.C.", "U.S.A.", "Ph.D.", "First\r\nSecond",
    "carriage\rreturn", "vertical\u000btab", "form\u000cfeed", "  leading and trailing  ", "\t\tdouble tab",
    "mixed 日本 and русский and ελληνικά", "emoji😀inside", "ß ẞ", "İstanbul", "ǅ titlecase", "ﬀ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟙𝟚𝟛", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǫ̗̻", "\U0010ffff", "\ue000 private use", "nul\u0000in\u0000middle",
]
seen = set(); uniq = []
for s in corpus:
    if s not in seen:
        seen.add(s); uniq.append(s)
entries = [{"text": s, "ids": fast(s)["input_ids"]} for s in uniq]
with open(os.path.join(OUT, "corpus.json"), "w", encoding="utf-8") as f:
    json.dump(entries, f, ensure_ascii=False, separators=(",", ":"))
    f.write("\n")

# Prompts through transformers 5's Idefics2Processor (text only, with the PIL image processor and this
# tokenizer): it replaces each <image> by <fake_token_around_image> + <image> * image_seq_len +
# <fake_token_around_image>, merges the doubled fake token between adjacent images, puts a space after a fake
# token followed by anything but whitespace or "<", and tokenizes the whole string. Each prompt's images share
# one count here (the processor has one image_seq_len); MultimodalPrompt takes one count per image.
import re
from transformers import Idefics2Processor
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil
prompts = [
    ("a photo of a cat", 0, 0), ("", 0, 0), ("  two  spaces ", 0, 0),
    ("a <image:man.jpg> man", 1, 6), ("x<image:a.png>y", 1, 2), ("<image:a.png>", 1, 3), ("<image: b.png >end", 1, 1),
    ("a <image:man.jpg> man and his <image:dog.png> dog in an <image:cartoon.png> animated style", 3, 4),
    ("<image:a.png><image:b.png> and<image:c.png>!", 3, 2), ("  x<image:a.png>\ty<image:b.png>\n<image:c.png>", 3, 5),
    ("caf\u00e9 <image:\u65e5\u672c.png>\u65e5\u672c\u8a9e <image:x.png><image:y.png>", 3, 1),
]
prompt_entries = []
for prompt, n_images, count in prompts:
    text = re.sub(r"<image:[^>]*>", "<image>", prompt)
    assert text.count("<image>") == n_images
    proc = Idefics2Processor(image_processor=Idefics2ImageProcessorPil(do_image_splitting=False), tokenizer=fast,
                             image_seq_len=max(count, 1))
    ids = proc(text=[text])["input_ids"][0]
    prompt_entries.append({"prompt": prompt, "counts": [count] * n_images, "ids": [int(i) for i in ids]})
prompts = prompt_entries
with open(os.path.join(OUT, "prompts.json"), "w", encoding="utf-8") as f:
    json.dump(prompts, f, ensure_ascii=False, indent=1)
print(len(entries), "corpus strings,", len(prompts), "prompts;", os.path.getsize(os.path.join(OUT, "tokenizer.json")), "bytes tokenizer.json")
