#!/usr/bin/env python3
"""Fixtures for MumuEncoder's image tests (Tests/MumuEncoderTests/Fixtures/images/).

Writes small PNG and JPEG files of every kind the loader takes (RGB, RGBA, gray, gray+alpha, palette with and
without tRNS, 1-bit and 16-bit PNGs, RGB with a tRNS colour key, JPEG 4:2:0 / 4:2:2 / 4:4:4 / progressive /
gray / CMYK, EXIF orientations 1-8 in JPEG APP1 and PNG eXIf), with the RGB pixels the Idefics2 image processor
sees for each: PIL.Image.open -> ImageOps.exif_transpose -> transformers.image_transforms.convert_to_rgb
(alpha composited on white). Bad files: truncated, corrupt, not an image, a 20000x20000 header.

Resize cases: random RGB images resized with PIL's Image.resize(size, BILINEAR), the filter
Idefics2ImageProcessorPil uses (transformers 5's PIL backend, image_processing_pil_idefics2.py; the torchvision
backend Idefics2ImageProcessor resizes with torch instead and is not what we match).
One end-to-end case: Idefics2ImageProcessorPil(size={"height", "width"}) pixel_values for one file.

manifest.json describes everything; expected pixels are raw bytes (.rgb, row-major RGB), pixel values raw
little-endian f32 (.f32, [3, H, W]).

Run: python3 scripts/gen_fixtures_encoder_images.py
"""
import io, json, os, struct, zlib
import numpy as np
from PIL import Image, ImageOps
from transformers.image_transforms import convert_to_rgb

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "MumuEncoderTests", "Fixtures", "images")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(15)
manifest = {"images": [], "bad": [], "resize": [], "processor": []}


def smooth(h, w, c):
    """Random but smooth-ish content (JPEG-friendly), uint8."""
    y, x = np.mgrid[0:h, 0:w]
    chans = []
    for k in range(c):
        a, b, p = rng.uniform(0.05, 0.5, 3)
        chans.append(127 + 100 * np.sin(a * x + b * y + p * 6) + rng.normal(0, 12, (h, w)))
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def expected(path):
    im = Image.open(path)
    im = ImageOps.exif_transpose(im)
    return convert_to_rgb(im, return_numpy=True)


def add(name, note):
    arr = expected(os.path.join(OUT, name))
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    raw = name + ".rgb"
    arr.tofile(os.path.join(OUT, raw))
    manifest["images"].append({"file": name, "width": int(arr.shape[1]), "height": int(arr.shape[0]),
                               "expected": raw, "note": note})


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(w, h, depth, color, rows_bytes, extra=b""):
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    data = b"".join(b"\x00" + r for r in rows_bytes)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(data)) + chunk(b"IEND", b"")


def exif_bytes(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    return e.tobytes()


# --- PNG kinds
Image.fromarray(smooth(17, 23, 3), "RGB").save(os.path.join(OUT, "rgb.png")); add("rgb.png", "8-bit RGB")
rgba = smooth(19, 21, 4); rgba[0, :, 3] = 0; rgba[1, :, 3] = 255; rgba[2, :, 3] = 1; rgba[3, :, 3] = 254
Image.fromarray(rgba, "RGBA").save(os.path.join(OUT, "rgba.png")); add("rgba.png", "8-bit RGBA, alpha 0/1/254/255 rows")
Image.fromarray(smooth(13, 15, 1)[..., 0], "L").save(os.path.join(OUT, "gray.png")); add("gray.png", "8-bit gray")
Image.fromarray(smooth(14, 11, 2), "LA").save(os.path.join(OUT, "gray_alpha.png")); add("gray_alpha.png", "8-bit gray+alpha")
pal = Image.fromarray(smooth(16, 18, 3), "RGB").quantize(colors=40)
pal.save(os.path.join(OUT, "palette.png")); add("palette.png", "palette, no tRNS")
pal_t = pal.copy()
pal_t.info["transparency"] = bytes(int(v) for v in rng.integers(0, 256, 40))
pal_t.save(os.path.join(OUT, "palette_trns.png"), transparency=pal_t.info["transparency"]); add("palette_trns.png", "palette with per-entry tRNS alpha")
one = (smooth(9, 20, 1)[..., 0] > 127)
Image.fromarray(one).convert("1").save(os.path.join(OUT, "bilevel.png")); add("bilevel.png", "1-bit gray")
g4 = rng.integers(0, 16, (7, 10), dtype=np.uint8)
rows = [bytes(((r[i] << 4) | (r[i + 1] if i + 1 < len(r) else 0)) for i in range(0, len(r), 2)) for r in g4]
open(os.path.join(OUT, "gray4.png"), "wb").write(raw_png(10, 7, 4, 0, rows)); add("gray4.png", "4-bit gray")
g16 = rng.integers(0, 600, (8, 9)).astype(">u2")
open(os.path.join(OUT, "gray16.png"), "wb").write(raw_png(9, 8, 16, 0, [r.tobytes() for r in g16]))
add("gray16.png", "16-bit gray, values 0..599 (PIL I;16 -> RGB clips at 255)")
c16 = rng.integers(0, 65536, (6, 7, 3)).astype(">u2")
open(os.path.join(OUT, "rgb16.png"), "wb").write(raw_png(7, 6, 16, 2, [r.tobytes() for r in c16])); add("rgb16.png", "16-bit RGB")
a16 = rng.integers(0, 65536, (6, 5, 4)).astype(">u2"); a16[0, :, 3] = 0; a16[1, :, 3] = 65535
open(os.path.join(OUT, "rgba16.png"), "wb").write(raw_png(5, 6, 16, 6, [r.tobytes() for r in a16])); add("rgba16.png", "16-bit RGBA")
la16 = rng.integers(0, 65536, (5, 6, 2)).astype(">u2")
open(os.path.join(OUT, "gray_alpha16.png"), "wb").write(raw_png(6, 5, 16, 4, [r.tobytes() for r in la16])); add("gray_alpha16.png", "16-bit gray+alpha")
key = smooth(10, 12, 3); key[2:5, 3:7] = (10, 20, 30)
Image.fromarray(key, "RGB").save(os.path.join(OUT, "rgb_trns.png"), transparency=(10, 20, 30)); add("rgb_trns.png", "RGB with a tRNS colour key")
Image.fromarray(smooth(9, 14, 3), "RGB").save(os.path.join(OUT, "exif6.png"), exif=exif_bytes(6)); add("exif6.png", "PNG eXIf orientation 6")

# --- JPEG kinds
base = smooth(37, 45, 3)
Image.fromarray(base).save(os.path.join(OUT, "rgb420.jpg"), quality=90); add("rgb420.jpg", "JPEG 4:2:0, quality 90")
Image.fromarray(base).save(os.path.join(OUT, "rgb422.jpg"), quality=85, subsampling=1); add("rgb422.jpg", "JPEG 4:2:2")
Image.fromarray(base).save(os.path.join(OUT, "rgb444.jpg"), quality=95, subsampling=0); add("rgb444.jpg", "JPEG 4:4:4")
Image.fromarray(base).save(os.path.join(OUT, "progressive.jpg"), quality=80, progressive=True); add("progressive.jpg", "progressive JPEG")
Image.fromarray(base[..., 0]).save(os.path.join(OUT, "gray.jpg"), quality=90); add("gray.jpg", "gray JPEG")
Image.fromarray(smooth(21, 26, 4), "CMYK").save(os.path.join(OUT, "cmyk.jpg"), quality=90); add("cmyk.jpg", "CMYK JPEG (Adobe)")
small = smooth(11, 16, 3)
for o in range(1, 9):
    Image.fromarray(small).save(os.path.join(OUT, f"exif{o}.jpg"), quality=92, exif=exif_bytes(o))
    add(f"exif{o}.jpg", f"JPEG EXIF orientation {o}")

# --- Bad files
good_png = open(os.path.join(OUT, "rgb.png"), "rb").read()
good_jpg = open(os.path.join(OUT, "rgb420.jpg"), "rb").read()
open(os.path.join(OUT, "truncated.png"), "wb").write(good_png[: len(good_png) // 2])
open(os.path.join(OUT, "truncated.jpg"), "wb").write(good_jpg[: len(good_jpg) // 2])
bad = bytearray(good_png); bad[40] ^= 0xFF  # inside IDAT: CRC / zlib mismatch
open(os.path.join(OUT, "corrupt.png"), "wb").write(bytes(bad))
open(os.path.join(OUT, "not_an_image.png"), "wb").write(b"GIF89a this is not a PNG or JPEG\n")
open(os.path.join(OUT, "empty.jpg"), "wb").write(b"")
open(os.path.join(OUT, "huge.png"), "wb").write(raw_png(20000, 20000, 8, 2, [b"\x00" * 3]))  # header only matters
# An eXIf chunk claiming 2 GB in a 60-byte file (libpng would allocate it before noticing; found by fuzzing).
big_chunk = good_png[:33] + struct.pack(">I", 0x7E00001A) + b"eXIf" + b"MM\x00*\x00\x00\x00\x08" + b"\x00" * 16
open(os.path.join(OUT, "huge_chunk.png"), "wb").write(big_chunk)
sof = good_jpg.find(b"\xff\xc0")
hj = bytearray(good_jpg); hj[sof + 5: sof + 9] = struct.pack(">HH", 20000, 20000)
open(os.path.join(OUT, "huge.jpg"), "wb").write(bytes(hj))
for name, kind in [("truncated.png", "corrupt"), ("truncated.jpg", "corrupt"), ("corrupt.png", "corrupt"),
                   ("not_an_image.png", "notAnImage"), ("empty.jpg", "notAnImage"), ("huge.png", "tooLarge"),
                   ("huge.jpg", "tooLarge"), ("missing.png", "unreadable"),
                   ("huge_chunk.png", "corrupt")]:
    manifest["bad"].append({"file": name, "error": kind})

# --- Resize cases: random RGB, PIL BILINEAR (exact match expected)
cases = [((64, 48), (23, 17)), ((13, 11), (40, 29)), ((50, 50), (14, 14)), ((31, 20), (31, 7)), ((31, 20), (9, 20)),
         ((1, 1), (5, 3)), ((97, 31), (28, 14)), ((37, 29), (112, 84)), ((200, 3), (42, 14)), ((17, 61), (14, 56)),
         ((45, 37), (448 // 4, 364 // 4)), ((8, 8), (8, 8))]
for i, ((w, h), (tw, th)) in enumerate(cases):
    src = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if i % 3 == 0:
        src = smooth(h, w, 3)
    out = np.array(Image.fromarray(src, "RGB").resize((tw, th), Image.BILINEAR))
    src.tofile(os.path.join(OUT, f"resize{i}_in.rgb")); out.tofile(os.path.join(OUT, f"resize{i}_out.rgb"))
    manifest["resize"].append({"input": f"resize{i}_in.rgb", "width": w, "height": h,
                               "output": f"resize{i}_out.rgb", "targetWidth": tw, "targetHeight": th})

# --- Larger resizes at MUMU's sizes, compared by hash (the outputs are too big to commit): the input is a
# formula both sides compute, the expected output's FNV-1a 64 hash is stored.
def formula(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.int64)
    return np.stack([(x * x * 7 + y * 13 + c * 51 + (x * y) % 97) % 256 for c in range(3)], -1).astype(np.uint8)


def fnv1a64(b):
    hsh = 0xCBF29CE484222325
    for byte in b:
        hsh = ((hsh ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return hsh


manifest["resizeHashed"] = []
for (w, h), (tw, th) in [((1920, 1080), (448, 252)), ((517, 389), (448, 336)), ((100, 75), (448, 336)),
                         ((1000, 999), (448, 448)), ((640, 480), (980, 742)), ((1080, 1920), (252, 448)),
                         ((300, 1000), (140, 448)), ((100, 1000), (140, 448))]:
    out = np.array(Image.fromarray(formula(w, h), "RGB").resize((tw, th), Image.BILINEAR))
    manifest["resizeHashed"].append({"width": w, "height": h, "targetWidth": tw, "targetHeight": th,
                                     "fnv1a64": "%016x" % fnv1a64(out.tobytes())})

# --- Cases where Pillow 13 runs the vertical pass first (the height shrinks by more than twice as many pixels as
# the width: python-pillow#9549) and the boundary either side of that rule. Outputs stored raw (small), inputs
# are the formula above.
manifest["resizeOrder"] = []
for (w, h), (tw, th) in [((33, 1000), (14, 448)), ((60, 100), (50, 30)), ((79, 103), (78, 25)),
                         ((200, 100), (190, 10)), ((31, 106), (26, 50)), ((100, 100), (75, 49)), ((100, 100), (75, 50)),
                         ((100, 100), (99, 97)), ((100, 100), (99, 98)), ((50, 60), (70, 59))]:
    out = np.array(Image.fromarray(formula(w, h), "RGB").resize((tw, th), Image.BILINEAR))
    name = f"resize_order_{w}x{h}_{tw}x{th}.rgb"
    out.tofile(os.path.join(OUT, name))
    manifest["resizeOrder"].append({"width": w, "height": h, "targetWidth": tw, "targetHeight": th, "output": name})

# --- End to end through the PIL-backend processor
from transformers.models.idefics2.image_processing_pil_idefics2 import Idefics2ImageProcessorPil
proc = Idefics2ImageProcessorPil(do_image_splitting=False)
for name, (tw, th) in [("rgba.png", (28, 42)), ("rgb420.jpg", (56, 42)), ("exif6.jpg", (14, 28))]:
    im = ImageOps.exif_transpose(Image.open(os.path.join(OUT, name)))
    pv = proc(images=[[im]], size={"height": th, "width": tw}, return_tensors="np")["pixel_values"]
    pv = np.asarray(pv, dtype=np.float32).reshape(3, th, tw)
    out = name.replace(".", "_") + "_pixel_values.f32"
    pv.astype("<f4").tofile(os.path.join(OUT, out))
    manifest["processor"].append({"file": name, "width": tw, "height": th, "pixelValues": out})

with open(os.path.join(OUT, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
print(len(manifest["images"]), "images,", len(manifest["bad"]), "bad,", len(manifest["resize"]), "resize cases,",
      sum(os.path.getsize(os.path.join(OUT, p)) for p in os.listdir(OUT)), "bytes")
