#!/usr/bin/env bash
# The NSA forward check on the GPU host, one command (sections "v6 — forward", "v7 — forward" and
# "v11 — forward" of BENCHMARKS.md):
#   source .gpu/boot.sh && bash forward-check.sh <staged .gpuwork dir> <out dir> [quick|full|ab|profile]
# Variants of the 16-bit G = 16 forward: the default (on an sm_90a build and a compute-capability 9.0
# GPU: compressed branch and selection scores on wgmma, forced selected blocks read once per block,
# 8-warp blocks), w4 (NSA_FWD_WARPS=4 NSA_FWD_FORCED=1: the same with 4-warp blocks), forced0 (NSA_FWD_FORCED=0: every
# selected block through the per-warp rings, 4-warp blocks: v7) and v6 (NSA_FWD_WGMMA=0: mma.sync
# everywhere).
# In the background: G = 16 parity (test/ grid; extra-parity's "reg G=16" cases) of the default and
# of w4, determinism of both, memcheck. In front: whether the addon holds wgmma (HGMMA in the SASS),
# then the benchmark of the three variants and the default with branches left out (NSA_FWD_SKIP).
# Then ncu of one launch of the default at T = 16384. full: 8k and 32k too, the paper-defaults
# parity case.
# ab: v12 against v11 (NSA_FWD_TOPN=0) in the same binary on an otherwise idle GPU: outputs bit for
# bit at 16k / 64k (forward-ab-equal.mjs), then default and v11 alternating, the third ring stage
# with each top-n, both without the selected branch (its share), the default's forward+backward; then
# a parity set, determinism and memcheck. (Run C1 ran it when the third stage was the default.)
# ring: the rings' swizzled chunks (default) against padded rows (NSA_FWD_RING_SWIZZLE=0) in one binary: outputs
# bit for bit (16k / 64k; 16k in v12's order, its third stage, 4-warp blocks and v6) with parity in the
# background, then forward ms alternating and ncu of one 64k launch each way (time, L2 bytes, bank conflicts).
# profile: ncu's warp-state samples per SASS instruction of one 64k launch (ncu-src-sass.csv).
# phases: forward ms at 8k..64k, the 64k forward with each NSA_FWD_SKIP bit, then profile.
# v13: v13 (the default, NSA_FWD_SPLIT=1) against v12 (NSA_FWD_SPLIT=0) in one binary: outputs compared
# at 16k / 64k, forward ms alternating, v12's branches left out and the selected branch's share of each,
# then parity (l' = 32 in extra-parity's varlen case), determinism and memcheck; PROFILE=1 then runs
# profile (NCU_ENV= its switches). PARITY_ONLY=1: no timings (ABT=16384 keeps the output comparison short).
set -uo pipefail
work=$1; out=$(realpath "$2"); mode=${3:-quick}
cd "$work"
runner=node_modules/@nsa/test/dist/run-parity.js
extra=node_modules/@nsa/cuda/scripts/extra-parity.mjs
bench=node_modules/@nsa/cuda/bench/bench.mjs
addon=node_modules/@nsa/cuda/build/Release/nsa_cuda.node
if [[ $mode == full ]]; then Ts=8192,16384,32768,65536; else Ts=16384,65536; fi
bg() { local log=$1; shift; (timeout 300 "$@" > "$out/$log" 2>&1 || echo "exited with $?" >> "$out/$log") & }
# The default kernel's G = 16 parity in dtype $1, in the background: the test/ grid at D 64 and 128 and
# four extra-parity "reg G=16" cases.
defaultParity() {
  local d=$1 D c i=0
  for D in 64 128; do bg "grid-$D-$d.log" node $runner --backend cuda --scale gpu --dtypes $d --only "G=16 HQ=16 Dk=$D Dv=$D T=1024 $d"; done
  for c in "reg G=16 varlen D=64" "reg G=16 H=2 B=2 D=128" "reg G=16 supplied blockIndices D=128" "reg G=16 defaults T=2000 D=64"; do
    i=$((i + 1)); bg "extra-$i-$d.log" node $extra --only "$c $d"
  done
}
# One parity log -> "name rows-ok rows-failed worst-error (case: quantity) [EXIT]".
summarize() { python3 node_modules/@nsa/cuda/scripts/parity-summary.py "$1"; }
# After the background parity jobs: each parity log's summary, then determinism and memcheck.
reportParity() {
  echo "== parity (log: rows ok / failed, worst error and its quantity, exits)"
  for f in "$out"/*.log; do
    case $f in *memcheck*|*determinism*|*ncu*) continue;; esac
    summarize "$f"
  done
  echo "== determinism"; tail -2 "$out/determinism.log"
  for f in memcheck memcheck-128; do
    echo "== $f"; grep -h "ERROR SUMMARY\|| NO |" "$out/$f.log" | tail -3; grep -c "| yes |" "$out/$f.log"
  done
}
if [[ $mode == ab ]]; then
  v11="NSA_FWD_TOPN=0"
  echo "== v12 against v11 switches, bit for bit (bench problem, 16k and 64k)"
  timeout 150 node node_modules/@nsa/cuda/scripts/forward-ab-equal.mjs 2>&1 | tail -12
  runs=0
  for v in default v11 default v11; do
    if [[ $v == v11 ]]; then e=$v11; else e=""; fi
    if (( runs >= 2 )); then T=16384,65536; else T=8192,16384,32768,65536; fi  # the second pair: 16k, 64k
    echo "== $v ($e) T=$T"; env $e timeout 100 node $bench --T $T --ops nsaFwd 2>&1 | grep "^| forward |"
    runs=$((runs + 1))
  done
  for e in NSA_FWD_RING=3 "NSA_FWD_RING=3 NSA_FWD_TOPN=0"; do
    echo "== $e"; env $e timeout 100 node $bench --T 16384,65536 --ops nsaFwd 2>&1 | grep "^| forward |"
  done
  for e in "" "$v11"; do  # the selected branch's share: full - this
    echo "== NSA_FWD_SKIP=2 $e"; env NSA_FWD_SKIP=2 $e timeout 100 node $bench --T 65536 --ops nsaFwd 2>&1 | grep "^| forward |"
  done
  echo "== default forward+backward"; timeout 100 node $bench --T 16384,65536 --ops nsaFwdBwd 2>&1 | grep "^| forward+backward |"
  for d in bfloat16 float16; do
    defaultParity "$d"
  done
  bg paper.log node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "paper defaults T=4096 bfloat16"
  bg v11-grid-128-bfloat16.log env $v11 node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 bfloat16"
  bg v6-grid-128-float16.log env NSA_FWD_WGMMA=0 node $runner --backend cuda --scale gpu --dtypes float16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 float16"
  bg w4-grid-128-bfloat16.log env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 bfloat16"
  bg determinism.log node node_modules/@nsa/cuda/scripts/determinism.mjs
  bg memcheck.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 varlen D=64 bfloat16"
  bg memcheck-128.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 H=2 B=2 D=128 bfloat16"
  wait
  reportParity
  exit 0
fi
if [[ $mode == v13 ]]; then  # v13 (split warpgroups) against v12 (NSA_FWD_SPLIT=0), one binary, then parity
  echo "== registers"; cuobjdump -res-usage "$addon" 2>&1 | grep -A1 "PipeKernel" | grep -o "PipeKernelI[^ ]*\|REG:[0-9]*\|LOCAL:[0-9]*" | paste - - - | head -12
  echo "== v13 against v12: outputs (bench problem, 16k and 64k; only out may differ: v13 gates the stored oWin)"
  timeout 150 node node_modules/@nsa/cuda/scripts/forward-ab-equal.mjs --variants "NSA_FWD_SPLIT=0|" --allow out --T ${ABT:-16384,65536} 2>&1 | tail -16
  [[ -n ${PARITY_ONLY:-} ]] || for round in 1 2; do
    for e in NSA_FWD_SPLIT=0 NSA_FWD_SPLIT=1; do
      if [[ $round == 1 ]]; then T=8192,16384,32768,65536; else T=16384,65536; fi
      echo "== $e T=$T"; env $e timeout 100 node $bench --T $T --ops nsaFwd 2>&1 | grep "^| forward |"
    done
  done
  [[ -n ${PARITY_ONLY:-} ]] || for s in 1 2 4 7; do echo "== NSA_FWD_SKIP=$s NSA_FWD_SPLIT=0"; NSA_FWD_SKIP=$s NSA_FWD_SPLIT=0 timeout 60 node $bench --T 65536 --ops nsaFwd 2>&1 | grep "^| forward |"; done
  [[ -n ${PARITY_ONLY:-} ]] || for e in NSA_FWD_SPLIT=1; do echo "== NSA_FWD_SKIP=2 $e"; env NSA_FWD_SKIP=2 $e timeout 60 node $bench --T 65536 --ops nsaFwd 2>&1 | grep "^| forward |"; done
  for d in bfloat16 float16; do defaultParity "$d"; done
  bg v12-grid-128-bfloat16.log env NSA_FWD_SPLIT=0 node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 bfloat16"
  bg v12-extra-varlen.log env NSA_FWD_SPLIT=0 node $extra --only "reg G=16 varlen D=64 bfloat16"
  bg paper.log node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "paper defaults T=4096 bfloat16"
  bg determinism.log node node_modules/@nsa/cuda/scripts/determinism.mjs
  bg memcheck.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 varlen D=64 bfloat16"
  bg memcheck-128.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 H=2 B=2 D=128 float16"
  wait
  reportParity
  [[ -n ${PROFILE:-} ]] && mode=profile || exit 0
fi
if [[ $mode == ring ]]; then  # swizzled ring chunks (the default) against padded rows (NSA_FWD_RING_SWIZZLE=0), one binary
  pad=NSA_FWD_RING_SWIZZLE=0
  echo "== registers"; cuobjdump -res-usage "$addon" 2>&1 | grep -A1 "PipeKernel" | grep -o "PipeKernelI[^ ]*\|REG:[0-9]*\|LOCAL:[0-9]*" | paste - - - | head -24
  # Parity in the background while the outputs are compared (the timings below run on an idle GPU).
  for d in bfloat16 float16; do defaultParity "$d"; done
  bg padded-grid-128-bfloat16.log env $pad node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 bfloat16"
  bg v12-grid-64-float16.log env NSA_FWD_SPLIT=0 node $runner --backend cuda --scale gpu --dtypes float16 --only "G=16 HQ=16 Dk=64 Dv=64 T=1024 float16"
  bg ring3-extra-varlen.log env NSA_FWD_SPLIT=0 NSA_FWD_RING=3 node $extra --only "reg G=16 varlen D=64 bfloat16"
  bg w4-grid-128-bfloat16.log env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 bfloat16"
  bg v6-grid-128-float16.log env NSA_FWD_WGMMA=0 node $runner --backend cuda --scale gpu --dtypes float16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 float16"
  echo "== $(date -u +%T) outputs bit for bit (bench problem, 16k and 64k), then v12's order, its third stage, 4-warp blocks and v6 at 16k"
  timeout 150 node node_modules/@nsa/cuda/scripts/forward-ab-equal.mjs --variants "|$pad" --T 16384,65536 2>&1 | tail -6
  timeout 100 node node_modules/@nsa/cuda/scripts/forward-ab-equal.mjs --T 16384 \
    --variants "NSA_FWD_SPLIT=0|NSA_FWD_SPLIT=0 $pad|NSA_FWD_SPLIT=0 NSA_FWD_RING=3|NSA_FWD_SPLIT=0 NSA_FWD_RING=3 $pad" 2>&1 | tail -6
  for e in "NSA_FWD_WARPS=4 NSA_FWD_FORCED=1" NSA_FWD_WGMMA=0; do
    timeout 100 node node_modules/@nsa/cuda/scripts/forward-ab-equal.mjs --T 16384 --variants "$e|$e $pad" 2>&1 | tail -4
  done
  wait
  echo "== $(date -u +%T) parity (log: rows ok / failed, worst error and its quantity, exits)"
  for f in "$out"/*.log; do summarize "$f"; done
  for round in 1 2; do
    for e in $pad NSA_FWD_RING_SWIZZLE=1; do
      if [[ $round == 1 ]]; then T=8192,16384,32768,65536; else T=16384,65536; fi
      echo "== $(date -u +%T) $e T=$T"; env $e timeout 100 node $bench --T $T --ops nsaFwd 2>&1 | grep "^| forward |"
    done
  done
  for e in $pad NSA_FWD_RING_SWIZZLE=1; do  # one 64k launch each way: time, L2 and DRAM bytes, shared-memory bank conflicts
    echo "== $(date -u +%T) ncu $e"
    env $e timeout 100 ncu --clock-control none -k regex:nsaForwardPipeKernel -c 1 \
      --metrics gpu__time_duration.sum,lts__t_bytes.sum,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sector_hit_rate.pct,lts__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum \
      node $bench --T 65536 --ops nsaFwd > "$out/ncu-$e.txt" 2>&1
    grep -E 'gpu__time|lts__|dram__|l1tex__|ERR|rror' "$out/ncu-$e.txt" | sed 's/  */ /g' | head -12
  done
  exit 0
fi
if [[ $mode == phases ]]; then  # where the time goes (64k): forward per T, branches left out, then profile's ncu
  echo "== default"; timeout 100 node $bench --T 8192,16384,32768,65536 --ops nsaFwd 2>&1 | grep "^| forward |"
  for s in 1 2 4 7; do echo "== NSA_FWD_SKIP=$s"; NSA_FWD_SKIP=$s timeout 60 node $bench --T 65536 --ops nsaFwd 2>&1 | grep "^| forward |"; done
  mode=profile
fi
if [[ $mode == profile ]]; then
  env ${NCU_ENV:-} ncu -f --clock-control none -k regex:nsaForwardPipeKernel -c 1 --section WarpStateStats --section SourceCounters \
    --section SpeedOfLight -o "$out/ncu-src" node $bench --T 65536 --ops nsaFwd > "$out/ncu-src.log" 2>&1
  ncu -i "$out/ncu-src.ncu-rep" --page source --csv --print-source=sass > "$out/ncu-src-sass.csv" 2> "$out/ncu-src-sass.err"
  ncu -i "$out/ncu-src.ncu-rep" --page details --csv > "$out/ncu-src-details.csv" 2>&1
  exit 0
fi
for d in bfloat16 float16; do
  defaultParity "$d"
  bg "v6-grid-128-$d.log" env NSA_FWD_WGMMA=0 node $runner --backend cuda --scale gpu --dtypes $d --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 $d"
  bg "w4-grid-128-$d.log" env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 node $runner --backend cuda --scale gpu --dtypes $d --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 $d"
  bg "w4-extra-varlen-$d.log" env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 node $extra --only "reg G=16 varlen D=64 $d"
  bg "w4-extra-B2-$d.log" env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 node $extra --only "reg G=16 H=2 B=2 D=128 $d"
done
[[ $mode == full ]] && bg paper.log node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "paper defaults T=4096 bfloat16"
bg determinism.log node node_modules/@nsa/cuda/scripts/determinism.mjs
bg w4-determinism.log env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 node node_modules/@nsa/cuda/scripts/determinism.mjs
bg memcheck.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 varlen D=64 bfloat16"
bg w4-memcheck.log env NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 compute-sanitizer --tool memcheck node $extra --only "reg G=16 varlen D=64 bfloat16"

echo "== SASS: HGMMA / HMMA instructions in the addon"
cuobjdump -sass "$addon" 2>/dev/null | grep -c "HGMMA" || true
cuobjdump -sass "$addon" 2>/dev/null | grep -c "HMMA" || true
timeout 240 node $bench --T $Ts --ops nsaFwd,nsaFwdBwd > "$out/bench-wg.log" 2>&1
NSA_FWD_FORCED=0 timeout 200 node $bench --T $Ts --ops nsaFwd > "$out/bench-forced0.log" 2>&1
NSA_FWD_WARPS=4 NSA_FWD_FORCED=1 timeout 200 node $bench --T $Ts --ops nsaFwd > "$out/bench-w4.log" 2>&1
NSA_FWD_WGMMA=0 timeout 200 node $bench --T $Ts --ops nsaFwd > "$out/bench-v6.log" 2>&1
for s in 1 2 4 7; do NSA_FWD_SKIP=$s timeout 120 node $bench --T 16384,65536 --ops nsaFwd > "$out/skip-$s.log" 2>&1; done
if true; then  # ncu of one launch of the default kernel at T = 16384
  sections="--section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis"
  ncu -f --clock-control none -k regex:nsaForwardPipeKernel -c 1 $sections -o "$out/ncu-wg" node $bench --T 16384 --ops nsaFwd > "$out/ncu-wg.log" 2>&1
  ncu -i "$out/ncu-wg.ncu-rep" --page raw --csv 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin)); head, units, vals = rows[0], rows[1], rows[2]
want = ["gpu__time_duration.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed", "lts__throughput.avg.pct_of_peak_sustained_elapsed",
  "sm__warps_active.avg.pct_of_peak_sustained_active", "smsp__issue_active.avg.pct_of_peak_sustained_active",
  "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active", "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
  "launch__registers_per_thread"]
for w in want:
  if w in head: i = head.index(w); print(f"{w} = {vals[i]} {units[i]}")
st = [(float(vals[i].replace(",", "")), h) for i, h in enumerate(head) if h.startswith("smsp__average_warps_issue_stalled_") and h.endswith("_per_issue_active.ratio") and vals[i].replace(",", "").replace(".", "").isdigit()]
for v, h in sorted(st, reverse=True)[:8]: print(f"stall {h[34:-23]} = {v:.2f} cycles/issue")
'
fi
wait
echo "== parity (log: rows ok / failed, worst error and its quantity, exits)"
for f in "$out"/grid-*.log "$out"/paper.log "$out"/extra-*.log "$out"/v6-*.log "$out"/w4-grid-*.log "$out"/w4-extra-*.log; do
  [[ -f $f ]] || continue
  summarize "$f"
done
for f in determinism w4-determinism; do echo "== $f"; tail -2 "$out/$f.log"; done
for f in memcheck w4-memcheck; do [[ -f $out/$f.log ]] && { echo "== $f"; grep -h "ERROR SUMMARY\|| NO |" "$out/$f.log" | tail -3; grep -c "| yes |" "$out/$f.log"; }; done
for f in bench-wg bench-w4 bench-forced0 bench-v6 skip-1 skip-2 skip-4 skip-7; do [[ -f $out/$f.log ]] && { echo "== $f"; grep "^| forward\|^device" "$out/$f.log" | grep -v "| n/a | NaN TFLOP/s (NaN%) | n/a | NaN TFLOP/s"; }; done
