#!/usr/bin/env bash
# The dense kernels' TMA tile copies (NSA_DENSE_BWD_TMA, NSA_DENSE_FWD_TMA) against a baseline build, one
# GPU-host command:
#   source .gpu/boot.sh && bash dense-tma-check.sh <staged .gpuwork dir> <baseline .gpuwork dir> <out dir> [ab|final]
# 1. gate: dense-backward-check.mjs on one varlen shape (parity, both dtypes);
# 2. torch_baseline.py at 8k..64k (cuDNN);
# 3. bench --ops dense, alternating processes: new binary (default) and the baseline at 32k (3 rounds),
#    the new binary's switches at 32k (ab: NSA_DENSE_BWD_TMA=sync / kv / 0, NSA_DENSE_FWD_TMA=0; final:
#    NSA_DENSE_FWD_TMA=0 twice, NSA_DENSE_BWD_TMA=0), then 16k and 64k (ab) or 8k, 16k, 64k twice (final)
#    new / baseline;
# 4. the checks in parallel: dense-backward-check.mjs (parity + bit-equality across runs) for the default
#    and each switch, dense-tma-equal.mjs (the copy modes' gradients bit for bit), dense-forward-check.mjs (final), extra-parity.mjs --only "dense ", test/'s grid
#    --only "dense ", compute-sanitizer memcheck of dense-backward-check --only "varlen G=16 D=128 bfloat16".
# Every log lands in <out dir>; the summary is printed last.
set -uo pipefail
work=$(realpath "$1"); base=$(realpath "$2"); out=$(realpath "$3"); mode=${4:-ab}
mkdir -p "$out"
cd "$work"
pkg=node_modules/@nsa/cuda
bench() {  # bench <dir> <log> <Ts> [env...]
  local dir=$1 log=$2 Ts=$3; shift 3
  (cd "$dir" && env "$@" node "$pkg/bench/bench.mjs" --ops dense --T "$Ts" --baseline "$out/torch.json") >> "$out/$log" 2>&1
  echo "== $log $* T=$Ts" >> "$out/bench-all.log"
  grep "^| forward" "$out/$log" | tail -n $(( $(tr -cd , <<< "$Ts" | wc -c) * 2 + 2 )) >> "$out/bench-all.log"
}
echo "== gate" | tee "$out/summary.txt"
# A gate that fails turns that TMA path off (exported) for the rest of the call, and says so.
timeout 120 node $pkg/scripts/dense-forward-check.mjs --only "varlen G=16 D=128" --no-determinism > "$out/gate-fwd.log" 2>&1
echo "forward gate rows ok: $(grep -c '| yes |' "$out/gate-fwd.log"), failed: $(grep -c '| NO |' "$out/gate-fwd.log")" | tee -a "$out/summary.txt"
if grep -q "| NO |" "$out/gate-fwd.log" || ! grep -q "| yes |" "$out/gate-fwd.log"; then
  export NSA_DENSE_FWD_TMA=0; echo "FORWARD GATE FAILED: NSA_DENSE_FWD_TMA=0 from here on" | tee -a "$out/summary.txt"
fi
timeout 120 node $pkg/scripts/dense-backward-check.mjs --only "varlen G=16 D=128" --no-determinism > "$out/gate.log" 2>&1
echo "backward gate rows ok: $(grep -c '| yes |' "$out/gate.log"), failed: $(grep -c '| NO |' "$out/gate.log")" | tee -a "$out/summary.txt"
if grep -q "| NO |" "$out/gate.log" || ! grep -q "| yes |" "$out/gate.log"; then
  export NSA_DENSE_BWD_TMA=0; echo "BACKWARD GATE FAILED: NSA_DENSE_BWD_TMA=0 from here on" | tee -a "$out/summary.txt"
fi
timeout 150 python3 $pkg/bench/torch_baseline.py 8192,16384,32768,65536 "$out/torch.json" > "$out/torch.log" 2>&1
tail -3 "$out/torch.log"
for r in 1 2 3; do
  bench "$work" new-32k.log 32768
  bench "$base" base-32k.log 32768
done
if [[ $mode == final ]]; then
  bench "$work" fwd0-32k.log 32768 NSA_DENSE_FWD_TMA=0
  bench "$work" new-32k.log 32768
  bench "$work" fwd0-32k.log 32768 NSA_DENSE_FWD_TMA=0
  bench "$work" off-32k.log 32768 NSA_DENSE_BWD_TMA=0 NSA_DENSE_FWD_TMA=0
else
  bench "$work" sync-32k.log 32768 NSA_DENSE_BWD_TMA=sync
  bench "$work" kv-32k.log 32768 NSA_DENSE_BWD_TMA=kv
  bench "$work" off-32k.log 32768 NSA_DENSE_BWD_TMA=0
  bench "$work" fwd0-32k.log 32768 NSA_DENSE_FWD_TMA=0
fi
if [[ $mode == final ]]; then Ts=8192,16384,65536; else Ts=16384,65536; fi
bench "$work" new-rest.log $Ts
bench "$base" base-rest.log $Ts
if [[ $mode == final ]]; then bench "$work" new-rest.log $Ts; bench "$base" base-rest.log $Ts; fi
cat "$out/bench-all.log"
# Checks, in parallel (the timings are done).
bg() { local log=$1; shift; (timeout 200 "$@" > "$out/$log" 2>&1 || echo "exited with $?" >> "$out/$log") & }
bg check-default.log node $pkg/scripts/dense-backward-check.mjs
bg check-sync.log env NSA_DENSE_BWD_TMA=sync node $pkg/scripts/dense-backward-check.mjs --no-determinism
bg check-fwd0.log env NSA_DENSE_FWD_TMA=0 node $pkg/scripts/dense-backward-check.mjs --no-determinism
bg check-kv.log env NSA_DENSE_BWD_TMA=kv node $pkg/scripts/dense-backward-check.mjs --no-determinism
bg check-split.log env NSA_DENSE_BWD_SPLIT=1 node $pkg/scripts/dense-backward-check.mjs --no-determinism
bg equal.log node $pkg/scripts/dense-tma-equal.mjs
bg extra.log node $pkg/scripts/extra-parity.mjs --only "dense "
bg grid.log node node_modules/@nsa/test/dist/run-parity.js --backend cuda --scale gpu --dtypes bfloat16,float16 --only "dense "
bg fwd.log node $pkg/scripts/dense-forward-check.mjs
bg memcheck.log compute-sanitizer --tool memcheck node $pkg/scripts/dense-backward-check.mjs --only "varlen G=16 D=128 bfloat16" --no-determinism
bg memcheck-fwd.log compute-sanitizer --tool memcheck node $pkg/scripts/dense-forward-check.mjs --only "varlen G=16 D=128 bfloat16" --no-determinism
wait
{
  echo "== checks (rows ok / failed)"
  for f in "$out"/check-*.log "$out"/equal.log "$out"/extra.log "$out"/grid.log "$out"/fwd.log "$out"/memcheck*.log; do
    [[ -f $f ]] || continue
    echo "$(basename "$f"): ok $(grep -c '| yes |' "$f"), failed $(grep -c '| NO |' "$f") $(grep -h 'exited with\|ERROR SUMMARY\|passed,\|DIFFER\|bit-equal across' "$f" | sort | uniq -c | tr '\n' ' ')"
  done
} | tee -a "$out/summary.txt"
