// NSA backward in the flash-attention-2 register layout, for float16/bfloat16, G = 16 query heads per
// KV head and Dk = Dv in {64, 128} (the shapes nsaForwardRegisters takes). The entry point runs
//   prep      dGates and D_b = g_b (dO · o_b) (nsa_backward.cu);
//   index     the inverse selection index (nsa_backward.cu), its counts read back through pinned
//             memory while the GPU runs the first eighth of the dq blocks;
//   dq + dK/dV one grid shared by the remaining dq blocks (dqBlock, nsa_backward_dq.cuh: Q and dO
//             fragments in registers, selected keys through a per-warp cp.async ring) and the 64-key
//             dK/dV blocks (keyGradBlockWg on sm_90a, nsa_backward_keys_wgmma.cuh; else
//             keyGradBlock, nsa_backward_keys.cuh; tile plan in
//             nsa_backward_keys_mma.cu, whose 128-key compressed blocks, where taken, run as their
//             own launch first), then the ordered reduce of split tiles.
// Deterministic: every gradient element is written by one thread, sums run in a fixed order.
// On sm_90a dq's compressed and window products run on wgmma (NSA_BWD_DQ_WGMMA=0: all on mma.sync, as
// v8). NSA_BWD_SHARED=0: dq and dK/dV as two launches; NSA_BWD_TRACE=1: host timestamps of each step on
// stderr. NSA_BWD_DQ_FORCED=0: dq's forced selected blocks through the per-warp rings (v9), not read
// once per block; NSA_BWD_DQ_RING=2: dq's selected rings with 2 stages (v9), not 3;
// NSA_BWD_DQ_ORDER=row: dq blocks with a row tile's KV heads adjacent (v9), not head by head.
// NSA_BWD_DQ_RING_TMA=0 / NSA_BWD_KEY_TMA=0: dq's ring chunks / the key blocks' stage rows copied
// with cp.async, not by TMA (KeyStageMaps). NSA_BWD_DQ_SKIP:
// dq leaves parts out, for profiling only (its dq is wrong). (v5's dq kernel,
// which reloaded Q/dO fragments per key tile, was removed once v7 measured faster: BENCHMARKS.md v7
// and run 20.)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "cuda_error.h"
#include "nsa_backward_dq.cuh"
#include "nsa_backward_keys.cuh"
#include "nsa_backward_keys_wgmma.cuh"
#include "nsa_backward_parts.h"
#include "nsa_backward_warp.cuh"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "workspace.h"

namespace nsa {

namespace {

struct RowTile {
  int s, first;  // sequence, first query index within it
};

constexpr int kDqWarps = 4;

template <class T, int D, bool DqWg>
__global__ void __launch_bounds__(32 * kDqWarps, 2)
    nsaDqFragKernel(NSABackwardArgs a, const float* Dvals, const DqTile* tiles, int dqFlags, const __grid_constant__ KeyStageMaps maps) {
  extern __shared__ __align__(16) char smemRaw[];
  dqBlock<T, D, kDqWarps, DqWg>(a, Dvals, tiles[blockIdx.x], smemRaw, dqFlags, &maps);
}

// dq blocks and 64-key dK/dV blocks in one grid, the two lists (each in its own launch order)
// interleaved evenly: block b is key block floor(b nKey / N) where floor((b + 1) nKey / N) steps,
// else a dq block. An SM then holds a mix of the L2-bound dq blocks and the math- and DRAM-bound key
// blocks, and neither kind's last wave idles the GPU (H100 16k: 17.6 ms against 8.6 + 11.3 ms as two
// launches, BENCHMARKS v7). Every output element is still written by one block. Wg: the key blocks
// on wgmma (keyGradBlockWg; ptxas: no spills), otherwise mma.sync (keyGradBlock; the two bodies
// inlined need 255 registers and spill 32 bytes). DqWg: dq's compressed and window products on wgmma.
// Early: the key blocks' Early loop (NSA_BWD_KEY_EARLY=2, the default); Tma: its stage copies on
// the copy engine (KeyStageMaps; NSA_BWD_KEY_TMA=0: cp.async).
template <class T, int D, bool Wg, bool DqWg, bool Early = false, bool Tma = false>
__global__ void __launch_bounds__(32 * kDqWarps, 2)
    nsaBwdSharedKernel(NSABackwardArgs a, const float* Dvals, const DqTile* dqTiles, int nDq, KeyBlockArgs kb, int nKey, int dqFlags,
                       const __grid_constant__ KeyStageMaps maps) {
  extern __shared__ __align__(16) char smemRaw[];
  const long long N = (long long)nDq + nKey, b = blockIdx.x;
  const int keysBefore = (int)(b * nKey / N);
  if ((int)((b + 1) * nKey / N) > keysBefore) {
    if constexpr (Wg) keyGradBlockWg<T, D, 4, 2, Early, Tma>(a, Dvals, kb.tiles[keysBefore], kb, smemRaw, &maps);
    else keyGradBlock<T, D, 4>(a, Dvals, kb.tiles[keysBefore], kb, smemRaw);
  } else dqBlock<T, D, kDqWarps, DqWg>(a, Dvals, dqTiles[b - keysBefore], smemRaw, dqFlags, &maps);
}

// dq blocks, latest positions first (they see the most compressed keys). headMajor: one KV head's
// blocks after another, so that the blocks in flight gather selected keys from one head's K and V
// (T x 512 bytes: 32 MB at 64k and D = 128, which L2 holds, where all four heads' 128 MB miss it:
// ncu at 64k, the KV heads of a row tile adjacent, 75 % L2 hit rate and 1.2 TB/s of DRAM reads);
// else the KV heads of one row tile adjacent (v9).
std::vector<DqTile> planDq(const NSABackwardArgs& a, bool headMajor) {
  const SeqArgs& sq = a.fwd.seq;
  const int S = sq.S;
  std::vector<RowTile> rowTiles;
  for (int s = 0; s < S; s++)
    for (int f = 0; f < sq.host[s + 1] - sq.host[s]; f += kDqWarps) rowTiles.push_back({s, f});
  std::stable_sort(rowTiles.begin(), rowTiles.end(), [&](const RowTile& x, const RowTile& y) {
    return x.first + sq.host[3 * S + 1 + x.s] > y.first + sq.host[3 * S + 1 + y.s];
  });
  std::vector<DqTile> tiles;
  tiles.reserve(rowTiles.size() * a.fwd.cfg.H);
  if (headMajor) {
    for (int g = 0; g < a.fwd.cfg.H; g++)
      for (const RowTile& t : rowTiles) tiles.push_back({t.s, t.first, g});
  } else {
    for (const RowTile& t : rowTiles)
      for (int g = 0; g < a.fwd.cfg.H; g++) tiles.push_back({t.s, t.first, g});
  }
  return tiles;
}

bool envIs(const char* name, char value) {
  const char* v = getenv(name);
  return v && v[0] == value;
}

template <class T, int D>
void run(const NSABackwardArgs& a, cudaStream_t stream) {
  // NSA_BWD_TRACE=1: host-side milliseconds of each step on stderr (where the host waits).
  const bool trace = envIs("NSA_BWD_TRACE", '1');
  const auto t0 = std::chrono::steady_clock::now();
  auto mark = [&](const char* what) {
    if (trace)
      fprintf(stderr, "nsa backward trace %8.3f ms %s\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(), what);
  };
  Workspace ws(stream);
  float* Dvals = backwardPrep(a, ws, stream);
  // dq's compressed and window products on wgmma where the key blocks run there too, unless
  // NSA_BWD_DQ_WGMMA=0 (v8's mma.sync dq).
  const bool keyWg = keyGradWgmmaRuns(), dqWg = keyWg && !envIs("NSA_BWD_DQ_WGMMA", '0');
  const bool shared = !envIs("NSA_BWD_SHARED", '0');
  // dq reads the forced selected blocks once per block (wgmma dq only) unless NSA_BWD_DQ_FORCED=0;
  // its selected rings have 3 stages unless NSA_BWD_DQ_RING=2.
  // NSA_BWD_DQ_SKIP=<bits> (profiling only, dq WRONG): leave out 1 the compressed walk, 2 the window walk,
  // 4 the forced-block walk (1, 2, 4: wgmma dq only), 8 the selected rings (scripts/dq-profile.sh times each).
  const char* skipEnv = getenv("NSA_BWD_DQ_SKIP");
  // The rings' chunks are unpadded and swizzled unless NSA_BWD_DQ_RING_SWIZZLE=0 (padded rows, v12).
  // The tensor maps of the key blocks' stage copies and dq's ring chunks (unless NSA_BWD_KEY_TMA=0 /
  // NSA_BWD_DQ_RING_TMA=0): dq's swizzled rings take full chunks by TMA where maps.onRing.
  const KeyStageMaps maps = keyStageMaps(a);
  const bool ringSwz = !envIs("NSA_BWD_DQ_RING_SWIZZLE", '0');
  const int dqFlags = (dqWg && !envIs("NSA_BWD_DQ_FORCED", '0') ? kDqForced : 0) | (envIs("NSA_BWD_DQ_RING", '2') ? 0 : kDqRing3) |
                      (ringSwz ? kDqRingSwz : 0) | (dqWg && ringSwz && maps.onRing ? kDqRingTma : 0) |
                      (skipEnv ? (atoi(skipEnv) & 15) * kDqSkip : 0);
  // The index's counts come back through pinned memory: the host plans the key tiles while the
  // GPU runs the first dq blocks (shared grid: the first eighth of them, as their own launch).
  InverseIndex index = backwardIndex(a, ws, stream, false);
  mark("prep and index queued");
  // dq blocks one KV head after another unless NSA_BWD_DQ_ORDER=row (v9: a row tile's heads adjacent).
  const std::vector<DqTile> dqTiles = planDq(a, !envIs("NSA_BWD_DQ_ORDER", 'r'));
  mark("dq planned");
  const DqTile* dDq = ws.upload(dqTiles);
  mark("dq tiles uploaded");
  const int nDq = (int)dqTiles.size(), head = shared ? nDq / 8 : nDq;
  const size_t dqBytes = DqFragLayout<D, kDqWarps>::bytes(sizeof(T), a.fwd.cfg.n);
  if (head > 0) {
    auto dqKernel = dqWg ? nsaDqFragKernel<T, D, true> : nsaDqFragKernel<T, D, false>;
    NSA_CUDA(cudaFuncSetAttribute(dqKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dqBytes));
    dqKernel<<<head, 32 * kDqWarps, dqBytes, stream>>>(a, Dvals, dDq, dqFlags, maps);
    NSA_LAUNCHED("nsaDqFragKernel");
  }
  mark("dq head queued");
  backwardIndexWait(index);
  mark("index counts read");
  if (!shared) {
    keyGradRegisters(a, Dvals, index, ws, stream);
    mark("dK/dV queued");
    return;
  }
  const KeyTilePlan plan = keyGradRegistersPlan(a, Dvals, index, ws, stream);
  mark("key tiles planned");
  const int nRest = nDq - head;
  if (nRest + plan.count > 0) {
    KeyBlockArgs kb{plan.tiles, index.starts, index.totals, index.list, index.NB, plan.partial, plan.groupRows};
    setKeySwitches(kb);
    auto launch = [&](auto kernel, size_t keyBytes) {
      const size_t bytes = std::max(dqBytes, keyBytes);
      NSA_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
      kernel<<<(unsigned)(nRest + plan.count), 32 * kDqWarps, bytes, stream>>>(a, Dvals, dDq + head, nRest, kb, plan.count, dqFlags, maps);
      NSA_LAUNCHED("nsaBwdSharedKernel");
    };
    if (dqWg && kb.early == 2 && maps.on) launch(nsaBwdSharedKernel<T, D, true, true, true, true>, KeyWgLayout<D, 4>::bytes());
    else if (dqWg && kb.early == 2) launch(nsaBwdSharedKernel<T, D, true, true, true>, KeyWgLayout<D, 4>::bytes());
    else if (dqWg) launch(nsaBwdSharedKernel<T, D, true, true>, KeyWgLayout<D, 4>::bytes());
    else if (keyWg) launch(nsaBwdSharedKernel<T, D, true, false>, KeyWgLayout<D, 4>::bytes());
    else launch(nsaBwdSharedKernel<T, D, false, false>, KeyLayout<D, 4>::bytes(sizeof(T)));
  }
  mark("shared grid queued");
  keyGradRegistersFinish(a, plan, ws, stream);
  mark("reduce queued");
}

}  // namespace

bool nsaBackwardRegisters(const NSABackwardArgs& a, cudaStream_t stream) {
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  if (f.dtype == DType::F32 || c.HQ != kBwdGroup * c.H || c.Dk != c.Dv || (c.Dk != 64 && c.Dk != 128)) return false;
  if (!f.oSlc || !f.oWin || !f.lse || f.seq.rows == 0 || c.n > 256) return false;
  const int S = f.seq.S;
  for (int s = 0; s < S; s++)
    if (f.seq.host[3 * S + 1 + s] != 0) return false;  // training rows only (the key-centric query ranges)
  const bool f16 = f.dtype == DType::F16;
  if (c.Dk == 64) f16 ? run<__half, 64>(a, stream) : run<__nv_bfloat16, 64>(a, stream);
  else f16 ? run<__half, 128>(a, stream) : run<__nv_bfloat16, 128>(a, stream);
  return true;
}

}  // namespace nsa
