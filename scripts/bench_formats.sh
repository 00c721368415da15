#!/usr/bin/env bash
# Benchmarks the loaders on a full-size synthesized SDXL checkpoint, with the Python peers measured in
# the same run on the same file (docs/benchmarks.md keeps the figures).
#   scripts/bench_formats.sh [WORKDIR]      (default /tmp/mumu-bench; needs ~7 GB there and ~7 GB in /dev/shm)
# Peers: Python `safetensors` (safe_open for the header, load_file + save_file for conversion) and
# `hashlib` (the way A1111 hashes: sha256 of the whole file in 1 MiB blocks). Conversion output goes to
# /dev/shm (tmpfs) for both tools, so the disk's write speed does not decide the figure.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/mumu-bench}
mkdir -p "$work"
swift build -c release --product mumu >/dev/null
mumu=.build/release/mumu
base=$work/sdxl-base-f16.safetensors
timeit() { /usr/bin/time -f "%e s wall, %M KB peak RSS" "$@"; }

echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(python3 -c 'import safetensors, torch; print("safetensors", safetensors.__version__, "torch", torch.__version__)')"
if [ ! -f "$base" ]; then
  echo "== synth (writes $base)"
  timeit $mumu synth --arch sdxl-base --dtype f16 --seed 1 -o "$base" --quiet
fi
ls -l "$base"
cat "$base" > /dev/null   # page cache

echo "== inspect, header only (best of 3)"
for i in 1 2 3; do timeit $mumu inspect "$base" > /dev/null; done
echo "-- peer: python safe_open + keys + metadata (best of 3)"
for i in 1 2 3; do timeit python3 -c "
from safetensors import safe_open
with safe_open('$base', 'np') as f: keys = list(f.keys()); meta = f.metadata()
"; done

echo "== hash from page cache (sha256 + autov1 + data sha256), cache disabled"
export MUMU_CACHE_DIR=$(mktemp -d)
timeit $mumu inspect --hash "$base" | grep -E "sha256|autov"
echo "-- second look (cached)"
timeit $mumu inspect --hash "$base" > /dev/null
echo "-- peer: python hashlib sha256 of the whole file, 1 MiB blocks"
timeit python3 -c "
import hashlib
h = hashlib.sha256()
with open('$base', 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''): h.update(block)
print(h.hexdigest()[:10])"

echo "== convert f16 -> bf16, whole file, to /dev/shm (twice: the first run after a read() pass over the file"
echo "   has been 2-3x slower here, in sys time, than runs after an mmap pass; both are reported)"
for i in 1 2; do
  timeit $mumu convert "$base" /dev/shm/mumu-bf16.safetensors --dtype bf16 --force --quiet
  rm -f /dev/shm/mumu-bf16.safetensors
done
echo "-- peer: python load_file + .to(bfloat16) + save_file"
timeit python3 -c "
import torch
from safetensors.torch import load_file, save_file
sd = load_file('$base')
for k in list(sd): sd[k] = sd[k].to(torch.bfloat16)
save_file(sd, '/dev/shm/py-bf16.safetensors', metadata={'format': 'pt'})"
rm -f /dev/shm/py-bf16.safetensors
