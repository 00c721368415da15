#!/usr/bin/env python3
"""The shapes world's figures table (docs/world-models.md, docs/benchmarks.md) from scripts/eval_world.py's results
and the shipped files' training records.

    python3 scripts/world_figures.py [--evals /tmp/mumu-world-eval] [--work /tmp/mumu-world]

Reads every <name>.json eval_world.py wrote and the `mumu.world` metadata of models/shapes/*.safetensors (and
of the work folder's full fine-tunes), and prints a markdown table: per evaluated model the prompts, the
color-at-position rate over named shapes (1/2/3-shape prompts), the share of shapes whose kind shape_of names,
each style classifier's share of images, and the model's training steps, time and final loss.
"""
import argparse
import json
import os

from safetensors import safe_open

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = os.path.join(os.path.dirname(HERE), "models", "shapes")


def record(path):
    if not os.path.exists(path):
        return None
    if os.path.isdir(path):
        path = os.path.join(path, "mumu_world.json")
        return json.load(open(path)) if os.path.exists(path) else None
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
    return json.loads(meta["mumu.world"]) if "mumu.world" in meta else None


def model_file(args, work):
    """The model file an eval's mumu arguments name (its training record's source)."""
    if "--style" in args:
        return os.path.join(work, args[args.index("--style") + 1] + "-full.safetensors")
    return args[args.index("--checkpoint") + 1] if "--checkpoint" in args else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--evals", default="/tmp/mumu-world-eval")
    p.add_argument("--work", default="/tmp/mumu-world")
    a = p.parse_args()
    rows = []
    for name in sorted(os.listdir(a.evals)):
        if not name.endswith(".json"):
            continue
        r = json.load(open(os.path.join(a.evals, name)))
        if "shape_named" not in r:
            continue
        rec = record(model_file(r["args"], a.work) or "")
        by = r["by_shape_count"]
        train = f"{rec['steps']} steps, {rec['seconds'] / 60:.0f} min, loss {rec['loss']:.4f}" if rec else ""
        prompts = f"{r['prompts']}" + (f" ({r['multimodal']})" if r.get("multimodal") else "")
        if r.get("cfg", 7.0) != 7.0:
            prompts += f", cfg {r['cfg']:g}"
        styles = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["style_share"].items())
        first = r["first_shape"]
        rows.append(f"| {r['name']} | {prompts} | {100 * r['color_position']:.1f}% ({', '.join(f'{100 * by[k]:.0f}' for k in sorted(by))}) "
                    f"| {100 * r['shape_named']:.1f}% | {100 * first['color_position']:.0f}% / {100 * first['shape_named']:.0f}% "
                    f"| {styles} | {train} |")
    print("| model | prompts | color at position (1/2/3 shapes) | kind named | first shape: color / kind | style classifiers | training |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
