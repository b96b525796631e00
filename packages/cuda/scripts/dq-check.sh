#!/usr/bin/env bash
# The NSA backward's dq check on the GPU host, one command (dq's forced blocks read once per block,
# 3-stage selected rings; BENCHMARKS.md "v12 — NSA backward"):
#   source .gpu/boot.sh && bash dq-check.sh <staged .gpuwork dir> <out dir> [Ts=65536]
# 1. Parity and determinism, before any timing: extra-parity's "reg G=16" and "split" cases, the test/
#    grid's cases that take the register backward (G = 16, D 64/128, both 16-bit dtypes; paper defaults), determinism.mjs; the default, and v9's dq (NSA_BWD_DQ_FORCED=0
#    NSA_BWD_DQ_RING=2) for extra-parity and determinism.
# 2. bench.mjs --ops nsaFwdBwd: the default, v9, and each switch alone, alternating processes (drift),
#    then the default and v9 at 16k.
# 3. ncu kernel times of one backward at 64k as two launches (NSA_BWD_SHARED=0), default and v9.
set -uo pipefail
work=$1; out=$(realpath "$2"); Ts=${3:-65536}
mkdir -p "$out"
cd "$work"
extra=node_modules/@nsa/cuda/scripts/extra-parity.mjs
det=node_modules/@nsa/cuda/scripts/determinism.mjs
bench=node_modules/@nsa/cuda/bench/bench.mjs
prof=node_modules/@nsa/cuda/scripts/backward-profile.mjs
v9="NSA_BWD_DQ_FORCED=0 NSA_BWD_DQ_RING=2"
bg() { local log=$1; shift; (timeout 300 env "$@" > "$out/$log" 2>&1 || echo "exited with $?" >> "$out/$log") & }
for d in bfloat16 float16; do
  bg "extra-reg-$d.log" node $extra --only "reg G=16" 
  bg "extra-v9-reg-$d.log" $v9 node $extra --only "reg G=16"
done
bg extra-split.log node $extra --only "split key lists"
bg det.log node $det
bg det-v9.log $v9 node $det
runner=node_modules/@nsa/test/dist/run-parity.js
for d in bfloat16 float16; do
  for D in 64 128; do bg "grid-$D-$d.log" node $runner --backend cuda --scale gpu --dtypes $d --only "G=16 HQ=16 Dk=$D Dv=$D T=1024 $d"; done
done
bg grid-paper.log node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "paper defaults T=4096 bfloat16"
wait
for f in "$out"/extra-*.log "$out"/grid-*.log; do
  echo "$(basename "$f"): rows ok $(grep -c '| yes |' "$f"), failed $(grep -c '| NO |' "$f") $(grep -h 'exited with' "$f")"
done
echo "determinism: $(tail -n 2 "$out/det.log" | tr '\n' ' ') / v9: $(tail -n 2 "$out/det-v9.log" | tr '\n' ' ')"
grep -h '| NO |' "$out"/extra-*.log "$out"/grid-*.log | head -20
nvidia-smi --query-gpu=name,utilization.gpu,memory.used --format=csv,noheader
run() {  # label, env assignments ...
  local label=$1; shift
  echo "== $label"
  env "$@" timeout 120 node $bench --ops nsaFwdBwd --T "${T:-$Ts}" 2>&1 | grep -E '^\| forward\+backward' || echo "bench failed"
}
for round in 1 2; do
  run default
  run "v9 dq ($v9)" NSA_BWD_DQ_FORCED=0 NSA_BWD_DQ_RING=2
  run "forced only (NSA_BWD_DQ_RING=2)" NSA_BWD_DQ_RING=2
  run "3-stage rings only (NSA_BWD_DQ_FORCED=0)" NSA_BWD_DQ_FORCED=0
done
T=16384 run "default, 16k"
T=16384 run "v9 dq, 16k" NSA_BWD_DQ_FORCED=0 NSA_BWD_DQ_RING=2
for v in default v9; do
  if [[ $v == v9 ]]; then e="NSA_BWD_DQ_FORCED=0 NSA_BWD_DQ_RING=2"; else e=""; fi
  env NSA_BWD_SHARED=0 $e timeout 150 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
    node $prof --T 65536 --iters 1 > "$out/ncu-$v.log" 2>&1
  echo "== ncu $v"; grep -E 'nsa|Kernel|gpu__time_duration' "$out/ncu-$v.log" | grep -vE '^==PROF' | head -40
done
