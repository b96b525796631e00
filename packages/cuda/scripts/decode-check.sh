#!/usr/bin/env bash
# One GPU-host call for the NSA decode: parity of every decode path (in parallel: the float64
# reference is CPU-bound), memchecks, then alone on the GPU: a traced step (NSA_DECODE_TRACE=1),
# ncu per-kernel times (NCU=1), and the benchmarks, the default (the spread selection where it fits)
# against the last-block selection (NSA_DECODE_SPREAD=0) in alternating processes.
# Run from the repository root on the host, over a staged folder (stage-gpu.sh):
#   bash packages/cuda/scripts/decode-check.sh <staged dir> <log dir> [torch=1] [bench Ts]
# Logs stay in <log dir> (tar it into $OUT: the device tool brings back a few files only).
set -uo pipefail
work=$(cd "$1" && pwd); logs=$2; torch=${3:-1}; Ts=${4:-8192,65536}
mkdir -p "$logs"
root=$(pwd)
cuda=$work/node_modules/@nsa/cuda
cd "$cuda"
parity=scripts/decode-parity.mjs
export PYTHONUNBUFFERED=1

# 1. Parity, all at once (several processes on the GPU; correctness only).
checks=()
check() {  # check <name> <env> <command...>
  local name=$1 e=$2; shift 2
  checks+=("$name")
  (env $e timeout 400 "$@" > "$logs/$name.log" 2>&1; echo "exit $?" >> "$logs/$name.log") &
}
check parity X=1 node $parity
check parity-again X=1 node $parity
check parity-v8 NSA_DECODE_SPREAD=0 node $parity
check parity-merge0 NSA_DECODE_MERGE_LAUNCH=0 node $parity
check parity-split4 NSA_DECODE_SPREAD_SPLIT=4 node $parity
check parity-spread2 NSA_DECODE_SPREAD=2 node $parity
check parity-spread2-nopdl "NSA_DECODE_SPREAD=2 NSA_DECODE_PDL=0" node $parity --only bfloat16
check parity-cmp3 NSA_DECODE_CMP_TILES=3 node $parity --only bfloat16
check parity-sw2 NSA_DECODE_SW_TILES=2 node $parity --only bfloat16
if [[ ${ALL:-0} == 1 ]]; then  # the last-block selection's variants (unchanged by the spread path)
  check parity-v7 "NSA_DECODE_SPREAD=0 NSA_DECODE_SELECT=v7" node $parity
  check parity-mass-general "NSA_DECODE_SPREAD=0 NSA_DECODE_MASS24=0" node $parity
  check parity-nopdl NSA_DECODE_PDL=0 node $parity --only bfloat16
fi
check memcheck X=1 compute-sanitizer --tool memcheck node $parity --only "small G=16 H=2 D=64 B=3 from 5 bfloat16"
check memcheck-T9000 X=1 compute-sanitizer --tool memcheck node $parity --only "multi-tile chunks G=16 D=64 T=9000 bfloat16"
check memcheck-spread2 NSA_DECODE_SPREAD=2 compute-sanitizer --tool memcheck node $parity --only "G=16 H=2 D=128 B=16"
(cd "$work" && timeout 400 node node_modules/@nsa/test/dist/run-parity.js --backend cuda --scale gpu --dtypes bfloat16,float16 --only decode > "$logs/grid-decode.log" 2>&1; echo "exit $?" >> "$logs/grid-decode.log") &
wait
for f in "${checks[@]}" grid-decode; do
  echo "== $f: $(grep -c '| yes |' "$logs/$f.log") ok, $(grep -c '| NO |' "$logs/$f.log") failed; $(grep -h 'passed,\|ERROR SUMMARY\|^exit' "$logs/$f.log" | tr '\n' ' ')"
done
# Two processes, same seeded inputs: bit-equal outputs print equal digests (default twice, v8, the
# last-block merge, 4 threads per selection block, spread everywhere (and v7, v8 with the general mass
# loop with ALL=1): v8 computes v7's scores bit for bit; the spread selection sums in another order
# but picks the same blocks on these inputs, the output depends on the blocks only, and the merge
# launch repeats the last-block merge's operations in their order: all match).
echo "== digests: $(cd "$logs" && grep -ho 'digest [0-9a-f]*' parity.log parity-again.log parity-v8.log parity-merge0.log parity-split4.log parity-spread2.log $(ls parity-v7.log parity-mass-general.log 2>/dev/null) | tr '\n' ' ')"
# The 64k step under memcheck, the spread selection at B = 1 and 16 (8 launch-1b blocks per pair).
NSA_DECODE_SPREAD=2 timeout 300 compute-sanitizer --tool memcheck node bench/bench.mjs --T 65536 --ops decode --decodeB 1,16 --decodeWarm 1 --decodeDigest > "$logs/memcheck-64k.log" 2>&1
echo "== memcheck-64k: $(grep -h 'ERROR SUMMARY\|decode digest' "$logs/memcheck-64k.log" | tr '\n' ' ')"

# 2. When each step of a 64k step happens (%globaltimer stamps, pair 0, every 64th call), with and
# without the selection (supplied blocks).
for how in "X=1" "NSA_DECODE_MERGE_LAUNCH=0" "NSA_DECODE_SPREAD=0"; do
  env $how NSA_DECODE_TRACE=1 timeout 120 node bench/bench.mjs --T 65536 --ops decode --decodeB 1,16 > "$logs/trace-$how.log" 2>&1
  echo "== trace $how:"; grep -h 'decode trace (' "$logs/trace-$how.log" | sed -n '3p;$p'; grep -h 'decode trace, spread' "$logs/trace-$how.log" | sed -n '3p'
done
# Per-kernel times (ncu serialises launches: no overlap, no launch gaps; it flushes the caches before
# each kernel unless --cache-control none, so cold instruction fetches cost DRAM latency there).
ncuTimes() {  # ncuTimes <name> <env> <bench args...>
  local name=$1 e=$2; shift 2
  env $e timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum -k regex:decode -c 6 \
    node bench/bench.mjs --T 65536 --ops decode --decodeWarm 2 "$@" > "$logs/ncu-$name.log" 2>&1
  echo "== ncu $name (µs): $(grep -oE '(decode[A-Za-z]+Kernel|gpu__time_duration.sum +[a-z]+ +[0-9.,]+)' "$logs/ncu-$name.log" | sed -E 's/gpu__time_duration.sum +[a-z]+ +//' | tr '\n' ' ')"
}
if [[ ${NCU:-0} == 1 ]]; then
  ncuTimes default-B1 X=1 --decodeB 1
  ncuTimes v8-B1 NSA_DECODE_SPREAD=0 --decodeB 1
  ncuTimes supplied-B1 X=1 --decodeB 1 --decodeBlocks supplied
  ncuTimes default-B16 X=1 --decodeB 16
  ncuTimes spread-B16 NSA_DECODE_SPREAD=2 --decodeB 16
fi

# 3. Benchmarks, alone on the GPU: the default, the last-block merge (merge0) and v8 in alternating
# processes (the spread between two runs of one binary is the noise), with digests of every step.
if [[ $torch == 1 ]]; then
  timeout 300 python3 bench/torch_baseline.py "$Ts" "$logs/torch.json" > "$logs/torch.log" 2>&1
  base="--baseline $logs/torch.json"
else
  base=""
fi
bench() {  # bench <name> <env> <args...>
  local name=$1 e=$2; shift 2
  env $e timeout 300 node bench/bench.mjs "$@" > "$logs/bench-$name.log" 2>&1
  echo "== bench $name ($e $*)"; sed -n '/^| op /,$p' "$logs/bench-$name.log" | grep -E '^\| (op|decode|T |[0-9])' ; grep -h 'decode digest\|Error' "$logs/bench-$name.log"
}
bench default "X=1" --T "$Ts" --ops decode --decodeDigest $base
bench merge0 "NSA_DECODE_MERGE_LAUNCH=0" --T "$Ts" --ops decode --decodeDigest $base
bench v8 "NSA_DECODE_SPREAD=0" --T "$Ts" --ops decode --decodeDigest $base
bench default-again "X=1" --T "$Ts" --ops decode --decodeDigest $base
bench merge0-again "NSA_DECODE_MERGE_LAUNCH=0" --T "$Ts" --ops decode --decodeDigest $base
bench split4 "NSA_DECODE_SPREAD_SPLIT=4" --T "$Ts" --ops decode --decodeDigest
bench default-3 "X=1" --T "$Ts" --ops decode --decodeDigest $base
if [[ ${MORE:-0} == 1 ]]; then
  bench v7 "NSA_DECODE_SELECT=v7" --T "$Ts" --ops decode --decodeDigest $base
  bench supplied "X=1" --T 65536 --ops decode --decodeBlocks supplied
  bench sw2 "NSA_DECODE_SW_TILES=2" --T 65536 --ops decode
fi
cd "$root"
