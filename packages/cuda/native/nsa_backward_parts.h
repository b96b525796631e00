// Host-side pieces of the NSA backward shared by the general kernels (nsa_backward.cu) and the
// register-layout kernels (nsa_backward_mma.cu, nsa_backward_keys_mma.cu): the prep pass, the
// inverse selection index and the ordered reduce of split key tiles. Defined in nsa_backward.cu.
#pragma once
#include <cuda_runtime.h>
#include <vector>
#include "ops.h"
#include "workspace.h"

namespace nsa {

enum KeyMode { kWindow = 0, kCompressed = 1, kSelected = 2 };

constexpr int kSliceQueries = 1024;  // query positions per key-tile block before its work is split

// dGates = dO · o_b (written to a.dGates) and D_b = g_b * dGates per (row, head, branch) (returned).
float* backwardPrep(const NSABackwardArgs& a, Workspace& ws, cudaStream_t stream);

// (KV head, global selection block J) -> the query rows that chose it, ascending:
// list[starts[g * NB + J] ..] holds totals[g * NB + J] rows. hostTotals is a host copy of totals
// (read back, so the call synchronises the stream once).
struct InverseIndex {
  int NB = 0;
  int *starts = nullptr, *totals = nullptr, *list = nullptr;
  std::vector<int> hostTotals;
};
InverseIndex backwardIndex(const NSABackwardArgs& a, Workspace& ws, cudaStream_t stream);

// A key tile of BK keys whose query list was split over `parts` blocks: they wrote float partials
// [firstPart + z][BK][Dk + Dv] (dK unscaled, then dV); groupRows[group][BK] = each key's row or -1.
struct KeyGroup {
  int firstPart, parts, g, mode;
};
// Sums each group's partials in slice order and writes dK (times scale) and dV of the group's mode.
void reduceKeyPartials(const NSABackwardArgs& a, const std::vector<KeyGroup>& groups, const float* partial,
                       const int* groupRows, int BK, Workspace& ws, cudaStream_t stream);

// Register-layout key-centric dK/dV of all three branches (nsa_backward_keys_mma.cu): 16-bit,
// G = 16, Dk = Dv in {64, 128}, after backwardPrep (D) and backwardIndex.
void keyGradRegisters(const NSABackwardArgs& a, const float* D, const InverseIndex& index, Workspace& ws, cudaStream_t stream);

}  // namespace nsa
