#!/usr/bin/env bash
# Forward A/B on the GPU host with the test/ grid in the same command (helper cfwd7's calls): forward
# levels or switches (VARIANTS, each an env setting) against each other in one binary and against BASE
# (another staged build, e.g. run 26's) in alternating processes:
#   source .gpu/boot.sh && BASE=<absolute path of a staged dir> bash forward-ahead-check.sh <staged .gpuwork dir> <out dir>
# Order: registers; the test/ grid (gpu-parity.sh, bf16 + f16, under PARENV; default: no env, i.e. the
# default level) in the background at low priority (BGT seconds at most; the summary counts the cases
# that finished); forward ms at 64k and 16k, ROUNDS rounds; forward+backward at 64k (FB); every variant
# bit-equal to LEAN=0 (forward-ab-equal.mjs, ABEQ); determinism; then the parity summaries. Each stage
# logs to <out>/log.txt as it goes. The grid takes ~3 minutes on the H100 host next to the timings:
# wrap the script in `timeout` and tar /tmp/parity-logs (the per-case logs) after it, so a cut-off
# summary can be made off the host with parity-summary.py.
# Knobs: VARIANTS (default "NSA_FWD_LEAN=12"), ROUNDS (2), FB, ABEQ, PARENV, PAR (grid processes, 14),
# EXTRA (extra-parity case names with '_' for spaces), SKIPS (NSA_FWD_SKIP runs under the last variant).
set -uo pipefail
work=$1; out=$(realpath "$2")
cd "$work"
extra=node_modules/@nsa/cuda/scripts/extra-parity.mjs
bench=node_modules/@nsa/cuda/bench/bench.mjs
abeq=node_modules/@nsa/cuda/scripts/forward-ab-equal.mjs
addon=node_modules/@nsa/cuda/build/Release/nsa_cuda.node
mkdir -p "$out/par"
exec > >(tee -a "$out/log.txt") 2>&1
bg() { local log=$1; shift; (timeout ${BGT:-220} "$@" > "$out/par/$log" 2>&1 || echo "exited with $?" >> "$out/par/$log") & }
echo "== $(date -u +%T) registers (8-row kernels)"
cuobjdump -res-usage "$addon" 2>&1 | grep -A1 "PipeKernel" | grep -o "PipeKernelI[^ ]*\|REG:[0-9]*\|STACK:[0-9]*\|LOCAL:[0-9]*" | paste - - - - | grep "Li8E" | head -24
parenv=${PARENV-}
bg grid.log env $parenv nice -n 10 bash node_modules/@nsa/cuda/scripts/gpu-parity.sh "$PWD" "$out/par/grid-rows.log" ${PAR:-14} bfloat16,float16
for e in ${EXTRA:-}; do
  bg extra-$e.log env $parenv nice -n 10 node $extra --only "$(echo $e | tr _ ' ')"
done
variants=(${VARIANTS:-NSA_FWD_LEAN=12})
for round in $(seq 1 ${ROUNDS:-2}); do
  if [[ -n ${BASE:-} ]]; then
    echo "== $(date -u +%T) round $round BASE $BASE"; (cd "$BASE" && timeout 100 node $bench --T 65536,16384 --ops nsaFwd 2>&1 | grep "^| forward |")
  fi
  for e in "${variants[@]}"; do
    echo "== $(date -u +%T) round $round $e"; env $e timeout 100 node $bench --T 65536,16384 --ops nsaFwd 2>&1 | grep "^| forward |"
  done
done
for e in ${FB:-BASE NSA_FWD_LEAN=12}; do
  echo "== $(date -u +%T) forward+backward 64k $e"
  if [[ $e == BASE ]]; then (cd "$BASE" && timeout 100 node $bench --T 65536 --ops nsaFwdBwd 2>&1 | grep "^| forward+backward |")
  else env $e timeout 100 node $bench --T 65536 --ops nsaFwdBwd 2>&1 | grep "^| forward+backward |"; fi
done
for s in ${SKIPS:-}; do
  echo "== $(date -u +%T) ${variants[-1]} NSA_FWD_SKIP=$s"; env ${variants[-1]} NSA_FWD_SKIP=$s timeout 60 node $bench --T 65536 --ops nsaFwd 2>&1 | grep "^| forward |"
done
bg determinism.log env $parenv node node_modules/@nsa/cuda/scripts/determinism.mjs
echo "== $(date -u +%T) outputs: every level against LEAN=0 (must be bit-equal)"
timeout 120 node $abeq --variants "${ABEQ:-NSA_FWD_LEAN=0|NSA_FWD_LEAN=12}" --T 16384,65536 2>&1 | tail -11
wait
echo "== $(date -u +%T) parity (rows ok / failed, worst error, exits)"
cat "$out/par/grid.log"
for f in "$out"/par/extra-*.log; do [[ -f $f ]] && python3 node_modules/@nsa/cuda/scripts/parity-summary.py "$f"; done
# The grid's per-case logs (gpu-parity.sh's, in /tmp/parity-logs): those of cases that finished in time.
cat /tmp/parity-logs/*.log > "$out/par/grid-cases.log" 2>/dev/null
echo "grid cases listed: $(wc -l < /tmp/parity-cases.txt), logs: $(ls /tmp/parity-logs | wc -l), finished: $(grep -L 'exited with' /tmp/parity-logs/*.log | xargs grep -l '| yes |\|| NO |' | wc -l)"
python3 node_modules/@nsa/cuda/scripts/parity-summary.py "$out/par/grid-cases.log"
echo "== determinism"; tail -2 "$out/par/determinism.log"
echo "== $(date -u +%T) done"
