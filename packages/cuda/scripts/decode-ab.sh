#!/usr/bin/env bash
# One GPU-host call for a decode change: parity of the paths it touches (in parallel), traced 64k
# B=1 steps (with the SM clock of one launch-1 block), A/B benchmarks of the decode rows in
# alternating processes, and whether a step is slower after the heavy training rows (nvidia-smi
# clocks sampled beside it). Run from the repository root on the host, over a staged folder:
#   bash packages/cuda/scripts/decode-ab.sh <staged dir> <log dir> [Ts, default 65536]
# B_ENV: the variables of the previous path (default: v9's cursor, triggers and slice merge);
# PARITY_ENV: a candidate's variables, checked beside the default; VARIANTS (see 2.) for the traces
# and benchmarks. MEMCHECK64=1: the 64k bench step under memcheck; HEAVY=0: skip part 4.
# Logs stay in <log dir> (tar it into $OUT).
set -uo pipefail
work=$(cd "$1" && pwd); logs=$2; Ts=${3:-65536}
B_ENV=${B_ENV:-NSA_DECODE_CURSOR=0 NSA_DECODE_LATE_TRIGGER=0 NSA_DECODE_EARLY_WINDOW=1 NSA_DECODE_SLICE2=0}
mkdir -p "$logs"
logs=$(cd "$logs" && pwd)
cd "$work/node_modules/@nsa/cuda"
parity=scripts/decode-parity.mjs

# 1. Parity (several processes on the GPU at once; correctness only).
checks=()
check() {  # check <name> <env> <command...>
  local name=$1 e=$2; shift 2
  checks+=("$name")
  (env $e timeout 300 "$@" > "$logs/$name.log" 2>&1; echo "exit $?" >> "$logs/$name.log") &
}
check parity X=1 node $parity
check parity-B "$B_ENV" node $parity
check parity-v8 NSA_DECODE_SPREAD=0 node $parity
check parity-spread2 NSA_DECODE_SPREAD=2 node $parity
[[ -n ${PARITY_ENV:-} ]] && check parity-candidate "$PARITY_ENV" node $parity && check parity-candidate-spread2 "$PARITY_ENV NSA_DECODE_SPREAD=2" node $parity --only bfloat16
check parity-merge0 NSA_DECODE_MERGE_LAUNCH=0 node $parity --only bfloat16
check parity-nopdl NSA_DECODE_PDL=0 node $parity --only bfloat16
check parity-sw2 NSA_DECODE_SW_TILES=2 node $parity --only bfloat16
check memcheck X=1 compute-sanitizer --tool memcheck node $parity --only "small G=16 H=2 D=64 B=3 from 5 bfloat16"
check memcheck-spread2 "NSA_DECODE_SPREAD=2 ${PARITY_ENV:-}" compute-sanitizer --tool memcheck node $parity --only "G=16 H=2 D=128 B=16"
(cd "$work" && timeout 300 node node_modules/@nsa/test/dist/run-parity.js --backend cuda --scale gpu --dtypes bfloat16,float16 --only decode > "$logs/grid-decode.log" 2>&1; echo "exit $?" >> "$logs/grid-decode.log") &
wait
for f in "${checks[@]}" grid-decode; do
  echo "== $f: $(grep -c '| yes |' "$logs/$f.log") ok, $(grep -c '| NO |' "$logs/$f.log") failed; $(grep -h 'passed,\|ERROR SUMMARY\|^exit' "$logs/$f.log" | tr '\n' ' ')"
done
echo "== digests: $(cd "$logs" && grep -Ho 'digest [0-9a-f]*' parity*.log | tr '\n' ' ')"
if [[ ${MEMCHECK64:-0} == 1 ]]; then
  timeout 200 compute-sanitizer --tool memcheck node bench/bench.mjs --T 65536 --ops decode --decodeB 1,16 --decodeWarm 1 --decodeDigest > "$logs/memcheck-64k.log" 2>&1
  echo "== memcheck-64k: $(grep -h 'ERROR SUMMARY\|decode digest' "$logs/memcheck-64k.log" | tr '\n' ' ')"
fi

# 2. Variants: VARIANTS, space-separated "name:VAR=1,VAR2=0" (default: A = the default, B = $B_ENV).
variants=(${VARIANTS:-A:X=1 B:${B_ENV// /,}})
envOf() { echo "${1#*:}" | tr , ' '; }
# Traced 64k B=1 steps (pair 0, every 64th call: calls 64-192 paced, 256 queued behind holdGpu, 320+
# back to back), one process per variant.
for v in "${variants[@]}"; do
  env $(envOf "$v") NSA_DECODE_TRACE=1 timeout 100 node bench/bench.mjs --T 65536 --ops decode --decodeB 1 --decodeWarmMs 0 > "$logs/trace-${v%%:*}.log" 2>&1
  echo "== trace ${v%%:*} ($(envOf "$v")):"; grep -h 'decode trace' "$logs/trace-${v%%:*}.log" | sed -n '7,12p'
done

# 3. Benchmarks, the variants alternating, ROUNDS rounds (default 2); Ts and BS (default 1,16).
bench() {  # bench <name> <env> <args...>
  local name=$1 e=$2; shift 2
  env $e timeout 200 node bench/bench.mjs "$@" > "$logs/bench-$name.log" 2>&1
  echo "== bench $name ($e $*)"; grep -E '^\| [0-9]+ \| [0-9]+ \|' "$logs/bench-$name.log"; grep -h 'decode digest\|Error' "$logs/bench-$name.log"
}
for i in $(seq 1 "${ROUNDS:-2}"); do
  for v in "${variants[@]}"; do bench "${v%%:*}-$i" "$(envOf "$v")" --T "$Ts" --ops decode --decodeDigest --decodeB "${BS:-1,16}"; done
done
# FULL: variant names benchmarked once more at FULL_TS (default 8192,16384,32768,65536), B 1 and 16.
for v in "${variants[@]}"; do
  [[ " ${FULL:-} " == *" ${v%%:*} "* ]] && bench "${v%%:*}-full" "$(envOf "$v")" --T "${FULL_TS:-8192,16384,32768,65536}" --ops decode --decodeDigest
done

# 4. After the heavy rows: the 64k training rows (NSA and dense), then the decode rows, in one
# process, with the bench's time-based warm-up (default) and without it; nvidia-smi samples the
# clocks beside them; a traced process prints the SM clock of launch 1 after the same rows.
if [[ ${HEAVY:-1} == 1 ]]; then
  smi() { nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active --format=csv,noheader -lms 100 > "$logs/smi-$1.log" 2>&1 & echo $!; }
  s=$(smi heavy-warm0); bench heavy-warm0 "X=1" --T 65536 --ops nsaFwdBwd,dense,decode --decodeB 1 --decodeWarmMs 0; kill "$s"
  s=$(smi heavy); bench heavy "X=1" --T 65536 --ops nsaFwdBwd,dense,decode --decodeB 1; kill "$s"
  env NSA_DECODE_TRACE=1 timeout 100 node bench/bench.mjs --T 65536 --ops nsaFwdBwd,dense,decode --decodeB 1 --decodeWarmMs 0 > "$logs/trace-heavy.log" 2>&1
  echo "== SM clock of launch 1 after the training rows (every 64th step): $(grep -h 'SM clock' "$logs/trace-heavy.log" | grep -o '[0-9]* MHz' | head -8 | tr '\n' ' ')"
fi
