// Device helpers specific to the NSA kernels: the spec's counting rules and top-n block selection.
#pragma once
#include <climits>
#include "attend.cuh"
#include "ops.h"

namespace nsa {

__host__ __device__ __forceinline__ int compressedCount(int T, int l, int d) { return T >= l ? (T - l) / d + 1 : 0; }

__device__ __forceinline__ SeqTable seqTable(const SeqArgs& a) {
  SeqTable st;
  st.S = a.S;
  st.qStart = a.table;
  st.kBase = a.table + a.S + 1;
  st.cBase = st.kBase + a.S;
  st.pos0 = st.cBase + a.S;
  return st;
}
// Selection-block offsets per sequence (S + 1 entries), after pos0 in the table.
__device__ __forceinline__ const int* selBase(const SeqArgs& a) { return a.table + 4 * a.S + 1; }

// Where query row `row` sits: its position, key and compressed-key bases, its own selection block
// and how many compressed keys it sees.
struct RowInfo {
  int pos, kBase, cBase, cur, nc;
};

__device__ __forceinline__ RowInfo rowInfo(const NSAForwardArgs& a, int row) {
  const SeqTable st = seqTable(a.seq);
  const int s = seqOfRow(st, row);
  RowInfo r;
  r.pos = st.pos0[s] + row - st.qStart[s];
  r.kBase = st.kBase[s];
  r.cBase = st.cBase[s];
  r.cur = r.pos / a.cfg.ls;
  r.nc = compressedCount(r.pos + 1, a.cfg.l, a.cfg.d);
  return r;
}

// Writes the normalised branch output of rows < nr to dst[oRow + (hq0 + r) * D + col].
template <class T>
__device__ __forceinline__ void storeBranch(const AttendSmem<T>& sm, int nr, T* dst, size_t oRow, int hq0, int D) {
  for (int e = threadIdx.x; e < nr * D; e += blockDim.x) {
    const int r = e / D, col = e % D;
    dst[oRow + (size_t)(hq0 + r) * D + col] = fromF<T>(sm.o[r * sm.ldo + col]);
  }
}

// Top-n over candidate blocks 0 .. nb-1 (cur = nb - 1 is the query's own block): forced initial and
// local blocks first, then the highest scores, ties to the lower index. Leaves blk[0 .. n) ascending,
// padded with -1. `chosen` must be zero on entry for 0 .. nb-1.
__device__ inline void selectTopN(const float* scores, int* chosen, int* blk, int* misc, int nb, int cur, int n,
                           int initialBlocks, int localBlocks, float* red) {
  if (threadIdx.x == 0) {
    int count = 0;
    for (int j = 0; j < initialBlocks && j < nb; j++) { chosen[j] = 1; blk[count++] = j; }
    for (int j = max(0, cur - localBlocks + 1); j <= cur; j++)
      if (!chosen[j]) { chosen[j] = 1; blk[count++] = j; }
    misc[0] = count;
  }
  __syncthreads();
  const int want = min(n, nb);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  while (misc[0] < want) {
    float best = -1.f;
    int bestJ = INT_MAX;
    for (int j = threadIdx.x; j < nb; j += blockDim.x)
      if (!chosen[j] && scores[j] > best) { best = scores[j]; bestJ = j; }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oj = __shfl_xor_sync(0xffffffffu, bestJ, o);
      if (ob > best || (ob == best && oj < bestJ)) { best = ob; bestJ = oj; }
    }
    if (lane == 0) { red[warp] = best; red[kWarps + warp] = __int_as_float(bestJ); }
    __syncthreads();
    if (threadIdx.x == 0) {
      float b = red[0];
      int bj = __float_as_int(red[kWarps]);
      for (int w = 1; w < kWarps; w++) {
        const float ob = red[w];
        const int oj = __float_as_int(red[kWarps + w]);
        if (ob > b || (ob == b && oj < bj)) { b = ob; bj = oj; }
      }
      chosen[bj] = 1;
      blk[misc[0]] = bj;
      misc[0] = misc[0] + 1;
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    const int count = misc[0];
    for (int i = 1; i < count; i++) {
      const int v = blk[i];
      int k = i - 1;
      while (k >= 0 && blk[k] > v) { blk[k + 1] = blk[k]; k--; }
      blk[k + 1] = v;
    }
    for (int i = count; i < n; i++) blk[i] = -1;
  }
}

}  // namespace nsa
