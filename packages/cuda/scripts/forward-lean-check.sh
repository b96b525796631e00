#!/usr/bin/env bash
# Forward lean kernels on the GPU host, one command (helpers cfwd4, cfwd5), in one binary. Its default
# VARIANTS date from v20 (the default then; since session 15 the default is 27, v26, and VARIANTS /
# ABEQ / DETENV name the levels to compare): NSA_FWD_LEAN=12
# (v20: the 8-row kernel compiled with the default path only, masks as selects, the
# score walk through four K buffers, next tiles after the current Q·Kᵀ, the compressed walk without
# a block barrier per tile, no mask work on fully visible tiles), 11 / 9 (v20's first four / three
# parts), 1 (v19), 0 (v17's kernel, every path behind run-time flags):
#   source .gpu/boot.sh && [BASE=<absolute path of another staged dir>] bash forward-lean-check.sh <staged .gpuwork dir> <out dir>
# Parity (test/ grid G = 16 D 64 / 128 bf16 + f16, extra-parity "reg G=16", each LEAN level on two
# cases) starts first in the background at low priority (BGT: its limit, default 210 s); meanwhile
# registers, forward ms in alternating processes (BASE: another staged build's forward in the same
# rounds), branch shares (NSA_FWD_SKIP) and forward+backward of the default; then determinism and
# memcheck in the background while forward-ab-equal.mjs checks every LEAN level bit-equal to LEAN=0.
# Knobs (second call): VARIANTS, PARL (LEAN levels with parity of their own), PARDEF= (empty: no
# default-level parity), SKIPS, ABEQ (forward-ab-equal's variants), DETENV (determinism's / memcheck's env).
# The TMA levels of v17 (NSA_FWD_TMA=1 / 0) run the all-flags kernel: e.g. VARIANTS="NSA_FWD_LEAN=1 NSA_FWD_TMA=1 NSA_FWD_TMA=0"
# ABEQ="NSA_FWD_LEAN=0|NSA_FWD_TMA=1|NSA_FWD_TMA=0" PARL=1 bash forward-lean-check.sh ...
set -uo pipefail
work=$1; out=$(realpath "$2")
cd "$work"
runner=node_modules/@nsa/test/dist/run-parity.js
extra=node_modules/@nsa/cuda/scripts/extra-parity.mjs
bench=node_modules/@nsa/cuda/bench/bench.mjs
abeq=node_modules/@nsa/cuda/scripts/forward-ab-equal.mjs
addon=node_modules/@nsa/cuda/build/Release/nsa_cuda.node
mkdir -p "$out/par"
bg() { local log=$1; shift; (timeout ${BGT:-210} "$@" > "$out/par/$log" 2>&1 || echo "exited with $?" >> "$out/par/$log") & }
echo "== $(date -u +%T) registers (8-row kernels: Lean 0 / 1 / 2)"
cuobjdump -res-usage "$addon" 2>&1 | grep -A1 "PipeKernel" | grep -o "PipeKernelI[^ ]*\|REG:[0-9]*\|STACK:[0-9]*\|LOCAL:[0-9]*" | paste - - - - | grep "Li8E" | head -24
# Parity jobs first, in the background at low priority (their float64 references take the CPU; their
# GPU work at T <= 2000 is short against the medians of the timed rows). memcheck and determinism
# (long GPU work) start after the timings.
for d in ${PARDEF-bfloat16 float16}; do
  for D in 64 128; do bg "grid-$D-$d.log" nice -n 10 node $runner --backend cuda --scale gpu --dtypes $d --only "G=16 HQ=16 Dk=$D Dv=$D T=1024 $d"; done
  bg "extra-defaults-$d.log" nice -n 10 node $extra --only "reg G=16 defaults T=2000 D=64 $d"
done
if [[ -n ${PARDEF-x} ]]; then
  bg extra-varlen-bfloat16.log nice -n 10 node $extra --only "reg G=16 varlen D=64 bfloat16"
  bg extra-h2-float16.log nice -n 10 node $extra --only "reg G=16 H=2 B=2 D=128 float16"
fi
for L in ${PARL:-9 11}; do
  bg lean$L-grid-128-bfloat16.log env NSA_FWD_LEAN=$L nice -n 10 node $runner --backend cuda --scale gpu --dtypes bfloat16 --only "G=16 HQ=16 Dk=128 Dv=128 T=1024 bfloat16"
  bg lean$L-extra-varlen-float16.log env NSA_FWD_LEAN=$L nice -n 10 node $extra --only "reg G=16 varlen D=64 float16"
  [[ -n ${PARDEF-x} ]] || bg lean$L-extra-defaults-bfloat16.log env NSA_FWD_LEAN=$L nice -n 10 node $extra --only "reg G=16 defaults T=2000 D=64 bfloat16"
done
variants=(${VARIANTS:-NSA_FWD_LEAN=12 NSA_FWD_LEAN=1 NSA_FWD_LEAN=11 NSA_FWD_LEAN=9})
for round in 1 2; do
  if (( round == 1 )); then T=65536,16384; else T=65536; fi
  if [[ -n ${BASE:-} ]]; then
    echo "== $(date -u +%T) BASE $BASE"; (cd "$BASE" && timeout 100 node $bench --T $T --ops nsaFwd 2>&1 | grep "^| forward |")
  fi
  for e in "${variants[@]}"; do
    echo "== $(date -u +%T) $e"; env $e timeout 100 node $bench --T $T --ops nsaFwd 2>&1 | grep "^| forward |"
  done
done
for s in ${SKIPS:-1 2}; do
  echo "== $(date -u +%T) NSA_FWD_SKIP=$s"; NSA_FWD_SKIP=$s timeout 60 node $bench --T 65536 --ops nsaFwd 2>&1 | grep "^| forward |"
done
echo "== $(date -u +%T) default forward+backward"; timeout 100 node $bench --T 65536 --ops nsaFwdBwd 2>&1 | grep "^| forward+backward |"
bg determinism.log env ${DETENV:-NSA_FWD_LEAN=12} node node_modules/@nsa/cuda/scripts/determinism.mjs
bg memcheck-lean.log env ${DETENV:-NSA_FWD_LEAN=12} compute-sanitizer --tool memcheck node $extra --only "reg G=16 varlen D=64 bfloat16"
[[ -n ${PARDEF-x} ]] && bg memcheck-lean2.log env NSA_FWD_LEAN=9 compute-sanitizer --tool memcheck node $extra --only "reg G=16 H=2 B=2 D=128 float16"
echo "== $(date -u +%T) outputs: every LEAN level against LEAN=0 (must be bit-equal)"
timeout 120 node $abeq --variants "${ABEQ:-NSA_FWD_LEAN=0|NSA_FWD_LEAN=1|NSA_FWD_LEAN=9|NSA_FWD_LEAN=11|NSA_FWD_LEAN=12}" --T 16384,65536 2>&1 | tail -11
wait
echo "== $(date -u +%T) parity (log: rows ok / failed, worst error and its quantity, exits)"
for f in "$out"/par/*.log; do
  case $f in *memcheck*|*determinism*) continue;; esac
  python3 node_modules/@nsa/cuda/scripts/parity-summary.py "$f"
done
echo "== determinism"; tail -2 "$out/par/determinism.log"
for f in memcheck-lean memcheck-lean2; do [[ -f "$out/par/$f.log" ]] || continue; echo "== $f"; grep -h "ERROR SUMMARY\|| NO |" "$out/par/$f.log" | tail -3; grep -c "| yes |" "$out/par/$f.log"; done
echo "== $(date -u +%T) done"
