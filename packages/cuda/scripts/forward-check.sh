#!/usr/bin/env bash
# The NSA forward v6 check on the GPU host, one command (v6 section of BENCHMARKS.md):
#   source .gpu/boot.sh && bash forward-check.sh <staged .gpuwork dir> <out dir> [full|quick]
# In the background: G = 16 parity (test/ grid; extra-parity's "reg G=16" cases; full: paper defaults
# T=4096 and 8-warp blocks too), determinism, memcheck. In front: the benchmark of v6 and of v4
# (NSA_FWD_V4=1), v6 variants (full: 8-warp blocks; quick: NSA_FWD_COMMON=0), v6 with branches left
# out (NSA_FWD_SKIP: the branches' shares), and (full) ncu on one launch of each kernel at T = 16384.
set -uo pipefail
work=$1; out=$(realpath "$2"); mode=${3:-full}
cd "$work"
runner=node_modules/@nsa/test/dist/run-parity.js
extra=node_modules/@nsa/cuda/scripts/extra-parity.mjs
bench=node_modules/@nsa/cuda/bench/bench.mjs
Ts=8192,16384,32768,65536
bg() { local log=$1; shift; (timeout 300 "$@" > "$out/$log" 2>&1 || echo "exited with $?" >> "$out/$log") & }
for d in bfloat16 float16; do
  for D in 64 128; do bg "grid-$D-$d.log" node $runner --backend cuda --scale gpu --dtypes $d --only "G=16 HQ=16 Dk=$D Dv=$D T=1024 $d"; done
  i=0
  for c in "reg G=16 varlen D=64" "reg G=16 H=2 B=2 D=128" "reg G=16 supplied blockIndices D=128" "reg G=16 defaults T=2000 D=64"; do
    i=$((i + 1)); bg "extra-$i-$d.log" node $extra --only "$c $d"
  done
  if [[ $mode == full ]]; then  # 8-warp blocks (NSA_FWD_WARPS=8)
    bg "w8-grid-128-$d.log" env NSA_FWD_WARPS=8 node $runner --backend cuda --scale gpu --dtypes $d --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 $d"
    bg "w8-extra-varlen-$d.log" env NSA_FWD_WARPS=8 node $extra --only "reg G=16 varlen D=64 $d"
    bg "w8-extra-B2-$d.log" env NSA_FWD_WARPS=8 node $extra --only "reg G=16 H=2 B=2 D=128 $d"
  fi
done
[[ $mode == full ]] && bg paper.log node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "paper defaults T=4096 bfloat16"
bg determinism.log node node_modules/@nsa/cuda/scripts/determinism.mjs
bg memcheck.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 varlen D=64 bfloat16"
[[ $mode == quick ]] && bg memcheck-blocks.log compute-sanitizer --tool memcheck node $extra --only "reg G=16 supplied blockIndices D=128 bfloat16"

node $bench --T $Ts --ops nsaFwd,nsaFwdBwd > "$out/bench-v6.log" 2>&1
if [[ $mode == full ]]; then
  NSA_FWD_V4=1 node $bench --T $Ts --ops nsaFwd,nsaFwdBwd > "$out/bench-v4.log" 2>&1
  NSA_FWD_WARPS=8 node $bench --T $Ts --ops nsaFwd > "$out/bench-v6w8.log" 2>&1
  skips="1 2 4 7"
else
  NSA_FWD_V4=1 node $bench --T $Ts --ops nsaFwd > "$out/bench-v4.log" 2>&1
  NSA_FWD_COMMON=0 node $bench --T 16384,65536 --ops nsaFwd > "$out/bench-v6common0.log" 2>&1
  skips="2"
fi
for s in $skips; do NSA_FWD_SKIP=$s node $bench --T 16384,65536 --ops nsaFwd > "$out/skip-$s.log" 2>&1; done
if [[ $mode == full ]]; then
  sections="--section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis"
  NSA_FWD_V4=1 ncu --clock-control none -k regex:nsaForwardRegKernel -c 1 $sections -o "$out/ncu-v4" node $bench --T 16384 --ops nsaFwd > "$out/ncu-v4.log" 2>&1
  ncu --clock-control none -k regex:nsaForwardPipeKernel -c 1 $sections -o "$out/ncu-v6" node $bench --T 16384 --ops nsaFwd > "$out/ncu-v6.log" 2>&1
  for v in v4 v6; do
    echo "== ncu $v"
    ncu -i "$out/ncu-$v.ncu-rep" --page raw --csv 2>/dev/null | python3 -c '
import csv, sys
rows = list(csv.reader(sys.stdin)); head, units, vals = rows[0], rows[1], rows[2]
want = ["gpu__time_duration.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed", "l1tex__throughput.avg.pct_of_peak_sustained_active",
  "lts__throughput.avg.pct_of_peak_sustained_elapsed", "dram__throughput.avg.pct_of_peak_sustained_elapsed", "lts__t_sector_hit_rate.pct",
  "sm__warps_active.avg.pct_of_peak_sustained_active", "smsp__average_warp_latency_per_inst_issued.ratio", "smsp__issue_active.avg.pct_of_peak_sustained_active",
  "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active", "launch__registers_per_thread", "dram__bytes_read.sum", "lts__t_bytes.sum"]
for w in want:
  if w in head: i = head.index(w); print(f"{w} = {vals[i]} {units[i]}")
st = [(float(vals[i].replace(",", "")), h) for i, h in enumerate(head) if h.startswith("smsp__average_warps_issue_stalled_") and h.endswith("_per_issue_active.ratio") and vals[i].replace(",", "").replace(".", "").isdigit()]
for v, h in sorted(st, reverse=True)[:8]: print(f"stall {h[34:-23]} = {v:.2f} cycles/issue")
'
  done
fi
wait
echo "== parity (log: rows ok / failed, worst error and its quantity, exits)"
for f in "$out"/grid-*.log "$out"/paper.log "$out"/extra-*.log "$out"/w8-*.log; do
  [[ -f $f ]] || continue
  python3 - "$f" <<'PY'
import re, sys
rows = [l.split('|') for l in open(sys.argv[1]) if re.search(r'\| (yes|NO) \|\s*$', l)]
worst = max(rows, key=lambda r: float(r[3]), default=None)
text = open(sys.argv[1]).read()
print(sys.argv[1].split('/')[-1], len([r for r in rows if r[5].strip() == 'yes']), len([r for r in rows if r[5].strip() == 'NO']),
      f"{worst[3].strip()} ({worst[1].strip()}: {worst[2].strip()})" if worst else '-', 'EXIT' if 'exited with' in text else '')
PY
done
echo "== determinism"; tail -2 "$out/determinism.log"
for f in memcheck memcheck-blocks; do [[ -f $out/$f.log ]] && { echo "== $f"; grep -h "ERROR SUMMARY\|| NO |" "$out/$f.log" | tail -3; grep -c "| yes |" "$out/$f.log"; }; done
for f in bench-v4 bench-v6 bench-v6w8 bench-v6common0 skip-1 skip-2 skip-4 skip-7; do [[ -f $out/$f.log ]] && { echo "== $f"; grep "^| forward\|^device" "$out/$f.log" | grep -v "| n/a | NaN TFLOP/s (NaN%) | n/a | NaN TFLOP/s"; }; done
