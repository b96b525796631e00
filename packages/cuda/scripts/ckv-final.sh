#!/usr/bin/env bash
# Helper ckv's last call: the committed defaults (row prefetch on, two stage buffers) against
# NSA_BWD_KEY_SKIP=0 and the old key blocks, alternating; bit-equality of the switches; parity of
# the 128-key path (NSA_BWD_WIDE_KEYS=1 at small T) with two stage buffers.
#   bash ckv-final.sh <staged .gpuwork dir> <log dir>
set -uo pipefail
work=$(cd "$1" && pwd); logs=$2; mkdir -p "$logs"; logs=$(cd "$logs" && pwd)
cd "$work/node_modules/@nsa/cuda"
OLD="NSA_BWD_KEY_PREFETCH=0 NSA_BWD_KEY_SKIP=0"
bench() {  # bench <name> <T list> <env...>
  local name=$1 Ts=$2; shift 2
  echo "== $name $Ts: $(env "$@" timeout 60 node bench/bench.mjs --T "$Ts" --ops nsaFwdBwd 2>&1 | tee -a "$logs/bench-$name.log" | grep -E '^\| forward\+backward' | awk -F'|' '{printf "%s:%s ", $3, $4}')"
}
for i in 1 2; do
  bench new 65536 X=1; bench skip0 65536 NSA_BWD_KEY_SKIP=0; bench old 65536 $OLD
done
timeout 60 node scripts/key-variants.mjs > "$logs/key-variants.log" 2>&1; tail -n 1 "$logs/key-variants.log"
NSA_BWD_WIDE_KEYS=1 timeout 100 node scripts/determinism.mjs > "$logs/det-wide.log" 2>&1 &
NSA_BWD_WIDE_KEYS=1 timeout 100 node scripts/extra-parity.mjs --only "reg G=16 H=2" > "$logs/extra-h2-wide.log" 2>&1 &
NSA_BWD_WIDE_KEYS=1 timeout 100 node scripts/extra-parity.mjs --only "reg G=16 defaults" > "$logs/extra-def-wide.log" 2>&1 &
timeout 100 node scripts/extra-parity.mjs --only "reg G=16 varlen" > "$logs/extra-varlen.log" 2>&1 &
wait
tail -n 1 "$logs/det-wide.log"
for f in extra-h2-wide extra-def-wide extra-varlen; do echo "$f: $(tail -n 1 "$logs/$f.log")"; done
