#!/usr/bin/env bash
# Helper ckv's checks of the key-block switches (NSA_BWD_KEY_PREFETCH, _SKIP, _RING) on the GPU host:
# bit-equality of the switches, fwd+bwd A/B in alternating processes, per-kernel ncu times, parity.
#   bash ckv-check.sh <staged .gpuwork dir> <log dir>
set -uo pipefail
work=$(cd "$1" && pwd); logs=$2; mkdir -p "$logs"; logs=$(cd "$logs" && pwd)
cd "$work/node_modules/@nsa/cuda"
OLD="NSA_BWD_KEY_PREFETCH=0 NSA_BWD_KEY_SKIP=0 NSA_BWD_KEY_RING=2"
timeout 60 node scripts/key-variants.mjs > "$logs/key-variants.log" 2>&1; tail -1 "$logs/key-variants.log"
bench() {  # bench <name> <T list> <env...>
  local name=$1 Ts=$2; shift 2
  echo "== $name $Ts: $(env "$@" timeout 90 node bench/bench.mjs --T "$Ts" --ops nsaFwdBwd 2>&1 | tee -a "$logs/bench-$name.log" | grep -E '^\| forward\+backward' | awk -F'|' '{printf "%s:%s ", $3, $4}')"
}
for i in 1 2; do
  bench new 65536 X=1; bench old 65536 $OLD; bench ring2 65536 NSA_BWD_KEY_RING=2
done
bench new 16384 X=1; bench old 16384 $OLD; bench new 16384 X=1; bench old 16384 $OLD
ncuT() {  # ncuT <name> <env...>: per-kernel ms, key kernels and the shared grid
  local name=$1; shift
  env "$@" timeout 100 ncu --clock-control none --metrics gpu__time_duration.sum -k regex:'keyGrad|nsaBwdShared|nsaDqFrag' \
    node scripts/backward-profile.mjs --T 65536 --iters 1 > "$logs/ncu-$name.log" 2>&1
  echo "== ncu $name: $(grep -oE '(keyGradRegKernel<[^>]*>|nsaBwdSharedKernel<[^>]*>|nsaDqFragKernel<[^>]*>|gpu__time_duration.sum +[a-z]+ +[0-9.,]+)' "$logs/ncu-$name.log" | sed -E 's/gpu__time_duration.sum +//; s/__nv_bfloat16, 128, //' | tr '\n' ' ')"
}
ncuT sep-new NSA_BWD_SHARED=0; ncuT sep-old NSA_BWD_SHARED=0 $OLD; ncuT sep-prefetch-only NSA_BWD_SHARED=0 NSA_BWD_KEY_SKIP=0 NSA_BWD_KEY_RING=2
ncuT sep-ring2 NSA_BWD_SHARED=0 NSA_BWD_KEY_RING=2
timeout 60 node scripts/backward-profile.mjs --T 65536 --iters 4 > "$logs/bprof-new.log" 2>&1; env $OLD timeout 60 node scripts/backward-profile.mjs --T 65536 --iters 4 > "$logs/bprof-old.log" 2>&1
tail -2 "$logs/bprof-new.log" "$logs/bprof-old.log"
# parity, all at once
(timeout 200 node scripts/determinism.mjs > "$logs/det.log" 2>&1; NSA_BWD_WIDE_KEYS=1 timeout 100 node scripts/determinism.mjs > "$logs/det-wide.log" 2>&1) &
timeout 240 node scripts/extra-parity.mjs --only "reg G=16" > "$logs/extra-reg.log" 2>&1 &
NSA_BWD_WIDE_KEYS=1 timeout 240 node scripts/extra-parity.mjs --only "reg G=16" > "$logs/extra-reg-wide.log" 2>&1 &
timeout 240 node scripts/extra-parity.mjs --only "split key lists" > "$logs/extra-split.log" 2>&1 &
NSA_BWD_WIDE_KEYS=1 NSA_BWD_SHARED=0 timeout 240 node scripts/extra-parity.mjs --only "split key lists" > "$logs/extra-split-wide.log" 2>&1 &
timeout 170 bash scripts/gpu-parity.sh "$work" "$logs/grid.log" 10 bfloat16,float16 > "$logs/grid-summary.log" 2>&1
wait
cat /tmp/parity-logs/*.log > "$logs/grid.log"
echo "grid: cases $(wc -l < /tmp/parity-cases.txt), case logs $(ls /tmp/parity-logs | wc -l), rows ok $(grep -c '| yes |' "$logs/grid.log"), rows failed $(grep -c '| NO |' "$logs/grid.log"), exits $(grep -c 'exited with' "$logs/grid.log")"
tail -1 "$logs/det.log" "$logs/det-wide.log"
for f in extra-reg extra-reg-wide extra-split extra-split-wide; do echo "$f: $(tail -1 "$logs/$f.log")"; done
