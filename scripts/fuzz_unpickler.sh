#!/usr/bin/env bash
# Builds a libFuzzer binary around `fuzzUnpickle` (the restricted .ckpt unpickler) with
# AddressSanitizer and overflow checks on, seeds it with the data.pkl of every ckpt fixture,
# and runs it.   usage: scripts/fuzz_unpickler.sh [seconds, default 120]
# The unpickler's files are compiled as one module (with DType and FormatError), so this needs
# only swiftc, not the package's system libraries. Crashes land in $FUZZ_DIR (crash-*).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${FUZZ_DIR:-/tmp/mumu-fuzz-unpickler}
mkdir -p "$work/src" "$work/corpus"
for f in Unpickler PickleValue PickleGlobal; do
  sed '/^import MumuTensor$/d' "$root/Sources/MumuFormats/Checkpoint/$f.swift" > "$work/src/$f.swift"
done
cp "$root/Sources/MumuFormats/FormatError.swift" "$root/Sources/MumuTensor/DType.swift" "$work/src/"
cat > "$work/src/Entry.swift" <<'EOF'
@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzUnpickle(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
EOF
python3 - "$root/Tests/MumuFormatsTests/Fixtures/ckpt" "$work/corpus" <<'EOF'
import os, shutil, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
for name in os.listdir(src):
    path = os.path.join(src, name)
    if name.endswith(".pkl"):
        shutil.copy(path, dst)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            for entry in z.namelist():
                if entry.endswith("/data.pkl") and z.getinfo(entry).compress_type == zipfile.ZIP_STORED:
                    open(os.path.join(dst, name + ".pkl"), "wb").write(z.read(entry))
EOF
swiftc -parse-as-library -sanitize=fuzzer,address -O "$work"/src/*.swift -o "$work/fuzz"
cd "$work"
./fuzz corpus -max_len=8192 -timeout=5 -rss_limit_mb=2048 -max_total_time="${1:-120}" -print_final_stats=1
