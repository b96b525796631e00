#!/usr/bin/env bash
# Helper ckv's first GPU call: the key-centric dK/dV kernels at 64k on the unchanged code.
#   bash ckv-baseline.sh <staged .gpuwork dir> <log dir>
set -uo pipefail
work=$(cd "$1" && pwd); logs=$2; mkdir -p "$logs"; logs=$(cd "$logs" && pwd)
cd "$work/node_modules/@nsa/cuda"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv > "$logs/gpu.txt"
timeout 120 node bench/bench.mjs --T 16384,65536 --ops nsaFwdBwd 2>&1 | tee "$logs/bench1.log" | grep -E '^\| forward\+backward'
timeout 60 node scripts/backward-profile.mjs --T 65536 --iters 4 2>&1 | tee "$logs/bprof.log"
# per-kernel times as two launches (the key kernels alone), then the shared grid
NSA_BWD_SHARED=0 timeout 120 ncu --clock-control none --metrics gpu__time_duration.sum --print-summary per-kernel \
  node scripts/backward-profile.mjs --T 65536 --iters 1 > "$logs/ncu-sep.log" 2>&1
grep -E '^ +[a-zA-Z_].*(Kernel|kernel)|gpu__time_duration' "$logs/ncu-sep.log" | tail -60
NSA_BWD_SHARED=0 timeout 200 ncu --clock-control none -k regex:keyGradRegKernel --section SpeedOfLight \
  --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats \
  node scripts/backward-profile.mjs --T 65536 --iters 1 > "$logs/ncu-keys.log" 2>&1
grep -E 'keyGradRegKernel|Duration|DRAM Throughput|L2 Hit|Memory Throughput|Compute \(SM\)|Stall|Achieved Occupancy|Registers' "$logs/ncu-keys.log" | head -80
timeout 60 node bench/bench.mjs --T 65536 --ops nsaFwdBwd 2>&1 | tee "$logs/bench2.log" | grep -E '^\| forward\+backward'
