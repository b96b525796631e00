// Hopper warpgroup matrix multiply (wgmma, sm_90a) for 16-bit inputs with float accumulators:
// the instruction wrappers, shared-memory matrix descriptors for 128-byte-swizzled tiles, and the
// fences they need. Only the sm_90a device pass emits the instructions (NSA_WGMMA_DEVICE); every
// other pass compiles the same calls to a trap, so a kernel using them still builds for sm_80 /
// plain sm_90, and the host must launch it only where the running code has them (a probe kernel
// that stores NSA_WGMMA_DEVICE: wgmmaRuns() in wgmma_probe.cu).
//
// Operand shapes used here: m64nNk16 with N = 64. A (64 x 16) comes from registers (warp w of the
// warpgroup holds rows 16w .. 16w+15 in mma.sync m16n8k16's A-fragment layout, four b32 registers)
// or from shared memory through a descriptor.
// The accumulator D (64 x 64, float) is 32 registers per thread, warp w rows 16w .. 16w+15 in
// m16n8's C layout per 8-column tile: d[n][0..1] = (g, 8n + 2t + {0,1}), d[n][2..3] = row g + 8.
// B (16 x 64) comes from shared memory through a descriptor.
//
// Swizzled tile layout (128-byte swizzle, the canonical layout of both K-major and MN-major B): a
// tile of `rows` rows of 16-bit elements is cut into 64-element column blocks ("regions", 128 bytes
// per row, region r at r * rows * 128 bytes); in a region, row i sits at i * 128 bytes and its
// 16-byte chunk c at ((c ^ (i % 8)) * 16). The tile base must be 1024-byte aligned.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define NSA_WGMMA_DEVICE 1
#else
#define NSA_WGMMA_DEVICE 0
#endif

namespace nsa {
namespace wg {

// Byte offset of 16-byte chunk c (8 elements) of row i in a swizzled tile of `rows` rows.
__host__ __device__ __forceinline__ uint32_t swizzledChunk(int rows, int i, int c) {
  return (uint32_t)((c >> 3) * rows * 128 + i * 128 + (((c & 7) ^ (i & 7)) << 4));
}

// Descriptor of a 128-byte-swizzled operand starting at shared address `addr`. Both byte offsets
// are 1024 (8 rows of 128 bytes): the stride between 8-row core-matrix groups. The operands here
// never span two 64-element regions in one instruction, so the other offset is unused whichever
// of the two fields the layout reads it from.
__device__ __forceinline__ uint64_t descSw128(uint32_t addr) {
  constexpr uint64_t kOffset = 1024 >> 4;
  return (uint64_t)((addr & 0x3FFFF) >> 4) | (kOffset << 16) | (kOffset << 32) | (1ull << 62);
}

// Makes earlier register writes (accumulators, A fragments) visible to the next wgmma.
__device__ __forceinline__ void fence() {
#if NSA_WGMMA_DEVICE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void commit() {
#if NSA_WGMMA_DEVICE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#else
  __trap();
#endif
}
template <int N>
__device__ __forceinline__ void wait() {
#if NSA_WGMMA_DEVICE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#else
  __trap();
#endif
}
// Generic-proxy shared-memory writes (st.shared, cp.async) made visible to the async proxy (wgmma):
// every writing thread runs it before the barrier that precedes the wgmma.
__device__ __forceinline__ void fenceProxyAsync() {
#if NSA_WGMMA_DEVICE
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Keeps the compiler from moving accesses of accumulator registers across the async window.
__device__ __forceinline__ void fenceOperands(float (&d)[8][4]) {
#pragma unroll
  for (int n = 0; n < 8; n++)
#pragma unroll
    for (int e = 0; e < 4; e++) asm volatile("" : "+f"(d[n][e])::"memory");
}

#define NSA_WG_D32(d) \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
  "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
  "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
  "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
// scale-d = p (%37 != 0): accumulate into d; scale-a = scale-b = 1; imm-trans-b = %38.
#define NSA_WG_OPS32(type) \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." type "." type " " \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, " \
  "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"

// d (64 x 64) += A (64 x 16, registers) · B (16 x 64, descriptor). TransB = false: B is K-major
// (element (k, n) at row n, column k of the tile: keys as rows for Q·Kᵀ); true: B is N-major
// (element (k, n) at row k, column n: values as rows for P·V).
template <bool TransB>
__device__ __forceinline__ void mma64x64(float (&d)[8][4], const uint32_t (&a)[4], uint64_t descB, __nv_bfloat16) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_OPS32("bf16")
               : NSA_WG_D32(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(1), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
template <bool TransB>
__device__ __forceinline__ void mma64x64(float (&d)[8][4], const uint32_t (&a)[4], uint64_t descB, __half) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_OPS32("f16")
               : NSA_WG_D32(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(1), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
// scale-d = p (%34 != 0); scale-a = scale-b = 1; imm-trans-a = 0 (A K-major); imm-trans-b = %35.
#define NSA_WG_OPS32_SS(type) \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." type "." type " " \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, " \
  "%32, %33, p, 1, 1, 0, %35;\n}\n"

// The same with A (64 x 16, K-major: element (m, k) at row m, column k) from shared memory too. No
// committed kernel uses it now; the forward's Q-in-shared-memory variant did, and passed parity
// (BENCHMARKS.md v7, runs W2/W3).
template <bool TransB>
__device__ __forceinline__ void mma64x64(float (&d)[8][4], uint64_t descA, uint64_t descB, __nv_bfloat16) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_OPS32_SS("bf16")
               : NSA_WG_D32(d)
               : "l"(descA), "l"(descB), "r"(1), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
template <bool TransB>
__device__ __forceinline__ void mma64x64(float (&d)[8][4], uint64_t descA, uint64_t descB, __half) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_OPS32_SS("f16")
               : NSA_WG_D32(d)
               : "l"(descA), "l"(descB), "r"(1), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
#undef NSA_WG_D32
#undef NSA_WG_OPS32
#undef NSA_WG_OPS32_SS

// Copies R rows of D 16-bit elements (row r at src + r * stride; rows from `valid` on are zeroed)
// into a swizzled tile at shared address dst (1024-byte aligned) with 16-byte cp.async, all NT
// threads taking part; a thread keeps one chunk column and rows NT / (D / 8) apart (a multiple of
// 8), so its swizzle is fixed. Zeroed rows are generic-proxy stores: fenceProxyAsync() before the
// barrier, as for the copies.
template <class T, int D, int NT, int R>
__device__ __forceinline__ void copyRowsSwizzled(uint32_t dst, const T* src, size_t stride, int valid) {
  constexpr int per = D / 8, step = NT / per;
  static_assert(NT % per == 0 && step % 8 == 0, "whole rows, and a fixed row % 8 per thread");
  const int c = threadIdx.x % per, r0 = threadIdx.x / per;
  const T* p = src + (size_t)r0 * stride + c * 8;
  uint32_t d = dst + swizzledChunk(R, r0, c);
#pragma unroll
  for (int r = r0; r < R; r += step, p += step * stride, d += step * 128) {
    if (r < valid) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(p));
    else asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(d), "r"(0));
  }
}

// mma64x64 with the accumulate flag as an operand: accumulate = 0 gives d = A·B, ignoring d's
// earlier values, so a fresh product needs no zeroed accumulator (the first k-step passes 0).
#define NSA_WG_ACC_D32(d) \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
  "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
  "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
  "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])
#define NSA_WG_ACC_RS(type) \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." type "." type " " \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, " \
  "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
#define NSA_WG_ACC_SS(type) \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n64k16.f32." type "." type " " \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, " \
  "%32, %33, p, 1, 1, 0, %35;\n}\n"
template <bool TransB>
__device__ __forceinline__ void mma64x64Acc(float (&d)[8][4], const uint32_t (&a)[4], uint64_t descB, int accumulate, __nv_bfloat16) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_ACC_RS("bf16")
               : NSA_WG_ACC_D32(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(accumulate), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
template <bool TransB>
__device__ __forceinline__ void mma64x64Acc(float (&d)[8][4], const uint32_t (&a)[4], uint64_t descB, int accumulate, __half) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_ACC_RS("f16")
               : NSA_WG_ACC_D32(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(accumulate), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
template <bool TransB>
__device__ __forceinline__ void mma64x64Acc(float (&d)[8][4], uint64_t descA, uint64_t descB, int accumulate, __nv_bfloat16) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_ACC_SS("bf16") : NSA_WG_ACC_D32(d) : "l"(descA), "l"(descB), "r"(accumulate), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
template <bool TransB>
__device__ __forceinline__ void mma64x64Acc(float (&d)[8][4], uint64_t descA, uint64_t descB, int accumulate, __half) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_ACC_SS("f16") : NSA_WG_ACC_D32(d) : "l"(descA), "l"(descB), "r"(accumulate), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
#undef NSA_WG_ACC_D32
#undef NSA_WG_ACC_RS
#undef NSA_WG_ACC_SS

// Descriptor of a 128-byte-swizzled N-major B operand (element (k, n) at row k, column n) that spans
// several 64-element column regions: `regionBytes` apart (rows * 128 for a tile of `rows` rows), the
// leading byte offset of an MN-major layout; 8-row groups along k stay 1024 bytes apart.
__device__ __forceinline__ uint64_t descSw128Mn(uint32_t addr, uint32_t regionBytes) {
  return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)((regionBytes >> 4) & 0x3FFF) << 16) | ((uint64_t)(1024 >> 4) << 32) | (1ull << 62);
}
#define NSA_WG_N128_D64(d) \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), \
  "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), \
  "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), \
  "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), \
  "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), \
  "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), \
  "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), \
  "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), \
  "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), \
  "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), \
  "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), \
  "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), \
  "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), \
  "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), \
  "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), \
  "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
#define NSA_WG_N128_RS(type) \
  "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n" \
  "wgmma.mma_async.sync.aligned.m64n128k16.f32." type "." type " " \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, " \
  "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
// d (64 x 128, d[n] = columns 8n .. 8n+7 in m16n8's C layout, as two m64n64 accumulators back to back)
// += A (64 x 16, registers) · B (16 x 128, descriptor; TransB as in mma64x64: true = N-major, whose two
// 64-column regions descSw128Mn describes).
template <bool TransB>
__device__ __forceinline__ void mma64x128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t descB, __nv_bfloat16) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_N128_RS("bf16")
               : NSA_WG_N128_D64(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(1), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
template <bool TransB>
__device__ __forceinline__ void mma64x128(float (&d)[16][4], const uint32_t (&a)[4], uint64_t descB, __half) {
#if NSA_WGMMA_DEVICE
  asm volatile(NSA_WG_N128_RS("f16")
               : NSA_WG_N128_D64(d)
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(descB), "r"(1), "n"(TransB ? 1 : 0));
#else
  __trap();
#endif
}
#undef NSA_WG_N128_D64
#undef NSA_WG_N128_RS

}  // namespace wg
}  // namespace nsa
