// Warp-level fragment products for the flash-attention-2 backward (16-bit types, mma.sync
// m16n8k16, float accumulation). A warp owns a 16-row strip of some product: score-like tiles
// (S = A·Bᵀ, e.g. K·Qᵀ, V·dOᵀ, Q·Kᵀ, dO·Vᵀ) and gradient accumulators (C += P·B, e.g. Pᵀ·dO,
// dSᵀ·Q, dS·K) whose A operand is a previous product's C fragments, repacked in registers.
//
// Layouts (see warp_tile.cuh): a C fragment c[N/8][4] holds rows g, g+8 and columns 8n+2t, 8n+2t+1
// (lane = 4g + t); an A fragment a[K/16][4] holds the same 16 rows over K. Shared-memory operands are
// row-major with stride ld (padded so ldmatrix rows fall in distinct banks).
#pragma once
#include "warp_tile.cuh"

namespace nsa {

template <int N>
__device__ __forceinline__ void zeroFrags(float (&c)[N / 8][4]) {
#pragma unroll
  for (int n = 0; n < N / 8; n++) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.f;
}

// c[16][N] += A·Bᵀ: A = rows m0 .. m0+15 of a shared tile [*][K], B = a shared tile [N][K] (its rows
// are the columns of c).
template <class T, int K, int N>
__device__ __forceinline__ void warpGemmNT(float (&c)[N / 8][4], const T* A, int lda, int m0, const T* B, int ldb) {
#pragma unroll
  for (int kk = 0; kk < K / 16; kk++) {
    uint32_t a[4];
    loadA(a, A, lda, m0, kk * 16);
#pragma unroll
    for (int np = 0; np < N / 16; np++) {
      uint32_t b[4];
      loadBNK(b, B, ldb, np * 16, kk * 16);
      mma16816(c[2 * np], a, b, T());
      mma16816(c[2 * np + 1], a, b + 2, T());
    }
  }
}

// The same with A already in registers (e.g. Q fragments kept for a whole block).
template <class T, int K, int N>
__device__ __forceinline__ void warpGemmRegNT(float (&c)[N / 8][4], const uint32_t (&a)[K / 16][4], const T* B, int ldb) {
#pragma unroll
  for (int kk = 0; kk < K / 16; kk++) {
#pragma unroll
    for (int np = 0; np < N / 16; np++) {
      uint32_t b[4];
      loadBNK(b, B, ldb, np * 16, kk * 16);
      mma16816(c[2 * np], a[kk], b, T());
      mma16816(c[2 * np + 1], a[kk], b + 2, T());
    }
  }
}

// c[16][N] += A·B: A in registers (16 x K), B = a shared tile [K][N] (read with ldmatrix.trans).
template <class T, int K, int N>
__device__ __forceinline__ void warpGemmRegNN(float (&c)[N / 8][4], const uint32_t (&a)[K / 16][4], const T* B, int ldb) {
#pragma unroll
  for (int j = 0; j < K / 16; j++) {
#pragma unroll
    for (int np = 0; np < N / 16; np++) {
      uint32_t b[4];
      loadBKN(b, B, ldb, j * 16, np * 16);
      mma16816(c[2 * np], a[j], b, T());
      mma16816(c[2 * np + 1], a[j], b + 2, T());
    }
  }
}

// C fragments of a 16 x K product as the A fragments of the next product (rounded to T): n-tiles
// 2j and 2j+1 form k-step j.
template <class T, int K>
__device__ __forceinline__ void packA(uint32_t (&a)[K / 16][4], const float (&c)[K / 8][4]) {
#pragma unroll
  for (int j = 0; j < K / 16; j++) {
    a[j][0] = packF2<T>(c[2 * j][0], c[2 * j][1]);
    a[j][1] = packF2<T>(c[2 * j][2], c[2 * j][3]);
    a[j][2] = packF2<T>(c[2 * j + 1][0], c[2 * j + 1][1]);
    a[j][3] = packF2<T>(c[2 * j + 1][2], c[2 * j + 1][3]);
  }
}

// The two values of a packed pair (low half first).
__device__ __forceinline__ float2 unpackF2(uint32_t v, __half) {
  return __half22float2(*reinterpret_cast<const __half2*>(&v));
}
__device__ __forceinline__ float2 unpackF2(uint32_t v, __nv_bfloat16) {
  return make_float2(__uint_as_float(v << 16), __uint_as_float(v & 0xffff0000u));
}

// Element (n, e) of a C fragment c[K/8][4] lives in a[n / 2][(n & 1) * 2 + (e >> 1)], half e & 1,
// once packed (packA): a loop over C elements can read or rewrite the packed values in place.
__device__ __forceinline__ constexpr int packedReg(int n, int e) { return (n & 1) * 2 + (e >> 1); }

// Writes rows g and g+8 of a 16 x D accumulator times `scale` as T to row0 / row1 (global rows of D
// elements; nullptr = skip the row).
template <class T, int D>
__device__ __forceinline__ void storeFragRows(const float (&c)[D / 8][4], T* row0, T* row1, float scale) {
  const int t4 = threadIdx.x & 3;
  if (row0) {
#pragma unroll
    for (int n = 0; n < D / 8; n++)
      *reinterpret_cast<uint32_t*>(row0 + n * 8 + 2 * t4) = packF2<T>(c[n][0] * scale, c[n][1] * scale);
  }
  if (row1) {
#pragma unroll
    for (int n = 0; n < D / 8; n++)
      *reinterpret_cast<uint32_t*>(row1 + n * 8 + 2 * t4) = packF2<T>(c[n][2] * scale, c[n][3] * scale);
  }
}

// 4-byte cp.async (through L1) for per-row scalars such as lse and D; the caller commits and waits.
__device__ __forceinline__ void cpAsync4(void* dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smemAddr(dst)), "l"(src));
}

// D = Σ dO ∘ O over one row of Dv 16-bit elements by a group of Dv / 8 consecutive lanes (16-byte
// loads, shuffle reduction inside the group); every lane of the group gets the sum. All 32 lanes
// must call it (full-mask shuffles): give out-of-range groups any valid row and drop the result.
template <class T, int Dv>
__device__ __forceinline__ float rowDotGroup(const T* dO, const T* o) {
  constexpr int L = Dv / 8;
  static_assert(L >= 1 && L <= 32 && (L & (L - 1)) == 0, "Dv / 8 lanes must be a power of two <= 32");
  const int c = (threadIdx.x % L) * 8;
  const uint4 x = *reinterpret_cast<const uint4*>(dO + c);
  const uint4 y = *reinterpret_cast<const uint4*>(o + c);
  const uint32_t xs[4] = {x.x, x.y, x.z, x.w}, ys[4] = {y.x, y.y, y.z, y.w};
  float acc = 0.f;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const float2 u = unpackF2(xs[i], T()), v = unpackF2(ys[i], T());
    acc = fmaf(u.x, v.x, fmaf(u.y, v.y, acc));
  }
#pragma unroll
  for (int o2 = L / 2; o2 > 0; o2 >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o2);
  return acc;
}

}  // namespace nsa
