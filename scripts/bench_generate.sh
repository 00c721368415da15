#!/usr/bin/env bash
# `mumu generate` figures (issue: mumu generate) on a full-size synthesized SDXL, diffusers in the same run:
#   - 512x512, 20 steps, euler, cfg 7, seed 42: diffusers' StableDiffusionXLPipeline f32 and bf16, mumu f32 and bf16
#     (whole process: load + text + 20 guided UNet steps + VAE), peak RSS of each, images compared;
#   - two LoRA styles (random rank-32 kohya LoRAs on every UNet transformer layer, scripts/bench_make_lora.py) in
#     one mumu run against one style alone (bf16).
#
#   scripts/bench_generate.sh [DIR]   (DIR default /tmp/mumu-bench; base.safetensors made with mumu synth when missing)
# env: MUMU (binary, default .build/release/mumu), THREADS (default 2), SIZE (512), STEPS (20), PRECISIONS ("f32 bf16":
# the runs made on both sides), LORAS (1; 0 skips the LoRA runs).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/mumu-bench}
mumu=${MUMU:-$(pwd)/.build/release/mumu}
threads=${THREADS:-2}
size=${SIZE:-512}
steps=${STEPS:-20}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
mkdir -p "$dir/generate"
out=$dir/generate
t() { /usr/bin/time -f "   %e s wall, %M KB max RSS" "$@"; }
prompt="a lighthouse on a cliff at dawn, oil painting, dramatic light"
[ -f "$dir/base.safetensors" ] || "$mumu" synth --arch sdxl-base --dtype f16 --seed 1 -o "$dir/base.safetensors" --quiet
precisions=${PRECISIONS:-f32 bf16}
loras=${LORAS:-1}
home=$out/home
if [ "$loras" != 0 ]; then
    for l in a b; do
        [ -f "$dir/lora-$l.safetensors" ] || python3 scripts/bench_make_lora.py "$dir/base.safetensors" "$dir/lora-$l.safetensors" 32 $([ $l = a ] && echo 1 || echo 2)
    done
    rm -rf "$home"
    "$mumu" styles add lora-a --from "$dir/lora-a.safetensors" --base "$dir/base.safetensors" --home "$home" --by-reference
    "$mumu" styles add lora-b --from "$dir/lora-b.safetensors" --base "$dir/base.safetensors" --home "$home" --by-reference
fi
echo "== bench_generate.sh $(date -u +%FT%TZ), $(nproc) cores, threads $threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== ${size}x${size}, $steps steps, euler, cfg 7, seed 42 (torch $(python3 -c 'import torch; print(torch.__version__)'), diffusers $(python3 -c 'import diffusers; print(diffusers.__version__)'))"
common=(--checkpoint "$dir/base.safetensors" --width "$size" --height "$size" --steps "$steps" --cfg 7 --seed 42 --sampler euler --force --quiet)
if [[ " $precisions " == *" f32 "* ]]; then
echo "== diffusers f32"
t python3 scripts/bench_generate_diffusers.py "$dir/base.safetensors" "$out/diffusers-f32.png" "$size" "$steps" 7 42 "$threads" f32 2>&1 | grep -v torchvision
echo "== mumu f32"
t "$mumu" generate "$prompt" "${common[@]}" --precision f32 -o "$out/mumu-f32.png" --json
python3 -c "
from PIL import Image; import numpy as np
a = np.asarray(Image.open('$out/mumu-f32.png')).astype(int); b = np.asarray(Image.open('$out/diffusers-f32.png')).astype(int)
print(f'   mumu f32 vs diffusers f32: max |diff| {abs(a - b).max()}/255, mean {abs(a - b).mean():.4f}')"
fi
if [[ " $precisions " == *" bf16 "* ]]; then
echo "== diffusers bf16"
t python3 scripts/bench_generate_diffusers.py "$dir/base.safetensors" "$out/diffusers-bf16.png" "$size" "$steps" 7 42 "$threads" bf16 2>&1 | grep -v torchvision
echo "== mumu bf16"
t "$mumu" generate "$prompt" "${common[@]}" --precision bf16 -o "$out/mumu-bf16.png" --json
fi
[ "$loras" != 0 ] || exit 0
echo "== mumu bf16, one LoRA style"
t "$mumu" generate "$prompt" "${common[@]}" --precision bf16 --home "$home" --style lora-a -o "$out/mumu-lora1.png" --json
echo "== mumu bf16, two LoRA styles in one run"
t "$mumu" generate "$prompt" "${common[@]}" --precision bf16 --home "$home" --style lora-a --style lora-b -o "$out/mumu-lora2.png" --json
python3 -c "
from PIL import Image; import numpy as np
a = np.asarray(Image.open('$out/mumu-lora1.png')).astype(int); b = np.asarray(Image.open('$out/mumu-lora2-lora-a.png')).astype(int)
print(f'   lora-a alone vs lora-a in the two-style run: max |diff| {abs(a - b).max()}/255')"
