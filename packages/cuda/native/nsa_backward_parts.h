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
  const int* pinnedTotals = nullptr;  // wait = false: the copy in flight
  cudaEvent_t copied = nullptr;
};
// With wait = false the totals are copied to pinned memory and the call returns at once: the GPU
// work queued next runs while the host waits in backwardIndexWait (which fills hostTotals).
InverseIndex backwardIndex(const NSABackwardArgs& a, Workspace& ws, cudaStream_t stream, bool wait = true);
void backwardIndexWait(InverseIndex& index);

// A key tile of BK keys whose query list was split over `parts` blocks: they wrote float partials
// [firstPart + z][BK][Dk + Dv] (dK unscaled, then dV); groupRows[group][BK] = each key's row or -1.
struct KeyGroup {
  int firstPart, parts, g, mode;
};
// Sums each group's partials in slice order and writes dK (times scale) and dV of the group's mode.
void reduceKeyPartials(const NSABackwardArgs& a, const std::vector<KeyGroup>& groups, const float* partial,
                       const int* groupRows, int BK, Workspace& ws, cudaStream_t stream);

// One block of the register-layout key-centric dK/dV: keys [start, end) of one branch (positions;
// compressed: indices) of KV head g in sequence s, selection block j, and the slice [q0, q1) of its
// query list; part >= 0: write float partials (of split group `group`).
struct KeyTile {
  int s, mode, start, end, j, g, q0, q1, part, group;
};

// The key-centric dK/dV blocks run on wgmma (keyGradBlockWg): the loaded code is sm_90a on compute
// capability 9.0 and NSA_BWD_WGMMA is not 0 (then the mma.sync block, keyGradBlock, runs).
bool keyGradWgmmaRuns();
// The wgmma key blocks fetch a stage's lse, D, gates and positions one stage ahead (KeyBlockArgs::defer)
// unless NSA_BWD_KEY_DEFER=0.
bool keyGradDefer();

// Register-layout key-centric dK/dV of all three branches (nsa_backward_keys_mma.cu): 16-bit,
// G = 16, Dk = Dv in {64, 128}, after backwardPrep (D) and backwardIndex.
void keyGradRegisters(const NSABackwardArgs& a, const float* D, const InverseIndex& index, Workspace& ws, cudaStream_t stream);

// The same work for a grid shared with dq: keyGradRegistersPlan launches what cannot share it (the
// 128-key compressed blocks, where taken) and returns the 64-key tiles of the rest, uploaded, largest
// list first; after the shared grid, keyGradRegistersFinish sums the split tiles' partials.
struct KeyTilePlan {
  const KeyTile* tiles = nullptr;
  int count = 0;
  std::vector<KeyGroup> groups;
  float* partial = nullptr;
  int* groupRows = nullptr;
};
KeyTilePlan keyGradRegistersPlan(const NSABackwardArgs& a, const float* D, const InverseIndex& index, Workspace& ws,
                                 cudaStream_t stream);
void keyGradRegistersFinish(const NSABackwardArgs& a, const KeyTilePlan& plan, Workspace& ws, cudaStream_t stream);

}  // namespace nsa
