#!/usr/bin/env python3
"""Phase times of the NSA forward's 8-row blocks from NSA_FWD_LEAN=28's stamps (v26 with stamps), KV head 0's blocks.

    NSA_FWD_LEAN=28 NSA_FWD_STAMPS_FILE=/tmp/s.bin node bench/bench.mjs --T 65536 --ops nsaFwd
    python3 scripts/forward-stamps.py /tmp/s.bin [nTiles]

The file holds the last launch's stamps: [8192 blocks][2 warpgroups][16 slots] of uint64 (slots 0 and 13
%globaltimer ns at start / end, 14 the SM; clock64 at 1 start, 2 Q in registers, 3 compressed walk
stored, 4 score walk done, 5 first tiles requested (v21's place), 6 forced blocks listed, 7 top-n
rounds done, 8 sorted, 9 lists stored (and, from v25 on, the first tiles requested), 10 split phase 0 done, 11
phase 1 done, 12 end). Only KV head 0's first 8192 blocks (T <= 65536) carry stamps. Prints, by groups of blocks
(latest positions first, as launched), the median cycles of each phase per warpgroup, and the gaps
between a block's end and the next block's start on the same SM (ns)."""
import struct, sys, statistics as st

path = sys.argv[1]
data = open(path, 'rb').read()
n = len(data) // 8
vals = struct.unpack(f'<{n}Q', data)
SLOTS, NB = 16, 8192
blocks = []
for b in range(NB):
    w = [vals[(b * 2 + g) * SLOTS:(b * 2 + g + 1) * SLOTS] for g in range(2)]
    if w[0][0] == 0 or w[0][13] == 0:
        continue
    blocks.append((b, w))
nTiles = int(sys.argv[2]) if len(sys.argv) > 2 else (max(b for b, _ in blocks) + 1 if blocks else 0)
print(f'{len(blocks)} blocks with stamps (of {nTiles} launched per KV head)')
ORDER = list(range(1, 13))
names = ['Q load', 'compressed walk', 'score walk', 'first tiles', 'forced list', 'top-n rounds', 'sort', 'lists', 'phase 0', 'phase 1', 'gated sum']
def phases(w):
    c = [w[i] for i in ORDER]
    return [c[i + 1] - c[i] for i in range(len(c) - 1)]
groups = 4
print('| blocks (by index; 0 = latest positions) | wg | ' + ' | '.join(names) + ' | total cycles | wall ns |')
print('|---|---|' + '---|' * (len(names) + 2))
for gi in range(groups):
    lo, hi = gi * nTiles // groups, (gi + 1) * nTiles // groups
    sel = [w for b, w in blocks if lo <= b < hi]
    if not sel:
        continue
    for g in range(2):
        ph = [phases(w[g]) for w in sel]
        med = [st.median(p[i] for p in ph) for i in range(len(names))]
        tot = st.median(w[g][12] - w[g][1] for w in sel)
        wall = st.median(w[g][13] - w[g][0] for w in sel)
        print(f'| {lo}-{hi - 1} | {g} | ' + ' | '.join(f'{m:.0f}' for m in med) + f' | {tot:.0f} | {wall:.0f} |')
# Gaps on one SM: next block's start minus this block's later warpgroup end (globaltimer ns).
by_sm = {}
for b, w in blocks:
    by_sm.setdefault(w[0][14], []).append((w[0][0], max(w[0][13], w[1][13]), b))
gaps = []
for sm, lst in by_sm.items():
    lst.sort()
    for (s0, e0, _), (s1, _, _) in zip(lst, lst[1:]):
        gaps.append(s1 - e0)
# Only KV head 0's blocks carry stamps: a gap spans other heads' blocks too, so report the smallest.
if gaps:
    gaps.sort()
    print(f'SMs seen: {len(by_sm)}; start-after-end gaps on one SM (ns): min {gaps[0]}, p10 {gaps[len(gaps) // 10]}, median {gaps[len(gaps) // 2]}')
clk = [(w[0][12] - w[0][1]) / max(1, w[0][13] - w[0][0]) for _, w in blocks if w[0][13] > w[0][0]]
if clk:
    print(f'SM clock (cycles per ns, warpgroup 0 start to end): median {st.median(clk):.3f}')
