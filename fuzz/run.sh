#!/usr/bin/env bash
# Runs one fuzz target for a fixed time (one fuzzing process).
#
#   fuzz/run.sh safetensors|pickle [seconds]      (default 600)
#
# New inputs go to fuzz/work-corpus/<target>/ (git-ignored), crashes/timeouts/OOMs to
# fuzz/artifacts/<target>-*, the log to fuzz/fuzz-0.log (libFuzzer's name in -jobs mode),
# copied to fuzz/<target>-run.log.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
t="${1:?target: safetensors or pickle}"
secs="${2:-600}"
mkdir -p "work-corpus/$t" artifacts
rm -f fuzz-0.log
nice "./build/$t-fuzz" -dict="$t.dict" -max_total_time="$secs" -timeout=5 \
    -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 -use_value_profile=1 \
    -workers=1 -jobs=1 -print_final_stats=1 -artifact_prefix="artifacts/$t-" \
    "work-corpus/$t" "corpus/$t" >/dev/null 2>&1 || true
cp fuzz-0.log "$t-run.log"
grep -E "^#[0-9]+.*(INITED|DONE)|^(stat::|Done)|ERROR|SUMMARY|Test unit written|==[0-9]+==" "$t-run.log" || true
