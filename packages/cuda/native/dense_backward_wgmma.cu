// Dense causal backward on Hopper warpgroup mma (wgmma, sm_90a), float16/bfloat16, Dk = Dv in {64, 128},
// the same two block kinds as dense_backward_mma.cu (which launches these where denseWgmmaRuns()):
// - key-centric dK/dV: two warpgroups own 128 keys of one KV head (64 each, one m64 tile) and walk
//   every (query position >= key, head of the group) column in steps of 64 columns, Q / dO / lse / D
//   of a step in a ring (Stages slots, below). Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ take K and V from shared
//   memory (both operands through descriptors), so the registers hold only dK, dV and one step;
//   Pᵀ and dSᵀ = Pᵀ∘(dPᵀ − D) become register A operands of dV += Pᵀ·dO and dK += dSᵀ·Q;
// - query-centric dq: two warpgroups own 128 positions of one query head (Q and dO as register A
//   fragments) and walk 64-key steps: S = Q·Kᵀ, dP = dO·Vᵀ, dS, dq += dS·K.
// Each step issues its first two products together with the previous step's last one(s), waits for
// the first two only, and computes P and dS while the tensor cores finish the previous step (as
// dense_forward_wgmma.cu). Deterministic: every gradient element is written once, no atomics.
// The step stream runs in a ring of Stages slots. Stages = 4 (default): step t + 2 is requested in the
// middle of step t, after a barrier that runs while the previous step's last products are still on the
// tensor cores, so step t + 1's first products issue as soon as P and dS of step t are packed; the
// dK/dV blocks walk the query positions from the latest down (heads inner), so that blocks share Q / dO
// in L2.
// Stages = 3 (NSA_DENSE_BWD_STAGES=3, the kernel before): one barrier at the top of every step,
// between the packing and the next step's products.
// Step copies (CopyMode below; NSA_DENSE_BWD_TMA): by default the copy engine (TMA) fills the 4-slot
// ring, one thread requesting step t + 2 at the end of step t (dK/dV: Q, dO and 4-head boxes of lse and
// D; dq: K, V), with per-slot mbarriers for "landed" and "every thread done", so the loop has no block-wide
// barrier and issues no copy instructions; NSA_DENSE_BWD_TMA=0 runs the cp.async ring described above.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include "cuda_error.h"
#include "dense_wgmma.h"
#include "nsa_kernels.cuh"
#include "tma.cuh"
#include "warp_backward.cuh"
#include "warp_tile.cuh"
#include "wgmma.cuh"

namespace nsa {

namespace {

constexpr int kThreads = 256;    // two warpgroups
constexpr int kBlockRows = 128;  // keys (dK/dV) or query positions (dq) per block: 64 per warpgroup
constexpr int kStep = 64;        // query columns (dK/dV) or keys (dq) per step
constexpr int kRowBytes = 128;   // one 64-element row of a swizzled region

// Keeps the compiler from reusing A-operand registers while a wgmma may still read them.
__device__ __forceinline__ void fenceA(uint32_t (&r)[kStep / 16][4]) {
#pragma unroll
  for (int j = 0; j < kStep / 16; j++)
#pragma unroll
    for (int e = 0; e < 4; e++) asm volatile("" : "+r"(r[j][e])::"memory");
}
template <int D>
__device__ __forceinline__ void fenceAcc(float (&d)[D / 64][8][4]) {
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(d[dn]);
}
__device__ __forceinline__ void zeroAcc(float (&d)[8][4]) {
#pragma unroll
  for (int n = 0; n < 8; n++) d[n][0] = d[n][1] = d[n][2] = d[n][3] = 0.f;
  wg::fenceOperands(d);
}
// The C fragments of n-tiles 2j, 2j+1 (64 columns) as the A fragments of k-steps j = 0 .. 3.
template <class T>
__device__ __forceinline__ void packSteps(uint32_t (&a)[kStep / 16][4], const float (&c)[8][4]) {
#pragma unroll
  for (int j = 0; j < kStep / 16; j++) {
    a[j][0] = packF2<T>(c[2 * j][0], c[2 * j][1]);
    a[j][1] = packF2<T>(c[2 * j][2], c[2 * j][3]);
    a[j][2] = packF2<T>(c[2 * j + 1][0], c[2 * j + 1][1]);
    a[j][3] = packF2<T>(c[2 * j + 1][2], c[2 * j + 1][3]);
  }
}
// d[dn] += A (64 x kStep, register steps a) · B, B the swizzled kStep-row tile at `tile` read N-major
// (row = k, the 64-feature region dn = n). Wide (D = 128): one m64n128k16 per k-step over both regions
// instead of two m64n64k16.
template <class T, int D, bool Wide>
__device__ __forceinline__ void issueRowsTimesTile(float (&d)[D / 64][8][4], const uint32_t (&a)[kStep / 16][4], uint32_t tile) {
  if constexpr (Wide && D == 128) {
#pragma unroll
    for (int j = 0; j < kStep / 16; j++)
      wg::mma64x128<true>(reinterpret_cast<float(&)[16][4]>(d), a[j], wg::descSw128Mn(tile + j * 16 * kRowBytes, kStep * kRowBytes), T());
  } else {
#pragma unroll
    for (int j = 0; j < kStep / 16; j++)
#pragma unroll
      for (int dn = 0; dn < D / 64; dn++)
        wg::mma64x64<true>(d[dn], a[j], wg::descSw128(tile + dn * kStep * kRowBytes + j * 16 * kRowBytes), T());
  }
}

// The dK/dV blocks' step copies: kCopyAsync = cp.async by every thread, a barrier for each ring slot
// (the kernel before); kCopyTma = the copy engine (one thread requests a step, an mbarrier per slot
// says it landed), still one block-wide barrier per step before a slot is refilled; kCopyTmaFree =
// the same with a second mbarrier per slot that every thread arrives on once it is done with the
// slot, so no block-wide barrier in the loop and the two warpgroups need not run in step.
enum CopyMode { kCopyAsync = 0, kCopyTma = 1, kCopyTmaFree = 2 };
// TMA boxes of lse and D: kLseHeads heads (the box's 16-byte minimum) x kStep positions.
constexpr int kLseHeads = 4;

// The dK/dV blocks' maps (sm_90a; CUtensorMap is 64-byte aligned): Q, dO [rows][HQ][D] in kStep-row
// boxes of 64 features, lse and D [rows][HQ] floats in kLseHeads x kStep boxes.
// The dq blocks' maps: K, V [keyRows][H][D] in kStep-row boxes.
struct DenseMaps {
  CUtensorMap q, dO, lse, del, k, v;
  int kv, dq;  // the dK/dV blocks' maps (q, dO, lse, del) / the dq blocks' (k, v) are valid
};

template <int D, int Stages, int Mode = kCopyAsync>
struct KvShape {
  static constexpr int kvBytes = kBlockRows * D * 2;  // swizzled K or V of the block's keys
  static constexpr int colBytes = kStep * D * 2;      // swizzled Q or dO of one step
  static constexpr int lseW = Mode == kCopyAsync ? 1 : kLseHeads;  // floats per position in a slot's lse / D
  // K, V, then [Stages][Q, dO], then lse and D [Stages][kStep][lseW] floats, then 2 x Stages mbarriers.
  static constexpr size_t bytes = 2 * (size_t)kvBytes + (size_t)Stages * 2 * colBytes + 2 * sizeof(float) * Stages * kStep * lseW +
                                  16 * Stages + 1024;
};

// The TMA ring's barriers (one thread): "landed" completes with the copies' bytes, "released" once
// every thread has arrived.
template <int Stages>
__device__ __forceinline__ void initRing(uint32_t full, uint32_t empty) {
  for (int i = 0; i < Stages; i++) {
    tma::initBarrier(full + 8 * i, 1);
    tma::initBarrier(empty + 8 * i, kThreads);
  }
  tma::fenceInit();
}
// 2-D box (x0 .., y0 ..) of a map into shared address dst (the lse / D boxes).
__device__ __forceinline__ void tmaLoad2d(uint32_t dst, const CUtensorMap* map, int x0, int y0, uint32_t bar) {
#if NSA_WGMMA_DEVICE
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(dst),
               "l"(reinterpret_cast<uint64_t>(map)), "r"(x0), "r"(y0), "r"(bar)
               : "memory");
#else
  __trap();
#endif
}

// One dK/dV block: keys tile.first .. + kBlockRows of KV head kvh.
template <class T, int D, int Stages, bool Wide, int Mode>
__device__ __forceinline__ void keyValueGradBlock(const AttentionBackwardArgs& b, const float* delta, const DenseTile tile, const int kvh,
                                                  char* smemAll, const DenseMaps& maps) {
  using S = KvShape<D, Stages, Mode>;
  constexpr bool ahead = Stages == 4;  // step t + 2 requested in the middle of step t
  constexpr bool tma = Mode != kCopyAsync;
  static_assert(!tma || ahead, "the TMA copies run in the 4-slot ring");
  constexpr int lseW = S::lseW;
  char* smem = smemAll + ((1024u - (smemAddr(smemAll) & 1023u)) & 1023u);  // swizzled tiles: 1024-byte aligned
  const uint32_t sK = smemAddr(smem), sV = sK + S::kvBytes, ring = sV + S::kvBytes;
  float* sLse = reinterpret_cast<float*>(smem + 2 * S::kvBytes + Stages * 2 * S::colBytes);  // [Stages][kStep][lseW]
  float* sDel = sLse + Stages * kStep * lseW;
  const uint32_t full = smemAddr(sDel + Stages * kStep * lseW), empty = full + 8 * Stages;  // mbarriers (TMA modes)

  const AttentionArgs& a = b.fwd;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int G = a.HQ / a.H;
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart;
  const int pos0 = st.pos0[tile.s], kBase = st.kBase[tile.s];
  const int keyLen = pos0 + qCount, k0 = tile.first;
  const int nk = min(kBlockRows, keyLen - k0);
  const int first = max(k0, pos0);  // first query position that sees a key of the tile
  const int perHead = (max(0, keyLen - first) + kStep - 1) / kStep;
  // Column steps. Stages = 3: heads of the group outer, positions inner (ascending). Stages = 4: positions
  // outer from the latest down, heads inner: every dK/dV block of a sequence then starts at the same
  // position and walks down at the same pace, so the blocks on the GPU read the same Q / dO rows at about
  // the same time and share them in L2 (ascending from its own first key, each block read its own rows
  // from DRAM: 43% of the DRAM bandwidth at 32k, ncu).
  const int nTiles = G * perHead;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const T* dO = static_cast<const T*>(b.dOut);
  const size_t kvStride = (size_t)a.H * D, qStride = (size_t)a.HQ * D;

  wg::copyRowsSwizzled<T, D, kThreads, kBlockRows>(sK, K + ((size_t)(kBase + k0) * a.H + kvh) * D, kvStride, nk);
  wg::copyRowsSwizzled<T, D, kThreads, kBlockRows>(sV, V + ((size_t)(kBase + k0) * a.H + kvh) * D, kvStride, nk);
  auto colStart = [&](int t) { return first + (ahead ? perHead - 1 - t / G : t % perHead) * kStep; };
  auto colHead = [&](int t) { return kvh * G + (ahead ? t % G : t / perHead); };
  auto loadCols = [&](int t) {  // step t into slot t % Stages
    const int slot = t % Stages, hq = colHead(t), p0 = colStart(t), valid = min(kStep, keyLen - p0);
    const size_t at = (size_t)(qStart + p0 - pos0) * a.HQ + hq;  // (row, head) of column 0
    const uint32_t q = ring + slot * 2 * S::colBytes;
    wg::copyRowsSwizzled<T, D, kThreads, kStep>(q, Q + at * D, qStride, valid);
    wg::copyRowsSwizzled<T, D, kThreads, kStep>(q + S::colBytes, dO + at * D, qStride, valid);
    for (int r = threadIdx.x; r < kStep; r += kThreads) {
      float* lse = sLse + slot * kStep + r;
      float* del = sDel + slot * kStep + r;
      if (r < valid) {
        cpAsync4(lse, a.lse + at + (size_t)r * a.HQ);
        cpAsync4(del, delta + at + (size_t)r * a.HQ);
      } else {  // padding columns: P = 0
        *lse = INFINITY;
        *del = 0.f;
      }
    }
  };
  // TMA modes: one thread requests step t into slot t % Stages. Columns past the sequence read the next
  // sequence's rows (or zeros past the tensor): finite, and probabilities() masks them (P = dS = 0).
  auto requestCols = [&](int t) {
    const int slot = t % Stages, hq = colHead(t), row = qStart + colStart(t) - pos0;
    const uint32_t q = ring + slot * 2 * S::colBytes, bar = full + 8 * slot;
    tma::arriveExpect(bar, 2 * S::colBytes + 2 * kStep * kLseHeads * (uint32_t)sizeof(float));
    tma::loadTile<D, kStep, kStep>(q, &maps.q, hq, row, bar);
    tma::loadTile<D, kStep, kStep>(q + S::colBytes, &maps.dO, hq, row, bar);
    const int h0 = hq & ~(kLseHeads - 1);
    tmaLoad2d(smemAddr(sLse + slot * kStep * lseW), &maps.lse, h0, row, bar);
    tmaLoad2d(smemAddr(sDel + slot * kStep * lseW), &maps.del, h0, row, bar);
  };
  if constexpr (tma) {
    if (threadIdx.x == 0) {
      initRing<Stages>(full, empty);
      if (nTiles > 0) requestCols(0);
      if (nTiles > 1) requestCols(1);
    }
    cpAsyncCommit();
    cpAsyncWait<0>();  // K and V (the steps: on their mbarriers)
  } else {
    if (nTiles > 0) loadCols(0);
    cpAsyncCommit();
    if constexpr (ahead) {
      if (nTiles > 1) loadCols(1);
      cpAsyncCommit();
      cpAsyncWait<1>();  // K, V and step 0
    } else {
      cpAsyncWait<0>();
    }
  }
  wg::fenceProxyAsync();
  __syncthreads();

  const int wgRow = 64 * (warp >> 2);  // this warpgroup's first key row in the block
  const int kp0 = k0 + warp * 16 + g;  // this thread's key positions: kp0 and kp0 + 8
  const float sl2 = a.scale * kLog2e;
  float dk[D / 64][8][4], dv[D / 64][8][4];
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) {
    zeroAcc(dk[dn]);
    zeroAcc(dv[dn]);
  }
  float s[8][4], dp[8][4];             // Sᵀ, dPᵀ of one step (then Pᵀ, dSᵀ)
  uint32_t pA[kStep / 16][4], dsA[kStep / 16][4];  // Pᵀ, dSᵀ as A fragments
  if constexpr (ahead) {  // defined values for the products' first (overwriting) k-step
    zeroAcc(s);
    zeroAcc(dp);
  }

  auto issueScores = [&](int t) {  // Sᵀ = K·Qᵀ, dPᵀ = V·dOᵀ (one group with the caller's commit)
    const uint32_t q = ring + (t % Stages) * 2 * S::colBytes, o = q + S::colBytes;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {  // features 16kk..: region kk / 4, 32 bytes per step in it
      const uint32_t rowOff = (kk >> 2) * kBlockRows * kRowBytes + wgRow * kRowBytes + (kk & 3) * 32;
      const uint32_t colOff = (kk >> 2) * kStep * kRowBytes + (kk & 3) * 32;
      const int acc = !ahead || kk > 0;  // ahead: the first k-step overwrites Sᵀ, dPᵀ (no zeroing)
      wg::mma64x64Acc<false>(s, wg::descSw128(sK + rowOff), wg::descSw128(q + colOff), acc, T());
      wg::mma64x64Acc<false>(dp, wg::descSw128(sV + rowOff), wg::descSw128(o + colOff), acc, T());
    }
  };
  auto issueGrads = [&](int t) {  // dV += Pᵀ·dO, dK += dSᵀ·Q
    const uint32_t q = ring + (t % Stages) * 2 * S::colBytes;
    issueRowsTimesTile<T, D, Wide>(dv, pA, q + S::colBytes);
    issueRowsTimesTile<T, D, Wide>(dk, dsA, q);
  };
  auto probabilities = [&](int t) {  // Pᵀ and dSᵀ of step t in s and dp
    const int slot = t % Stages, p0 = colStart(t);
    // TMA modes: a slot holds kLseHeads heads per position, this step's head at hq % kLseHeads.
    const int h = tma ? colHead(t) % kLseHeads : 0;
    const float* lse = sLse + slot * kStep * lseW + h;
    const float* del = sDel + slot * kStep * lseW + h;
    // Only steps that start before the block's last key, or run past the last query, need the test.
    const bool edge = p0 < k0 + kBlockRows - 1 || p0 + kStep > keyLen;
#pragma unroll
    for (int n = 0; n < 8; n++) {
      const int c = n * 8 + 2 * t4;  // columns c, c + 1 of this n-tile
      const float2 l2 = tma ? make_float2(lse[c * lseW], lse[(c + 1) * lseW]) : *reinterpret_cast<const float2*>(lse + c);
      const float2 d2 = tma ? make_float2(del[c * lseW], del[(c + 1) * lseW]) : *reinterpret_cast<const float2*>(del + c);
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = n * 8 + 2 * t4 + (e & 1), p = p0 + c, kp = kp0 + 8 * (e >> 1);
        const bool vis = !edge || (kp <= p && p < keyLen);
        const float pv = vis ? exp2f(fmaf(s[n][e], sl2, -((e & 1) ? l2.y : l2.x))) : 0.f;
        s[n][e] = pv;
        dp[n][e] = pv * (dp[n][e] - ((e & 1) ? d2.y : d2.x));
      }
    }
  };

  for (int t = 0; t < nTiles; t++) {
    if constexpr (!ahead) {
      if (t > 0) {
        cpAsyncWait<0>();       // step t has landed (this thread's copies)
        wg::fenceProxyAsync();  // ... visible to the tensor cores
        __syncthreads();        // ... and everyone's; every warpgroup is done with step t - 2
      }
      if (t + 1 < nTiles) loadCols(t + 1);
      cpAsyncCommit();
      zeroAcc(s);
      zeroAcc(dp);
    }
    if constexpr (tma) tma::waitSpin(full + 8 * (t % Stages), (t / Stages) & 1);  // step t has landed
    fenceAcc<D>(dk);
    fenceAcc<D>(dv);
    wg::fence();
    issueScores(t);
    wg::commit();
    if (t > 0) {
      issueGrads(t - 1);
      wg::commit();
      wg::wait<1>();  // Sᵀ, dPᵀ of step t are done; step t - 1's products may still run
    } else {
      wg::wait<0>();
    }
    wg::fenceOperands(s);
    wg::fenceOperands(dp);
    probabilities(t);
    if constexpr (Mode == kCopyTma) {
      __syncthreads();  // every warpgroup is done with step t - 2, whose slot takes t + 2 (requested below)
    } else if constexpr (ahead && !tma) {  // while step t - 1's products run
      cpAsyncWait<0>();       // step t + 1 has landed (this thread's copies)
      wg::fenceProxyAsync();  // ... visible to the tensor cores
      __syncthreads();        // ... and everyone's; every warpgroup is done with step t - 2, whose slot takes t + 2
      if (t + 2 < nTiles) loadCols(t + 2);
      cpAsyncCommit();
    }
    wg::wait<0>();
    if constexpr (Mode == kCopyTmaFree) {
      if (t > 0) tma::arrive(empty + 8 * ((t - 1) % Stages));  // step t - 1's products are done: its slot is free
    }
    fenceA(pA);
    fenceA(dsA);
    fenceAcc<D>(dk);
    fenceAcc<D>(dv);
    packSteps<T>(pA, s);
    packSteps<T>(dsA, dp);
    // TMA modes: step t + 2, requested here rather than while products run (ptxas then serialises the
    // wgmma pipeline, C7514). kCopyTmaFree: once every thread is done with step t - 2 (arrived at the end
    // of step t - 1); warpgroup 0 waits as a whole (a wait in one thread only serialises wgmma, C7520).
    if (Mode == kCopyTmaFree && t >= 2 && t + 2 < nTiles) tma::waitSpin(empty + 8 * ((t + 2) % Stages), ((t - 2) / Stages) & 1);
    if (tma && threadIdx.x == 0 && t + 2 < nTiles) requestCols(t + 2);
  }
  if (nTiles > 0) {
    fenceAcc<D>(dk);
    fenceAcc<D>(dv);
    wg::fence();
    issueGrads(nTiles - 1);
    wg::commit();
    wg::wait<0>();
    fenceA(pA);
    fenceA(dsA);
    fenceAcc<D>(dk);
    fenceAcc<D>(dv);
  }

  T* dK = static_cast<T*>(b.dk);
  T* dV = static_cast<T*>(b.dv);
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  auto keyRow = [&](T* base, int r) { return r < nk ? base + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr; };
  storeFragRows<T, D>(reinterpret_cast<float(&)[D / 8][4]>(dk), keyRow(dK, r0), keyRow(dK, r1), a.scale);
  storeFragRows<T, D>(reinterpret_cast<float(&)[D / 8][4]>(dv), keyRow(dV, r0), keyRow(dV, r1), 1.f);
}

template <int D, int Stages>
struct DqShape {
  static constexpr int keyBytes = kStep * D * 2;  // swizzled K or V of one step
  static constexpr int ld = D + 8;                // padded Q, dO rows (ldmatrix) before the loop
  // [Stages][K, V], then Q, dO [kBlockRows][ld], then 2 x Stages mbarriers.
  static constexpr size_t bytes = (size_t)Stages * 2 * keyBytes + 2 * sizeof(uint16_t) * kBlockRows * ld + 16 * Stages + 1024;
};

// One dq block: query positions tile.first .. + kBlockRows of query head hq. Mode: the step copies as
// in keyValueGradBlock (K and V of a step by the copy engine in the TMA modes).
template <class T, int D, int Stages, bool Wide, int Mode>
__device__ __forceinline__ void dqBlock(const AttentionBackwardArgs& b, const float* delta, const DenseTile tile, const int hq, char* smemAll,
                                        const DenseMaps& maps) {
  using S = DqShape<D, Stages>;
  constexpr bool ahead = Stages == 4;
  constexpr bool tma = Mode != kCopyAsync;
  static_assert(!tma || ahead, "the TMA copies run in the 4-slot ring");
  char* smem = smemAll + ((1024u - (smemAddr(smemAll) & 1023u)) & 1023u);
  const uint32_t ring = smemAddr(smem);
  constexpr int ld = S::ld;
  T* sQ = reinterpret_cast<T*>(smem + Stages * 2 * S::keyBytes);
  T* sdO = sQ + kBlockRows * ld;
  const uint32_t full = smemAddr(sdO + kBlockRows * ld), empty = full + 8 * Stages;  // mbarriers (TMA modes)

  const AttentionArgs& a = b.fwd;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int kvh = hq / (a.HQ / a.H);
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart;
  const int kBase = st.kBase[tile.s], base = st.pos0[tile.s] + tile.first;  // position of row 0
  const int nq = min(kBlockRows, qCount - tile.first);
  const int keys = base + nq;  // keys 0 .. last row's position
  const int nTiles = (keys + kStep - 1) / kStep;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const T* dO = static_cast<const T*>(b.dOut);
  const size_t kvStride = (size_t)a.H * D;
  auto at = [&](int r) { return (size_t)(qStart + tile.first + r) * a.HQ + hq; };

  copyRowsAsync<T, D, kThreads>(sQ, ld, kBlockRows, [&](int r) -> const T* { return r < nq ? Q + at(r) * D : nullptr; });
  copyRowsAsync<T, D, kThreads>(sdO, ld, kBlockRows, [&](int r) -> const T* { return r < nq ? dO + at(r) * D : nullptr; });
  auto loadKV = [&](int t) {  // step t into slot t % Stages
    const int k0 = t * kStep, valid = min(kStep, keys - k0);
    const uint32_t slot = ring + (t % Stages) * 2 * S::keyBytes;
    const size_t first = ((size_t)(kBase + k0) * a.H + kvh) * D;
    wg::copyRowsSwizzled<T, D, kThreads, kStep>(slot, K + first, kvStride, valid);
    wg::copyRowsSwizzled<T, D, kThreads, kStep>(slot + S::keyBytes, V + first, kvStride, valid);
  };
  // TMA modes: one thread requests step t. Keys past the last position read later rows (or zeros past
  // the tensor): finite, and gradient() masks them (P = dS = 0).
  auto requestKV = [&](int t) {
    const uint32_t slot = ring + (t % Stages) * 2 * S::keyBytes, bar = full + 8 * (t % Stages);
    tma::arriveExpect(bar, 2 * S::keyBytes);
    tma::loadTile<D, kStep, kStep>(slot, &maps.k, kvh, kBase + t * kStep, bar);
    tma::loadTile<D, kStep, kStep>(slot + S::keyBytes, &maps.v, kvh, kBase + t * kStep, bar);
  };
  if constexpr (tma) {
    if (threadIdx.x == 0) {
      initRing<Stages>(full, empty);
      requestKV(0);
      if (nTiles > 1) requestKV(1);
    }
    cpAsyncCommit();
    cpAsyncWait<0>();  // Q and dO (the steps: on their mbarriers)
  } else {
    loadKV(0);
    cpAsyncCommit();
    if constexpr (ahead) {
      if (nTiles > 1) loadKV(1);
      cpAsyncCommit();
      cpAsyncWait<1>();  // Q, dO and step 0
    } else {
      cpAsyncWait<0>();
    }
  }
  wg::fenceProxyAsync();
  __syncthreads();

  const int row0 = 16 * warp;  // warp w: rows 16w .. 16w+15; this thread rows g, g + 8
  uint32_t qf[D / 16][4], of[D / 16][4];
#pragma unroll
  for (int kk = 0; kk < D / 16; kk++) {
    loadA(qf[kk], sQ, ld, row0, kk * 16);
    loadA(of[kk], sdO, ld, row0, kk * 16);
  }
  const int pos[2] = {base + row0 + g, base + row0 + g + 8};
  float lse[2], del[2];
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int r = row0 + g + 8 * i;
    lse[i] = r < nq ? a.lse[at(r)] : INFINITY;  // padding rows: P = 0
    del[i] = r < nq ? delta[at(r)] : 0.f;
  }
  const float sl2 = a.scale * kLog2e;
  float dq[D / 64][8][4];
#pragma unroll
  for (int dn = 0; dn < D / 64; dn++) zeroAcc(dq[dn]);
  float s[8][4], dp[8][4];
  uint32_t dsA[kStep / 16][4];
  if constexpr (ahead) {  // defined values for the products' first (overwriting) k-step
    zeroAcc(s);
    zeroAcc(dp);
  }

  auto issueScores = [&](int t) {  // S = Q·Kᵀ, dP = dO·Vᵀ
    const uint32_t k = ring + (t % Stages) * 2 * S::keyBytes, v = k + S::keyBytes;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      const uint32_t off = (kk >> 2) * kStep * kRowBytes + (kk & 3) * 32;
      const int acc = !ahead || kk > 0;  // ahead: the first k-step overwrites S, dP (no zeroing)
      wg::mma64x64Acc<false>(s, qf[kk], wg::descSw128(k + off), acc, T());
      wg::mma64x64Acc<false>(dp, of[kk], wg::descSw128(v + off), acc, T());
    }
  };
  auto gradient = [&](int t) {  // dS of step t in dp
    const int k0 = t * kStep;
    const bool edge = k0 + kStep - 1 > base + row0;  // the step reaches past this warp's first position
#pragma unroll
    for (int n = 0; n < 8; n++)
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int i = e >> 1, kp = k0 + n * 8 + 2 * t4 + (e & 1);
        const float p = (!edge || kp <= pos[i]) ? exp2f(fmaf(s[n][e], sl2, -lse[i])) : 0.f;
        dp[n][e] = p * (dp[n][e] - del[i]);
      }
  };

  for (int t = 0; t < nTiles; t++) {
    if constexpr (!ahead) {
      if (t > 0) {
        cpAsyncWait<0>();
        wg::fenceProxyAsync();
        __syncthreads();  // every warpgroup is done with step t - 2
      }
      if (t + 1 < nTiles) loadKV(t + 1);
      cpAsyncCommit();
      zeroAcc(s);
      zeroAcc(dp);
    }
    if constexpr (tma) tma::waitSpin(full + 8 * (t % Stages), (t / Stages) & 1);  // step t has landed
    fenceAcc<D>(dq);
    wg::fence();
    issueScores(t);
    wg::commit();
    if (t > 0) {
      issueRowsTimesTile<T, D, Wide>(dq, dsA, ring + ((t - 1) % Stages) * 2 * S::keyBytes);  // dq += dS·K of step t - 1
      wg::commit();
      wg::wait<1>();
    } else {
      wg::wait<0>();
    }
    wg::fenceOperands(s);
    wg::fenceOperands(dp);
    gradient(t);
    if constexpr (Mode == kCopyTma) {
      __syncthreads();  // every warpgroup is done with step t - 2, whose slot takes t + 2 (requested below)
    } else if constexpr (ahead && !tma) {  // while step t - 1's product runs
      cpAsyncWait<0>();  // step t + 1 has landed
      wg::fenceProxyAsync();
      __syncthreads();  // every warpgroup is done with step t - 2, whose slot takes t + 2
      if (t + 2 < nTiles) loadKV(t + 2);
      cpAsyncCommit();
    }
    wg::wait<0>();
    if constexpr (Mode == kCopyTmaFree) {
      if (t > 0) tma::arrive(empty + 8 * ((t - 1) % Stages));  // step t - 1's product is done: its slot is free
    }
    fenceA(dsA);
    fenceAcc<D>(dq);
    packSteps<T>(dsA, dp);
    // as in keyValueGradBlock
    if (Mode == kCopyTmaFree && t >= 2 && t + 2 < nTiles) tma::waitSpin(empty + 8 * ((t + 2) % Stages), ((t - 2) / Stages) & 1);
    if (tma && threadIdx.x == 0 && t + 2 < nTiles) requestKV(t + 2);
  }
  fenceAcc<D>(dq);
  wg::fence();
  issueRowsTimesTile<T, D, Wide>(dq, dsA, ring + ((nTiles - 1) % Stages) * 2 * S::keyBytes);
  wg::commit();
  wg::wait<0>();
  fenceA(dsA);
  fenceAcc<D>(dq);

  T* dQ = static_cast<T*>(b.dq);
  const int r0 = row0 + g, r1 = r0 + 8;
  storeFragRows<T, D>(reinterpret_cast<float(&)[D / 8][4]>(dq), r0 < nq ? dQ + at(r0) * D : nullptr, r1 < nq ? dQ + at(r1) * D : nullptr,
                      a.scale);
}

// Both block kinds in one grid, dK/dV blocks first (heaviest first, heads of a tile adjacent), then dq
// blocks: the dq blocks fill the multiprocessors that the dK/dV tail leaves idle (as dense_backward_mma.cu).
template <class T, int D, int Stages, bool Wide, int Mode, int DqMode>
__global__ void __launch_bounds__(kThreads, 1) gradKernel(AttentionBackwardArgs b, const float* delta, const DenseTile* kvTiles, int kvBlocks,
                                                          const DenseTile* qTiles, const __grid_constant__ DenseMaps maps) {
  extern __shared__ __align__(16) char smemAll[];
  const int i = blockIdx.x;
  if (i < kvBlocks) {
    keyValueGradBlock<T, D, Stages, Wide, Mode>(b, delta, kvTiles[i / b.fwd.H], i % b.fwd.H, smemAll, maps);
  } else {
    const int j = i - kvBlocks;
    dqBlock<T, D, Stages, Wide, DqMode>(b, delta, qTiles[j / b.fwd.HQ], j % b.fwd.HQ, smemAll, maps);
  }
}

template <class T, int D, int Stages, bool Wide, int Mode, int DqMode = Mode>
void launchStages(const AttentionBackwardArgs& b, const float* delta, const DenseTile* kvTiles, size_t kvBlocks, const DenseTile* qTiles,
                  size_t blocks, const DenseMaps& maps, cudaStream_t stream) {
  constexpr size_t bytes = std::max(KvShape<D, Stages, Mode>::bytes, DqShape<D, Stages>::bytes);
  static_assert(bytes <= 227 * 1024, "one block per SM on compute capability 9.0");
  auto kernel = gradKernel<T, D, Stages, Wide, Mode, DqMode>;
  NSA_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  kernel<<<(unsigned)blocks, kThreads, bytes, stream>>>(b, delta, kvTiles, (int)kvBlocks, qTiles, maps);
  NSA_LAUNCHED("denseGradWgmmaKernel");
}

// A 2-D float32 map over [rows][cols] (no swizzle), boxes of boxCols x boxRows; false where the driver
// lacks the entry point or refuses the map.
bool encodeFloatMap(CUtensorMap* map, const float* base, int rows, int cols, int boxCols, int boxRows) {
  const TensorMapEncode encode = tensorMapEncoder();
  if (!encode || reinterpret_cast<uintptr_t>(base) % 16 || (cols * sizeof(float)) % 16) return false;
  const cuuint64_t dims[2] = {(cuuint64_t)cols, (cuuint64_t)rows};
  const cuuint64_t strides[1] = {(cuuint64_t)cols * sizeof(float)};
  const cuuint32_t box[2] = {(cuuint32_t)boxCols, (cuuint32_t)boxRows}, elementStrides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, const_cast<float*>(base), dims, strides, box, elementStrides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_NONE, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// The step copies: NSA_DENSE_BWD_TMA=0 cp.async in both block kinds (the kernel before), =sync the copy
// engine with a block-wide barrier per step (D = 128), =kv the copy engine in the dK/dV blocks only
// (D = 128), else (default) the copy engine with per-slot release barriers in both kinds. A kind falls
// back to cp.async where its maps cannot be made (HQ % kLseHeads, alignment, no driver entry point).
template <class T, int D, int Stages, bool Wide>
void launchModes(const AttentionBackwardArgs& b, const float* delta, const DenseTile* kvTiles, size_t kvBlocks, const DenseTile* qTiles,
                 size_t blocks, cudaStream_t stream) {
  DenseMaps maps;
  std::memset(&maps, 0, sizeof maps);
  const char* env = getenv("NSA_DENSE_BWD_TMA");
  const AttentionArgs& a = b.fwd;
  if (!(env && env[0] == '0')) {
    const bool f16 = a.dtype == DType::F16;
    const int rows = a.seq.rows;
    maps.kv = a.HQ % kLseHeads == 0 && encodeKeyMap(&maps.q, a.q, f16, rows, a.HQ, D, kStep) &&
              encodeKeyMap(&maps.dO, b.dOut, f16, rows, a.HQ, D, kStep) && encodeFloatMap(&maps.lse, a.lse, rows, a.HQ, kLseHeads, kStep) &&
              encodeFloatMap(&maps.del, delta, rows, a.HQ, kLseHeads, kStep);
    const int S = a.seq.S;
    const int* h = a.seq.host;
    int keyRows = 0;  // rows of K and V that the sequences' keys reach
    for (int s = 0; s < S; s++) keyRows = std::max(keyRows, h[S + 1 + s] + h[3 * S + 1 + s] + h[s + 1] - h[s]);
    maps.dq = keyRows > 0 && encodeKeyMap(&maps.k, a.k, f16, keyRows, a.H, D, kStep) && encodeKeyMap(&maps.v, a.v, f16, keyRows, a.H, D, kStep);
  }
  const bool kv = maps.kv || kvBlocks == 0, dq = maps.dq || kvBlocks == blocks;  // each kind's maps, where it has blocks
  if constexpr (Wide) {
    if (env && strcmp(env, "sync") == 0 && kv && dq) {
      launchStages<T, D, Stages, Wide, kCopyTma>(b, delta, kvTiles, kvBlocks, qTiles, blocks, maps, stream);
      return;
    }
    if (env && strcmp(env, "kv") == 0 && kv) {
      launchStages<T, D, Stages, Wide, kCopyTmaFree, kCopyAsync>(b, delta, kvTiles, kvBlocks, qTiles, blocks, maps, stream);
      return;
    }
  }
  if (!(env && env[0] == '0') && kv && dq) launchStages<T, D, Stages, Wide, kCopyTmaFree>(b, delta, kvTiles, kvBlocks, qTiles, blocks, maps, stream);
  else launchStages<T, D, Stages, Wide, kCopyAsync>(b, delta, kvTiles, kvBlocks, qTiles, blocks, maps, stream);
}

template <class T, int D>
void launchGrads(const AttentionBackwardArgs& b, const float* delta, const DenseTile* kvTiles, int nKv, const DenseTile* qTiles, int nQ,
                 cudaStream_t stream) {
  const size_t kvBlocks = (size_t)nKv * b.fwd.H, blocks = kvBlocks + (size_t)nQ * b.fwd.HQ;
  if (blocks == 0) return;
  const char* env = getenv("NSA_DENSE_BWD_STAGES");  // =3: the ring of 3 with the barrier at the top of a step
  const char* wide = getenv("NSA_DENSE_WIDE");  // =0: D = 128's products over D as two m64n64k16
  DenseMaps none;
  std::memset(&none, 0, sizeof none);
  if (env && strcmp(env, "3") == 0) launchStages<T, D, 3, false, kCopyAsync>(b, delta, kvTiles, kvBlocks, qTiles, blocks, none, stream);
  else if (D == 128 && !(wide && wide[0] == '0')) launchModes<T, D, 4, D == 128>(b, delta, kvTiles, kvBlocks, qTiles, blocks, stream);
  else if constexpr (D == 128) launchStages<T, D, 4, false, kCopyAsync>(b, delta, kvTiles, kvBlocks, qTiles, blocks, none, stream);  // (A/B only)
  else launchModes<T, D, 4, false>(b, delta, kvTiles, kvBlocks, qTiles, blocks, stream);
}

}  // namespace

void denseGradsWgmma(const AttentionBackwardArgs& b, const float* delta, const DenseTile* kvTiles, int nKv, const DenseTile* qTiles, int nQ,
                     cudaStream_t stream) {
  const bool f16 = b.fwd.dtype == DType::F16;
  if (b.fwd.Dk == 64) {
    f16 ? launchGrads<__half, 64>(b, delta, kvTiles, nKv, qTiles, nQ, stream) : launchGrads<__nv_bfloat16, 64>(b, delta, kvTiles, nKv, qTiles, nQ, stream);
  } else {
    f16 ? launchGrads<__half, 128>(b, delta, kvTiles, nKv, qTiles, nQ, stream) : launchGrads<__nv_bfloat16, 128>(b, delta, kvTiles, nKv, qTiles, nQ, stream);
  }
}

}  // namespace nsa
