#!/usr/bin/env bash
# dq's launch order (head by head, against NSA_BWD_DQ_ORDER=row) on the GPU host, one short command:
#   source .gpu/boot.sh && bash dq-order-check.sh <staged .gpuwork dir> <out dir>
# dq-variants.mjs (every dq switch against the default, bit for bit), determinism.mjs and two
# extra-parity cases first; then bench.mjs --ops nsaFwdBwd at 64k, the default and
# NSA_BWD_DQ_ORDER=row alternating; then ncu's speed-of-light and memory sections of dq's kernel at 64k.
set -uo pipefail
work=$1; out=$(realpath "$2")
mkdir -p "$out"
cd "$work"
s=node_modules/@nsa/cuda/scripts
bench=node_modules/@nsa/cuda/bench/bench.mjs
(timeout 120 node $s/dq-variants.mjs > "$out/variants.log" 2>&1; echo "exit $?" >> "$out/variants.log") &
(timeout 120 node $s/determinism.mjs > "$out/det.log" 2>&1; echo "exit $?" >> "$out/det.log") &
(timeout 150 node $s/extra-parity.mjs --only "reg G=16 H=2 B=2" > "$out/extra.log" 2>&1; echo "exit $?" >> "$out/extra.log") &
wait
cat "$out/variants.log"; tail -n 2 "$out/det.log"
echo "extra-parity: rows ok $(grep -c '| yes |' "$out/extra.log"), failed $(grep -c '| NO |' "$out/extra.log"), $(tail -n 1 "$out/extra.log")"
for round in 1 2 3; do
  for v in default row; do
    if [[ $v == row ]]; then e=NSA_BWD_DQ_ORDER=row; else e=; fi
    echo "== $v"; env $e timeout 60 node $bench --ops nsaFwdBwd --T 65536 2>&1 | grep -E '^\| forward\+backward' || echo "bench failed"
  done
done
NSA_BWD_SHARED=0 timeout 90 ncu --clock-control none -k regex:nsaDqFragKernel --section SpeedOfLight --section MemoryWorkloadAnalysis \
  node $s/backward-profile.mjs --T 65536 --iters 1 > "$out/ncu-dq.log" 2>&1
grep -E 'Duration|Throughput|Hit Rate' "$out/ncu-dq.log"
