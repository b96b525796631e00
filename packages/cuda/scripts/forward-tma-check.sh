#!/usr/bin/env bash
# Forward v15-v17 on the GPU host, one command (helper cfwd3), in one binary: v17 (the default: the
# compressed / score tiles and the rings' full chunks by TMA), NSA_FWD_TMA=1 (v16: the rings by
# cp.async), NSA_FWD_TMA=0 (v15: no TMA):
#   source .gpu/boot.sh && [BASE=<other staged dir>] [MODE=full] bash forward-tma-check.sh <staged .gpuwork dir> <out dir>
# First, on an idle GPU: forward ms in alternating processes (BASE: another staged build's forward in
# the same rounds), the default's forward+backward and its selected branch's share (NSA_FWD_SKIP=2).
# Then G = 16 parity (test/ grid D 64 / 128, extra-parity "reg G=16", paper defaults) of the default,
# of v16 and of 4-warp blocks, determinism and memcheck in the background (BGT: their time limit,
# default 240 s; the paper case needs more than 130 under this load) while the outputs are compared
# with forward-ab-equal.mjs (every TMA level must be bit-equal). MODE=full (as in the run of 02:42
# UTC 2026-11-23): also v15 / v14's tiles and sort in the rounds, every branch's share, and v14's
# compressed tiles against the default (differences counted).
set -uo pipefail
work=$1; out=$(realpath "$2")
cd "$work"
runner=node_modules/@nsa/test/dist/run-parity.js
extra=node_modules/@nsa/cuda/scripts/extra-parity.mjs
bench=node_modules/@nsa/cuda/bench/bench.mjs
abeq=node_modules/@nsa/cuda/scripts/forward-ab-equal.mjs
addon=node_modules/@nsa/cuda/build/Release/nsa_cuda.node
mkdir -p "$out/par"
bg() { local log=$1; shift; (timeout ${BGT:-240} "$@" > "$out/par/$log" 2>&1 || echo "exited with $?" >> "$out/par/$log") & }
echo "== $(date -u +%T) registers"
cuobjdump -res-usage "$addon" 2>&1 | grep -A1 "PipeKernel" | grep -o "PipeKernelI[^ ]*\|REG:[0-9]*\|LOCAL:[0-9]*" | paste - - - | grep "Li8E" | head -8
mode=${MODE:-quick}
# NSA_FWD_TMA=on: the default (only 0 and 1 switch anything off), named so in the log.
if [[ $mode == full ]]; then variants=("NSA_FWD_TMA=0 NSA_FWD_CMP_TILE=64 NSA_FWD_SORT=0" "NSA_FWD_TMA=on" "NSA_FWD_TMA=0" "NSA_FWD_TMA=1")
else variants=("NSA_FWD_TMA=on" "NSA_FWD_TMA=1"); fi
for round in 1 2; do
  if (( round == 1 )); then T=8192,16384,32768,65536; else T=16384,65536; fi
  if [[ -n ${BASE:-} ]]; then
    echo "== $(date -u +%T) BASE $BASE"; (cd "$BASE" && timeout 100 node $bench --T $T --ops nsaFwd 2>&1 | grep "^| forward |")
  fi
  for e in "${variants[@]}"; do
    echo "== $(date -u +%T) $e"; env $e timeout 100 node $bench --T $T --ops nsaFwd 2>&1 | grep "^| forward |"
  done
done
if [[ $mode == full ]]; then skips="1 2 4 7"; else skips=2; fi
for s in $skips; do
  echo "== $(date -u +%T) NSA_FWD_SKIP=$s"; NSA_FWD_SKIP=$s timeout 60 node $bench --T 65536 --ops nsaFwd 2>&1 | grep "^| forward |"
done
echo "== $(date -u +%T) default forward+backward"; timeout 100 node $bench --T 16384,65536 --ops nsaFwdBwd 2>&1 | grep "^| forward+backward |"
for d in bfloat16 float16; do
  for D in 64 128; do bg "grid-$D-$d.log" node $runner --backend cuda --scale gpu --dtypes $d --only "G=16 HQ=16 Dk=$D Dv=$D T=1024 $d"; done
  i=0
  for c in "reg G=16 varlen D=64" "reg G=16 H=2 B=2 D=128" "reg G=16 supplied blockIndices D=128" "reg G=16 defaults T=2000 D=64"; do
    i=$((i + 1)); bg "extra-$i-$d.log" node $extra --only "$c $d"
  done
done
bg paper.log node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "paper defaults T=4096 bfloat16"
bg tma1-grid-128-bfloat16.log env NSA_FWD_TMA=1 node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 bfloat16"
bg tma0-extra-varlen-float16.log env NSA_FWD_TMA=0 node $extra --only "reg G=16 varlen D=64 float16"
bg w4-grid-128-bfloat16.log env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 bfloat16"
bg w4-extra-varlen-bfloat16.log env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 node $extra --only "reg G=16 varlen D=64 bfloat16"
bg split0-grid-64-float16.log env NSA_FWD_SPLIT=0 node $runner --backend cuda --scale gpu --dtypes float16 --only "G=16 HQ=16 Dk=64 Dv=64 T=1024 float16"
bg determinism.log node node_modules/@nsa/cuda/scripts/determinism.mjs
bg memcheck.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 varlen D=64 bfloat16"
bg memcheck-128.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 H=2 B=2 D=128 float16"
echo "== $(date -u +%T) outputs: every TMA level against the default (must be bit-equal)"
if [[ $mode == full ]]; then
  timeout 150 node $abeq --variants "|NSA_FWD_TMA=1|NSA_FWD_TMA=0|NSA_FWD_TMA=0 NSA_FWD_SORT=0" --T 16384,65536 2>&1 | tail -9
  timeout 100 node $abeq --variants "NSA_FWD_SPLIT=0|NSA_FWD_SPLIT=0 NSA_FWD_TMA=0" --T 16384 2>&1 | tail -3
  timeout 150 node $abeq --variants "NSA_FWD_CMP_TILE=64|" --allow out,oCmp,oSlc,oWin,lse,blocks --T 65536 2>&1 | tail -6
else
  timeout 120 node $abeq --variants "|NSA_FWD_TMA=1|NSA_FWD_TMA=0" --T 16384,65536 2>&1 | tail -7
fi
wait
echo "== $(date -u +%T) parity (log: rows ok / failed, worst error and its quantity, exits)"
for f in "$out"/par/*.log; do
  case $f in *memcheck*|*determinism*) continue;; esac
  python3 node_modules/@nsa/cuda/scripts/parity-summary.py "$f"
done
echo "== determinism"; tail -2 "$out/par/determinism.log"
for f in memcheck memcheck-128; do echo "== $f"; grep -h "ERROR SUMMARY\|| NO |" "$out/par/$f.log" | tail -3; grep -c "| yes |" "$out/par/$f.log"; done
echo "== $(date -u +%T) done"
