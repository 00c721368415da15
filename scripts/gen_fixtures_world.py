#!/usr/bin/env python3
"""Fixtures for the Swift port of the shapes world's checker (Tests/MumuTestSupport/WorldChecker.swift).

Writes Tests/MumuGenerateTests/Fixtures/world/:
  heldout.json   the first COUNT held-out prompts (docs/world.md: scene seed 10^9 + i, 1 + i % 3 shapes) with
                 what the checker needs: per shape its colors (flat, pastel), its region (the large-size box
                 as world.check slices it), its flat mask at 64x64 (hex, row-major, 4 bits a hex digit,
                 most significant first) and its outline core (world.outline_core, where is_outline looks); the background's colors; the constants the checker uses. For the first
                 RENDERS prompts also `templates`: per shape kind, the mask world.shape_of compares (the shape
                 drawn as that kind at its position and size, coverage > SHAPE_COVERAGE).
  crops/         per prompt, the crop of its first shape (reading order) cut from its true flat render, and in
                 heldout.json its `replace` prompt (docs/world.md: the crop in place of the shape's words; the
                 path relative to this folder), for the tiny MUMU's test
  renders/       true renders of the first RENDERS held-out scenes in every style (PNG), and in
  verdicts.json  world.py's verdicts on them: check() per shape (flat and the style's palette), interior
                 and outline-core fills, blockiness, every style classifier and shape_of. The Swift checker must agree exactly.

    python3 scripts/gen_fixtures_world.py
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import world  # noqa: E402

OUT = os.path.join(ROOT, "Tests", "MumuGenerateTests", "Fixtures", "world")
SIZE = 64
COUNT = 24
RENDERS = 12


def mask_hex(m):
    bits = np.packbits(m.reshape(-1).astype(np.uint8))
    return bits.tobytes().hex()


def crop_path(i):
    return f"crops/{i:02d}-0.png"


def scene_record(i, sc):
    pastel = world.palette("pastel")
    return {
        "index": i, "seed": world.HELDOUT_BASE + i, "caption": world.caption(sc),
        "replace": world.multimodal_prompt(sc, {0: crop_path(i)}, "replace"),
        "background": sc["background"], "background_rgb": list(world.BACKGROUNDS[sc["background"]]),
        "background_pastel": list(pastel(world.BACKGROUNDS[sc["background"]])),
        "shapes": [{**s, "rgb": list(world.COLORS[s["color"]]), "pastel": list(pastel(world.COLORS[s["color"]])),
                    "region": list(world.check_region(s, SIZE)), "mask": mask_hex(world.shape_mask(s, SIZE)),
                    "outline_core": mask_hex(world.outline_core(s, SIZE)),
                    **({"templates": {k: mask_hex(world.shape_mask({**s, "shape": k}, SIZE, world.SHAPE_COVERAGE))
                                      for k in world.SHAPES}} if i < RENDERS else {})}
                   for s in world.ordered(sc)],
    }


def main():
    os.makedirs(os.path.join(OUT, "renders"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "crops"), exist_ok=True)
    scenes = world.heldout_scenes(COUNT)
    for i, sc in enumerate(scenes):
        world.crops(world.render(sc, "flat", SIZE), sc, SIZE)[0].save(os.path.join(OUT, crop_path(i)))
    constants = {"size": SIZE, "check": {k: list(v) for k, v in world.CHECK_STYLE.items()},
                 "check_tolerance": world.CHECK_TOL, "interior_erode": world.INTERIOR_ERODE, "judged_min": world.JUDGED_MIN,
                 "pixel_grid": world.PIXEL_GRID, "pixel_boundary": world.PIXEL_BOUNDARY}
    with open(os.path.join(OUT, "heldout.json"), "w") as f:
        json.dump({"generator": "scripts/gen_fixtures_world.py", "constants": constants,
                   "prompts": [scene_record(i, sc) for i, sc in enumerate(scenes)]}, f, indent=1)
    verdicts = []
    for i in range(RENDERS):
        sc = scenes[i]
        for style in world.STYLES:
            img = world.render(sc, style, SIZE)
            name = f"{i:02d}-{style}.png"
            img.save(os.path.join(OUT, "renders", name))
            verdicts.append({
                "index": i, "style": style, "file": name,
                "check_flat": [bool(x) for x in world.check(img, sc, "flat")],
                "check_style": [bool(x) for x in world.check(img, sc, style)],
                "interior": [[round(a, 6), round(b, 6)] for a, b in world.interior_fill(img, sc)],
                "outline": [[round(a, 6), round(b, 6)] for a, b in world.outline_fill(img, sc)],
                "blockiness": round(world.blockiness(img), 6),
                "classifiers": {k: bool(fn(img, sc)) for k, fn in world.STYLE_CLASSIFIERS.items()},
                "shape_of": world.shape_of(img, sc, "pastel" if style == "pastel" else "flat"),
            })
    with open(os.path.join(OUT, "verdicts.json"), "w") as f:
        json.dump(verdicts, f, indent=1)
    print(f"wrote {OUT}: {COUNT} prompts, {len(verdicts)} renders")


if __name__ == "__main__":
    main()
