// Rounds of argmax over a workgroup's candidate scores (top-n, ties to the lower index), shared by the
// selection passes (selection.ts) and the decode step's block choice (decode-step.ts). WGSL
// statements: the kernel declares lid, WG, forced, total, nCand, score (-1 marks a block taken), chosen,
// and redV / redI with a slot per invocation (the subgroup rounds also sgSize and sgLane).

/** A round's start: each invocation's best among its own candidates (j = lid + r * WG). */
const OWN_BEST = `  for (var round = forced; round < total; round++) {
    var best = -0.5;
    var bestI = 0xffffffffu;
    for (var j = lid; j < nCand; j += WG) {
      let s = score[j];
      if (s > best) { best = s; bestI = j; }
    }`;

/** Each round halves the invocations' best candidates through workgroup memory (log2 WG barriers a round). */
export const TOP_N_ROUNDS_TREE = `${OWN_BEST}
    redV[lid] = best;
    redI[lid] = bestI;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
      if (lid < stride) {
        let v2 = redV[lid + stride];
        let i2 = redI[lid + stride];
        if (v2 > redV[lid] || (v2 == redV[lid] && i2 < redI[lid])) {
          redV[lid] = v2;
          redI[lid] = i2;
        }
      }
      workgroupBarrier();
    }
    if (lid == 0u) {
      let j = redI[0];
      chosen[round] = i32(j);
      score[j] = -1.0;
    }
    workgroupBarrier();
  }`;

/**
 * Rounds on subgroups: each subgroup's winner goes to a slot, double-buffered by round parity (one
 * barrier a round); `reduceSlots` (WGSL) reduces slots base .. base + nsg to the round's winner in the
 * variable named `winner`, which every invocation then knows. The invocation that owns the winner marks
 * it taken, so no barrier is needed for that.
 */
export function topNRoundsSubgroup(reduceSlots: string, winner: string): string {
  return `  let nsg = (WG + sgSize - 1u) / sgSize;
  let sg = lid / sgSize;
${OWN_BEST}
    let m = subgroupMax(best);
    let mi = subgroupMin(select(0xffffffffu, bestI, best == m));
    let base = (round & 1u) * nsg;
    if (sgLane == 0u) { redV[base + sg] = m; redI[base + sg] = mi; }
    workgroupBarrier();
${reduceSlots}
    if (${winner} != 0xffffffffu && ${winner} % WG == lid) { score[${winner}] = -1.0; }
    if (lid == 0u) { chosen[round] = i32(${winner}); }
  }
  workgroupBarrier();`;
}
