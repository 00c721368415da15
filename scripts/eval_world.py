#!/usr/bin/env python3
"""Measures what the shapes world's models draw (issue 14's figures; docs/world.md, docs/benchmarks.md).

    python3 scripts/eval_world.py --name base -- --checkpoint models/shapes/base.safetensors
    python3 scripts/eval_world.py --name outline -- --checkpoint models/shapes/base.safetensors --style outline --home H

Renders held-out prompt i (scene seed 10^9 + i, 1 + i % 3 shapes; docs/world.md) with **mumu's own CLI**
(`mumu generate`, the arguments after `--`, plus the prompt, 64x64, 20 steps, euler, cfg 7, noise seed
10^9 + i), then runs world.py's checker and every style classifier on each image. Prints one JSON line:
color/position pass rate over the named shapes (flat palette and the --palette one), the share of images each
style classifier claims, and the time. Two mumu processes run at once with one BLAS thread each (2 cores).
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
    a = p.parse_args(argv)
    out = os.path.join(a.out, a.name)
    os.makedirs(out, exist_ok=True)
    scenes = world.heldout_scenes(a.count)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

    def render(i):
        path = os.path.join(out, f"{i:04d}.png")
        cmd = [a.mumu, "generate", world.caption(scenes[i]), *extra, "--width", str(SIZE), "--height", str(SIZE),
               "--steps", str(a.steps), "--cfg", str(a.cfg), "--seed", str(world.HELDOUT_BASE + i), "--quiet",
               "--force", "-o", path]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"mumu failed on prompt {i}: {r.stderr.strip()}")
        return path

    t0 = time.time()
    with ThreadPoolExecutor(a.jobs) as pool:
        paths = list(pool.map(render, range(a.count)))
    seconds = time.time() - t0
    shapes_ok = shapes_n = 0
    per_count = {1: [0, 0], 2: [0, 0], 3: [0, 0]}
    styles = {k: 0 for k in world.STYLE_CLASSIFIERS}
    for i, path in enumerate(paths):
        img = Image.open(path).convert("RGB")
        sc = scenes[i]
        r = world.check(img, sc, a.palette)
        shapes_ok += sum(r)
        shapes_n += len(r)
        per_count[len(r)][0] += sum(r)
        per_count[len(r)][1] += len(r)
        for k, fn in world.STYLE_CLASSIFIERS.items():
            styles[k] += bool(fn(img, sc))
    res = {"name": a.name, "args": extra, "prompts": a.count, "steps": a.steps, "cfg": a.cfg,
           "color_position": round(shapes_ok / shapes_n, 4), "shapes": shapes_n,
           "by_shape_count": {k: round(v[0] / v[1], 4) for k, v in per_count.items() if v[1]},
           "style_share": {k: round(v / a.count, 4) for k, v in styles.items()},
           "seconds": round(seconds, 1), "images": out}
    print(json.dumps(res))
    with open(os.path.join(a.out, a.name + ".json"), "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
