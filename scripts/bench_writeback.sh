#!/usr/bin/env bash
# Writing a converted model to disk against the disk's own write rate (issue 13, item 4):
#   (a) dd of the same number of bytes with conv=fdatasync: what the disk takes for them, durably;
#   (b) mumu convert f16 -> bf16 to the same disk, with its writeback pacing off (MUMU_WRITEBACK=0) and on
#       (the default: the kernel is asked to write the output out every 64 MiB, so the final fsync is short).
# Both mumu runs end with fsync and a rename, as every mumu output. Runs alternate (off, on, off, on): figures on
# shared disks drift between minutes.
#
#   scripts/bench_writeback.sh [DIR]   (DIR default /tmp/mumu-bench: base.safetensors, made by mumu synth when missing)
# env: MUMU (binary, default .build/release/mumu), ROUNDS (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/mumu-bench}
mumu=${MUMU:-$(pwd)/.build/release/mumu}
rounds=${ROUNDS:-2}
mkdir -p "$dir"
[ -f "$dir/base.safetensors" ] || "$mumu" synth --arch sdxl-base --dtype f16 --seed 1 -o "$dir/base.safetensors" --quiet
out="$dir/writeback-out.safetensors"
bytes=$(stat -c %s "$dir/base.safetensors")
echo "== bench_writeback.sh $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), disk of $dir: $(df -h "$dir" | tail -1 | awk '{print $1, $2}')"
echo "== input $dir/base.safetensors, $bytes bytes (f16); warming the page cache"
cat "$dir/base.safetensors" > /dev/null
t() { /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB max RSS" "$@"; }
for r in $(seq "$rounds"); do
    echo "== round $r: dd of $bytes bytes, conv=fdatasync"
    dd if=/dev/zero of="$dir/writeback-dd.bin" bs=16M count=$(( (bytes + (16 << 20) - 1) / (16 << 20) )) conv=fdatasync 2>&1 | tail -1
    rm -f "$dir/writeback-dd.bin"
    for wb in 0 1; do
        echo "== round $r: mumu convert --dtype bf16, MUMU_WRITEBACK=$wb"
        MUMU_WRITEBACK=$wb t "$mumu" convert "$dir/base.safetensors" "$out" --dtype bf16 --force --quiet
        rm -f "$out"
    done
done
