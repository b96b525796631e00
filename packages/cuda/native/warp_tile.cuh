// Register-resident tile machinery (the flash-attention-2 layout) for 16-bit types: a warp owns 16
// query rows; Q fragments, the score tile S and the output accumulator O stay in registers as
// mma.sync m16n8k16 fragments, loaded from padded shared memory with ldmatrix.
//
// Fragment layout (PTX ISA, m16n8k16): lane = 4 * g + t. A thread holds C/D elements
// (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1) of each 16 x 8 tile, so each thread owns two rows
// (g and g+8) and a row's values are spread over the 4 threads of a quad.
#pragma once
#include "tile.cuh"

namespace nsa {

__device__ __forceinline__ unsigned smemAddr(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }

// Four 8x8 16-bit matrices; lanes 8i .. 8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void ldmatrixX4(uint32_t* r, const void* rowAddr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smemAddr(rowAddr)));
}
__device__ __forceinline__ void ldmatrixX4Trans(uint32_t* r, const void* rowAddr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smemAddr(rowAddr)));
}

// A fragment (16 x 16) of a row-major tile A[m][k] at (m0, k0), stride ld elements.
template <class T>
__device__ __forceinline__ void loadA(uint32_t* a, const T* A, int ld, int m0, int k0) {
  const int lane = threadIdx.x & 31;
  ldmatrixX4(a, A + (m0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + k0 + (lane >> 4) * 8);
}
// B fragments of two n8 tiles (n0 and n0+8) over k0 .. k0+15, B(k, n) = Bm[n][k] (keys as rows):
// b[0..1] for n-tile n0, b[2..3] for n0+8.
template <class T>
__device__ __forceinline__ void loadBNK(uint32_t* b, const T* Bm, int ld, int n0, int k0) {
  const int lane = threadIdx.x & 31;
  ldmatrixX4(b, Bm + (n0 + (lane & 7) + (lane >> 4) * 8) * ld + k0 + ((lane >> 3) & 1) * 8);
}
// The same for B(k, n) = Bm[k][n] (values: keys as rows, n = feature), through ldmatrix.trans.
template <class T>
__device__ __forceinline__ void loadBKN(uint32_t* b, const T* Bm, int ld, int k0, int n0) {
  const int lane = threadIdx.x & 31;
  ldmatrixX4Trans(b, Bm + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * ld + n0 + (lane >> 4) * 8);
}

// Per-warp ring chunks of kRingChunk key rows (the selected branches' gathers: forward rings, dq).
// Swz: a chunk without padding, in 64-feature regions of kRingChunk rows x 128 bytes, 16-byte piece c
// of row r at ((c ^ (r % 8)) * 16): every row starts 32-byte aligned, as its global source does (a
// 16-byte pad puts every other row 16 bytes off, and a cp.async into such a row makes L2 serve its
// sectors twice: ncu counts 1.5x the sectors of the padded rings' gathers), and ldmatrix's 8 rows of
// one piece still fall in 8 distinct bank groups. Element (row, col) of such a chunk at base (col a
// multiple of 8); unswizzled: base + row * ld + col (the padded layout of loadBNK / loadBKN).
constexpr int kRingChunk = 16;
template <class T, bool Swz>
__device__ __forceinline__ const T* chunkAt(const T* base, int ld, int row, int col) {
  if constexpr (!Swz) {
    return base + row * ld + col;
  } else {
    const int piece = ((col & 63) >> 3) ^ (row & 7);
    return reinterpret_cast<const T*>(reinterpret_cast<const char*>(base) + (col >> 6) * (kRingChunk * 128) + row * 128 + piece * 16);
  }
}
// loadBNK / loadBKN over such chunks (Swz = false: the same addresses as those).
template <class T, bool Swz>
__device__ __forceinline__ void chunkBNK(uint32_t* b, const T* Bm, int ld, int n0, int k0) {
  const int lane = threadIdx.x & 31;
  ldmatrixX4(b, chunkAt<T, Swz>(Bm, ld, n0 + (lane & 7) + (lane >> 4) * 8, k0 + ((lane >> 3) & 1) * 8));
}
template <class T, bool Swz>
__device__ __forceinline__ void chunkBKN(uint32_t* b, const T* Bm, int ld, int k0, int n0) {
  const int lane = threadIdx.x & 31;
  ldmatrixX4Trans(b, chunkAt<T, Swz>(Bm, ld, k0 + (lane & 7) + ((lane >> 3) & 1) * 8, n0 + (lane >> 4) * 8));
}

template <class T>
__device__ __forceinline__ uint32_t packF2(float x, float y) {
  return pack2(fromF<T>(x), fromF<T>(y));
}

// Copies `rows` rows of D elements into shared memory (stride ld) with 16-byte cp.async; row r's
// source is rowPtr(r) or nullptr (zero row, plain store). All threads of the block take part.
template <class T, int D, int NT, class RowPtr>
__device__ __forceinline__ void copyRowsAsync(T* dst, int ld, int rows, RowPtr rowPtr) {
  constexpr int V = 16 / sizeof(T), per = D / V;
  static_assert(NT % per == 0, "threads must cover whole rows");
  const int c = (threadIdx.x % per) * V;
  for (int r = threadIdx.x / per; r < rows; r += NT / per) {
    const T* src = rowPtr(r);
    T* out = dst + r * ld + c;
    if (src) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(out)), "l"(src + c));
    } else {
      *reinterpret_cast<uint4*>(out) = make_uint4(0, 0, 0, 0);
    }
  }
}

// Reductions over the 4 threads of a quad (the holders of one fragment row).
__device__ __forceinline__ float quadMax(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quadSum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

}  // namespace nsa
