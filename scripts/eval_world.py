#!/usr/bin/env python3
"""Measures what the shapes world's models draw (issue 14's figures; docs/world.md, docs/benchmarks.md).

    python3 scripts/eval_world.py --name base -- --checkpoint models/shapes/base.safetensors
    python3 scripts/eval_world.py --name outline -- --checkpoint models/shapes/base.safetensors --style outline --home H
    python3 scripts/eval_world.py --name mumu-replace --multimodal replace -- \
        --checkpoint models/shapes/mumu-decoder.safetensors --encoder models/shapes/encoder

Renders held-out prompt i (scene seed 10^9 + i, 1 + i % 3 shapes; docs/world.md) with **mumu's own CLI**
(`mumu generate`, the arguments after `--`, plus the prompt, 64x64, 20 steps, euler, cfg 7, noise seed
10^9 + i), then runs world.py's checker and every style classifier on each image. Prints one JSON line:
color/position pass rate over the named shapes (flat palette and the --palette one), the share of images each
style classifier claims (and, for outline and striped, how many images they could judge and the share of those), the share of shapes whose kind world.shape_of names right, the same two figures for
each prompt's first shape (the crop's, with --multimodal), and the time. `--multimodal FORM` (insert, replace, insert_all, replace_all) writes
the prompts in MUMU's bootstrap forms instead (world.multimodal_prompt): the first shape's crop (every shape's
with _all) cut from the scene's true flat render, written as a PNG beside the images. `--score-only` scores the
images an earlier run of the same --name left, without rendering (after a change to the checker or classifiers). Two mumu processes run at once with one BLAS thread each (2 cores).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import world  # noqa: E402

SIZE = 64


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="label of this run (also the output folder's name)")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.0)
    p.add_argument("--palette", default="flat", help="the style whose palette the color check uses (pastel)")
    p.add_argument("--out", default="/tmp/mumu-world-eval")
    p.add_argument("--mumu", default=os.path.join(ROOT, ".build", "release", "mumu"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--multimodal", choices=["insert", "replace", "insert_all", "replace_all"],
                   help="prompts with crops of the scene's shapes (needs an --encoder among the mumu arguments)")
    p.add_argument("--score-only", action="store_true",
                   help="score the images a previous run of this --name left (after a change to the checker or classifiers)")
    a = p.parse_args(argv)
    out = os.path.join(a.out, a.name)
    os.makedirs(out, exist_ok=True)
    scenes = world.heldout_scenes(a.count)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

    def prompt(i):
        if not a.multimodal:
            return world.caption(scenes[i])
        truth = world.render(scenes[i], "flat", SIZE)
        chosen = range(len(scenes[i]["shapes"])) if a.multimodal.endswith("_all") else [0]
        paths = {}
        for j, crop in enumerate(world.crops(truth, scenes[i], SIZE)):
            if j in chosen:
                paths[j] = os.path.join(out, f"{i:04d}-crop{j}.png")
                crop.save(paths[j])
        return world.multimodal_prompt(scenes[i], paths, a.multimodal.replace("_all", ""))

    def render(i):
        path = os.path.join(out, f"{i:04d}.png")
        cmd = [a.mumu, "generate", prompt(i), *extra, "--width", str(SIZE), "--height", str(SIZE),
               "--steps", str(a.steps), "--cfg", str(a.cfg), "--seed", str(world.HELDOUT_BASE + i), "--quiet",
               "--force", "-o", path]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"mumu failed on prompt {i}: {r.stderr.strip()}")
        return path

    t0 = time.time()
    if a.score_only:
        paths = [os.path.join(out, f"{i:04d}.png") for i in range(a.count)]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            sys.exit(f"--score-only: {len(missing)} of the {a.count} images are missing, e.g. {missing[0]}")
        previous = os.path.join(a.out, a.name + ".json")
        if os.path.exists(previous):    # the mumu arguments that rendered the images
            with open(previous) as f:
                extra = json.load(f)["args"]
    else:
        with ThreadPoolExecutor(a.jobs) as pool:
            paths = list(pool.map(render, range(a.count)))
    seconds = time.time() - t0
    shapes_ok = shapes_n = named = first = first_color = 0
    per_count = {1: [0, 0], 2: [0, 0], 3: [0, 0]}
    styles = {k: 0 for k in world.STYLE_CLASSIFIERS}
    judged = {k: 0 for k in world.STYLE_CLASSIFIERS}
    for i, path in enumerate(paths):
        img = Image.open(path).convert("RGB")
        sc = scenes[i]
        r = world.check(img, sc, a.palette)
        shapes_ok += sum(r)
        shapes_n += len(r)
        per_count[len(r)][0] += sum(r)
        per_count[len(r)][1] += len(r)
        kinds = world.shape_of(img, sc, "pastel" if a.palette == "pastel" else "flat")
        named += sum(k == s["shape"] for k, s in zip(kinds, world.ordered(sc)))
        first += kinds[0] == world.ordered(sc)[0]["shape"]
        first_color += r[0]
        for k, fn in world.STYLE_CLASSIFIERS.items():
            v = fn(img, sc)
            styles[k] += v is True
            judged[k] += v is not None
    res = {"name": a.name, "args": extra, "prompts": a.count, "multimodal": a.multimodal, "steps": a.steps, "cfg": a.cfg,
           "color_position": round(shapes_ok / shapes_n, 4), "shapes": shapes_n,
           "by_shape_count": {k: round(v[0] / v[1], 4) for k, v in per_count.items() if v[1]},
           "shape_named": round(named / shapes_n, 4),
           "first_shape": {"color_position": round(first_color / a.count, 4), "shape_named": round(first / a.count, 4)},
           "style_share": {k: round(v / a.count, 4) for k, v in styles.items()},
           "style_judged": {k: v for k, v in judged.items() if v < a.count},
           "style_share_of_judged": {k: round(styles[k] / v, 4) for k, v in judged.items() if 0 < v < a.count},
           "seconds": round(seconds, 1), "images": out}
    print(json.dumps(res))
    with open(os.path.join(a.out, a.name + ".json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
