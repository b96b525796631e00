// The Hopper wgmma (sm_90a) dense kernels' entry points: dense_forward_wgmma.cu (forward, probe) and
// dense_backward_wgmma.cu (the two gradient kernels that dense_backward_mma.cu launches).
#pragma once
#include <cuda_runtime.h>
#include "ops.h"

namespace nsa {

// A tile of a sequence: sequence s, first key (dK/dV) or first query index (dq) of the tile.
struct DenseTile {
  int s, first;
};

// True where the running code has wgmma (sm_90a build on a compute-capability 9.0 device) and a block
// may take the kernels' shared memory.
bool denseWgmmaRuns();

// dK, dV of 128-key tiles (tiles[0 .. nTiles) on the device) for every KV head; delta = Σ dO ∘ O
// per (row, head). 16-bit, Dk = Dv in {64, 128}.
void denseKeyValueGradWgmma(const AttentionBackwardArgs& b, const float* delta, const DenseTile* tiles, int nTiles,
                            cudaStream_t stream);
// dq of 128-position query tiles for every query head.
void denseDqWgmma(const AttentionBackwardArgs& b, const float* delta, const DenseTile* tiles, int nTiles, cudaStream_t stream);

}  // namespace nsa
