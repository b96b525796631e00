#!/usr/bin/env bash
# Helper ckv's last call: the L2 prefetch of a stage's Q/dO rows (this build) against the build
# without it (<v2 addon>, row prefetch only), alternating processes;
# bit-equality of the switches and parity of this build, parity of the 128-key path of both builds.
#   bash ckv-final.sh <staged .gpuwork dir> <log dir> <v2 addon>
set -uo pipefail
work=$(cd "$1" && pwd); logs=$2; mkdir -p "$logs"; logs=$(cd "$logs" && pwd); v2=$(cd "$(dirname "$3")" && pwd)/$(basename "$3")
cd "$work/node_modules/@nsa/cuda"
addon=build/Release/nsa_cuda.node; cp "$addon" /tmp/v3.node
use() { cp "/tmp/$1.node" "$addon"; }
bench() {  # bench <name> <env...>
  local name=$1; shift
  echo "== $name: $(env "$@" timeout 40 node bench/bench.mjs --T 65536 --ops nsaFwdBwd 2>&1 | tee -a "$logs/bench-$name.log" | grep -E '^\| forward\+backward' | awk -F'|' '{printf "%s:%s ", $3, $4}')"
}
cp "$v2" /tmp/v2.node
for i in 1 2; do
  use v3; bench v3 X=1; use v2; bench v2-skip0 NSA_BWD_KEY_SKIP=0
done
use v3
timeout 45 node scripts/key-variants.mjs > "$logs/key-variants.log" 2>&1 &
NSA_BWD_WIDE_KEYS=1 timeout 45 node scripts/determinism.mjs > "$logs/det-wide.log" 2>&1 &
NSA_BWD_WIDE_KEYS=1 timeout 45 node scripts/extra-parity.mjs --only "reg G=16 H=2" > "$logs/extra-h2-wide.log" 2>&1 &
NSA_BWD_WIDE_KEYS=1 timeout 45 node scripts/extra-parity.mjs --only "reg G=16 defaults" > "$logs/extra-def-wide.log" 2>&1 &
timeout 45 node scripts/extra-parity.mjs --only "reg G=16 varlen" > "$logs/extra-varlen.log" 2>&1 &
timeout 45 node scripts/extra-parity.mjs --only "split key lists" > "$logs/extra-split.log" 2>&1 &
mkdir -p /tmp/v2pkg && cp -r "$work" /tmp/v2pkg/ && cp /tmp/v2.node /tmp/v2pkg/$(basename "$work")/node_modules/@nsa/cuda/$addon
(cd /tmp/v2pkg/$(basename "$work")/node_modules/@nsa/cuda && NSA_BWD_WIDE_KEYS=1 timeout 42 node scripts/extra-parity.mjs --only "reg G=16 H=2" > "$logs/v2-extra-h2-wide.log" 2>&1) &
wait
tail -n 1 "$logs/key-variants.log" "$logs/det-wide.log" 2>&1 | grep -v "^$"
for f in extra-h2-wide extra-def-wide extra-varlen extra-split v2-extra-h2-wide; do echo "$f: $(tail -n 1 "$logs/$f.log")"; done
