// Rounds of argmax over a workgroup's candidate scores (top-n, ties to the lower index), shared by the
// selection passes (selection.ts) and the decode step's block choice (decode-step.ts). WGSL
// statements: the kernel declares lid, WG, forced, total, nCand, score (-1 marks a block taken), chosen,
// and redV / redI with a slot per invocation.

/** Each round halves the invocations' best candidates through workgroup memory (log2 WG barriers a round). */
export const TOP_N_ROUNDS_TREE = `  for (var round = forced; round < total; round++) {
    var best = -0.5;
    var bestI = 0xffffffffu;
    for (var j = lid; j < nCand; j += WG) {
      let s = score[j];
      if (s > best) { best = s; bestI = j; }
    }
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
