// Hopper (sm_90a) bulk tensor copies (TMA) into shared memory, completing on an mbarrier, optionally
// multicast to both blocks of a 2-block cluster, and the mbarrier / cluster primitives around them.
// Only the sm_90a device pass emits them (NSA_WGMMA_DEVICE, as wgmma.cuh); other passes trap, and the
// host launches the code that uses them only where wgmma runs. The tensor maps are made on the host
// (makeTensorMap3d in nsa_backward_mma.cu) and passed as __grid_constant__ kernel parameters.
#pragma once
#include <cuda.h>
#include <stdint.h>
#include "wgmma.cuh"

namespace nsa {
namespace tma {

__device__ __forceinline__ void trapOff() {
#if !NSA_WGMMA_DEVICE
  __trap();
#endif
}

__device__ __forceinline__ void initBarrier(uint32_t bar, int count) {
#if NSA_WGMMA_DEVICE
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#else
  trapOff();
#endif
}
// Barrier inits visible to the cluster (the other block's copies and arrivals), before a cluster sync.
__device__ __forceinline__ void fenceBarrierInit() {
#if NSA_WGMMA_DEVICE
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void clusterArrive() {
#if NSA_WGMMA_DEVICE
  asm volatile("barrier.cluster.arrive.release.aligned;\n" ::: "memory");
#else
  trapOff();
#endif
}
__device__ __forceinline__ void clusterWait() {
#if NSA_WGMMA_DEVICE
  asm volatile("barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
#else
  trapOff();
#endif
}
__device__ __forceinline__ uint32_t clusterRank() {
  uint32_t r = 0;
#if NSA_WGMMA_DEVICE
  asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(r));
#endif
  return r;
}
// One arrival that also expects `bytes` of copies to complete on the barrier in this phase.
__device__ __forceinline__ void arriveExpect(uint32_t bar, uint32_t bytes) {
#if NSA_WGMMA_DEVICE
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n" ::"r"(bar), "r"(bytes) : "memory");
#else
  trapOff();
#endif
}
__device__ __forceinline__ void arrive(uint32_t bar) {
#if NSA_WGMMA_DEVICE
  asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar) : "memory");
#else
  trapOff();
#endif
}
// An arrival on the barrier at the same shared offset in cluster block `rank` (release: this
// thread's earlier accesses, and the warpgroup's finished wgmma reads it waited for, come first).
__device__ __forceinline__ void arriveRemote(uint32_t bar, uint32_t rank) {
#if NSA_WGMMA_DEVICE
  asm volatile("{\n.reg .b32 ra;\nmapa.shared::cluster.u32 ra, %0, %1;\nmbarrier.arrive.release.cluster.shared::cluster.b64 _, [ra];\n}\n" ::"r"(bar),
               "r"(rank)
               : "memory");
#else
  trapOff();
#endif
}
// Waits for the completion of the barrier's phase with this parity (acquire at cluster scope: the
// arrivals may come from the other block).
__device__ __forceinline__ void wait(uint32_t bar, uint32_t parity) {
#if NSA_WGMMA_DEVICE
  asm volatile(
      "{\n.reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#else
  trapOff();
#endif
}
// Box at coordinates (x, y, z) of a 3-d tensor map into shared address dst, completing on bar of
// this block; multicast: into the same offsets (data and barrier) of every block in ctaMask.
__device__ __forceinline__ void load3d(uint32_t dst, const CUtensorMap* map, int x, int y, int z, uint32_t bar) {
#if NSA_WGMMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(z), "r"(bar)
      : "memory");
#else
  trapOff();
#endif
}
__device__ __forceinline__ void load3dMulticast(uint32_t dst, const CUtensorMap* map, int x, int y, int z, uint32_t bar,
                                                uint16_t ctaMask) {
#if NSA_WGMMA_DEVICE
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {%2, %3, %4}], "
      "[%5], %6;\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(z), "r"(bar), "h"(ctaMask)
      : "memory");
#else
  trapOff();
#endif
}

}  // namespace tma
}  // namespace nsa
