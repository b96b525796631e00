// NSA backward in the flash-attention-2 register layout, for float16/bfloat16, G = 16 query heads per
// KV head and Dk = Dv in {64, 128} (the shapes nsaForwardRegisters takes). The entry point runs
//   prep      dGates and D_b = g_b (dO · o_b) (nsa_backward.cu);
//   index     the inverse selection index (nsa_backward.cu), its counts read back through pinned
//             memory while the GPU runs the first eighth of the dq blocks;
//   dq + dK/dV one grid shared by the remaining dq blocks (dqBlock, nsa_backward_dq.cuh: Q and dO
//             fragments in registers, selected keys through a per-warp cp.async ring) and the 64-key
//             dK/dV blocks (keyGradBlock, nsa_backward_keys.cuh; tile plan in
//             nsa_backward_keys_mma.cu, whose 128-key compressed blocks, where taken, run as their
//             own launch first), then the ordered reduce of split tiles.
// Deterministic: every gradient element is written by one thread, sums run in a fixed order.
// NSA_BWD_SHARED=0: dq and dK/dV as two launches; NSA_BWD_V5=1: the v5 path (nsaDqRegKernel below:
// Q/dO fragments reloaded per key tile, selected keys gathered 32 at a time and waited for; then
// dK/dV in v5's tile order); NSA_BWD_TRACE=1: host timestamps of each step on stderr.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "cuda_error.h"
#include "nsa_backward_dq.cuh"
#include "nsa_backward_keys.cuh"
#include "nsa_backward_parts.h"
#include "nsa_backward_warp.cuh"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kSharedKeys = 64;  // block-wide tiles (compressed, window)
constexpr int kOwnKeys = 32;     // per-warp tiles (selected)

struct RowTile {
  int s, first;  // sequence, first query index within it
};

// W warps = W consecutive query rows per block.
template <int D, int W>
struct DqLayout {
  static constexpr int ld = D + 8;
  static constexpr int tile = kSharedKeys * ld;
  // The key region holds [K0 K1 V0 V1] block-wide tiles, later each warp's own selected K/V tiles.
  static constexpr int keyElems = (4 * kSharedKeys > 2 * kOwnKeys * W ? 4 * kSharedKeys : 2 * kOwnKeys * W) * ld;
  static constexpr int rowElems = 16 * W * ld;  // Q or dO of the block's rows
  __host__ __device__ static constexpr size_t tileBytes(size_t elem) { return elem * (keyElems + 2 * rowElems); }
  static size_t bytes(size_t elem, int n) { return tileBytes(elem) + sizeof(int) * W * ((size_t)kOwnKeys + 2 * n + 2); }
};

// One warp's dq step over NK keys in shared memory (rows k, v of stride ld); qs, os: the warp's 16
// query and dO rows. visible(j): key j counts for this warp's position.
template <class T, int D, int NK, class Visible>
__device__ __forceinline__ void dqStep(const T* qs, const T* os, const T* k, const T* v, int ld, float sl2, const float (&lse)[2],
                                       const float (&dd)[2], const float (&gt)[2], Visible visible, float (&dq)[D / 8][4]) {
  const int t4 = threadIdx.x & 3;
  bool vis[NK / 8][2];
  bool any = false;
#pragma unroll
  for (int n = 0; n < NK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 2; e++) {
      vis[n][e] = visible(n * 8 + 2 * t4 + e);
      any |= vis[n][e];
    }
  }
  if (!__any_sync(0xffffffffu, any)) return;  // keys are shared by the warp's rows
  float s[NK / 8][4], dp[NK / 8][4];
  mmaScoresPair<T, D, NK>(qs, k, os, v, ld, s, dp);
#pragma unroll
  for (int n = 0; n < NK / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) {
      const int i = e >> 1;
      const float p = vis[n][e & 1] ? exp2f(fmaf(s[n][e], sl2, -lse[i])) : 0.f;
      s[n][e] = p * (gt[i] * dp[n][e] - dd[i]);
    }
  }
#pragma unroll
  for (int j = 0; j < NK / 16; j++) {
    uint32_t a[4];
    cToA<T>(a, s[2 * j], s[2 * j + 1]);
    mmaRowsKN<T, D>(dq, a, k, ld, j * 16);
  }
}

template <class T, int D, int W>
__global__ void __launch_bounds__(32 * W, 8 / W) nsaDqRegKernel(NSABackwardArgs a, const float* Dvals, const RowTile* tiles) {
  extern __shared__ __align__(16) char smemRaw[];
  using L = DqLayout<D, W>;
  constexpr int ld = L::ld, kWarpsPerBlock = W, kBlockThreads = 32 * W;
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  T* sK = reinterpret_cast<T*>(smemRaw);  // [2][tile]
  T* sV = sK + 2 * L::tile;               // [2][tile]
  T* sQ = sK + L::keyElems;               // [16 W rows]
  T* sO = sQ + L::rowElems;               // [16 W rows]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;
  int* ownRow = reinterpret_cast<int*>(smemRaw + L::tileBytes(sizeof(T))) + warp * (kOwnKeys + 2 * c.n + 2);
  int* blk = ownRow + kOwnKeys;  // [n]
  int* pre = blk + c.n;          // [n + 1]

  const int kvh = blockIdx.y, hq0 = kvh * kBwdGroup;
  const RowTile tile = tiles[blockIdx.x];
  const SeqTable seq = seqTable(f.seq);
  const int qStart = seq.qStart[tile.s], qCount = seq.qStart[tile.s + 1] - qStart;
  const int kBase = seq.kBase[tile.s], cBase = seq.cBase[tile.s], pos0 = seq.pos0[tile.s];
  const int nq = min(kWarpsPerBlock, qCount - tile.first);
  const bool active = warp < nq;
  const int myIndex = tile.first + min(warp, nq - 1);  // idle warps shadow the last row, write nothing
  const int row = qStart + myIndex, pos = pos0 + myIndex;
  const int lastPos = pos0 + tile.first + nq - 1, firstPos = pos0 + tile.first;
  const float sl2 = c.scale * kLog2e;
  const T* Q = static_cast<const T*>(f.q);
  const T* dOut = static_cast<const T*>(a.dOut);
  const T* gates = static_cast<const T*>(f.gates);

  // Q and dO of the 4 rows x 16 heads (consecutive slices of each row).
  auto rowSlice = [&](const T* base, int r) -> const T* {
    const int w = r / kBwdGroup;
    return w < nq ? base + ((size_t)(qStart + tile.first + w) * c.HQ + hq0 + r % kBwdGroup) * D : nullptr;
  };
  copyRowsAsync<T, D, kBlockThreads>(sQ, ld, 16 * W, [&](int r) { return rowSlice(Q, r); });
  copyRowsAsync<T, D, kBlockThreads>(sO, ld, 16 * W, [&](int r) { return rowSlice(dOut, r); });
  cpAsyncCommit();
  cpAsyncWait<0>();
  __syncthreads();
  const int myWarpRow = min(warp, nq - 1) * kBwdGroup;
  const T* qs = sQ + myWarpRow * ld;
  const T* os = sO + myWarpRow * ld;

  // Block-wide double-buffered walk over keys first .. first + total - 1 (rows base + p).
  auto walkShared = [&](int first, int total, int base, const void* Kp, const void* Vp, auto&& body) {
    const int nTiles = (total + kSharedKeys - 1) / kSharedKeys;
    auto load = [&](int t, int buf) {
      const int k0 = first + t * kSharedKeys, end = first + total;
      const T* K = static_cast<const T*>(Kp);
      const T* V = static_cast<const T*>(Vp);
      copyRowsAsync<T, D, kBlockThreads>(sK + buf * L::tile, ld, kSharedKeys, [&](int r) -> const T* {
        return k0 + r < end ? K + ((size_t)(base + k0 + r) * c.H + kvh) * D : nullptr;
      });
      copyRowsAsync<T, D, kBlockThreads>(sV + buf * L::tile, ld, kSharedKeys, [&](int r) -> const T* {
        return k0 + r < end ? V + ((size_t)(base + k0 + r) * c.H + kvh) * D : nullptr;
      });
    };
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
      body(first + t * kSharedKeys, sK + buf * L::tile, sV + buf * L::tile);
      __syncthreads();
    }
  };

  // lse (log2 domain), D_b and gate of this thread's two heads for branch b.
  float lse[2], dd[2], gt[2];
  auto branchRows = [&](int b) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
      const size_t at = ((size_t)row * c.HQ + hq0 + g4 + 8 * i) * 3 + b;
      lse[i] = f.lse[at];
      dd[i] = Dvals[at];
      gt[i] = toF(gates[at]);
    }
  };

  float dq[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  // ---- compressed branch: keys 0 .. nc(pos) - 1 ----
  const int nc = compressedCount(pos + 1, c.l, c.d), ncAll = compressedCount(lastPos + 1, c.l, c.d);
  branchRows(0);
  walkShared(0, ncAll, cBase, f.kCmp, f.vCmp, [&](int k0, const T* k, const T* v) {
    dqStep<T, D, kSharedKeys>(qs, os, k, v, ld, sl2, lse, dd, gt, [&](int j) { return k0 + j < nc; }, dq);
  });

  // ---- window branch: keys ws(pos) .. pos; the block walks ws(first row) .. last row ----
  const int ws = max(0, pos - c.window + 1), wsAll = max(0, firstPos - c.window + 1);
  branchRows(2);
  walkShared(wsAll, lastPos - wsAll + 1, kBase, f.kWin, f.vWin, [&](int k0, const T* k, const T* v) {
    dqStep<T, D, kSharedKeys>(qs, os, k, v, ld, sl2, lse, dd, gt, [&](int j) { return k0 + j >= ws && k0 + j <= pos; }, dq);
  });

  // ---- selected branch: this warp's own 32-key tiles (the K/V tile bytes, now free) ----
  const int cur = pos / c.ls;
  for (int k = lane; k < c.n; k += 32) blk[k] = a.blocks[((size_t)row * c.H + kvh) * c.n + k];
  __syncwarp();
  if (lane == 0) {
    int total = 0;
    for (int k = 0; k < c.n; k++) {
      pre[k] = total;
      const int j = blk[k];
      total += (j >= 0 && j <= cur) ? min(c.ls, pos - j * c.ls + 1) : 0;
    }
    pre[c.n] = total;
  }
  __syncwarp();
  const int slcTokens = pre[c.n];
  T* ownK = sK + warp * 2 * kOwnKeys * ld;
  T* ownV = ownK + kOwnKeys * ld;
  const T* Ks = static_cast<const T*>(f.kSlc);
  const T* Vs = static_cast<const T*>(f.vSlc);
  branchRows(1);
  for (int e0 = 0; e0 < slcTokens; e0 += kOwnKeys) {
    {
      const int e = e0 + lane;
      int kr = -1;
      if (e < slcTokens) {
        int k = 0;
        while (pre[k + 1] <= e) k++;
        kr = kBase + blk[k] * c.ls + (e - pre[k]);
      }
      ownRow[lane] = kr;
    }
    __syncwarp();
    constexpr int per = D / 8;  // 16-byte chunks per row
    for (int x = lane; x < kOwnKeys * per; x += 32) {
      const int r = x / per, col = (x % per) * 8;
      const int kr = ownRow[r];
      T* dk = ownK + r * ld + col;
      T* dv = ownV + r * ld + col;
      if (kr >= 0) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(dk)), "l"(Ks + ((size_t)kr * c.H + kvh) * D + col));
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(dv)), "l"(Vs + ((size_t)kr * c.H + kvh) * D + col));
      } else {
        *reinterpret_cast<uint4*>(dk) = make_uint4(0, 0, 0, 0);
        *reinterpret_cast<uint4*>(dv) = make_uint4(0, 0, 0, 0);
      }
    }
    cpAsyncCommit();
    cpAsyncWait<0>();
    __syncwarp();
    dqStep<T, D, kOwnKeys>(qs, os, ownK, ownV, ld, sl2, lse, dd, gt, [&](int j) { return e0 + j < slcTokens; }, dq);
    __syncwarp();
  }

  if (!active) return;
  T* dQ = static_cast<T*>(a.dq);
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const size_t at = ((size_t)row * c.HQ + hq0 + g4 + 8 * i) * D + 2 * t4;
#pragma unroll
    for (int n = 0; n < D / 8; n++)
      *reinterpret_cast<uint32_t*>(dQ + at + n * 8) = packF2<T>(dq[n][2 * i] * c.scale, dq[n][2 * i + 1] * c.scale);
  }
}

template <class T, int D, int W>
void launchDq(const NSABackwardArgs& a, const float* Dvals, Workspace& ws, cudaStream_t stream) {
  constexpr int kWarpsPerBlock = W;
  const SeqArgs& sq = a.fwd.seq;
  std::vector<RowTile> tiles;
  const int S = sq.S;
  for (int s = 0; s < S; s++)
    for (int f = 0; f < sq.host[s + 1] - sq.host[s]; f += kWarpsPerBlock) tiles.push_back({s, f});
  // Latest positions first: they have the most compressed keys.
  std::stable_sort(tiles.begin(), tiles.end(), [&](const RowTile& x, const RowTile& y) {
    return x.first + sq.host[3 * S + 1 + x.s] > y.first + sq.host[3 * S + 1 + y.s];
  });
  const size_t bytes = DqLayout<D, W>::bytes(sizeof(T), a.fwd.cfg.n);
  const RowTile* dTiles = ws.upload(tiles);
  NSA_CUDA(cudaFuncSetAttribute(nsaDqRegKernel<T, D, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  nsaDqRegKernel<T, D, W><<<dim3((unsigned)tiles.size(), a.fwd.cfg.H), 32 * W, bytes, stream>>>(a, Dvals, dTiles);
  NSA_LAUNCHED("nsaDqRegKernel");
}

// v5: dq (Q/dO fragments reloaded per key tile, selected keys gathered 32 at a time), then dK/dV.
template <class T, int D>
void runV5(const NSABackwardArgs& a, cudaStream_t stream) {
  Workspace ws(stream);
  float* Dvals = backwardPrep(a, ws, stream);
  const InverseIndex index = backwardIndex(a, ws, stream);
  // 4 rows per block: 8 (half the compressed and window K/V traffic per row) measured no faster (v5).
  launchDq<T, D, 4>(a, Dvals, ws, stream);
  keyGradRegisters(a, Dvals, index, ws, stream);
}

// ---- v7: dq with fragments in registers and a per-warp selected ring, sharing one grid with dK/dV ----

constexpr int kDqWarps = 4;

template <class T, int D>
__global__ void __launch_bounds__(32 * kDqWarps, 2) nsaDqFragKernel(NSABackwardArgs a, const float* Dvals, const DqTile* tiles) {
  extern __shared__ __align__(16) char smemRaw[];
  dqBlock<T, D, kDqWarps>(a, Dvals, tiles[blockIdx.x], smemRaw);
}

// dq blocks and 64-key dK/dV blocks in one grid, the two lists (each in its own launch order)
// interleaved evenly: block b is key block floor(b nKey / N) where floor((b + 1) nKey / N) steps,
// else a dq block. An SM then holds a mix of the L2-bound dq blocks and the math- and DRAM-bound key
// blocks, and neither kind's last wave idles the GPU (H100 16k: 17.6 ms against 8.6 + 11.3 ms as two
// launches, BENCHMARKS v7). Every output element is still written by one block. The two block
// bodies inlined into one kernel need 255 registers and spill 32 bytes (ptxas).
template <class T, int D>
__global__ void __launch_bounds__(32 * kDqWarps, 2)
    nsaBwdSharedKernel(NSABackwardArgs a, const float* Dvals, const DqTile* dqTiles, int nDq, KeyBlockArgs kb, int nKey) {
  extern __shared__ __align__(16) char smemRaw[];
  const long long N = (long long)nDq + nKey, b = blockIdx.x;
  const int keysBefore = (int)(b * nKey / N);
  if ((int)((b + 1) * nKey / N) > keysBefore) keyGradBlock<T, D, 4>(a, Dvals, kb.tiles[keysBefore], kb, smemRaw);
  else dqBlock<T, D, kDqWarps>(a, Dvals, dqTiles[b - keysBefore], smemRaw);
}

// dq blocks, latest positions first (they see the most compressed keys), the KV heads of one
// row tile adjacent.
std::vector<DqTile> planDq(const NSABackwardArgs& a) {
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
  for (const RowTile& t : rowTiles)
    for (int g = 0; g < a.fwd.cfg.H; g++) tiles.push_back({t.s, t.first, g});
  return tiles;
}

bool envIs(const char* name, char value) {
  const char* v = getenv(name);
  return v && v[0] == value;
}

template <class T, int D>
void run(const NSABackwardArgs& a, cudaStream_t stream) {
  if (envIs("NSA_BWD_V5", '1')) return runV5<T, D>(a, stream);
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
  const bool shared = !envIs("NSA_BWD_SHARED", '0');
  // The index's counts come back through pinned memory: the host plans the key tiles while the
  // GPU runs the first dq blocks (shared grid: the first eighth of them, as their own launch).
  InverseIndex index = backwardIndex(a, ws, stream, false);
  mark("prep and index queued");
  const std::vector<DqTile> dqTiles = planDq(a);
  mark("dq planned");
  const DqTile* dDq = ws.upload(dqTiles);
  mark("dq tiles uploaded");
  const int nDq = (int)dqTiles.size(), head = shared ? nDq / 8 : nDq;
  const size_t dqBytes = DqFragLayout<D, kDqWarps>::bytes(sizeof(T), a.fwd.cfg.n);
  if (head > 0) {
    NSA_CUDA(cudaFuncSetAttribute(nsaDqFragKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)dqBytes));
    nsaDqFragKernel<T, D><<<head, 32 * kDqWarps, dqBytes, stream>>>(a, Dvals, dDq);
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
    const size_t bytes = std::max(dqBytes, KeyLayout<D, 4>::bytes(sizeof(T)));
    NSA_CUDA(cudaFuncSetAttribute(nsaBwdSharedKernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    const KeyBlockArgs kb{plan.tiles, index.starts, index.totals, index.list, index.NB, plan.partial, plan.groupRows};
    nsaBwdSharedKernel<T, D><<<(unsigned)(nRest + plan.count), 32 * kDqWarps, bytes, stream>>>(a, Dvals, dDq + head, nRest, kb,
                                                                                              plan.count);
    NSA_LAUNCHED("nsaBwdSharedKernel");
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
