#!/usr/bin/env bash
# Benchmarks `mumu merge` against sd-mecha on the same full-size SDXL inputs in the same run, and checks
# that the two tools' outputs agree.
#
#   scripts/bench_merge.sh [--arch sdxl-base|sdxl-tiny] [DIR]
#       DIR default: /tmp/mumu-bench (sdxl-base), /tmp/mumu-bench-tiny (sdxl-tiny)
#   env: BENCH_ARCH (same as --arch), THREADS (default 2), KEEP_OUTPUTS=1 (keep the merged files),
#        RECIPES (default "add_difference ties": the recipes to run),
#        NO_WAIT=1 (do not wait for swift-build / swift-frontend to finish), MUMU (binary to use,
#        default .build/release/mumu; it is copied to DIR/mumu-bin first so a concurrent rebuild
#        cannot swap it mid-run; this script never builds)
#
# Steps
#   (a) inputs: DIR/base.safetensors (synth seed 1), ft1 = base + noise scale 0.01 (seed 2),
#       ft2 = base + noise scale 0.02 (seed 3), all f16; made with `mumu synth` if missing
#       (sdxl-base: ~6.9 GB each, ~40 s each).
#   (b) page cache warmed (cat > /dev/null) and its read bandwidth measured with dd bs=16M.
#   (c) timed under /usr/bin/time -v, THREADS threads, each recipe:
#         mumu, cold hash cache (fresh empty MUMU_CACHE_DIR: includes SHA-256 of the inputs)
#         mumu, warm hash cache (same MUMU_CACHE_DIR again)
#         sd-mecha (scripts/bench_merge_sdmecha.py: float32 merge, float16 output, threads=THREADS,
#                   torch.set_num_threads(THREADS))
#       recipes: add_difference  ft1 + 1.0 * (ft2 - base)
#                ties            base + 1.0 * ties_sum(ft1 - base, ft2 - base, density/k 0.3, count vote)
#       Before each run the inputs are cat'ed to the page cache again and their page-cache residency
#       (fincore) is recorded: on a 24 GB machine three 6.9 GB inputs plus a 6.9 GB output do not all
#       fit, so part of every run may come from the disk.
#   (d) mumu's and sd-mecha's outputs compared tensor by tensor (scripts/bench_merge_compare.py).
#   (e) summary table: wall, user, sys, max RSS, input GB / wall, and the dd bandwidth.
# Everything printed also goes to DIR/results.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

arch=${BENCH_ARCH:-sdxl-base}
dir=
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --arch=*) arch=${1#--arch=}; shift ;;
    -h|--help) sed -n 2,32p "$0"; exit 0 ;;
    *) dir=$1; shift ;;
  esac
done
if [ -z "$dir" ]; then
  if [ "$arch" = sdxl-base ]; then dir=/tmp/mumu-bench; else dir=/tmp/mumu-bench-$arch; fi
fi
threads=${THREADS:-2}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
results=$dir/results.txt
exec > >(tee "$results") 2>&1

say() { echo "$@"; }
hr() { echo "------------------------------------------------------------------------------------------"; }

if [ ! -x /usr/bin/time ]; then
  say "== installing GNU time"
  apt-get install -y time >/dev/null 2>&1 || { apt-get update >/dev/null 2>&1 && apt-get install -y time >/dev/null 2>&1; }
fi
[ -x /usr/bin/time ] || { say "error: /usr/bin/time missing"; exit 1; }

# ---------------------------------------------------------------------------------- quiet machine
busy() { pgrep -f 'swift-frontend|swift-build' >/dev/null 2>&1; }
wait_quiet() {
  [ "${NO_WAIT:-0}" = 1 ] && return
  local waited=0
  while true; do
    if busy; then
      [ $waited = 0 ] && say "== waiting for swift-build / swift-frontend to finish: $(pgrep -af 'swift-frontend|swift-build' | cut -c1-80 | head -3 | tr '\n' ';')"
      waited=1; sleep 30; continue
    fi
    sleep 30
    busy || break
  done
  [ $waited = 1 ] && say "== no swift-build / swift-frontend for 30 s, going on ($(date +%T))"
}

# background monitor: every 2 s, note swift compiler processes and the load average
monitor_log=$dir/monitor.log
: > "$monitor_log"
(
  while true; do
    s=$(pgrep -f 'swift-frontend|swift-build' | wc -l)
    echo "$(date +%s) swift=$s load=$(cut -d' ' -f1 /proc/loadavg)" >> "$monitor_log"
    sleep 2
  done
) &
monitor_pid=$!
trap 'kill $monitor_pid 2>/dev/null' EXIT

# lines "swift=N" seen between two epoch seconds -> "none" or the max count and samples
others_between() {
  awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b { split($2, s, "="); n++; if (s[2] > 0) { hit++; if (s[2] > mx) mx = s[2] } }
    END { if (hit) printf "swift procs in %d/%d samples (max %d)", hit, n, mx; else printf "none (%d samples)", n }' "$monitor_log"
}

# ---------------------------------------------------------------------------------- binary
src_bin=${MUMU:-.build/release/mumu}
for i in $(seq 1 20); do [ -x "$src_bin" ] && break; say "waiting for $src_bin to appear"; sleep 60; done
[ -x "$src_bin" ] || { say "error: no $src_bin"; exit 1; }
wait_quiet
mumu=$dir/mumu-bin
cp "$src_bin" "$mumu"

say "== bench_merge.sh, $(date -u +%FT%TZ), arch $arch, threads $threads, dir $dir"
say "== machine: $(nproc) cores ($(lscpu | sed -n 's/^Model name: *//p')), $(free -g | awk '/Mem:/ {print $2}') GiB RAM, $(df -h "$dir" | awk 'NR==2 {print $4}') free on $(df "$dir" | awk 'NR==2 {print $1}')"
say "== mumu: $($mumu --version 2>&1), git $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- Sources Package.swift 2>/dev/null || echo ' (working tree differs in Sources)'), binary $(sha256sum "$mumu" | cut -c1-12) mtime $(date -r "$src_bin" +%FT%T)"
say "== peers: $(python3 -c 'import sd_mecha, torch, safetensors, importlib.metadata as m; print("sd-mecha", m.version("sd-mecha"), "torch", torch.__version__, "safetensors", safetensors.__version__)')"

# ---------------------------------------------------------------------------------- (a) inputs
base=$dir/base.safetensors ft1=$dir/ft1.safetensors ft2=$dir/ft2.safetensors
synth() {  # name seed [perturb scale]
  local out=$dir/$1.safetensors
  if [ -f "$out" ]; then return; fi
  local extra=()
  [ $# -ge 4 ] && extra=(--perturb "$3" --scale "$4")
  say "== synth $1 (seed $2${3:+, perturb $(basename "$3") scale $4})"
  /usr/bin/time -f "   %e s wall, %M KB max RSS" "$mumu" synth --arch "$arch" --dtype f16 --seed "$2" "${extra[@]}" \
    -o "$out.part" --quiet --force --threads "$threads" && mv "$out.part" "$out"
}
synth base 1
synth ft1 2 "$base" 0.01
synth ft2 3 "$base" 0.02
for f in "$base" "$ft1" "$ft2"; do
  [ -f "$f" ] || { say "error: $f missing"; exit 1; }
  a=$("$mumu" inspect "$f" 2>/dev/null | sed -n 's/^ *architecture *//p' | head -1)
  say "   $(basename "$f"): $(stat -c %s "$f") bytes, $a"
  case "$a" in "$arch"*) ;; *) say "error: $f is not $arch (delete DIR or pass another DIR)"; exit 1 ;; esac
done
in_bytes=$(( $(stat -c %s "$base") + $(stat -c %s "$ft1") + $(stat -c %s "$ft2") ))
in_gb=$(awk -v b=$in_bytes 'BEGIN { printf "%.2f", b / 1e9 }')
say "   inputs read per merge: $in_gb GB (all three files)"

# ---------------------------------------------------------------------------------- (b) page cache
warm() { cat "$base" "$ft1" "$ft2" > /dev/null; }
resident() {  # percent of the inputs in the page cache
  fincore -b -n -o RES,SIZE "$base" "$ft1" "$ft2" 2>/dev/null |
    awk '{ r += $1; s += $2 } END { if (s) printf "%.0f%%", 100 * r / s; else printf "?" }'
}
say "== page cache"
warm; warm
say "   inputs resident after warming: $(resident); $(free -m | awk '/Mem:/ {printf "RAM used %d MB, buff/cache %d MB, available %d MB", $3, $6, $7}')"
dd_gbs=
for i in 1 2 3; do
  line=$(dd if="$base" of=/dev/null bs=16M 2>&1 | tail -1)
  gbs=$(echo "$line" | awk -F', ' '{ split($1, b, " "); split($3, t, " "); printf "%.2f", b[1] / t[1] / 1e9 }')
  say "   dd if=base.safetensors of=/dev/null bs=16M: $line  -> $gbs GB/s"
  dd_gbs="$dd_gbs $gbs"
done
dd_best=$(echo $dd_gbs | tr ' ' '\n' | sort -g | tail -1)
say "   page-cache read bandwidth (best of 3, 1 thread): $dd_best GB/s"

# ---------------------------------------------------------------------------------- (c) runs
declare -a rows=()
timed() {  # label recipe cache outfile -- command...
  local label=$1 recipe=$2 cache=$3 out=$4; shift 5
  rm -f "$out"
  warm
  local res; res=$(resident)
  local tv=$dir/time-$label-$recipe-$cache.txt
  local t0 t1 rc
  say "-- $label $recipe${cache:+ (hash cache $cache)}: inputs resident $res, $(free -m | awk '/Mem:/ {printf "available %d MB", $7}'), load $(cut -d' ' -f1 /proc/loadavg)"
  say "   \$ $*"
  t0=$(date +%s)
  local log=$dir/log-$label-$recipe-$cache.txt
  /usr/bin/time -v -o "$tv" "$@" > "$log" 2>&1
  rc=$?
  t1=$(date +%s)
  sed 's/^/   | /' "$log"
  local note=""
  note=$(sed -n 's/.*merge() \([0-9.]*\) s.*/sd_mecha.merge() alone \1 s/p' "$log" | head -1)
  local wall user sys rss majf
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$tv")
  user=$(awk -F': ' '/User time/ { print $2 }' "$tv")
  sys=$(awk -F': ' '/System time/ { print $2 }' "$tv")
  rss=$(awk -F': ' '/Maximum resident set size/ { printf "%.0f", $2 / 1024 }' "$tv")
  majf=$(awk -F': ' '/Major \(requiring I\/O\) page faults/ { print $2 }' "$tv")
  # block reads charged to the process (512-byte units): input pages that were not in the page cache
  local disk; disk=$(awk -F': ' '/File system inputs/ { printf "%.1f", $2 * 512 / 1e9 }' "$tv")
  local cpu; cpu=$(awk -F': ' '/Percent of CPU/ { print $2 }' "$tv")
  local sig; sig=$(grep -o 'Command terminated by signal [0-9]*' "$tv")
  local others; others=$(others_between "$t0" "$t1")
  local gbs; gbs=$(awk -v b=$in_bytes -v w="$wall" 'BEGIN { if (w > 0) printf "%.2f", b / 1e9 / w; else print "-" }')
  local status=ok
  if [ $rc != 0 ]; then status="FAILED rc=$rc${sig:+ ($sig)}"; fi
  say "   rc $rc${sig:+ ($sig)}: wall $wall s, user $user s, sys $sys s, max RSS $rss MB, CPU $cpu, major faults $majf, $disk GB read from disk, $gbs GB/s of input; other builds during the run: $others"
  [ -f "$out" ] && say "   output $(basename "$out"): $(stat -c %s "$out") bytes"
  rows+=("$label|$recipe|${cache:--}|$wall|$user|$sys|$rss|$in_gb|$gbs|$disk|$status${note:+, $note}|$res|$others")
  return $rc
}

wait_quiet
say "== runs (threads $threads)"
declare -a agreement=()
for recipe in ${RECIPES:-add_difference ties}; do
  hr
  mout=$dir/out-mumu-$recipe.safetensors
  sout=$dir/out-sdmecha-$recipe.safetensors
  if [ $recipe = add_difference ]; then
    margs=(merge --method add_difference --a "$ft1" --b "$ft2" --c "$base" --alpha 1.0)
  else
    margs=(merge --method ties --base "$base" --models "$ft1,$ft2" --density 0.3 --vote count)
  fi
  cache_dir=$(mktemp -d "$dir/hashcache.XXXX")
  export MUMU_CACHE_DIR=$cache_dir
  timed mumu $recipe cold "$mout" -- "$mumu" "${margs[@]}" -o "$mout" --force --threads "$threads" --quiet
  say "   hash cache after the cold run: $(ls "$cache_dir" | tr '\n' ' ')"
  timed mumu $recipe warm "$mout" -- "$mumu" "${margs[@]}" -o "$mout" --force --threads "$threads" --quiet
  unset MUMU_CACHE_DIR
  rm -rf "$cache_dir"
  timed sd-mecha $recipe "" "$sout" -- python3 scripts/bench_merge_sdmecha.py $recipe "$dir" "$sout" --threads "$threads"
  say "-- compare $recipe: mumu (warm-cache run) vs sd-mecha, per tensor"
  if [ -f "$mout" ] && [ -f "$sout" ]; then
    ctxt=$dir/compare-$recipe.txt
    /usr/bin/time -f "(compare: %e s wall, %M KB max RSS)" python3 scripts/bench_merge_compare.py "$mout" "$sout" --max-ulp 1 > "$ctxt" 2>&1
    sed 's/^/   /' "$ctxt"
    agreement+=("$recipe: $(grep -E '^max abs diff' "$ctxt" | head -1); $(grep -E '^elements' "$ctxt" | head -1); $(grep -E '^(AGREE|DISAGREE)' "$ctxt")")
  else
    say "   skipped: an output is missing"
    agreement+=("$recipe: not compared (an output is missing)")
  fi
  if [ "${KEEP_OUTPUTS:-0}" != 1 ]; then rm -f "$mout" "$sout"; fi
done

# ---------------------------------------------------------------------------------- (e) summary
hr
say "== summary: arch $arch, $(nproc) cores, threads $threads, inputs $in_gb GB per merge (base + ft1 + ft2, f16), output f16"
say "   page-cache read bandwidth (dd bs=16M, 1 thread): $dd_best GB/s (runs:$dd_gbs)"
printf "%-9s %-15s %-6s %9s %9s %8s %10s %9s %8s %8s  %s\n" tool recipe hash "wall s" "user s" "sys s" "maxRSS MB" "input GB" "GB/s" "disk GB" "status / inputs resident before / other builds"
for r in "${rows[@]}"; do
  IFS='|' read -r t rc c w u s m g b dk st res oth <<< "$r"
  printf "%-9s %-15s %-6s %9s %9s %8s %10s %9s %8s %8s  %s\n" "$t" "$rc" "$c" "$w" "$u" "$s" "$m" "$g" "$b" "$dk" "$st / $res / $oth"
done
say "   (hash: mumu's SHA-256 cache of its inputs, cold = empty MUMU_CACHE_DIR; GB/s = input GB / wall;"
say "    disk GB: block reads charged to the run (inputs evicted from the page cache, e.g. by the output"
say "    pages or the tool's own memory); maxRSS counts mapped file pages too)"
say "== output agreement (mumu vs sd-mecha, f16 outputs)"
for a in "${agreement[@]}"; do say "   $a"; done
say "== results written to $results"
