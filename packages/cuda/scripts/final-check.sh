#!/usr/bin/env bash
# The whole-package check on the GPU host, as the lead's final runs do it: the torch/cuDNN baseline,
# the full benchmark alone on the GPU, then every parity script at once (the float64 reference is
# CPU-bound; 16 host cores). Run from the repository root over a staged folder (stage-gpu.sh):
#   bash packages/cuda/scripts/final-check.sh <staged dir> <log dir>
# Build the addon with sm_90a code (`cmake-js rebuild ... 90a`, or build:native) so the wgmma forward runs.
set -uo pipefail
W=$(cd "$1" && pwd); L=$2; mkdir -p "$L/logs"
C=$W/node_modules/@nsa/cuda
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cd "$C"; t0=$SECONDS
echo "== torch baseline"; timeout 100 python3 bench/torch_baseline.py 8192,16384,32768,65536 "$L/logs/torch.json" > "$L/logs/torch.log" 2>&1; echo "exit $? ($((SECONDS - t0)) s)"
echo "== bench"; timeout 150 node bench/bench.mjs --T 8192,16384,32768,65536 --baseline "$L/logs/torch.json" > "$L/bench.txt" 2>&1; echo "exit $? ($((SECONDS - t0)) s)"; sed -n '/^device:/,$p' "$L/bench.txt"
bg() { local log=$1; shift; (timeout 300 "$@" > "$L/logs/$log" 2>&1; echo "exit $?" >> "$L/logs/$log") & }
i=0
for f in "Dk=256 Dv=256" "Dk=256 Dv=64" "G=64 " "G=128" "reg G=16 varlen" "reg G=16 H=2" "reg G=16 defaults" "reg G=16 supplied" "split key" "dense "; do
  i=$((i + 1)); bg "extra$i.log" node scripts/extra-parity.mjs --only "$f"
done
bg decode.log node scripts/decode-parity.mjs
bg densefwd.log node scripts/dense-forward-check.mjs
bg densebwd.log node scripts/dense-backward-check.mjs
bg det.log node scripts/determinism.mjs
bg memcheck.log compute-sanitizer --tool memcheck node scripts/extra-parity.mjs --only "reg G=16 varlen D=64 bfloat16"
bg memdensefwd.log compute-sanitizer --tool memcheck node scripts/dense-forward-check.mjs --only "varlen G=16 D=128 bfloat16" --no-determinism
bg memdensebwd.log compute-sanitizer --tool memcheck node scripts/dense-backward-check.mjs --only "varlen G=16 D=128 bfloat16" --no-determinism
echo "== grid"; timeout 300 bash scripts/gpu-parity.sh "$W" "$L/logs/grid.log" 8 bfloat16,float16 2>&1 | tail -1
wait
echo "== checks ($((SECONDS - t0)) s)"
cat "$L"/logs/extra[0-9]*.log > "$L/logs/extra-all.log"
for f in extra-all decode densefwd densebwd det memcheck memdensefwd memdensebwd; do
  echo "-- $f: ok $(grep -c '| yes |' "$L/logs/$f.log") failed $(grep -c '| NO |' "$L/logs/$f.log"); $(grep -h 'determinism: all\|DIFFERS\|ERROR SUMMARY\|^exit' "$L/logs/$f.log" | sort | uniq -c | tr '\n' ' ')"
done
