#!/usr/bin/env bash
# Decoder figures (issue: the SDXL decoder in Swift) on a full-size synthesized SDXL, diffusers in the same run:
#   - the GEMM rates of this machine (OpenBLAS sgemm, mumu's bf16 kernel) on SDXL shapes;
#   - one UNet evaluation at 512x512 and 1024x1024, batch 2 (a classifier-free guidance step), f32 and bf16,
#     mumu and diffusers on the same inputs, outputs compared;
#   - VAE decode at 1024x1024; both text encoders on one prompt.
#
#   scripts/bench_decoder.sh [DIR] [SIZES]   (DIR default /tmp/mumu-bench, base.safetensors made with mumu synth
#                                             when missing; SIZES default "512 1024")
# env: MUMU (binary, default .build/release/mumu), THREADS (default 2), PRECISIONS (default "f32 bf16": the UNet
# precisions run on both sides; PEER_PRECISIONS overrides diffusers' own), REPEATS (default 2: evaluations each, the best reported), VAE and TEXT (default 1;
# 0 skips the VAE decode and the text encoders), VAE_PRECISIONS (default f32; "f32 bf16" decodes in both, each side). Needs torch + diffusers for the peer. On CPUs without AVX-512-BF16
# torch's bf16 runs at a fraction of its f32 (21 against 118 GFLOP/s on an AVX2 AMD EPYC): PRECISIONS=f32 at 1024.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/mumu-bench}
sizes=${2:-512 1024}
mumu=${MUMU:-$(pwd)/.build/release/mumu}
threads=${THREADS:-2}
export PRECISIONS=${PRECISIONS:-f32 bf16} REPEATS=${REPEATS:-2}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
mkdir -p "$dir"
t() { /usr/bin/time -f "   %e s wall, %M KB max RSS" "$@"; }
[ -f "$dir/base.safetensors" ] || "$mumu" synth --arch sdxl-base --dtype f16 --seed 1 -o "$dir/base.safetensors" --quiet
echo "== bench_decoder.sh $(date -u +%FT%TZ), $(nproc) cores, threads $threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== GEMM rates on SDXL shapes (mumu bench gemm)"
"$mumu" bench gemm --repeat 3
for size in $sizes; do
    # Analytic FLOPs of one SDXL UNet pass (docs/benchmarks.md), times the batch of 2; mumu prints what it counted.
    flops=$(python3 -c "print(2 * {512: 1.59e12, 1024: 6.76e12}.get($size, 0))")
    echo "== UNet ${size}x${size}, batch 2: diffusers (torch $(python3 -c 'import torch; print(torch.__version__)'), f32 then bf16)"
    FLOPS=$flops PRECISIONS="${PEER_PRECISIONS:-$PRECISIONS}" t python3 scripts/bench_decoder_diffusers.py "$dir/base.safetensors" "$dir" "$size" 2 "$threads"
    for precision in $PRECISIONS; do
        echo "== UNet ${size}x${size}, batch 2: mumu $precision"
        t "$mumu" bench unet "$dir/base.safetensors" --size "$size" --batch 2 --precision $precision --repeat "$REPEATS" \
            --inputs "$dir/inputs-$size.safetensors" --save-output "$dir/mumu-$precision-$size.safetensors"
    done
    python3 scripts/bench_compare_outputs.py "mumu f32 vs diffusers f32 ($size)" "$dir/diffusers-f32-$size.safetensors" "$dir/mumu-f32-$size.safetensors"
    if [[ " $PRECISIONS " == *" bf16 "* ]]; then
        python3 scripts/bench_compare_outputs.py "mumu bf16 vs mumu f32 ($size)" "$dir/mumu-f32-$size.safetensors" "$dir/mumu-bf16-$size.safetensors"
        if [[ " ${PEER_PRECISIONS:-$PRECISIONS} " == *" bf16 "* ]]; then
            python3 scripts/bench_compare_outputs.py "diffusers bf16 vs diffusers f32 ($size)" "$dir/diffusers-f32-$size.safetensors" "$dir/diffusers-bf16-$size.safetensors"
        fi
    fi
done
if [ "${VAE:-1}" != 0 ]; then
    for precision in ${VAE_PRECISIONS:-f32}; do
        echo "== VAE decode 1024x1024 ($precision): diffusers, then mumu"
        VAE_PRECISION=$precision t python3 scripts/bench_decoder_diffusers.py vae "$dir/base.safetensors" 1024 "$threads"
        t "$mumu" bench vae "$dir/base.safetensors" --size 1024 --repeat 2 --precision $precision
    done
fi
if [ "${TEXT:-1}" != 0 ]; then
    echo "== text encoders on one prompt (CLIP-L + bigG), mumu f32"
    t "$mumu" bench text "$dir/base.safetensors" --repeat 3
fi
