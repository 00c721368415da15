#!/usr/bin/env bash
# MUMU encoder figures (issue 15) on a full-size random Idefics2-8b (`mumu synth --arch idefics2-8b`, bf16), one
# 448x448 image plus about 20 words (~1,050 tokens), transformers in the same run on the same inputs:
#   transformers: vision model + modality projection + text model, bf16 (bench_encode_transformers.py);
#   mumu encode --precision bf16: the same plus the connector (a random one, from `mumu synth --arch mumu-decoder`).
#   scripts/bench_encode.sh [DIR]      (DIR default /tmp/mumu-bench-encode; 16 GB of weights are written there)
# env: MUMU (binary, default .build/release/mumu), THREADS (default 2). Needs torch + transformers for the peer.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/tmp/mumu-bench-encode}
mumu=${MUMU:-$(pwd)/.build/release/mumu}
threads=${THREADS:-2}
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
mkdir -p "$dir"
t() { /usr/bin/time -f "   %e s wall, %M KB max RSS" "$@"; }
[ -f "$dir/idefics2-8b/config.json" ] || t "$mumu" synth --arch idefics2-8b --dtype bf16 --seed 1 \
    --tokenizer Tests/MumuEncoderTests/Fixtures/tokenizer/tokenizer.json -o "$dir/idefics2-8b"
[ -f "$dir/connector.safetensors" ] || "$mumu" synth --arch mumu-decoder --components connector --dtype f16 --seed 2 -o "$dir/connector.safetensors" --quiet
python3 -c "
import numpy as np; from PIL import Image
Image.fromarray(np.random.default_rng(0).integers(0, 256, (448, 448, 3), dtype=np.uint8)).save('$dir/fox.png')"
prompt='a photo of <image:fox.png> a red fox sitting in the fresh snow under a pale winter sky at dusk, painted in oil with thick brush strokes'
echo "== bench_encode.sh $(date -u +%FT%TZ), $(nproc) cores, threads $threads, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "== transformers bf16 (vision + projection + text)"
t python3 scripts/bench_encode_transformers.py "$dir/idefics2-8b" "$dir/fox.png" "$prompt" 448 "$threads"
echo "== mumu encode bf16 (the same + the connector)"
(cd "$dir" && t "$mumu" encode "$prompt" --encoder idefics2-8b --decoder connector.safetensors --precision bf16 \
    --image-size 448 -o cond.safetensors --force)
