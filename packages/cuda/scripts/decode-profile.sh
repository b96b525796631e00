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
  env $e timeout 150 ncu --clock-control none --section WarpStateStats --section SpeedOfLight --section LaunchStats --section SourceCounters \
    -k regex:decodeCmpKernel -s 2 -c 1 -o $L/rep-$name node bench/bench.mjs --T 65536 --ops decode --decodeWarm 2 "$@" > $L/ncu-$name.log 2>&1
  ncu -i $L/rep-$name.ncu-rep --print-details all > $L/sections-$name.txt 2>&1
  echo "== $name: $(grep -E 'Duration|Warp Cycles Per Issued|No Instruction|Stall' $L/sections-$name.txt | head -12 | tr -s ' ' | tr '\n' ';')"
  # Per CUDA source line (needs the sources at their build paths) and per SASS instruction.
  for view in cuda sass; do
    ncu -i $L/rep-$name.ncu-rep --page source --csv --print-source $view > $L/source-$name-$view.csv 2>&1
    echo "  -- $view"
    python3 - $L/source-$name-$view.csv <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1], errors='replace')))
hdr_i = next((i for i, r in enumerate(rows) if any('Warp Stall Sampling (All' in c for c in r)), None)
if hdr_i is None:
    print('no source page:', ' | '.join(' '.join(r) for r in rows[:3])[:400]); sys.exit()
h = rows[hdr_i]; si = next(i for i, c in enumerate(h) if 'Warp Stall Sampling (All' in c)
li = next((i for i, c in enumerate(h) if c.strip() in ('#', 'Line', '# Line')), 0); txt = next((i for i, c in enumerate(h) if c.strip() == 'Source'), len(h) - 1)
data = []
for r in rows[hdr_i + 1:]:
    try: data.append((float(r[si].replace(',', '') or 0), r[li], r[txt].strip()[:110]))
    except Exception: pass
tot = sum(d[0] for d in data) or 1
print(f'  samples {tot:.0f}; top lines:')
for s, l, t in sorted(data, reverse=True)[:22]: print(f'  {100*s/tot:5.1f}% line {l}: {t}')
PY
  done
}
prof v8-B1 X=1 --decodeB 1
prof v7-B1 NSA_DECODE_SELECT=v7 --decodeB 1
prof supplied-B1 X=1 --decodeB 1 --decodeBlocks supplied
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
