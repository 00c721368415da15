#!/usr/bin/env bash
# Builds mumu's libFuzzer targets with swiftc directly (no SwiftPM).
#
#   fuzz/build.sh [target...]      targets: safetensors pickle image tokenizer (default: all)
#
# Outputs (git-ignored): fuzz/build/<target>-fuzz
#
# How: every target is ONE Swift module (MumuFuzz) made of
#   - Sources/MumuTensor/*.swift and Sources/MumuFormats/**/*.swift, copied into
#     fuzz/build/src/ with their `import MumuTensor` / `import MumuFormats` lines removed
#     (they are the same module here);
#   - fuzz/EmbeddedFormatsStub.swift in place of the EmbeddedFormats.swift that the SwiftPM
#     build plugin generates (the parsers never read the architecture descriptors);
#   - the target's fuzz/<Name>Fuzz.swift, which defines LLVMFuzzerTestOneInput.
# `import CBLAS` (MumuTensor's BLASRuntime) resolves through Sources/CBLAS's module map (links OpenBLAS).
# `import CMumuKernels` stays: a module map in fuzz/build/cmodules/ points at
# Sources/CMumuKernels/include/mumu_kernels.h, and the C kernels are compiled with clang into
# objects (with AddressSanitizer) and linked in.
# The image and tokenizer targets add Sources/MumuEncoder/{Image,Tokenizer}/*.swift (imports of
# MumuSampler / MumuFormats removed) and fuzz/RGBImageStub.swift for MumuSampler's RGBImage; the CPNG and
# CJPEG shims resolve through their module maps and link the system libpng and libjpeg (not instrumented:
# what is fuzzed is our code around them, the shims' C included, the EXIF parser and the tokenizer reader).
# Swift is compiled with `-sanitize=fuzzer,address -O` (checked arithmetic, not the package's
# -Ounchecked, so overflows and out-of-range indices trap) in Swift 5 language mode, as the
# package builds. Uses the swiftc and clang on PATH (the Swift 6.3 toolchain); override with
# SWIFTC=... CLANG=... . Takes a couple of minutes per target; set JOBS=1 on a busy machine.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
SWIFTC="${SWIFTC:-swiftc}"
CLANG="${CLANG:-clang}"
JOBS="${JOBS:-1}"
out="$root/fuzz/build"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors pickle image tokenizer)

rm -rf "$out/src" "$out/src-encoder" "$out/cmodules" "$out/obj"
mkdir -p "$out/src" "$out/src-encoder" "$out/cmodules/CMumuKernels" "$out/cmodules/CMumuSystem" "$out/obj"

# 1. Library sources, flattened into one folder (names made unique by their path).
find Sources/MumuTensor Sources/MumuFormats -name '*.swift' | sort | while read -r f; do
    flat="$(echo "${f#Sources/}" | tr '/' '_')"
    sed -E '/^[[:space:]]*(@_exported[[:space:]]+)?import[[:space:]]+(MumuTensor|MumuFormats)[[:space:]]*$/d' "$f" >"$out/src/$flat"
done
if grep -q 'EmbeddedFormats' "$out"/src/*.swift; then cp fuzz/EmbeddedFormatsStub.swift "$out/src/"; fi
find Sources/MumuEncoder/Image Sources/MumuEncoder/Tokenizer -name '*.swift' | sort | while read -r f; do
    flat="$(echo "${f#Sources/}" | tr '/' '_')"
    sed -E '/^[[:space:]]*import[[:space:]]+(MumuTensor|MumuFormats|MumuSampler)[[:space:]]*$/d' "$f" >"$out/src-encoder/$flat"
done
cp fuzz/RGBImageStub.swift "$out/src-encoder/"

# 2. The C kernels and the signal handler (MumuFormats' AtomicFile), and module maps so `import CMumuKernels` and
#    `import CMumuSystem` resolve.
cat >"$out/cmodules/CMumuKernels/module.modulemap" <<MAP
module CMumuKernels {
    header "$root/Sources/CMumuKernels/include/mumu_kernels.h"
    header "$root/Sources/CMumuKernels/include/mumu_gemm.h"
    header "$root/Sources/CMumuKernels/include/mumu_attention.h"
    export *
}
MAP
cat >"$out/cmodules/CMumuSystem/module.modulemap" <<MAP
module CMumuSystem {
    header "$root/Sources/CMumuSystem/include/mumu_interrupt.h"
    header "$root/Sources/CMumuSystem/include/mumu_writeback.h"
    export *
}
MAP
objs=()
for c in Sources/CMumuKernels/*.c Sources/CMumuSystem/*.c; do
    o="$out/obj/$(basename "${c%.c}").o"
    "$CLANG" -c -O2 -g -fsanitize=address -fno-math-errno -I Sources/CMumuKernels/include -I Sources/CMumuSystem/include "$c" -o "$o"
    objs+=("$o")
done

# 3. One executable per target.
for t in "${targets[@]}"; do
    case "$t" in
        safetensors) main=fuzz/SafetensorsFuzz.swift ;;
        pickle) main=fuzz/PickleFuzz.swift ;;
        image) main=fuzz/ImageFuzz.swift ;;
        tokenizer) main=fuzz/TokenizerFuzz.swift ;;
        *) echo "unknown target '$t' (safetensors, pickle, image, tokenizer)" >&2; exit 2 ;;
    esac
    extra=()
    case "$t" in
        image|tokenizer)
            extra=("$out"/src-encoder/*.swift -I Sources/CPNG -I Sources/CJPEG -lpng16 -ljpeg) ;;
    esac
    echo "building fuzz/build/$t-fuzz"
    "$SWIFTC" -sanitize=fuzzer,address -parse-as-library -O -g -swift-version 5 \
        -module-name MumuFuzz -j"$JOBS" -use-ld=lld \
        -I "$out/cmodules/CMumuKernels" -I "$out/cmodules/CMumuSystem" -Xcc -I -Xcc Sources/CMumuKernels/include \
        -Xcc -I -Xcc Sources/CMumuSystem/include -I Sources/CBLAS \
        "$out"/src/*.swift "${extra[@]}" "$main" "${objs[@]}" \
        -o "$out/$t-fuzz"
done
