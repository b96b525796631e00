// One warp's attention step over a key tile in shared memory, everything in registers (16 query
// rows that share one position, so visibility is a per-key predicate): S = Q·Kᵀ, online softmax
// on the fragments with explicit visibility (no arithmetic on -inf), O = alpha·O + P·V.
#pragma once
#include "warp_tile.cuh"

namespace nsa {

// Running state of 16 rows; this thread holds rows g and g + 8 (index 0 and 1).
template <int D>
struct WarpRows {
  float o[D / 8][4];
  float m[2], l[2];  // m: running max of scaled scores (log2 domain), -inf before any visible key
  __device__ __forceinline__ void reset() {
#pragma unroll
    for (int n = 0; n < D / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    m[0] = m[1] = kNegInf;
    l[0] = l[1] = 0.f;
  }
  // Folds a tile into the rows: l = alpha·l + the tile's row sums rs, and o scaled by alpha (skipped
  // warp-wide when no row's maximum moved, i.e. alpha is 1 everywhere).
  __device__ __forceinline__ void carry(const float (&alpha)[2], const float (&rs)[2]) {
#pragma unroll
    for (int i = 0; i < 2; i++) l[i] = l[i] * alpha[i] + rs[i];
    if (__any_sync(0xffffffffu, alpha[0] != 1.f || alpha[1] != 1.f)) {
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        o[n][0] *= alpha[0]; o[n][1] *= alpha[0]; o[n][2] *= alpha[1]; o[n][3] *= alpha[1];
      }
    }
  }
  // Row sums over the quad; lse (log2 domain, +inf when the row saw no key) and 1/l per row.
  __device__ __forceinline__ void finish(float* lse, float* inv) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const float sum = quadSum(l[i]);
      lse[i] = sum > 0.f ? m[i] + log2f(sum) : INFINITY;
      inv[i] = sum > 0.f ? 1.f / sum : 0.f;
    }
  }
};

// s[NK/8][4] = Q·Kᵀ (unscaled) for keys k[0 .. NK) (rows of stride ld; Swz: a swizzled ring chunk,
// chunkAt in warp_tile.cuh).
template <class T, int D, int NK, bool Swz = false>
__device__ __forceinline__ void warpScores(const uint32_t (&qf)[D / 16][4], const T* k, int ld, float (&s)[NK / 8][4]) {
#pragma unroll
  for (int n = 0; n < NK / 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
    for (int np = 0; np < NK / 16; np++) {
      uint32_t b[4];
      chunkBNK<T, Swz>(b, k, ld, np * 16, kk * 16);
      mma16816(s[2 * np], qf[kk], b, T());
      mma16816(s[2 * np + 1], qf[kk], b + 2, T());
    }
  }
}

// Online softmax and O = alpha·O + P·V for one tile whose scores s = Q·Kᵀ (unscaled, NK keys) are
// in registers; visible(j) says whether tile key j counts for this warp's rows. The output rescale
// is skipped when no row's running maximum moved (alpha = 1 everywhere: most tiles once it settles).
template <class T, int D, int NK, bool Swz = false, class Visible>
__device__ __forceinline__ void warpSoftmaxPV(float (&s)[NK / 8][4], const T* v, int ld, float sl2, Visible visible,
                                              WarpRows<D>& st) {
  const int t4 = threadIdx.x & 3;
  bool vis[NK / 8][2];
  float mx[2] = {kNegInf, kNegInf};
  bool any = false;
#pragma unroll
  for (int n = 0; n < NK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 2; e++) {
      vis[n][e] = visible(n * 8 + 2 * t4 + e);
      any |= vis[n][e];
      if (vis[n][e]) {
        mx[0] = fmaxf(mx[0], s[n][e]);
        mx[1] = fmaxf(mx[1], s[n][2 + e]);
      }
    }
  }
  // Keys are shared by the warp's rows: a tile nobody sees changes nothing.
  if (!__any_sync(0xffffffffu, any)) return;
  float alpha[2];
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const float tileMax = quadMax(mx[i]) * sl2;  // finite: some key of the tile is visible
    const float mNew = st.m[i] == kNegInf ? tileMax : fmaxf(st.m[i], tileMax);
    alpha[i] = st.m[i] == kNegInf ? 0.f : exp2f(st.m[i] - mNew);
    st.m[i] = mNew;
  }
  float rs[2] = {0.f, 0.f};
#pragma unroll
  for (int n = 0; n < NK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int i = e >> 1;
      const float p = vis[n][e & 1] ? exp2f(fmaf(s[n][e], sl2, -st.m[i])) : 0.f;
      s[n][e] = p;
      rs[i] += p;
    }
  }
  st.carry(alpha, rs);
#pragma unroll
  for (int j = 0; j < NK / 16; j++) {
    uint32_t pa[4];
    pa[0] = packF2<T>(s[2 * j][0], s[2 * j][1]);
    pa[1] = packF2<T>(s[2 * j][2], s[2 * j][3]);
    pa[2] = packF2<T>(s[2 * j + 1][0], s[2 * j + 1][1]);
    pa[3] = packF2<T>(s[2 * j + 1][2], s[2 * j + 1][3]);
#pragma unroll
    for (int dp = 0; dp < D / 16; dp++) {
      uint32_t b[4];
      chunkBKN<T, Swz>(b, v, ld, j * 16, dp * 16);
      mma16816(st.o[2 * dp], pa, b, T());
      mma16816(st.o[2 * dp + 1], pa, b + 2, T());
    }
  }
}

// One tile of keys k / values v in shared memory: scores, then warpSoftmaxPV.
template <class T, int D, int NK, bool Swz = false, class Visible>
__device__ __forceinline__ void warpAttend(const uint32_t (&qf)[D / 16][4], const T* k, const T* v, int ld, float sl2,
                                           Visible visible, WarpRows<D>& st) {
  float s[NK / 8][4];
  static_assert(!Swz || NK == kRingChunk, "swizzled: one ring chunk");
  warpScores<T, D, NK, Swz>(qf, k, ld, s);
  warpSoftmaxPV<T, D, NK, Swz>(s, v, ld, sl2, visible, st);
}

}  // namespace nsa
