#!/usr/bin/env python3
"""The shapes world (issue 14, item 1): a seeded generator of simple scenes with a fixed caption grammar.

numpy + Pillow only. See docs/world.md for the grammar, the styles, the seed split and the checker.

    python3 scripts/world.py sample --seed 7 --style flat --size 128 -o /tmp/x.png
    python3 scripts/world.py dataset --split train --count N --style flat --size 128 -o DIR
    python3 scripts/world.py heldout --count 200 -o prompts.jsonl
    python3 scripts/world.py sheet --seeds 0,1,2,3 -o /tmp/world-sheet.png
    python3 scripts/world.py selftest --count 100
"""
import argparse
import json
import math
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------------------------------
# Vocabulary (fixed; the order of each list is part of the format: scenes are drawn by index into these lists)

SHAPES = ["circle", "square", "triangle", "star", "ring"]

COLORS = {  # name -> RGB
    "red": (220, 20, 20),
    "green": (30, 160, 40),
    "blue": (30, 60, 220),
    "yellow": (250, 210, 20),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
    "orange": (250, 130, 10),
    "purple": (140, 40, 180),
}
COLOR_NAMES = list(COLORS)

# Backgrounds: white, black, gray, or any shape color; never the color of a shape on it.
BACKGROUNDS = dict(COLORS)
BACKGROUNDS["gray"] = (128, 128, 128)
BACKGROUND_NAMES = ["white", "black", "gray", "red", "green", "blue", "yellow", "orange", "purple"]

# Positions: anchors on a 3x3 grid, (x, y) as fractions of the canvas (cell centers 1/6, 1/2, 5/6).
# The list order is the caption order: reading order, top to bottom, then left to right.
POSITIONS = {
    "top left": (1 / 6, 1 / 6),
    "top": (1 / 2, 1 / 6),
    "top right": (5 / 6, 1 / 6),
    "left": (1 / 6, 1 / 2),
    "center": (1 / 2, 1 / 2),
    "right": (5 / 6, 1 / 2),
    "bottom left": (1 / 6, 5 / 6),
    "bottom": (1 / 2, 5 / 6),
    "bottom right": (5 / 6, 5 / 6),
}
POSITION_NAMES = list(POSITIONS)
POSITION_PHRASES = {
    "top left": "at the top left",
    "top": "at the top",
    "top right": "at the top right",
    "left": "on the left",
    "center": "in the center",
    "right": "on the right",
    "bottom left": "at the bottom left",
    "bottom": "at the bottom",
    "bottom right": "at the bottom right",
}

# Sizes: side of the shape's bounding box as a fraction of the canvas side. Anchors are 1/3 apart and the large
# box is 0.30 wide, so boxes at distinct positions are always disjoint (gap >= 1/3 - 0.30 = 0.033 of the canvas).
SIZES = {"small": 0.16, "large": 0.30}
SIZE_NAMES = list(SIZES)

STYLES = ["flat", "outline", "striped", "pixel", "pastel"]

SUPERSAMPLE = 4          # flat/outline/striped/pastel are drawn at 4x and downsampled with BOX (area mean)
OUTLINE_WIDTH = 0.025    # outline stroke width, fraction of the canvas side (3.2 px at 128)
STRIPE_PERIOD = 1 / 16   # striped: period of the diagonal stripes, fraction of the canvas side (half shape color):
                         # one latent pixel at 64 (the VAE's factor is 4), so every latent pixel holds the same pattern
STRIPE_PHASE = 1 / 8     # striped: the stripes start this fraction of a period early, so the 64 px render's pixels
                         # come out near-pure (15/16, 3/16, 1/16, 13/16 shape color) rather than 10/16 and 6/16
PIXEL_GRID = 16          # pixel: render at 16x16 (size/8 at 128), nearest-neighbour upscale
PASTEL_MIX = 0.55        # pastel: every color (background too) mixed 55% toward white
CROP_MARGIN = 0.02       # crops: bounding box grown by this fraction of the canvas side on every side
RING_INNER = 0.55        # ring: inner radius / outer radius
STAR_INNER = 0.45        # star: inner radius / outer radius

# Seed split: training uses seeds [0, 10**6); held-out prompts use seeds >= 10**9. They never overlap.
TRAIN_SEEDS = (0, 10**6)
HELDOUT_BASE = 10**9

# Checker tolerances (see check()).
CHECK_TOL = 48           # a pixel "is" a color when every channel is within 48 of it (0..255)
CHECK_MIN_FRAC = 0.35    # pass when matching pixels in the region >= 35% of the shape's own (flat) pixel count
# Per-style overrides (tol, min_frac): pastel colors are 45% as far apart, so the tolerance shrinks with them;
# outline and striped shapes cover only part of their area.
CHECK_STYLE = {"flat": (48, 0.35), "pastel": (22, 0.35), "outline": (48, 0.15), "striped": (48, 0.15),
               "pixel": (48, 0.35)}


# ---------------------------------------------------------------------------------------------------------------
# Scenes

def make_scene(rng, n_shapes=None):
    """A scene from a numpy Generator. n_shapes None: 1-3 uniformly."""
    n = int(rng.integers(1, 4)) if n_shapes is None else int(n_shapes)
    assert 1 <= n <= 3
    pos_idx = sorted(int(i) for i in rng.choice(len(POSITION_NAMES), size=n, replace=False))
    shapes = []
    for p in pos_idx:
        shapes.append({
            "shape": SHAPES[int(rng.integers(len(SHAPES)))],
            "color": COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))],
            "position": POSITION_NAMES[p],
            "size": SIZE_NAMES[int(rng.integers(len(SIZE_NAMES)))],
        })
    used = {s["color"] for s in shapes}
    allowed = [b for b in BACKGROUND_NAMES if b not in used]
    background = allowed[int(rng.integers(len(allowed)))]
    return {"background": background, "shapes": shapes}


def scene_for_seed(seed, n_shapes=None):
    scene = make_scene(np.random.default_rng(seed), n_shapes)
    scene["seed"] = int(seed)
    return scene


def shape_phrase(s):
    return f"{s['size']} {s['color']} {s['shape']}"


def caption(scene):
    """The base caption. Same for every style. Shapes in reading order (scene['shapes'] is kept sorted)."""
    parts = [f"a {shape_phrase(s)} {POSITION_PHRASES[s['position']]}" for s in ordered(scene)]
    return join_parts(parts) + background_phrase(scene)


def background_phrase(scene):
    b = scene["background"]
    return f", on {'an' if b == 'orange' else 'a'} {b} background"


def join_parts(parts):
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def ordered(scene):
    return sorted(scene["shapes"], key=lambda s: POSITION_NAMES.index(s["position"]))


def multimodal_prompt(scene, crops, mode):
    """crops: {shape index in reading order: path}. mode 'insert': `a <image:P> large red circle on the left`;
    mode 'replace': `a <image:P> on the left` (size, color and shape words replaced; position kept)."""
    parts = []
    for i, s in enumerate(ordered(scene)):
        pos = POSITION_PHRASES[s["position"]]
        if i in crops:
            img = f"<image:{crops[i]}>"
            parts.append(f"a {img} {shape_phrase(s)} {pos}" if mode == "insert" else f"a {img} {pos}")
        else:
            parts.append(f"a {shape_phrase(s)} {pos}")
    return join_parts(parts) + background_phrase(scene)


# ---------------------------------------------------------------------------------------------------------------
# Ground truth

def palette(style):
    if style == "pastel":
        return lambda rgb: tuple(int(round(c + PASTEL_MIX * (255 - c))) for c in rgb)
    return lambda rgb: tuple(rgb)


def shape_box(s, size):
    """(x0, y0, x1, y1) in float pixels of the shape's bounding box at canvas side `size`."""
    ax, ay = POSITIONS[s["position"]]
    h = SIZES[s["size"]] * size / 2
    return (ax * size - h, ay * size - h, ax * size + h, ay * size + h)


def ground_truth(scene, size, style="flat"):
    pal = palette(style)
    out = []
    for s in ordered(scene):
        x0, y0, x1, y1 = shape_box(s, size)
        ax, ay = POSITIONS[s["position"]]
        out.append({
            **s,
            "rgb": list(pal(COLORS[s["color"]])),
            "center": [int(round(ax * size)), int(round(ay * size))],
            "bbox": [int(math.floor(x0)), int(math.floor(y0)), int(math.ceil(x1)), int(math.ceil(y1))],
            "size_px": SIZES[s["size"]] * size,
        })
    return {"background": scene["background"], "background_rgb": list(pal(BACKGROUNDS[scene["background"]])),
            "shapes": out}


def shape_mask(s, size, coverage=0.5):
    """Boolean (size, size) mask of the shape's filled (flat) area: anti-aliased coverage > `coverage`."""
    img = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    _draw_shape(ImageDraw.Draw(img), s, size * SUPERSAMPLE, 255, hollow=False)
    img = img.resize((size, size), Image.BOX)
    return np.asarray(img) > int(255 * coverage)


# ---------------------------------------------------------------------------------------------------------------
# Rendering

def _polygon(s, S):
    x0, y0, x1, y1 = shape_box(s, S)
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if s["shape"] == "square":
        return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    if s["shape"] == "triangle":  # pointing up, fills the box's width and height
        return [(cx, y0), (x1, y1), (x0, y1)]
    if s["shape"] == "star":  # 5 points, one up
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * STAR_INNER
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rr * math.cos(a), cy + 0.05 * r + rr * math.sin(a)))
        return pts
    return None


def _draw_shape(d, s, S, fill, hollow, width=0, bg=None):
    """Draw shape s on a canvas of side S. hollow: stroke of `width` only. bg: fill for the ring's hole."""
    x0, y0, x1, y1 = shape_box(s, S)
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    kind = s["shape"]
    if kind in ("circle", "ring"):
        if hollow:
            d.ellipse([x0, y0, x1, y1], outline=fill, width=width)
            if kind == "ring":
                ri = r * RING_INNER
                d.ellipse([cx - ri - width, cy - ri - width, cx + ri + width, cy + ri + width],
                          outline=fill, width=width)
        else:
            d.ellipse([x0, y0, x1, y1], fill=fill)
            if kind == "ring":
                ri = r * RING_INNER
                d.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=0 if bg is None else bg)
        return
    pts = _polygon(s, S)
    if hollow:
        d.polygon(pts, outline=fill, width=width)
    else:
        d.polygon(pts, fill=fill)


def _stroke_width(S):
    """The outline's stroke width in pixels on a canvas of side S."""
    return max(1, int(round(OUTLINE_WIDTH * S)))


def hollow_mask(s, size):
    """Boolean (size, size) mask of the pixels of the shape's flat mask that its outline render leaves untouched
    (no part of the stroke falls in the pixel): where an outline image shows the background inside the shape.
    Empty for a small ring at 64, whose two strokes fill its band."""
    S = size * SUPERSAMPLE
    stroke = Image.fromarray(_mask_ss(s, S, hollow=True, width=_stroke_width(S)).astype(np.uint8) * 255)
    return shape_mask(s, size) & (np.asarray(stroke.resize((size, size), Image.BOX)) == 0)


def _mask_ss(s, S, hollow, width):
    m = Image.new("L", (S, S), 0)
    _draw_shape(ImageDraw.Draw(m), s, S, 255, hollow=hollow, width=width, bg=0)
    return np.asarray(m) > 127


def render(scene, style="flat", size=128):
    """RGB PIL image of the scene in a style. The same scene renders in every style."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; styles: {', '.join(STYLES)}")
    if style == "pixel":
        small = min(size, PIXEL_GRID)  # hard pixels: a low-res pixel takes a shape's color when >= half covered
        return _render_hard(scene, small).resize((size, size), Image.NEAREST)
    pal = palette(style)
    S = size * SUPERSAMPLE
    bg = np.array(pal(BACKGROUNDS[scene["background"]]), np.float32)
    canvas = np.empty((S, S, 3), np.float32)
    canvas[:] = bg
    if style == "striped":
        yy, xx = np.mgrid[0:S, 0:S]
        period = STRIPE_PERIOD * S
        stripe_on = ((xx + yy + STRIPE_PHASE * period) % period) < period / 2
    width = _stroke_width(S)
    for s in ordered(scene):
        col = np.array(pal(COLORS[s["color"]]), np.float32)
        m = _mask_ss(s, S, hollow=(style == "outline"), width=width)
        if style == "striped":
            m = m & stripe_on
        canvas[m] = col
    img = Image.fromarray(np.clip(canvas + 0.5, 0, 255).astype(np.uint8), "RGB")
    return img.resize((size, size), Image.BOX)


def _render_hard(scene, size):
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = BACKGROUNDS[scene["background"]]
    for s in ordered(scene):
        canvas[shape_mask(s, size)] = COLORS[s["color"]]
    return Image.fromarray(canvas, "RGB")


def crops(image, scene, size):
    """Per shape (reading order): its bounding-box crop (margin CROP_MARGIN of the canvas) from the image."""
    m = CROP_MARGIN * size
    out = []
    for s in ordered(scene):
        x0, y0, x1, y1 = shape_box(s, size)
        box = (max(0, int(math.floor(x0 - m))), max(0, int(math.floor(y0 - m))),
               min(size, int(math.ceil(x1 + m))), min(size, int(math.ceil(y1 + m))))
        out.append(image.crop(box))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Checker (item 5): is the named color at the named position?

def _color_hits(arr, rgb, tol=CHECK_TOL):
    return np.all(np.abs(arr.astype(np.int16) - np.array(rgb, np.int16)) <= tol, axis=-1)


def check_region(s, size):
    """(x0, y0, x1, y1) integer pixel bounds of the region check() looks in: the large-size box on the shape's
    anchor (slices clip it to the canvas)."""
    x0, y0, x1, y1 = shape_box({**s, "size": "large"}, size)
    return int(x0), int(y0), int(math.ceil(x1)), int(math.ceil(y1))


def check(image, scene, style="flat", tol=None, min_frac=None):
    """Per shape (reading order) True when the region around its anchor (the large-size box, 0.30 of the canvas,
    centered on the anchor) holds at least min_frac x (the pixel count of the shape drawn flat at its size)
    pixels within tol of its color. The regions of distinct positions are disjoint."""
    tol = CHECK_STYLE[style][0] if tol is None else tol
    min_frac = CHECK_STYLE[style][1] if min_frac is None else min_frac
    arr = np.asarray(image.convert("RGB"))
    size = arr.shape[0]
    pal = palette(style)
    res = []
    for s in ordered(scene):
        x0, y0, x1, y1 = check_region(s, size)
        region = arr[y0:y1, x0:x1]
        hits = int(_color_hits(region, pal(COLORS[s["color"]]), tol).sum())
        expected = int(shape_mask(s, size).sum())
        res.append(hits >= min_frac * expected)
    return res


def _shift(m, dy, dx):
    """m moved by (dy, dx) pixels, zero-filled (no wrap-around)."""
    out = np.zeros_like(m)
    h, w = m.shape
    out[max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = m[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    return out


SHAPE_COVERAGE = 0.75   # shape_of's templates: pixels a shape covers this much (about what a color check at 48 sees)


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def shape_of(image, scene, style="flat"):
    """Per shape (reading order): which of SHAPES best explains the pixels of its named color in its check region
    (None when there are none): the largest intersection over union between those pixels and each kind's flat mask
    at the shape's size, moved so its centroid sits on the pixels' centroid, best of that place and its eight
    one-pixel neighbours (a shape drawn a little off its anchor still compares; rounding the centroids alone
    misplaced a 10-pixel square by a pixel a side, enough to call it a circle). The color check does not see a shape's kind; a multimodal prompt's crop stands for one."""
    tol = CHECK_STYLE[style][0]
    arr = np.asarray(image.convert("RGB"))
    size = arr.shape[0]
    pal = palette(style)
    out = []
    for s in ordered(scene):
        x0, y0, x1, y1 = check_region(s, size)
        hits = np.zeros((size, size), bool)
        hits[y0:y1, x0:x1] = _color_hits(arr[y0:y1, x0:x1], pal(COLORS[s["color"]]), tol)
        if not hits.any():
            out.append(None)
            continue
        ys, xs = np.nonzero(hits)
        best, best_iou = None, -1.0
        for kind in SHAPES:
            m = shape_mask({**s, "shape": kind}, size, SHAPE_COVERAGE)
            my, mx = np.nonzero(m)
            dy, dx = int(round(ys.mean() - my.mean())), int(round(xs.mean() - mx.mean()))
            iou = max(_iou(_shift(m, dy + ey, dx + ex), hits) for ey in (-1, 0, 1) for ex in (-1, 0, 1))
            if iou > best_iou:
                best, best_iou = kind, iou
        out.append(best)
    return out


# Style classifiers (item 5). Each looks at one property a style fine-tune must have learned, per scene:
#   outline   the shapes are hollow: little of the shape's color where a true outline render shows background
#   striped   the interior holds both the shape's color and the background's
#   pixel     the image is made of constant 4x4 blocks at 64 (the 16x16 grid): neighbour differences sit on
#             block boundaries
#   pastel    the scene's colors are nearer the pastel palette than the flat one
# They are tuned on true renders (selftest) and must call the base's renders "not this style".

def _erode(m, r):
    """Boolean mask eroded by r pixels (a pixel survives when its (2r+1)^2 neighbourhood is inside)."""
    out = m.copy()
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            out &= np.roll(np.roll(m, dy, 0), dx, 1)
    return out


INTERIOR_ERODE = 0.016  # interior = flat mask eroded by 0.016 of the canvas (1 px at 64, 2 px at 128)
JUDGED_MIN = 3          # a shape whose interior (hollow) has fewer pixels does not vote


def _interior_radius(size):
    return max(1, int(round(INTERIOR_ERODE * size)))


def _fills(image, scene, cores):
    """Per shape whose core (a mask, from cores(shape, size)) has at least JUDGED_MIN pixels: (fraction of the
    core near the shape's color, fraction near the background's), flat palette, tolerance CHECK_TOL."""
    arr = np.asarray(image.convert("RGB"))
    size = arr.shape[0]
    bg = _color_hits(arr, BACKGROUNDS[scene["background"]])
    out = []
    for s in ordered(scene):
        core = cores(s, size)
        n = int(core.sum())
        if n < JUDGED_MIN:
            continue
        shape_hits = _color_hits(arr, COLORS[s["color"]]) & core
        out.append((float(shape_hits.sum()) / n, float((bg & core).sum()) / n))
    return out


def interior_fill(image, scene):
    """_fills over the shapes' interiors: the flat masks eroded by round(INTERIOR_ERODE x size) pixels."""
    return _fills(image, scene, lambda s, size: _erode(shape_mask(s, size), _interior_radius(size)))


def outline_core(s, size):
    """Where is_outline looks inside a shape: the deep interior (the flat mask eroded twice as far as an
    interior, 2 px at 64, past the 1.6 px stroke), else (thin shapes: rings, small stars) the hollow (hollow_mask:
    the pixels no part of the stroke falls in). Never the stroke itself: a small ring's two strokes fill its band,
    so it has no core and does not vote."""
    deep = _erode(shape_mask(s, size), 2 * _interior_radius(size))
    return deep if deep.sum() >= JUDGED_MIN else hollow_mask(s, size)


def outline_fill(image, scene):
    """_fills over the shapes' outline cores."""
    return _fills(image, scene, outline_core)


def is_outline(image, scene):
    """Hollow shapes: the outline cores hold much more background than shape color (mean difference > 0.3). None
    when no shape has a core to judge (small rings alone)."""
    f = outline_fill(image, scene)
    if not f:
        return None
    return bool(np.mean([b - a for a, b in f]) > 0.3)


def is_striped(image, scene):
    """Striped fill: the interiors hold both colors, each at least 0.2 on average, neither ahead by more than 0.3.
    None when no shape has an interior to judge."""
    f = interior_fill(image, scene)
    if not f:
        return None
    a, b = np.mean([a for a, _ in f]), np.mean([b for _, b in f])
    return bool(a >= 0.2 and b >= 0.2 and abs(a - b) <= 0.3)


PIXEL_BOUNDARY = 0.6    # is_pixel: share of neighbour-difference energy on block boundaries


def blockiness(image):
    """Share of the absolute neighbour differences (horizontal and vertical) that cross a boundary of the
    PIXEL_GRID blocks: 1 for a true pixel render, about 1/block for a smooth image."""
    arr = np.asarray(image.convert("RGB")).astype(np.float32)
    size = arr.shape[0]
    block = size // PIXEL_GRID
    dx = np.abs(np.diff(arr, axis=1)).sum(axis=(0, 2))   # per column boundary j|j+1
    dy = np.abs(np.diff(arr, axis=0)).sum(axis=(1, 2))
    on = (np.arange(size - 1) % block) == block - 1
    total = dx.sum() + dy.sum()
    return float((dx[on].sum() + dy[on].sum()) / total) if total > 0 else 0.0


def is_pixel(image, scene=None):
    return blockiness(image) >= PIXEL_BOUNDARY


def is_pastel(image, scene):
    """Per element (the background, outside every shape's large box, and each shape's flat-mask interior) the
    median color is compared with its flat and pastel colors; elements whose two colors are close (white) do
    not vote. Pastel when most votes are pastel."""
    arr = np.asarray(image.convert("RGB")).astype(np.float32)
    size = arr.shape[0]
    pal = palette("pastel")
    outside = np.ones((size, size), bool)
    elements = []
    for s in ordered(scene):
        x0, y0, x1, y1 = check_region(s, size)
        outside[y0:y1, x0:x1] = False
        core = _erode(shape_mask(s, size), 1)
        if core.any():
            elements.append((core, COLORS[s["color"]]))
    elements.append((outside, BACKGROUNDS[scene["background"]]))
    votes = 0
    for m, rgb in elements:
        flat, pas = np.array(rgb, np.float32), np.array(pal(rgb), np.float32)
        if np.abs(flat - pas).max() < 40:
            continue
        med = np.median(arr[m], axis=0)
        votes += 1 if np.abs(med - pas).sum() < np.abs(med - flat).sum() else -1
    return votes > 0


# Each classifier says True or False; outline and striped say None when no shape of the scene has pixels to judge
# (bool(None) is False: such a scene is not claimed; scripts/eval_world.py also reports the share of judged scenes).
STYLE_CLASSIFIERS = {"outline": is_outline, "striped": is_striped, "pixel": is_pixel, "pastel": is_pastel}


def swap_colors(scene):
    """A copy of the scene with each shape's color changed to the next color (in COLOR_NAMES) that is not the
    background and not its own; for the checker's negative test."""
    out = json.loads(json.dumps(scene))
    for s in out["shapes"]:
        i = COLOR_NAMES.index(s["color"])
        for k in range(1, len(COLOR_NAMES)):
            c = COLOR_NAMES[(i + k) % len(COLOR_NAMES)]
            if c != out["background"]:
                s["color"] = c
                break
    return out


# ---------------------------------------------------------------------------------------------------------------
# CLI

def heldout_scenes(count):
    """Held-out: seed 10**9 + i, i in [0, count); shape count 1 + i % 3 (equal shares)."""
    return [scene_for_seed(HELDOUT_BASE + i, n_shapes=1 + i % 3) for i in range(count)]


def coverage(scenes):
    cov = {"shapes_per_scene": {}, "color": {}, "position": {}, "shape": {}, "size": {}, "background": {}}
    for sc in scenes:
        n = str(len(sc["shapes"]))
        cov["shapes_per_scene"][n] = cov["shapes_per_scene"].get(n, 0) + 1
        cov["background"][sc["background"]] = cov["background"].get(sc["background"], 0) + 1
        for s in sc["shapes"]:
            for k in ("color", "position", "shape", "size"):
                cov[k][s[k]] = cov[k].get(s[k], 0) + 1
    missing = ([c for c in COLOR_NAMES if c not in cov["color"]] + [p for p in POSITION_NAMES if p not in cov["position"]]
               + [s for s in SHAPES if s not in cov["shape"]])
    return cov, missing


def seeds_for_split(split, start, count):
    if split == "train":
        lo, hi = TRAIN_SEEDS
        if start < 0 or start + count > hi:
            sys.exit(f"train seeds are [{lo}, {hi}): start {start} + count {count} is outside")
        return list(range(start, start + count))
    if split == "heldout":
        return [HELDOUT_BASE + start + i for i in range(count)]
    sys.exit(f"unknown split {split!r} (train, heldout)")


def cmd_sample(a):
    scene = scene_for_seed(a.seed)
    render(scene, a.style, a.size).save(a.output)
    print(caption(scene))
    if a.json:
        print(json.dumps(ground_truth(scene, a.size, a.style)))


def cmd_dataset(a):
    os.makedirs(a.output, exist_ok=True)
    seeds = seeds_for_split(a.split, a.start, a.count)
    with open(os.path.join(a.output, "captions.jsonl"), "w") as f:
        for seed in seeds:
            n = (1 + (seed - HELDOUT_BASE) % 3) if a.split == "heldout" else None
            scene = scene_for_seed(seed, n)
            img = render(scene, a.style, a.size)
            name = f"{seed:010d}.png"
            img.save(os.path.join(a.output, name))
            crop_files = []
            if not a.no_crops:
                for i, c in enumerate(crops(img, scene, a.size)):
                    cn = f"{seed:010d}-crop{i}.png"
                    c.save(os.path.join(a.output, cn))
                    crop_files.append(cn)
            rec = {"file": name, "seed": seed, "style": a.style, "size": a.size, "scene": scene,
                   "caption": caption(scene), "ground_truth": ground_truth(scene, a.size, a.style),
                   "crops": crop_files}
            if crop_files:
                rec["multimodal"] = {
                    "insert": [multimodal_prompt(scene, {i: c}, "insert") for i, c in enumerate(crop_files)],
                    "replace": [multimodal_prompt(scene, {i: c}, "replace") for i, c in enumerate(crop_files)],
                    "insert_all": multimodal_prompt(scene, dict(enumerate(crop_files)), "insert"),
                    "replace_all": multimodal_prompt(scene, dict(enumerate(crop_files)), "replace"),
                }
            f.write(json.dumps(rec) + "\n")
    print(f"wrote {len(seeds)} images ({a.split}, seeds {seeds[0]}..{seeds[-1]}, style {a.style}, {a.size}px) to {a.output}")


def cmd_heldout(a):
    scenes = heldout_scenes(a.count)
    with open(a.output, "w") as f:
        for sc in scenes:
            f.write(json.dumps({"seed": sc["seed"], "caption": caption(sc), "scene": sc}) + "\n")
    cov, missing = coverage(scenes)
    for k, v in cov.items():
        print(f"{k}: " + ", ".join(f"{name} {n}" for name, n in sorted(v.items())))
    if missing:
        sys.exit(f"coverage: missing {missing}")
    print(f"wrote {len(scenes)} held-out prompts (seeds {HELDOUT_BASE}..{HELDOUT_BASE + a.count - 1}) to {a.output}; "
          f"every color, position and shape present")


def cmd_sheet(a):
    seeds = [int(x) for x in a.seeds.split(",")]
    pad = 4
    sheet = Image.new("RGB", (len(STYLES) * (a.size + pad) + pad, len(seeds) * (a.size + pad) + pad), (60, 60, 60))
    for r, seed in enumerate(seeds):
        sc = scene_for_seed(seed)
        print(f"row {r}: seed {seed}: {caption(sc)}")
        for c, st in enumerate(STYLES):
            sheet.paste(render(sc, st, a.size), (pad + c * (a.size + pad), pad + r * (a.size + pad)))
    print("columns: " + ", ".join(STYLES))
    sheet.save(a.output)


def cmd_selftest(a):
    """Checker on flat (and other) renders of `count` training scenes; swapped colors must fail."""
    seeds = range(a.start, a.start + a.count)
    for style in STYLES if a.all_styles else ["flat"]:
        pos_ok = pos_n = neg_fail = neg_n = 0
        for seed in seeds:
            sc = scene_for_seed(seed)
            img = render(sc, style, a.size)
            r = check(img, sc, style)
            pos_ok += sum(r)
            pos_n += len(r)
            r2 = check(img, swap_colors(sc), style)
            neg_fail += sum(not x for x in r2)
            neg_n += len(r2)
        print(f"{style:8s} {a.size}px: true scene passes {pos_ok}/{pos_n} shapes ({100 * pos_ok / pos_n:.1f}%); "
              f"swapped colors fail {neg_fail}/{neg_n} ({100 * neg_fail / neg_n:.1f}%)")
    print("style classifiers (scenes called the style, per rendered style):")
    renders = {st: [(render(scene_for_seed(s), st, a.size), scene_for_seed(s)) for s in seeds] for st in STYLES}
    for name, fn in STYLE_CLASSIFIERS.items():
        verdicts = {st: [fn(img, sc) for img, sc in renders[st]] for st in STYLES}
        row = ", ".join(f"{st} {sum(v is True for v in vs)}/{len(seeds)}" + (f" ({sum(v is None for v in vs)} not judged)"
                        if None in vs else "") for st, vs in verdicts.items())
        print(f"  is_{name:8s} {row}")


def main(argv=None):
    p = argparse.ArgumentParser(description="The shapes world (docs/world.md)")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--style", default="flat", choices=STYLES)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--json", action="store_true", help="also print the ground truth")
    s.add_argument("-o", "--output", required=True)
    s.set_defaults(fn=cmd_sample)
    d = sub.add_parser("dataset")
    d.add_argument("--split", default="train", choices=["train", "heldout"])
    d.add_argument("--start", type=int, default=0, help="first seed offset within the split")
    d.add_argument("--count", type=int, required=True)
    d.add_argument("--style", default="flat", choices=STYLES)
    d.add_argument("--size", type=int, default=128)
    d.add_argument("--no-crops", action="store_true")
    d.add_argument("-o", "--output", required=True)
    d.set_defaults(fn=cmd_dataset)
    h = sub.add_parser("heldout")
    h.add_argument("--count", type=int, default=200)
    h.add_argument("-o", "--output", required=True)
    h.set_defaults(fn=cmd_heldout)
    sh = sub.add_parser("sheet")
    sh.add_argument("--seeds", default="0,1,2,3")
    sh.add_argument("--size", type=int, default=128)
    sh.add_argument("-o", "--output", default="/tmp/world-sheet.png")
    sh.set_defaults(fn=cmd_sheet)
    t = sub.add_parser("selftest")
    t.add_argument("--start", type=int, default=0)
    t.add_argument("--count", type=int, default=100)
    t.add_argument("--size", type=int, default=128)
    t.add_argument("--all-styles", action="store_true")
    t.set_defaults(fn=cmd_selftest)
    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
