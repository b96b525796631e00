// Hopper tensor-memory-accelerator (TMA) tile loads for the forward's block-wide key / value tiles
// (sm_90a; forward v16). One thread requests a whole tile with a few cp.async.bulk.tensor
// instructions; the copy engine writes it in wgmma's 128-byte-swizzled layout (the same bytes as
// wg::swizzledChunk, the smem destination 1024-byte aligned) and completes an mbarrier's
// transaction count, on which every thread waits. The per-thread cp.async copies it replaces took
// ~7 issue slots per 16 bytes (the predicated zero-fill branch, the issue spacing) and, in the
// compressed branch at 64k, ~6 % of the kernel's warp samples (ncu, run of 02:26 UTC 2026-11-23).
#pragma once
#include <cuda.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include "wgmma.cuh"  // NSA_WGMMA_DEVICE: only the sm_90a device pass emits the TMA instructions

namespace nsa {

// The key / value tensors [rows][H][D] of one launch as 3-D tensor maps (D, H, rows), boxes of
// 64 elements x 1 head x boxRows rows (one 64-feature region of a boxRows-key slab): the compressed
// keys / values in kTmaRows-row boxes (k, v), the selected ones in 16-row boxes (ks, vs: a ring chunk).
constexpr int kTmaRows = 64;
struct TmaMaps {  // (CUtensorMap itself is 128-byte aligned)
  CUtensorMap k, v, ks, vs;
  int on, onSlc;  // maps k / v, ks / vs valid (else the kernel copies with cp.async)
};

// The driver's cuTensorMapEncodeTiled, looked up once (no libcuda link: the addon uses the static
// runtime); null where the driver lacks it, and every map then stays off.
using TensorMapEncode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                                     const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                     CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
TensorMapEncode tensorMapEncoder();

// Encodes map for a 16-bit [rows][H][D] tensor; false where the driver lacks the entry point or
// refuses the map (the caller then leaves TMA off).
bool encodeKeyMap(CUtensorMap* map, const void* base, bool f16, int rows, int H, int D, int boxRows);

namespace tma {

// Other device passes (sm_80) compile these to traps, as wgmma.cuh's helpers: the host launches the
// TMA paths only where the wgmma forward runs (sm_90a code on compute capability 9.0).
__device__ __forceinline__ void initBarrier(uint32_t bar, uint32_t count) {
#if NSA_WGMMA_DEVICE
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#else
  __trap();
#endif
}
// Makes the barriers' initialisation visible to the async proxy (the copy engine).
__device__ __forceinline__ void fenceInit() {
#if NSA_WGMMA_DEVICE
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#else
  __trap();
#endif
}
// This thread's arrival, announcing `bytes` of transactions the copies will complete.
__device__ __forceinline__ void arriveExpect(uint32_t bar, uint32_t bytes) {
#if NSA_WGMMA_DEVICE
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#else
  __trap();
#endif
}
// Waits until the barrier's phase with the given parity has completed.
__device__ __forceinline__ void wait(uint32_t bar, uint32_t parity) {
#if NSA_WGMMA_DEVICE
  uint32_t done;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
#else
  __trap();
#endif
}
// This thread's arrival without transactions (a consumer releasing a ring slot).
__device__ __forceinline__ void arrive(uint32_t bar) {
#if NSA_WGMMA_DEVICE
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#else
  __trap();
#endif
}
// wait() with its retry loop inside one asm statement: the C++ loop around try_wait made ptxas spill
// in the dense backward's dK/dV blocks and cost registers in the dense forward.
__device__ __forceinline__ void waitSpin(uint32_t bar, uint32_t parity) {
#if NSA_WGMMA_DEVICE
  asm volatile(
      "{\n .reg .pred p;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n @!p bra WAIT;\n}\n" ::"r"(bar), "r"(parity)
      : "memory");
#else
  __trap();
#endif
}
// Box (features x0 .. x0+63, head h, rows y0 ..) of map into shared address dst.
__device__ __forceinline__ void load(uint32_t dst, const CUtensorMap* map, int x0, int h, int y0, uint32_t bar) {
#if NSA_WGMMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x0), "r"(h), "r"(y0), "r"(bar)
      : "memory");
#else
  __trap();
#endif
}
// An R-row tile of D features (rows y0 .. y0+R-1, head h) in wgmma's swizzled layout at dst:
// region g (features 64g ..) at dst + g * R * 128 bytes, row r at + r * 128 (as copyTileSwizzled,
// and as chunkAt for R = 16), from a map of Box-row boxes.
template <int D, int R, int Box = kTmaRows>
__device__ __forceinline__ void loadTile(uint32_t dst, const CUtensorMap* map, int h, int y0, uint32_t bar) {
  static_assert(D % 64 == 0 && R % Box == 0, "whole boxes");
#pragma unroll
  for (int g = 0; g < D / 64; g++)
#pragma unroll
    for (int s = 0; s < R / Box; s++) load(dst + (g * R + s * Box) * 128, map, 64 * g, h, y0 + s * Box, bar);
}

}  // namespace tma
}  // namespace nsa
