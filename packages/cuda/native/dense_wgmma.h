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

// dK, dV of 128-key tiles (kvTiles[0 .. nKv) on the device) for every KV head and dq of 128-position query
// tiles (qTiles[0 .. nQ)) for every query head, in one grid; delta = Σ dO ∘ O per (row, head). 16-bit,
// Dk = Dv in {64, 128}. nKv or nQ may be 0 (that kind stays with the caller).
void denseGradsWgmma(const AttentionBackwardArgs& b, const float* delta, const DenseTile* kvTiles, int nKv, const DenseTile* qTiles, int nQ,
                     cudaStream_t stream);

}  // namespace nsa
