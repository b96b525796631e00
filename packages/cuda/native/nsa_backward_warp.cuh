// Fragment helpers of the register-layout NSA backward (nsa_backward_mma.cu, nsa_backward_keys_mma.cu).
// Layouts as in warp_tile.cuh: a thread holds C elements (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
// of each 16 x 8 tile.
#pragma once
#include "warp_tile.cuh"

namespace nsa {

constexpr int kBwdGroup = 16;  // query heads per KV head the register backward takes (one mma row tile)

// The C fragments of n-tiles 2j and 2j+1 (16 x 16) as the A fragment of the next product: the
// k index of A is the n index of C, so a thread's values land where the A layout wants them.
template <class T>
__device__ __forceinline__ void cToA(uint32_t* a, const float* c0, const float* c1) {
  a[0] = packF2<T>(c0[0], c0[1]);
  a[1] = packF2<T>(c0[2], c0[3]);
  a[2] = packF2<T>(c1[0], c1[1]);
  a[3] = packF2<T>(c1[2], c1[3]);
}

// acc[D/8][4] += A (16 x 16, fragment a) · B where B(k, n) = Bm[k0 + k][n] (rows of stride ld): the
// product of a probability-like tile with value-like rows (keys or queries as rows).
template <class T, int D>
__device__ __forceinline__ void mmaRowsKN(float (&acc)[D / 8][4], const uint32_t* a, const T* Bm, int ld, int k0) {
#pragma unroll
  for (int dp = 0; dp < D / 16; dp++) {
    uint32_t b[4];
    loadBKN(b, Bm, ld, k0, dp * 16);
    mma16816(acc[2 * dp], a, b, T());
    mma16816(acc[2 * dp + 1], a, b + 2, T());
  }
}

// s[N/8][4] = A·Bᵀ and t[N/8][4] = A2·B2ᵀ over D: A, A2 are 16 rows (stride ld) and B, B2 are N rows
// (stride ld), both row-major over the feature dimension: two score-like tiles that share a loop.
template <class T, int D, int N>
__device__ __forceinline__ void mmaScoresPair(const T* A, const T* B, const T* A2, const T* B2, int ld, float (&s)[N / 8][4],
                                              float (&t)[N / 8][4]) {
#pragma unroll
  for (int n = 0; n < N / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) s[n][e] = t[n][e] = 0.f;
  }
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    uint32_t a[4], a2[4];
    loadA(a, A, ld, 0, kk * 16);
    loadA(a2, A2, ld, 0, kk * 16);
#pragma unroll
    for (int np = 0; np < N / 16; np++) {
      uint32_t b[4];
      loadBNK(b, B, ld, np * 16, kk * 16);
      mma16816(s[2 * np], a, b, T());
      mma16816(s[2 * np + 1], a, b + 2, T());
      loadBNK(b, B2, ld, np * 16, kk * 16);
      mma16816(t[2 * np], a2, b, T());
      mma16816(t[2 * np + 1], a2, b + 2, T());
    }
  }
}

}  // namespace nsa
