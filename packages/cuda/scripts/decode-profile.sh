#!/usr/bin/env bash
# Where the decode's launch 1 spends its time (ncu warp states + stall samples per CUDA source line,
# the -lineinfo build) for v8, v7 and supplied blockIndices at 64k B=1; then, given a second addon
# (gzip, e.g. an older commit's build), that addon against this one in alternating bench processes.
# Run on the GPU host from the repository root over a staged folder (stage-gpu.sh):
#   bash packages/cuda/scripts/decode-profile.sh <staged dir> <log dir> [other addon .node.gz]
set -uo pipefail
W=$(cd "$1" && pwd); L=$2; other=${3:-}; mkdir -p "$L"; L=$(cd "$L" && pwd)
if [[ -n $other ]]; then
  rm -rf /tmp/decode-other && cp -r "$W" /tmp/decode-other
  gunzip -c "$other" > /tmp/decode-other/node_modules/@nsa/cuda/build/Release/nsa_cuda.node
fi
cd $W/node_modules/@nsa/cuda
prof() {  # prof <name> <env> <bench args>
  local name=$1 e=$2; shift 2
  # ncu flushes the caches before each kernel by default: cold instruction fetches then come from DRAM,
  # which a step in a loop never sees (BENCHMARKS.md "Decode: where launch 1's tail goes"); CACHE=none keeps them.
  env $e timeout 150 ncu --clock-control none --cache-control ${CACHE:-all} --section WarpStateStats --section SpeedOfLight --section LaunchStats --section SourceCounters \
    -k regex:decodeCmpKernel -s 2 -c 1 -o $L/rep-$name node bench/bench.mjs --T 65536 --ops decode --decodeWarm 2 "$@" > $L/ncu-$name.log 2>&1
  ncu -i $L/rep-$name.ncu-rep --print-details all > $L/sections-$name.txt 2>&1
  echo "== $name: $(grep -E 'Duration|Warp Cycles Per Issued|No Instruction|Stall' $L/sections-$name.txt | head -12 | tr -s ' ' | tr '\n' ';')"
  # Per SASS instruction (ncu's CUDA-line page prints no metrics here). Instructions executed by few
  # warps (under 1/8 of the most executed) are the last blocks' tail (the selection); the rest, the walks.
  ncu -i $L/rep-$name.ncu-rep --page source --csv --print-source sass > $L/source-$name-sass.csv 2>&1
  python3 - $L/source-$name-sass.csv <<'PY'
import csv, sys
from collections import Counter
rows = list(csv.reader(open(sys.argv[1], errors='replace')))
hi = next((i for i, r in enumerate(rows) if r and r[0] == 'Address'), None)
if hi is None: print('no source page'); sys.exit()
h = rows[hi]; ie = h.index('Instructions Executed'); ss = h.index('Warp Stall Sampling (All Samples)')
stalls = [i for i, c in enumerate(h) if c.startswith('stall_') and 'Not Issued' not in c]
num = lambda x: int(x.replace(',', '') or 0) if x.replace(',', '').isdigit() else 0
data = [(num(r[ie]), num(r[ss]), r) for r in rows[hi + 1:] if len(r) > ss]
top = max(e for e, _, _ in data)
for part, keep in (('walks', lambda e: e >= top / 8), ('tail', lambda e: 0 < e < top / 8)):
    sel = [(e, s, r) for e, s, r in data if keep(e)]
    why = Counter()
    for _, _, r in sel:
        for i in stalls: why[h[i][6:]] += num(r[i])
    print(f'  {part}: {len(sel)} instructions executed, {sum(s for _, s, _ in sel)} samples:', ', '.join(f'{k} {v}' for k, v in why.most_common(6)))
PY
}
# PROFILES="v8-B1 supplied-B1" picks some (each profile took ~10 s of command time in run P1).
for name in ${PROFILES:-v8-B1 v7-B1 supplied-B1}; do
  case $name in
    v8-B1) prof v8-B1 X=1 --decodeB 1 ;;
    v7-B1) prof v7-B1 NSA_DECODE_SELECT=v7 --decodeB 1 ;;
    supplied-B1) prof supplied-B1 X=1 --decodeB 1 --decodeBlocks supplied ;;
  esac
done
bench() {  # bench <name> <dir> <env>
  (cd $2/node_modules/@nsa/cuda && env $3 timeout 200 node bench/bench.mjs --T 8192,65536 --ops decode --decodeDigest > $L/bench-$1.log 2>&1)
  echo "== bench $1"; grep -E '^\| [0-9]' $L/bench-$1.log; grep -h 'decode digest T=65536' $L/bench-$1.log | cut -c1-60
}
[[ -n $other ]] || exit 0
bench other /tmp/decode-other X=1
bench this $W X=1
bench other-again /tmp/decode-other X=1
bench this-again $W X=1
bench this-v7 $W NSA_DECODE_SELECT=v7
