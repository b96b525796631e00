// Building blocks shared by every attention kernel in this addon: element conversion, 16-byte
// row gathers into shared memory, and a shared-memory matrix product that uses the tensor cores
// (mma.sync m16n8k16, float accumulation) for float16/bfloat16 and plain FMA for float32.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace nsa {

constexpr int kThreads = 256;  // every attention kernel runs 8 warps per block
constexpr int kWarps = kThreads / 32;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -INFINITY;

__device__ __forceinline__ float toF(float x) { return x; }
__device__ __forceinline__ float toF(__half x) { return __half2float(x); }
__device__ __forceinline__ float toF(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ T fromF(float x);
template <> __device__ __forceinline__ float fromF<float>(float x) { return x; }
template <> __device__ __forceinline__ __half fromF<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Shared-memory row padding (elements): keeps tensor-core fragment loads and per-key dot products
// free of bank conflicts while 16-bit rows stay 16-byte aligned.
template <class T> __host__ __device__ constexpr int rowPad() { return sizeof(T) == 4 ? 1 : 8; }
template <class T> __host__ __device__ constexpr int smemStride(int d) { return d + rowPad<T>(); }

// Copies `rows` rows of `d` elements (global row pointers given by rowPtr(r), nullptr = zero row)
// into shared memory with stride ld. Uses 16-byte loads when d * sizeof(T) is a multiple of 16.
template <class T, class RowPtr>
__device__ __forceinline__ void gatherRows(T* dst, int ld, int rows, int d, RowPtr rowPtr) {
  constexpr int V = 16 / sizeof(T);
  if ((d % V) == 0) {
    const int per = d / V;
    for (int e = threadIdx.x; e < rows * per; e += blockDim.x) {
      const int r = e / per, c = (e % per) * V;
      const T* src = rowPtr(r);
      T* out = dst + r * ld + c;
      if (src) {
        const uint4 v = *reinterpret_cast<const uint4*>(src + c);
        const T* vt = reinterpret_cast<const T*>(&v);
#pragma unroll
        for (int i = 0; i < V; i++) out[i] = vt[i];
      } else {
#pragma unroll
        for (int i = 0; i < V; i++) out[i] = fromF<T>(0.f);
      }
    }
  } else {
    for (int e = threadIdx.x; e < rows * d; e += blockDim.x) {
      const int r = e / d, c = e % d;
      const T* src = rowPtr(r);
      dst[r * ld + c] = src ? src[c] : fromF<T>(0.f);
    }
  }
}

// Like gatherRows, but with cp.async (16-byte, L2 only) so the copy overlaps the caller's work;
// rows without a source are zeroed with plain stores. Needs d * sizeof(T) % 16 == 0 and a
// 16-byte aligned destination stride; the caller commits and waits.
template <class T, class RowPtr>
__device__ __forceinline__ void gatherRowsAsync(T* dst, int ld, int rows, int d, RowPtr rowPtr) {
  constexpr int V = 16 / sizeof(T);
  const int per = d / V;
  auto one = [&](int r, int c) {
    const T* src = rowPtr(r);
    T* out = dst + r * ld + c;
    if (src) {
      const unsigned saddr = (unsigned)__cvta_generic_to_shared(out);
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(saddr), "l"(src + c));
    } else {
      *reinterpret_cast<uint4*>(out) = make_uint4(0, 0, 0, 0);
    }
  };
  if (blockDim.x % per == 0) {  // no division in the loop: each thread keeps one column chunk
    const int c = (threadIdx.x % per) * V, step = blockDim.x / per;
    for (int r = threadIdx.x / per; r < rows; r += step) one(r, c);
  } else {
    for (int e = threadIdx.x; e < rows * per; e += blockDim.x) one(e / per, (e % per) * V);
  }
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

// A block-wide walk over nTiles tiles, double-buffered: load(t, buf) issues tile t's cp.async copies
// into buffer buf (0/1); body(t, buf) runs once tile t has landed for every thread, while tile t + 1
// is in flight.
template <class Load, class Body>
__device__ __forceinline__ void walkDoubleBuffered(int nTiles, Load&& load, Body&& body) {
  if (nTiles > 0) load(0, 0);
  cpAsyncCommit();
  for (int t = 0; t < nTiles; t++) {
    const int buf = t & 1;
    if (t + 1 < nTiles) {
      load(t + 1, buf ^ 1);
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    body(t, buf);
    __syncthreads();
  }
}

__device__ __forceinline__ uint32_t pack2(__half a, __half b) {
  return (uint32_t)__half_as_ushort(a) | ((uint32_t)__half_as_ushort(b) << 16);
}
__device__ __forceinline__ uint32_t pack2(__nv_bfloat16 a, __nv_bfloat16 b) {
  return (uint32_t)__bfloat16_as_ushort(a) | ((uint32_t)__bfloat16_as_ushort(b) << 16);
}

__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b, __half) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ __forceinline__ void mma16816(float* c, const uint32_t* a, const uint32_t* b, __nv_bfloat16) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Operand layouts in shared memory. A(m, k): Row = A[m*ld + k], Col = A[k*ld + m].
// B(k, n): KN = B[k*ld + n] (e.g. V for P·V), NK = B[n*ld + k] (e.g. K for Q·Kᵀ).
enum class ALayout { Row, Col };
enum class BLayout { KN, NK };

template <class T, ALayout AL>
__device__ __forceinline__ T aAt(const T* A, int ld, int m, int k) {
  return AL == ALayout::Row ? A[m * ld + k] : A[k * ld + m];
}
template <class T, BLayout BL>
__device__ __forceinline__ T bAt(const T* B, int ld, int k, int n) {
  return BL == BLayout::KN ? B[k * ld + n] : B[n * ld + k];
}

template <class T, ALayout AL>
__device__ __forceinline__ uint32_t aPair(const T* A, int ld, int m, int k) {
  if (AL == ALayout::Row) return *reinterpret_cast<const uint32_t*>(A + m * ld + k);
  return pack2(A[k * ld + m], A[(k + 1) * ld + m]);
}
template <class T, BLayout BL>
__device__ __forceinline__ uint32_t bPair(const T* B, int ld, int k, int n) {
  if (BL == BLayout::NK) return *reinterpret_cast<const uint32_t*>(B + n * ld + k);
  return pack2(B[k * ld + n], B[(k + 1) * ld + n]);
}

// One warp: C[m0..m0+16)[n0..n0+8*NB) over K, reusing each A fragment for NB mma tiles.
template <class T, ALayout AL, BLayout BL, int NB>
__device__ __forceinline__ void mmaStrip(int m0, int n0, int K, const T* A, int lda, const T* B, int ldb, float* C, int ldc,
                                         bool accumulate, const float* rowScale) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const float s0 = rowScale ? rowScale[m0 + g] : 1.f, s1 = rowScale ? rowScale[m0 + g + 8] : 1.f;
  float c[NB][4];
#pragma unroll
  for (int j = 0; j < NB; j++) {
    float* c0 = C + (m0 + g) * ldc + n0 + 8 * j + 2 * t;
    float* c1 = c0 + 8 * ldc;
    if (accumulate) {
      c[j][0] = c0[0] * s0; c[j][1] = c0[1] * s0; c[j][2] = c1[0] * s1; c[j][3] = c1[1] * s1;
    } else {
      c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.f;
    }
  }
  for (int k0 = 0; k0 < K; k0 += 16) {
    uint32_t a[4];
    a[0] = aPair<T, AL>(A, lda, m0 + g, k0 + 2 * t);
    a[1] = aPair<T, AL>(A, lda, m0 + g + 8, k0 + 2 * t);
    a[2] = aPair<T, AL>(A, lda, m0 + g, k0 + 2 * t + 8);
    a[3] = aPair<T, AL>(A, lda, m0 + g + 8, k0 + 2 * t + 8);
#pragma unroll
    for (int j = 0; j < NB; j++) {
      uint32_t b[2];
      b[0] = bPair<T, BL>(B, ldb, k0 + 2 * t, n0 + 8 * j + g);
      b[1] = bPair<T, BL>(B, ldb, k0 + 2 * t + 8, n0 + 8 * j + g);
      mma16816(c[j], a, b, T());
    }
  }
#pragma unroll
  for (int j = 0; j < NB; j++) {
    float* c0 = C + (m0 + g) * ldc + n0 + 8 * j + 2 * t;
    float* c1 = c0 + 8 * ldc;
    c0[0] = c[j][0]; c0[1] = c[j][1]; c1[0] = c[j][2]; c1[1] = c[j][3];
  }
}

template <class T, ALayout AL, BLayout BL, int NB>
__device__ __forceinline__ void mmaStrips(int M, int N, int K, const T* A, int lda, const T* B, int ldb, float* C, int ldc,
                                          bool accumulate, const float* rowScale) {
  const int strips = N / (8 * NB), units = (M / 16) * strips;
  for (int u = threadIdx.x >> 5; u < units; u += blockDim.x >> 5)
    mmaStrip<T, AL, BL, NB>((u / strips) * 16, (u % strips) * 8 * NB, K, A, lda, B, ldb, C, ldc, accumulate, rowScale);
}

// C[M][N] (float, ldc) = (accumulate ? rowScale[m] * C : 0) + A·B over shared memory (rowScale
// null = 1); all threads of the block take part; the caller synchronises before and after.
template <class T, ALayout AL, BLayout BL>
__device__ void smemGemm(int M, int N, int K, const T* A, int lda, const T* B, int ldb, float* C, int ldc,
                         bool accumulate, const float* rowScale = nullptr) {
  const bool tensorCores = sizeof(T) == 2 && (M % 16) == 0 && (N % 8) == 0 && (K % 16) == 0;
  if constexpr (sizeof(T) == 2) {
    if (tensorCores) {
      // Widest strips that still give every warp work: fewer shared-memory loads per mma.
      const int warps = blockDim.x >> 5, n8 = N / 8, m16 = M / 16;
      if (n8 % 4 == 0 && m16 * (n8 / 4) >= warps) return mmaStrips<T, AL, BL, 4>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, rowScale);
      if (n8 % 2 == 0 && m16 * (n8 / 2) >= warps) return mmaStrips<T, AL, BL, 2>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, rowScale);
      return mmaStrips<T, AL, BL, 1>(M, N, K, A, lda, B, ldb, C, ldc, accumulate, rowScale);
    }
  }
  // FMA path: float32, or shapes the tensor-core tiles do not cover. Consecutive threads take
  // consecutive n, so B reads are conflict-free and A reads broadcast.
  for (int e = threadIdx.x; e < M * N; e += blockDim.x) {
    const int m = e / N, n = e % N;
    float acc = accumulate ? C[m * ldc + n] * (rowScale ? rowScale[m] : 1.f) : 0.f;
    for (int k = 0; k < K; k++) acc += toF(aAt<T, AL>(A, lda, m, k)) * toF(bAt<T, BL>(B, ldb, k, n));
    C[m * ldc + n] = acc;
  }
}

__device__ __forceinline__ float warpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__host__ __device__ __forceinline__ int roundUp(int x, int m) { return (x + m - 1) / m * m; }
__host__ __device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// Describes B sequences of equal length, packed varlen sequences and decode steps alike: sequence s
// owns query rows [qStart[s], qStart[s+1]), its first query sits at absolute position pos0[s], and
// its raw / compressed keys start at rows kBase[s] / cBase[s] of their tensors.
struct SeqTable {
  const int* qStart;  // S + 1
  const int* kBase;   // S
  const int* cBase;   // S
  const int* pos0;    // S
  int S;
};

__device__ __forceinline__ int seqOfRow(const SeqTable& st, int row) {
  int lo = 0, hi = st.S - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (st.qStart[mid] <= row) lo = mid; else hi = mid - 1;
  }
  return lo;
}

}  // namespace nsa
