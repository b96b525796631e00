#!/usr/bin/env bash
# The NSA backward's dq at 64k on the GPU host, one command: where its time goes, and A/B of dq variants.
#   source .gpu/boot.sh && bash dq-profile.sh <staged .gpuwork dir> <out dir> [variant ...]
# A variant is a ','-separated env list (e.g. NSA_BWD_DQ_RING=2,NSA_BWD_DQ_FORCED=0), compared with the default.
# In order (logs written under <out dir> as they come, a short summary in summary.txt):
# 1. parity of each variant (extra-parity's "reg G=16" bfloat16 cases, determinism.mjs) in the background,
#    beside dq-variants.mjs (each switch bit-equal to the default where it must be); waited for before timing.
# 2. bench.mjs --ops nsaFwdBwd at 64k: the default and each variant in alternating processes, ROUNDS times.
# 3. ncu, dq as its own launch (NSA_BWD_SHARED=0), one process: time, L2 bytes, hit rate, L2 and SM
#    throughput under the default, each variant and NSA_BWD_DQ_SKIP=1/2/4/8/15 (the compressed walk, the
#    window walk, the forced-block walk, the selected rings, all of them left out: their shares; profiling only).
# 4. bench at 16k: the default, each variant, the default.
# 5. ncu: every kernel of one default backward (two launches), then the default dq launch's SpeedOfLight,
#    memory, warp-state and occupancy sections.
# Switches: PARITY=0, SKIPS=0 (no NSA_BWD_DQ_SKIP profiles), ROUNDS=<n> (64k rounds, default 2), KERNELS=0 (no step 5).
set -uo pipefail
work=$1; out=$(realpath "$2"); shift 2
variants=("$@")
mkdir -p "$out"
cd "$work"
bench=node_modules/@nsa/cuda/bench/bench.mjs
prof=node_modules/@nsa/cuda/scripts/backward-profile.mjs
summary=$out/summary.txt
say() { echo "$*" | tee -a "$summary"; }
# Parity of each variant against the float64 reference (CPU-heavy; runs beside dq-variants, waited for
# before any timing): extra-parity's "reg G=16" cases (bfloat16) and determinism (PARITY=0 skips them).
extra=node_modules/@nsa/cuda/scripts/extra-parity.mjs
if [[ ${PARITY:-1} == 1 ]]; then
  for v in "${variants[@]}"; do
    tag=${v//[^A-Za-z0-9]/_}
    for c in "varlen D=64 bfloat16" "H=2 B=2 D=128 bfloat16" "defaults T=2000 D=64 bfloat16" "supplied blockIndices D=128 bfloat16"; do
      (env ${v//,/ } timeout 240 node $extra --only "reg G=16 $c" > "$out/parity-$tag-${c//[^A-Za-z0-9]/_}.log" 2>&1 || echo "exited with $?" >> "$out/parity-$tag-${c//[^A-Za-z0-9]/_}.log") &
    done
    (env ${v//,/ } timeout 120 node node_modules/@nsa/cuda/scripts/determinism.mjs > "$out/det-$tag.log" 2>&1 || echo "exited with $?" >> "$out/det-$tag.log") &
  done
fi
say "== $(date -u +%H:%M:%S) dq-variants"
timeout 90 node node_modules/@nsa/cuda/scripts/dq-variants.mjs 2>&1 | tee -a "$summary"
row() {  # label, T, env list (comma-separated or empty)
  local label=$1 T=$2 envs=${3:-}
  local r
  r=$(env ${envs//,/ } timeout 90 node $bench --ops nsaFwdBwd --T "$T" 2>&1 | grep -E '^\| forward\+backward' || echo "bench failed")
  say "$label T=$T: $r"
}
say "== $(date -u +%H:%M:%S) waiting for parity"
wait
for f in "$out"/parity-*.log; do
  [[ -f $f ]] && say "$(basename "$f"): rows ok $(grep -c '| yes |' "$f"), failed $(grep -c '| NO |' "$f") $(grep -h 'exited with' "$f")"
done
for f in "$out"/det-*.log; do [[ -f $f ]] && say "$(basename "$f"): $(tail -n 2 "$f" | tr '\n' ' ')"; done
grep -h '| NO |' "$out"/parity-*.log 2>/dev/null | head -10 | tee -a "$summary"
say "== $(date -u +%H:%M:%S) bench 64k"
for round in $(seq ${ROUNDS:-2}); do
  row default 65536
  for v in "${variants[@]}"; do row "$v" 65536 "$v"; done
done
list="default"
for v in "${variants[@]}"; do list="$list;$v"; done
[[ ${SKIPS:-1} == 1 ]] && list="$list;NSA_BWD_DQ_SKIP=1;NSA_BWD_DQ_SKIP=2;NSA_BWD_DQ_SKIP=4;NSA_BWD_DQ_SKIP=8;NSA_BWD_DQ_SKIP=15"
say "== $(date -u +%H:%M:%S) ncu dq variants: $list"
NSA_BWD_SHARED=0 timeout 150 ncu --clock-control none -k regex:nsaDqFrag \
  --metrics gpu__time_duration.sum,lts__t_bytes.sum,lts__t_sector_hit_rate.pct,lts__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed \
  node $prof --T 65536 --iters 1 --variants "$list" > "$out/ncu-dq.log" 2>&1
grep -E 'nsaDqFrag|gpu__time|lts__|dram__|sm__thr|iteration' "$out/ncu-dq.log" | sed 's/  */ /g' | tee -a "$summary"
say "== $(date -u +%H:%M:%S) bench 16k"
row default 16384
for v in "${variants[@]}"; do row "$v" 16384 "$v"; done
row default 16384
if [[ ${KERNELS:-1} == 1 ]]; then
say "== $(date -u +%H:%M:%S) ncu every kernel, default, two launches"
NSA_BWD_SHARED=0 timeout 100 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
  node $prof --T 65536 --iters 1 > "$out/ncu-kernels.log" 2>&1
grep -E '^ +[a-zA-Z_].*\(|gpu__time_duration' "$out/ncu-kernels.log" | sed 's/  */ /g' | tee -a "$summary"
say "== $(date -u +%H:%M:%S) ncu sections, default dq"
NSA_BWD_SHARED=0 timeout 120 ncu --clock-control none -k regex:nsaDqFrag -c 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
  --section WarpStateStats --section Occupancy node $prof --T 65536 --iters 1 > "$out/ncu-sections.log" 2>&1
grep -vE '^==PROF|^ *$' "$out/ncu-sections.log" | tail -80 >> "$summary"
fi
say "== $(date -u +%H:%M:%S) done"
