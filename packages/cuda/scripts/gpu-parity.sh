#!/usr/bin/env bash
# Runs the cross-backend parity grid (test/, scale gpu) for the cuda backend on the GPU host, one
# process per case, many at a time: the float64 reference on the CPU is the slow side.
#   bash gpu-parity.sh <staged .gpuwork dir> <log file> [parallel=14] [dtypes=float32,float16,bfloat16]
set -uo pipefail
work=$1; log=$2; par=${3:-14}; dtypes=${4:-float32,float16,bfloat16}
cd "$work"
runner=node_modules/@nsa/test/dist/run-parity.js
node --input-type=module -e "
import { nsaCases, attentionCases } from './node_modules/@nsa/test/dist/cases.js';
const d = '$dtypes'.split(',');
for (const c of [...nsaCases('gpu', d), ...attentionCases('gpu', d)]) console.log(c.name);
" > /tmp/parity-cases.txt
mkdir -p /tmp/parity-logs && rm -f /tmp/parity-logs/*
i=0
while IFS= read -r name; do
  i=$((i + 1))
  printf '%s\0%s\0' "$i" "$name"
done < /tmp/parity-cases.txt | xargs -0 -n 2 -P "$par" sh -c 'timeout 540 node '"$runner"' --backend cuda --scale gpu --dtypes '"$dtypes"' --only "$1" > /tmp/parity-logs/$0.log 2>&1 || echo "case $1 exited with $?" >> /tmp/parity-logs/$0.log'
cat /tmp/parity-logs/*.log > "$log"
echo "cases: $(wc -l < /tmp/parity-cases.txt); rows ok: $(grep -c '| yes |' "$log"); rows failed: $(grep -c '| NO |' "$log"); exits: $(grep -c 'exited with' "$log")"
