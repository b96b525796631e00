// One block of the register-layout NSA dq (16-bit, G = 16, Dk = Dv in {64, 128}), as a device
// function: the stand-alone kernel and the grid shared with dK/dV (nsa_backward_mma.cu) run it.
//
// W warps = W consecutive query rows of one KV head; a warp = one row's 16 heads = one mma row tile.
// The Q and dO fragments of the warp's row stay in registers for the whole block (no ldmatrix of
// them per key tile). For each branch P is recomputed from the saved log2-domain lse,
// S = Q·Kᵀ and dP = dO·Vᵀ share one k-loop, dS = P (g_b dP - D_b) is packed from the C fragments
// into the A fragment of dq += dS·K. Compressed and window keys: the union of the block's rows'
// ranges in 64-key tiles (cp.async double-buffered, each warp masks its own range), taken in two
// 32-key steps; selected keys: each warp walks its own chosen blocks in 16-key chunks that never
// cross a block (no per-key index search) through a 2-stage cp.async ring of its own, so the next
// chunk's gather overlaps this chunk's mma (v5 gathered 32 keys, then waited).
// Wg (sm_90a; W a multiple of 4: each warpgroup's 4 rows x 16 heads are one m64 tile): the compressed and
// window tiles sit in wgmma's swizzled layout and S, dP and dq += dS·K run as warpgroup wgmmas with
// Q, dO and dS as register A fragments (dqGroupStep); the selected rings stay on mma.sync.
#pragma once
#include "nsa_backward_keys.cuh"
#include "nsa_backward_warp.cuh"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "tma.cuh"
#include "wgmma.cuh"

namespace nsa {

constexpr int kDqSharedKeys = 64;  // block-wide tiles (compressed, window)
constexpr int kDqChunk = kRingChunk;  // per-warp selected chunks (2 or 3 stages of K and V)

struct DqTile {
  int s, first, g;  // sequence, first query index within it, KV head
};

template <int D, int W>
struct DqFragLayout {
  static constexpr int ld = D + 8;
  static constexpr int tile = kDqSharedKeys * ld;
  // The key region holds [K0 K1 V0 V1] block-wide tiles, later each warp's ring (4 chunks of rows).
  static constexpr int keyRows = 4 * kDqSharedKeys > 4 * kDqChunk * W ? 4 * kDqSharedKeys : 4 * kDqChunk * W;
  static constexpr int keyElems = keyRows * ld;
  static constexpr int rowElems = 16 * W * ld;  // Q or dO of the block's rows
  __host__ __device__ static constexpr size_t tileBytes(size_t elem) { return elem * (keyElems + 2 * rowElems); }
  // then per warp: the row's chosen blocks and their visible lengths [n] each, then per warp 3
  // mbarriers (kDqRingTma: one per ring stage)
  __host__ __device__ static size_t barOffset(size_t elem, int n) { return tileBytes(elem) + sizeof(int) * W * 2 * (size_t)n; }
  static size_t bytes(size_t elem, int n) { return barOffset(elem, n) + 8 * 3 * W; }
};

// chunkAt / chunkBNK / chunkBKN (warp_tile.cuh): the rings' chunks, padded or swizzled (Swz).
template <class T, int D, bool Swz>
__device__ __forceinline__ void chunkRowsKN(float (&acc)[D / 8][4], const uint32_t* a, const T* Bm, int ld, int k0) {
#pragma unroll
  for (int dp = 0; dp < D / 16; dp++) {
    uint32_t b[4];
    chunkBKN<T, Swz>(b, Bm, ld, k0, dp * 16);
    mma16816(acc[2 * dp], a, b, T());
    mma16816(acc[2 * dp + 1], a, b + 2, T());
  }
}

// One warp's dq step over NK keys in shared memory (rows k, v of stride ld; Swz: ring chunks as above); qf, of: the warp's Q
// and dO A fragments. visible(j): key j counts for this warp's position. Short steps (NK = 16: 2 + 2
// accumulator tiles) sum S and dP over the feature dimension in two interleaved halves, so that
// twice as many independent mma chains are in flight.
template <class T, int D, int NK, bool Swz = false, class Visible>
__device__ __forceinline__ void dqFragStep(const uint32_t (&qf)[D / 16][4], const uint32_t (&of)[D / 16][4], const T* k,
                                           const T* v, int ld, float sl2, const float (&lse)[2], const float (&dd)[2],
                                           const float (&gt)[2], Visible visible, float (&dq)[D / 8][4]) {
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
  constexpr int kChains = NK == 16 ? 2 : 1;
  float sc[kChains][NK / 8][4], dc[kChains][NK / 8][4];
#pragma unroll
  for (int h = 0; h < kChains; h++) {
#pragma unroll
    for (int n = 0; n < NK / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) sc[h][n][e] = dc[h][n][e] = 0.f;
    }
  }
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    const int h = kk % kChains;
#pragma unroll
    for (int np = 0; np < NK / 16; np++) {
      uint32_t b[4];
      chunkBNK<T, Swz>(b, k, ld, np * 16, kk * 16);
      mma16816(sc[h][2 * np], qf[kk], b, T());
      mma16816(sc[h][2 * np + 1], qf[kk], b + 2, T());
      chunkBNK<T, Swz>(b, v, ld, np * 16, kk * 16);
      mma16816(dc[h][2 * np], of[kk], b, T());
      mma16816(dc[h][2 * np + 1], of[kk], b + 2, T());
    }
  }
  float (&s)[NK / 8][4] = sc[0];
  float (&dp)[NK / 8][4] = dc[0];
#pragma unroll
  for (int h = 1; h < kChains; h++) {
#pragma unroll
    for (int n = 0; n < NK / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        s[n][e] += sc[h][n][e];
        dp[n][e] += dc[h][n][e];
      }
    }
  }
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
    chunkRowsKN<T, D, Swz>(dq, a, k, ld, j * 16);
  }
}

// dq's 64 x 64 accumulator part dn (features 64 dn .. 64 dn + 63) of a [D / 8][4] row accumulator.
template <int D>
__device__ __forceinline__ float (&dqPart(float (&dq)[D / 8][4], int dn))[8][4] {
  return *reinterpret_cast<float(*)[8][4]>(&dq[8 * dn][0]);
}

// The warpgroup's dq step over a 64-key tile: K and V tiles in wgmma's swizzled layout at shared
// addresses kT and vT (64 rows each). S = Q·Kᵀ and dP = dO·Vᵀ are two wgmma groups (P is formed while
// dP is still on the tensor cores), dS = P (g dP - D) is packed into A fragments and dq += dS·K reads
// K as the N-major B. Every warp of the warpgroup takes part; a warp that sees no key adds zeros.
template <class T, int D, class Visible>
__device__ __forceinline__ void dqGroupStep(const uint32_t (&qf)[D / 16][4], const uint32_t (&of)[D / 16][4], uint32_t kT,
                                            uint32_t vT, float sl2, const float (&lse)[2], const float (&dd)[2],
                                            const float (&gt)[2], Visible visible, float (&dq)[D / 8][4]) {
  static_assert(kDqSharedKeys == 64, "one m64n64 tile of keys");
  constexpr uint32_t kRowBytes = 128, kRegion = kDqSharedKeys * kRowBytes;  // one 64-feature region
  const int t4 = threadIdx.x & 3;
  float s[8][4], dp[8][4];
#pragma unroll
  for (int n = 0; n < 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.f;
  }
  wg::fenceOperands(s);
  wg::fenceOperands(dp);
  wg::fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++)  // features 16 kk ..: region kk / 4, 32 bytes per step in it
    wg::mma64x64<false>(s, qf[kk], wg::descSw128(kT + (kk >> 2) * kRegion + (kk & 3) * 32), T());
  wg::commit();
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++)
    wg::mma64x64<false>(dp, of[kk], wg::descSw128(vT + (kk >> 2) * kRegion + (kk & 3) * 32), T());
  wg::commit();
  bool vis[8][2];
#pragma unroll
  for (int n = 0; n < 8; n++) {
#pragma unroll
    for (int e = 0; e < 2; e++) vis[n][e] = visible(n * 8 + 2 * t4 + e);
  }
  wg::wait<1>();  // S (dP may still run)
  wg::fenceOperands(s);
#pragma unroll
  for (int n = 0; n < 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) s[n][e] = vis[n][e & 1] ? exp2f(fmaf(s[n][e], sl2, -lse[e >> 1])) : 0.f;
  }
  wg::wait<0>();
  wg::fenceOperands(dp);
  uint32_t da[4][4];
#pragma unroll
  for (int n = 0; n < 8; n++) {
    float ds[4];
#pragma unroll
    for (int e = 0; e < 4; e++) ds[e] = s[n][e] * (gt[e >> 1] * dp[n][e] - dd[e >> 1]);
    da[n >> 1][2 * (n & 1)] = packF2<T>(ds[0], ds[1]);  // cToA's layout: keys 16 (n / 2) ..
    da[n >> 1][2 * (n & 1) + 1] = packF2<T>(ds[2], ds[3]);
  }
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(dqPart<D>(dq, dn));
  wg::fence();
#pragma unroll
  for (int j = 0; j < 4; j++)  // keys 16 j .. 16 j + 15: rows 16 j .. of each 64-feature region of K
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++)
      wg::mma64x64<true>(dqPart<D>(dq, dn), da[j], wg::descSw128(kT + dn * kRegion + j * 16 * kRowBytes), T());
  wg::commit();
  wg::wait<0>();
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(dqPart<D>(dq, dn));
}

// flags: kDqForced (Wg only): the forced selected blocks (initial and local) that a row chose are read
// once per block in the swizzled walk instead of once per row in the rings; kDqRing3: 3-stage rings.
// kDqSkip << p (p: 0 compressed walk, 1 window walk, 2 forced-block walk, 3 rings) leaves that part out,
// to time the parts' shares (NSA_BWD_DQ_SKIP): its dq is WRONG.
// kDqRingSwz: the rings' chunks unpadded and swizzled (chunkAt), rows 32-byte aligned.
// kDqRingTma (with kDqRingSwz, sm_90a, maps->onRing): a ring's full chunks arrive by bulk tensor
// copies (4 per chunk at D = 128, issued by lane 0; maps->ks / vs) completing a per-stage mbarrier;
// partial chunks stay on cp.async, which zeroes the rows past the chunk's visible keys. The lanes'
// cp.async loop took ~10 % of the shared grid's warp samples at 64k (ncu, cbwd5 call 1).
constexpr int kDqForced = 1, kDqRing3 = 2, kDqRingSwz = 4, kDqRingTma = 8, kDqSkip = 256;
template <class T, int D, int W, bool Wg>
__device__ __forceinline__ void dqBlock(const NSABackwardArgs& a, const float* Dvals, const DqTile tile, char* smemRaw,
                                        int flags = 0, const KeyStageMaps* maps = nullptr) {
  const bool forced = flags & kDqForced, ring3 = flags & kDqRing3;
  auto skip = [&](int part) { return (flags / kDqSkip >> part) & 1; };
  using L = DqFragLayout<D, W>;
  constexpr int ld = L::ld, kBlockThreads = 32 * W, kHalf = kDqSharedKeys / 2;
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  T* sK = reinterpret_cast<T*>(smemRaw);  // [2][tile]
  T* sV = sK + 2 * L::tile;               // [2][tile]
  T* sQ = sK + L::keyElems;               // [16 W rows]
  T* sO = sQ + L::rowElems;               // [16 W rows]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;
  int* blk = reinterpret_cast<int*>(smemRaw + L::tileBytes(sizeof(T))) + warp * 2 * c.n;
  int* len = blk + c.n;

  const int kvh = tile.g, hq0 = kvh * kBwdGroup;
  const SeqTable seq = seqTable(f.seq);
  const int qStart = seq.qStart[tile.s], qCount = seq.qStart[tile.s + 1] - qStart;
  const int kBase = seq.kBase[tile.s], cBase = seq.cBase[tile.s], pos0 = seq.pos0[tile.s];
  const int nq = min(W, qCount - tile.first);
  const bool active = warp < nq;
  const int myIndex = tile.first + min(warp, nq - 1);  // idle warps shadow the last row, write nothing
  const int row = qStart + myIndex, pos = pos0 + myIndex;
  const int lastPos = pos0 + tile.first + nq - 1, firstPos = pos0 + tile.first;
  const float sl2 = c.scale * kLog2e;
  const T* Q = static_cast<const T*>(f.q);
  const T* dOut = static_cast<const T*>(a.dOut);
  const T* gates = static_cast<const T*>(f.gates);

  // Q and dO of the W rows x 16 heads (consecutive slices of each row), then into fragments.
  auto rowSlice = [&](const T* base, int r) -> const T* {
    const int w = r / kBwdGroup;
    return w < nq ? base + ((size_t)(qStart + tile.first + w) * c.HQ + hq0 + r % kBwdGroup) * D : nullptr;
  };
  copyRowsAsync<T, D, kBlockThreads>(sQ, ld, 16 * W, [&](int r) { return rowSlice(Q, r); });
  copyRowsAsync<T, D, kBlockThreads>(sO, ld, 16 * W, [&](int r) { return rowSlice(dOut, r); });
  cpAsyncCommit();
  // This warp's chosen blocks and how many of their keys its row sees.
  const int cur = pos / c.ls;
  for (int k = lane; k < c.n; k += 32) {
    const int j = a.blocks[((size_t)row * c.H + kvh) * c.n + k];
    blk[k] = j;
    len[k] = (j >= 0 && j <= cur) ? min(c.ls, pos - j * c.ls + 1) : 0;
  }
  cpAsyncWait<0>();
  __syncthreads();
  uint32_t qf[D / 16][4], of[D / 16][4];
  {
    const int myWarpRow = min(warp, nq - 1) * kBwdGroup;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      loadA(qf[kk], sQ, ld, myWarpRow, kk * 16);
      loadA(of[kk], sO, ld, myWarpRow, kk * 16);
    }
  }

  // Block-wide double-buffered walk over keys first .. first + total - 1 (rows base + p).
  auto walkShared = [&](int first, int total, int base, const void* Kp, const void* Vp, auto&& body) {
    const int nTiles = (total + kDqSharedKeys - 1) / kDqSharedKeys;
    auto load = [&](int t, int buf) {
      const int k0 = first + t * kDqSharedKeys, end = first + total;
      const T* K = static_cast<const T*>(Kp);
      const T* V = static_cast<const T*>(Vp);
      copyRowsAsync<T, D, kBlockThreads>(sK + buf * L::tile, ld, kDqSharedKeys, [&](int r) -> const T* {
        return k0 + r < end ? K + ((size_t)(base + k0 + r) * c.H + kvh) * D : nullptr;
      });
      copyRowsAsync<T, D, kBlockThreads>(sV + buf * L::tile, ld, kDqSharedKeys, [&](int r) -> const T* {
        return k0 + r < end ? V + ((size_t)(base + k0 + r) * c.H + kvh) * D : nullptr;
      });
    };
    walkDoubleBuffered(nTiles, load, [&](int t, int buf) { body(first + t * kDqSharedKeys, sK + buf * L::tile, sV + buf * L::tile); });
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

  // Wg: block-wide walk over the same keys in 64-key tiles of wgmma's swizzled layout, [K0 K1 V0 V1]
  // from the key region's first 1024-byte boundary, one barrier per tile; body(first key, K, V).
  constexpr uint32_t kSwTile = kDqSharedKeys * D * 2;
  static_assert(!Wg || (W % 4 == 0 && 4 * kSwTile + 1008 <= L::keyElems * 2), "whole warpgroups; tiles fit the key region");
  const uint32_t swBase = (smemAddr(smemRaw) + 1023u) & ~1023u;
  // walkTiles: nTiles tiles, tile t = keys range(t).x .. range(t).y - 1 (at most 64); body(first key,
  // end, K, V). walkSwizzled: keys first .. first + total - 1 in consecutive tiles.
  auto walkTiles = [&](int nTiles, auto&& range, int base, const void* Kp, const void* Vp, auto&& body) {
    const T* K = static_cast<const T*>(Kp);
    const T* V = static_cast<const T*>(Vp);
    auto load = [&](int t, int buf) {
      const int2 r = range(t);
      const size_t at = ((size_t)(base + r.x) * c.H + kvh) * D, stride = (size_t)c.H * D;
      wg::copyRowsSwizzled<T, D, kBlockThreads, kDqSharedKeys>(swBase + buf * kSwTile, K + at, stride, r.y - r.x);
      wg::copyRowsSwizzled<T, D, kBlockThreads, kDqSharedKeys>(swBase + (2 + buf) * kSwTile, V + at, stride, r.y - r.x);
    };
    if (nTiles > 0) load(0, 0);
    cpAsyncCommit();
    for (int t = 0; t < nTiles; t++) {
      const int buf = t & 1;
      cpAsyncWait<0>();         // tile t has landed
      wg::fenceProxyAsync();    // this thread's tile writes, before the tensor cores read them
      __syncthreads();          // ... and everyone's; tile t - 1's wgmmas (buffer buf ^ 1) are done
      if (t + 1 < nTiles) load(t + 1, buf ^ 1);
      cpAsyncCommit();
      const int2 r = range(t);
      body(r.x, r.y, swBase + buf * kSwTile, swBase + (2 + buf) * kSwTile);
    }
    __syncthreads();  // the next walk or the rings overwrite the buffers
  };
  auto walkSwizzled = [&](int first, int total, int base, const void* Kp, const void* Vp, auto&& body) {
    const int nTiles = (total + kDqSharedKeys - 1) / kDqSharedKeys;
    walkTiles(nTiles, [&](int t) {
      const int k0 = first + t * kDqSharedKeys;
      return make_int2(k0, min(k0 + kDqSharedKeys, first + total));
    }, base, Kp, Vp, [&](int k0, int, uint32_t k, uint32_t v) { body(k0, k, v); });
  };

  // ---- compressed branch: keys 0 .. nc(pos) - 1 ----
  const int nc = compressedCount(pos + 1, c.l, c.d), ncAll = compressedCount(lastPos + 1, c.l, c.d);
  branchRows(0);
  if constexpr (Wg) {
    if (!skip(0)) walkSwizzled(0, ncAll, cBase, f.kCmp, f.vCmp, [&](int k0, uint32_t k, uint32_t v) {
      dqGroupStep<T, D>(qf, of, k, v, sl2, lse, dd, gt, [&](int j) { return k0 + j < nc; }, dq);
    });
  } else {
    walkShared(0, ncAll, cBase, f.kCmp, f.vCmp, [&](int k0, const T* k, const T* v) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int kh = k0 + h * kHalf;
        dqFragStep<T, D, kHalf>(qf, of, k + h * kHalf * ld, v + h * kHalf * ld, ld, sl2, lse, dd, gt,
                                [&](int j) { return kh + j < nc; }, dq);
      }
    });
  }

  // ---- window branch: keys ws(pos) .. pos; the block walks ws(first row) .. last row ----
  const int ws = max(0, pos - c.window + 1), wsAll = max(0, firstPos - c.window + 1);
  branchRows(2);
  if constexpr (Wg) {
    if (!skip(1)) walkSwizzled(wsAll, lastPos - wsAll + 1, kBase, f.kWin, f.vWin, [&](int k0, uint32_t k, uint32_t v) {
      dqGroupStep<T, D>(qf, of, k, v, sl2, lse, dd, gt, [&](int j) { return k0 + j >= ws && k0 + j <= pos; }, dq);
    });
  } else {
    walkShared(wsAll, lastPos - wsAll + 1, kBase, f.kWin, f.vWin, [&](int k0, const T* k, const T* v) {
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int kh = k0 + h * kHalf;
        dqFragStep<T, D, kHalf>(qf, of, k + h * kHalf * ld, v + h * kHalf * ld, ld, sl2, lse, dd, gt,
                                [&](int j) { return kh + j >= ws && kh + j <= pos; }, dq);
      }
    });
  }

  // ---- selected branch, part 1 (Wg): the forced blocks, once per block ----
  // When the block's rows share their current block, the forced blocks (initial ones, and the local
  // ones of that block) are keys [0, aEnd) and [bStart, lastPos] for every row. The selected branch
  // is bound by L2 bytes (each warp gathers its row's blocks), so the block reads these keys once in
  // swizzled tiles on wgmma, each warp masking the blocks its row did not choose and keys past its
  // position; each row's first entry of such a block leaves its ring. Decided from the lists, not
  // assumed, so supplied blockIndices stay exact (a block listed twice keeps its second entry in the ring).
  if constexpr (Wg) {
    const int cur0 = firstPos / c.ls;
    if (forced && cur0 == lastPos / c.ls && c.initialBlocks <= 32 && c.localBlocks <= 32) {
      const int nbInit = min(c.initialBlocks, cur0 + 1), localFirst = max(0, cur0 - c.localBlocks + 1);
      // bit j (< 32) of init: initial block j; bit i of local: block cur0 - i
      auto bitOf = [&](int j) -> int {
        if (j < 0) return -1;
        if (j < nbInit) return j;
        if (c.localBlocks > 0 && j >= localFirst && j <= cur0) return 32 + cur0 - j;
        return -1;
      };
      unsigned long long mine = 0;
      for (int k0 = 0; k0 < c.n; k0 += 32) {  // whole-warp rounds
        const int k = k0 + lane;
        const int bit = k < c.n && len[k] > 0 ? bitOf(blk[k]) : -1;
        bool first = bit >= 0;  // a listed block with visible keys: len > 0 iff 0 <= blk <= cur
        for (int q = 0; q < k && first; q++) first = blk[q] != blk[k];
        if (first) mine |= 1ull << bit;
        __syncwarp();
        if (first) len[k] = 0;
      }
      mine = __reduce_or_sync(0xffffffffu, (unsigned)mine) | (unsigned long long)__reduce_or_sync(0xffffffffu, (unsigned)(mine >> 32)) << 32;
      __syncwarp();
      const int aEnd = min(nbInit * c.ls, lastPos + 1);
      const int bStart = c.localBlocks > 0 ? max(localFirst * c.ls, aEnd) : lastPos + 1;
      const int aTiles = (aEnd + kDqSharedKeys - 1) / kDqSharedKeys;
      const int nTiles = aTiles + (lastPos + 1 - bStart + kDqSharedKeys - 1) / kDqSharedKeys;
      branchRows(1);
      if (!skip(2)) walkTiles(nTiles, [&](int t) {
        if (t < aTiles) return make_int2(t * kDqSharedKeys, min(aEnd, (t + 1) * kDqSharedKeys));
        const int x = bStart + (t - aTiles) * kDqSharedKeys;
        return make_int2(x, min(lastPos + 1, x + kDqSharedKeys));
      }, kBase, f.kSlc, f.vSlc, [&](int k0, int end, uint32_t k, uint32_t v) {
        // This thread's 16 keys of the tile (j = 8 n + 2 t4 + e) as bits 2 n + e, decided before
        // the step so that only the mask stays live beside its accumulators.
        unsigned vm = 0;
#pragma unroll
        for (int n = 0; n < 8; n++) {
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int x = k0 + n * 8 + 2 * t4 + e, bit = bitOf(x / c.ls);
            if (x < end && x <= pos && bit >= 0 && ((mine >> bit) & 1)) vm |= 1u << (2 * n + e);
          }
        }
        dqGroupStep<T, D>(qf, of, k, v, sl2, lse, dd, gt, [&](int j) { return (vm >> (2 * (j >> 3) + (j & 1))) & 1; }, dq);
      });
    }
  }
  __syncthreads();  // every warp is done with the block-wide tiles: they become per-warp rings

  // ---- selected branch: this warp's own 16-key chunks, a ring of 3 stages (ring3) or 2 ----
  // Chunk (k, off) = keys blk[k]*l' + off .. + 15 of chosen block k, the first len[k] - off of them
  // visible. Stage s of the ring: K rows at ring + 2s*kDqChunk*ld, V rows kDqChunk*ld after them.
  // The rings run over the key region and on into sQ / sO (dead: Q and dO are in registers now); a
  // deeper ring keeps more of each warp's L2 gathers in flight.
  static_assert(L::keyRows + 32 * W >= 6 * kDqChunk * W, "3-stage rings fit the key and Q/dO regions");
  // ringSwz: each warp's stages of [K V] chunks (kDqChunk x D, unpadded) from the region's first
  // 128-byte boundary (the swizzle is over 128-byte rows).
  constexpr int kSwChunk = kDqChunk * D;  // elements
  static_assert(W * 3 * 2 * kSwChunk * 2 + 1024 <= L::tileBytes(2), "3-stage swizzled rings fit the key and Q/dO regions");
  if (active && !skip(3)) {
    branchRows(1);
    const int stages = ring3 ? 3 : 2;
    const bool swz = flags & kDqRingSwz;
    // TMA rings start 1024-byte aligned: chunkAt's swizzle is then the copy engine's 128-byte swizzle
    const bool tmaRing = Wg && swz && (flags & kDqRingTma);
    const uint32_t ringAlign = tmaRing ? 1024u : 128u;
    T* ring = swz ? reinterpret_cast<T*>(smemRaw + ((ringAlign - (smemAddr(smemRaw) & (ringAlign - 1))) & (ringAlign - 1))) + warp * 2 * stages * kSwChunk
                  : sK + warp * 2 * stages * kDqChunk * ld;
    const uint32_t ringBar = smemAddr(smemRaw) + (uint32_t)L::barOffset(sizeof(T), c.n) + 8 * 3 * warp;  // + 8 * stage
    uint32_t ringPhase = 0;  // bit s: the parity of stage s's next TMA chunk
    if (tmaRing && lane == 0) {
      for (int b = 0; b < stages; b++) tma::initBarrier(ringBar + 8 * b, 1);
      tma::fenceInit();
    }
    __syncwarp();
    const int stageElems = swz ? 2 * kSwChunk : 2 * kDqChunk * ld, vOffset = swz ? kSwChunk : kDqChunk * ld;
    const T* Ks = static_cast<const T*>(f.kSlc);
    const T* Vs = static_cast<const T*>(f.vSlc);
    auto firstFrom = [&](int k) {  // next chosen block with visible tokens, from k on (c.n = none)
      while (k < c.n && len[k] == 0) k++;
      return k;
    };
    auto gather = [&](int k, int off, int stage) {
      T* dk = ring + stage * stageElems;
      T* dv = dk + vOffset;
      constexpr int per = D / 8;  // 16-byte pieces per row; a lane keeps one column
      const int col = (lane % per) * 8, rem = len[k] - off;
      const size_t k0 = (size_t)kBase + (size_t)blk[k] * c.ls + off;
      if (tmaRing && rem >= kDqChunk) {
        if (lane == 0) {
          const uint32_t bar = ringBar + 8 * stage;
          wg::fenceProxyAsync();  // the warp's reads of this stage (ldmatrix) before the copy engine writes it
          tma::arriveExpect(bar, 2 * kDqChunk * D * sizeof(T));
          tma::loadTile<D, kDqChunk, kDqChunk>(smemAddr(dk), &maps->ks, kvh, (int)k0, bar);
          tma::loadTile<D, kDqChunk, kDqChunk>(smemAddr(dv), &maps->vs, kvh, (int)k0, bar);
        }
        cpAsyncCommit();  // an empty group: the waits below count chunks
        return;
      }
#pragma unroll
      for (int r = lane / per; r < kDqChunk; r += 32 / per) {
        T* pk = const_cast<T*>(swz ? chunkAt<T, true>(dk, ld, r, col) : chunkAt<T, false>(dk, ld, r, col));
        T* pv = const_cast<T*>(swz ? chunkAt<T, true>(dv, ld, r, col) : chunkAt<T, false>(dv, ld, r, col));
        if (r < rem) {
          const size_t at = ((k0 + r) * c.H + kvh) * D + col;
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(pk)), "l"(Ks + at));
          asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smemAddr(pv)), "l"(Vs + at));
        } else {  // zero rows: dS is 0 there, and 0 * stale bits could be NaN
          *reinterpret_cast<uint4*>(pk) = make_uint4(0, 0, 0, 0);
          *reinterpret_cast<uint4*>(pv) = make_uint4(0, 0, 0, 0);
        }
      }
      cpAsyncCommit();
    };
    auto advance = [&](int& k, int& off) {  // the chunk after (k, off)
      off += kDqChunk;
      if (off >= len[k]) {
        k = firstFrom(k + 1);
        off = 0;
      }
    };
    // Chunk i of the walk sits in stage i % stages; the current chunk and up to stages - 1 after it
    // are in flight (one cp.async group each).
    int k = firstFrom(0), off = 0, stage = 0;
    int gk = k, goff = 0, gstage = 0, inFlight = 0;  // the next chunk to gather and its stage
    auto issue = [&]() {
      gather(gk, goff, gstage);
      advance(gk, goff);
      gstage = gstage + 1 == stages ? 0 : gstage + 1;
      inFlight++;
    };
    while (inFlight < stages - 1 && gk < c.n) issue();
    while (k < c.n) {
      if (gk < c.n) issue();
      if (inFlight >= 3) cpAsyncWait<2>();  // the current chunk is the oldest group
      else if (inFlight == 2) cpAsyncWait<1>();
      else cpAsyncWait<0>();
      const int rem = len[k] - off;
      if (tmaRing && rem >= kDqChunk) {
        tma::wait(ringBar + 8 * stage, (ringPhase >> stage) & 1u);
        ringPhase ^= 1u << stage;
      }
      __syncwarp();
      const T* ck = ring + stage * stageElems;
      if (swz) dqFragStep<T, D, kDqChunk, true>(qf, of, ck, ck + vOffset, ld, sl2, lse, dd, gt, [&](int j) { return j < rem; }, dq);
      else dqFragStep<T, D, kDqChunk, false>(qf, of, ck, ck + vOffset, ld, sl2, lse, dd, gt, [&](int j) { return j < rem; }, dq);
      __syncwarp();  // a later gather overwrites this stage
      inFlight--;
      advance(k, off);
      stage = stage + 1 == stages ? 0 : stage + 1;
    }
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

}  // namespace nsa
