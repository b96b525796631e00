#!/usr/bin/env bash
# The backward's default against one switch (NSA_BWD_DQ_ORDER=row: dq's launch order), one short command:
#   source .gpu/boot.sh && bash dq-order-check.sh <staged .gpuwork dir> <out dir> [switch=NSA_BWD_DQ_ORDER=row] [rounds=3] [ncu kernel=nsaDqFragKernel]
# dq-variants.mjs (every dq switch against the default, bit for bit), determinism.mjs and extra-parity's
# "reg G=16 H=2 B=2" and "reg G=16 varlen" cases first; then bench.mjs --ops nsaFwdBwd at 64k, the default and the switch
# alternating; then ncu's speed-of-light and memory sections of one kernel at 64k, default then switch.
set -uo pipefail
work=$1; out=$(realpath "$2"); ab=${3:-NSA_BWD_DQ_ORDER=row}; rounds=${4:-3}; kernel=${5:-nsaDqFragKernel}
mkdir -p "$out"
cd "$work"
s=node_modules/@nsa/cuda/scripts
bench=node_modules/@nsa/cuda/bench/bench.mjs
(timeout 120 node $s/dq-variants.mjs > "$out/variants.log" 2>&1; echo "exit $?" >> "$out/variants.log") &
(timeout 120 node $s/determinism.mjs > "$out/det.log" 2>&1; echo "exit $?" >> "$out/det.log") &
(timeout 150 node $s/extra-parity.mjs --only "reg G=16 H=2 B=2" > "$out/extra.log" 2>&1; echo "exit $?" >> "$out/extra.log") &
(timeout 150 node $s/extra-parity.mjs --only "reg G=16 varlen" > "$out/extra2.log" 2>&1; echo "exit $?" >> "$out/extra2.log") &
wait
cat "$out/variants.log"; tail -n 2 "$out/det.log"
for x in extra extra2; do
  echo "$x-parity: rows ok $(grep -c '| yes |' "$out/$x.log"), failed $(grep -c '| NO |' "$out/$x.log"), $(tail -n 1 "$out/$x.log")"
done
for round in $(seq "$rounds"); do
  for e in "" "$ab"; do
    echo "== ${e:-default}"; env $e timeout 60 node $bench --ops nsaFwdBwd --T 65536 2>&1 | grep -E '^\| forward\+backward' || echo "bench failed"
  done
done
for e in "" "$ab"; do
  env NSA_BWD_SHARED=0 $e timeout 90 ncu --clock-control none -k regex:$kernel --section SpeedOfLight --section MemoryWorkloadAnalysis \
    node $s/backward-profile.mjs --T 65536 --iters 1 > "$out/ncu.log" 2>&1
  echo "== ncu ${e:-default}"; grep -E "$kernel|Duration|Throughput|Hit Rate" "$out/ncu.log"
done
