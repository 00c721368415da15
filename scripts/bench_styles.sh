#!/usr/bin/env bash
# Style registry figures (issue: style registry) on full-size synthesized SDXL:
#   - lossless delta size against the full checkpoint, and bit-exact reconstruction (materialize + cmp);
#   - rank-64 LoRA style size and its relative error against the true delta;
#   - resolving and applying a LoRA style to a resident base against loading the checkpoint cold;
#   - `mumu styles list` with 1,000 registered styles.
#
#   scripts/bench_styles.sh [DIR]     (DIR default /tmp/mumu-bench; base.safetensors and ft1.safetensors are
#                                      made by scripts/bench_merge.sh, or here with mumu synth when missing)
# env: MUMU (binary, default .build/release/mumu), THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/mumu-bench}
mumu=${MUMU:-$(pwd)/.build/release/mumu}
threads=${THREADS:-2}
mkdir -p "$dir"
home=$dir/styles-home
rm -rf "$home"
export MUMU_CACHE_DIR=$dir/hash-cache
t() { /usr/bin/time -f "   %e s wall, %M KB max RSS" "$@"; }

[ -f "$dir/base.safetensors" ] || "$mumu" synth --arch sdxl-base --dtype f16 --seed 1 -o "$dir/base.safetensors" --quiet
[ -f "$dir/ft1.safetensors" ] || "$mumu" synth --arch sdxl-base --dtype f16 --seed 2 --perturb "$dir/base.safetensors" --scale 0.01 -o "$dir/ft1.safetensors" --quiet
full=$(stat -c %s "$dir/ft1.safetensors")
echo "== bench_styles.sh $(date -u +%FT%TZ), $(nproc) cores, threads $threads; full checkpoint $full bytes"

echo "== lossless delta: styles add ft1 --base base"
t "$mumu" styles add ft1-delta --from "$dir/ft1.safetensors" --base "$dir/base.safetensors" --home "$home" --threads "$threads"
size=$("$mumu" styles list --json --home "$home" | python3 -c "import json,sys; print([s['size'] for s in json.load(sys.stdin)['styles'] if s['name']=='ft1-delta'][0])")
python3 -c "print(f'   delta {$size} bytes = {100*$size/$full:.1f}% of the full checkpoint (floor: at most 60%)')"
echo "== materialize the delta and compare with ft1"
t "$mumu" styles materialize ft1-delta --base "$dir/base.safetensors" -o "$dir/ft1-rebuilt.safetensors" --force --home "$home" --threads "$threads"
python3 - "$dir/ft1.safetensors" "$dir/ft1-rebuilt.safetensors" <<'PY'
import sys
from safetensors import safe_open
a, b = (safe_open(p, "np") for p in sys.argv[1:3])
keys = sorted(a.keys()); assert keys == sorted(b.keys()), "key sets differ"
diff = [k for k in keys if a.get_tensor(k).tobytes() != b.get_tensor(k).tobytes()]
print(f"   {len(keys)} tensors compared byte for byte: {len(diff)} differ" + ("" if diff else " (bit-exact)"))
PY
rm -f "$dir/ft1-rebuilt.safetensors"

echo "== rank-64 LoRA style: styles add ft1 --base base --rank 64"
t "$mumu" styles add ft1-r64 --from "$dir/ft1.safetensors" --base "$dir/base.safetensors" --rank 64 --home "$home" --threads "$threads"
size=$("$mumu" styles list --json --home "$home" | python3 -c "import json,sys; print([s['size'] for s in json.load(sys.stdin)['styles'] if s['name']=='ft1-r64'][0])")
python3 -c "print(f'   rank-64 style {$size} bytes = {100*$size/$full:.2f}% of the full checkpoint (floor: at most 5%)')"

echo "== resolve + apply the LoRA style to a resident base vs loading the base cold"
"$mumu" bench style-apply --base "$dir/base.safetensors" --style ft1-r64 --home "$home"

echo "== styles list with 1,000 styles"
python3 - "$home" <<'PY'
import json, os, sys
home = sys.argv[1]
src = json.load(open(os.path.join(home, "styles", "ft1-delta.json")))
for i in range(1000 - len(os.listdir(os.path.join(home, "styles")))):
    m = dict(src, name=f"style-{i:04d}", title=f"Style {i}")
    json.dump(m, open(os.path.join(home, "styles", f"style-{i:04d}.json"), "w"), indent=2)
print(f"   {len(os.listdir(os.path.join(home, 'styles')))} manifests")
PY
for i in 1 2 3; do t "$mumu" styles list --home "$home" > /dev/null; done
