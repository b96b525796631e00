#!/usr/bin/env bash
# One GPU-host call for the NSA decode: parity of every decode path (in parallel: the float64
# reference is CPU-bound), a memcheck, ncu per-kernel times, then the benchmarks alone on the GPU.
# Run from the repository root on the host, over a staged folder (stage-gpu.sh):
#   bash packages/cuda/scripts/decode-check.sh <staged dir> <log dir> [torch=1] [bench Ts]
# Logs stay in <log dir> (tar it into $OUT: the device tool brings back a few files only).
set -uo pipefail
work=$(cd "$1" && pwd); logs=$2; torch=${3:-1}; Ts=${4:-8192,16384,32768,65536}
mkdir -p "$logs"
root=$(pwd)
cuda=$work/node_modules/@nsa/cuda
cd "$cuda"
parity=scripts/decode-parity.mjs
export PYTHONUNBUFFERED=1

# 1. Parity, all at once (several processes on the GPU; correctness only).
check() {  # check <name> <env> <command...>
  local name=$1 e=$2; shift 2
  (env $e timeout 400 "$@" > "$logs/$name.log" 2>&1; echo "exit $?" >> "$logs/$name.log") &
}
check parity X=1 node $parity
check parity-again X=1 node $parity
check parity-cmp3 NSA_DECODE_CMP_TILES=3 node $parity --only bfloat16
check parity-sw2 NSA_DECODE_SW_TILES=2 node $parity --only bfloat16
check parity-nopdl NSA_DECODE_PDL=0 node $parity --only bfloat16
check memcheck X=1 compute-sanitizer --tool memcheck node $parity --only "small G=16 H=2 D=64 B=3 from 5 bfloat16"
(cd "$work" && timeout 400 node node_modules/@nsa/test/dist/run-parity.js --backend cuda --scale gpu --dtypes bfloat16,float16 --only decode > "$logs/grid-decode.log" 2>&1; echo "exit $?" >> "$logs/grid-decode.log") &
wait
for f in parity parity-again parity-cmp3 parity-sw2 parity-nopdl grid-decode memcheck; do
  echo "== $f: $(grep -c '| yes |' "$logs/$f.log") ok, $(grep -c '| NO |' "$logs/$f.log") failed; $(grep -h 'passed,\|ERROR SUMMARY\|^exit' "$logs/$f.log" | tr '\n' ' ')"
done
# Two processes, same seeded inputs: bit-equal outputs print equal digests.
echo "== digests: $(grep -ho 'digest [0-9a-f]*' "$logs/parity.log" "$logs/parity-again.log" | tr '\n' ' ')"

# 2. Per-kernel times (ncu serialises launches: no overlap, no launch gaps); SECTIONS=1 adds where
# each launch's time goes (stall reasons, memory throughput) at B = 1 and 16.
ncuTimes() {  # ncuTimes <name> <env> <bench args...>
  local name=$1 e=$2; shift 2
  env $e timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum -k regex:decode -c 6 \
    node bench/bench.mjs --T 65536 --ops decode --decodeWarm 2 "$@" > "$logs/ncu-$name.log" 2>&1
  echo "== ncu $name (µs): $(grep -oE '(decode[A-Za-z]+Kernel|gpu__time_duration.sum +[a-z]+ +[0-9.,]+)' "$logs/ncu-$name.log" | sed -E 's/gpu__time_duration.sum +[a-z]+ +//' | tr '\n' ' ')"
}
ncuTimes new-B1 X=1 --decodeB 1
ncuTimes new-B16 X=1 --decodeB 16
ncuTimes supplied-B1 X=1 --decodeB 1 --decodeBlocks supplied
if [[ ${SECTIONS:-0} == 1 ]]; then
  for B in 1 16; do
    timeout 200 ncu --clock-control none --section WarpStateStats --section Occupancy --section MemoryWorkloadAnalysis --section SpeedOfLight --section InstructionStats \
      -k regex:decode -s 2 -c 2 node bench/bench.mjs --T 65536 --ops decode --decodeWarm 2 --decodeB $B > "$logs/ncu-sections-B$B.log" 2>&1
  done
fi

# 3. Benchmarks, alone on the GPU.
if [[ $torch == 1 ]]; then
  timeout 300 python3 bench/torch_baseline.py "$Ts" "$logs/torch.json" > "$logs/torch.log" 2>&1
  base="--baseline $logs/torch.json"
else
  base=""
fi
bench() {  # bench <name> <env> <args...>
  local name=$1 e=$2; shift 2
  env $e timeout 300 node bench/bench.mjs "$@" > "$logs/bench-$name.log" 2>&1
  echo "== bench $name ($e $*)"; sed -n '/^| op /,$p' "$logs/bench-$name.log" | grep -E '^\| (op|decode|T |[0-9])' ; grep -m1 'Error' "$logs/bench-$name.log"
}
bench main "X=1" --T "$Ts" --ops decode $base
bench nopdl "NSA_DECODE_PDL=0" --T 65536 --ops decode
bench supplied "X=1" --T 65536 --ops decode --decodeBlocks supplied
# The whole table again: the spread between two runs of the same binary.
bench again "X=1" --T "$Ts" --ops decode $base
cd "$root"
