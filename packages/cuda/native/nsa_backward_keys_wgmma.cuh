// The key-centric dK/dV block of the register-layout NSA backward on Hopper's wgmma (sm_90a; the
// host runs it only where keyGradWgmmaRuns() says the loaded code has it). Same work, tile plan,
// query lists and outputs as keyGradBlock (nsa_backward_keys.cuh); what changes is who multiplies:
// each warpgroup (4 warps) owns 64 keys of the tile as one m64 wgmma row tile, so a stage of 64
// (row, head) columns is a handful of m64n64k16 instructions instead of per-warp mma.sync chains
// fed by ldmatrix (that path was issue-bound at 8 warps per SM, BENCHMARKS.md v7):
//   Sᵀ = K Qᵀ, dPᵀ = V dOᵀ        A = K / V tile, B = the stage's Q / dO, both from shared memory;
//   dV += (g Pᵀ) dO, dK += dSᵀ Q   A = Pᵀ / dSᵀ packed from the accumulators, B = dO / Q (N-major).
// The accumulator layout equals mma.sync's C layout (warp w: keys 16w .. 16w+15), so the query
// list, stage loads, masking, softmax recompute and output code repeat keyGradBlock's (a copy, as
// measured in BENCHMARKS.md v8; folding both into shared helpers is a follow-up). K, V and the stage
// tiles sit in wgmma's 128-byte-swizzled layout (wgmma.cuh). Within a stage, dV's product runs while
// dSᵀ is formed. Deterministic: one block per output element, fixed order.
#pragma once
#include "nsa_backward_keys.cuh"
#include "tma.cuh"
#include "wgmma.cuh"

namespace nsa {

constexpr int kSwizzleRowBytes = 128;  // one 64-element row of a swizzled region

// W warps (a multiple of 4) own 16 W keys; shared memory, 1024-byte aligned (the launch adds the
// slack): [K V] tiles, S stage buffers [Q dO], then per stage lse, D, gate and positions, then per
// stage a slot of prefetched query rows, then per stage buffer an mbarrier (the TMA stage copies).
// S = 3 (128-key blocks, one per SM: 160 KB at D = 128; NSA_BWD_KEY_RING=3): a stage's copy has two
// stages' time to land.
template <int D, int W, int S = 2>
struct KeyWgLayout {
  static constexpr int keys = 16 * W, stages = S;
  static constexpr int keyBytes = keys * D * 2, stageBytes = kStageCols * D * 2;
  static constexpr int tileBytes = 2 * keyBytes + 2 * stages * stageBytes;
  static constexpr int stageFloats = 3 * kStageCols + kStageRows;
  static constexpr int barOffset = tileBytes + sizeof(float) * stages * (stageFloats + kStageRows);
  static_assert(barOffset % 8 == 0, "mbarriers are 8-byte aligned");
  static constexpr size_t bytes() { return barOffset + 8 * stages + 1024; }
};

// Copies `rows` rows of D 16-bit elements (row r at rowPtr(r), null = zeros) into the swizzled tile
// at shared address dst with 16-byte cp.async; every thread of the block takes part.
template <class T, int D, int NT, class RowPtr>
__device__ __forceinline__ void copyRowsSwizzled(uint32_t dst, int rows, RowPtr rowPtr) {
  constexpr int per = D / 8;  // 16-byte chunks per row
  static_assert(NT % per == 0, "threads must cover whole rows");
  const int c = threadIdx.x % per;
  for (int r = threadIdx.x / per; r < rows; r += NT / per) {
    const T* src = rowPtr(r);
    const uint32_t d = dst + wg::swizzledChunk(rows, r, c);
    if (src) asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(src + c * 8));
    else asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(d), "r"(0));
  }
}

// The 64 x 64 accumulator tile dn (features 64 dn .. 64 dn + 63) of a [D / 8][4] row accumulator.
template <int D>
__device__ __forceinline__ float (&accPart(float (&acc)[D / 8][4], int dn))[8][4] {
  return *reinterpret_cast<float(*)[8][4]>(&acc[8 * dn][0]);
}

// Tma: a stage's Q and dO rows arrive by bulk tensor copies (maps: KeyStageMaps, one 16-head row
// slice of 64 features per copy) that warp 0's lanes issue and an mbarrier per stage buffer
// completes, instead of every thread's cp.async loop (~35 % of the 128-key blocks' issued
// instructions at 64k: per 16 bytes a shared row lookup, 64-bit address arithmetic and the
// zero-fill branch; ncu, cbwd5 call 1). Rows past the list are copied from outside the tensor:
// the copy engine fills them with zeros, as the cp.async loop stored. H100 64k (cbwd5 calls 2-3):
// 128-key launch 28.9 -> 26.7-27.2 ms, the grid shared with dq (its 64-key blocks) 45.0 -> 38.1-38.6
// ms with dq's ring TMA; the largest stall left in the 128-key launch was the wait for a stage's
// copies (~20 % of its warp samples at the mbarrier try-wait). Window and compressed stages now come
// in 4-row boxes (maps->q4 / dO4: 4 copies of 8 KB per stage at D = 128 instead of 16 of 2 KB): the
// 128-key launch 27.7 -> 23.4 ms (ncu, cbwd6 call 1), the copy engine being faster with fewer,
// larger boxes; NSA_BWD_KEY_TMA4=0 keeps the per-row copies. Selected stages take a box where their
// rows run (the forced blocks' lists): 16k 17.90-17.91 against 17.97-18.00 ms with the boxes kept to
// window and compressed stages (=1), 64k a tie (cbwd6 call 2).
template <class T, int D, int W, int S = 2, bool Early = false, bool Tma = false>
__device__ __forceinline__ void keyGradBlockWg(const NSABackwardArgs& a, const float* Dvals, const KeyTile& tile,
                                               const KeyBlockArgs& kb, char* smemAll, const KeyStageMaps* maps = nullptr) {
  static_assert(W % 4 == 0 && D % 64 == 0, "whole warpgroups, whole 64-feature regions");
  static_assert(S == 2 || S == 3, "two or three stage buffers");
  using L = KeyWgLayout<D, W, S>;
  constexpr int kBlockThreads = 32 * W, kTileKeys = L::keys;
  constexpr int kBigWindow = 1 << 30;
  char* smem = smemAll + ((1024u - (smemAddr(smemAll) & 1023u)) & 1023u);
  const uint32_t sK = smemAddr(smem), sV = sK + L::keyBytes, sStage = sV + L::keyBytes;
  float* stageBase = reinterpret_cast<float*>(smem + L::tileBytes);
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;

  const int g = tile.g, hq0 = g * kBwdGroup, mode = tile.mode;
  const SeqTable seq = seqTable(f.seq);
  const int s = tile.s;
  const int qStart = seq.qStart[s], qCount = seq.qStart[s + 1] - qStart, pos0 = seq.pos0[s];
  const int keyLen = pos0 + qCount;
  const int keyBase = mode == kCompressed ? seq.cBase[s] : seq.kBase[s];
  const int branch = mode == kCompressed ? 0 : mode == kSelected ? 1 : 2;
  const float sl2 = c.scale * kLog2e;

  // The key tile (zero rows past the end).
  {
    const T* K = static_cast<const T*>(mode == kCompressed ? f.kCmp : mode == kSelected ? f.kSlc : f.kWin);
    const T* V = static_cast<const T*>(mode == kCompressed ? f.vCmp : mode == kSelected ? f.vSlc : f.vWin);
    copyRowsSwizzled<T, D, kBlockThreads>(sK, kTileKeys, [&](int r) -> const T* {
      return tile.start + r < tile.end ? K + ((size_t)(keyBase + tile.start + r) * c.H + g) * D : nullptr;
    });
    copyRowsSwizzled<T, D, kBlockThreads>(sV, kTileKeys, [&](int r) -> const T* {
      return tile.start + r < tile.end ? V + ((size_t)(keyBase + tile.start + r) * c.H + g) * D : nullptr;
    });
    cpAsyncCommit();
  }

  // The query list: positions first + i (window, compressed) or rows[i] (selected).
  int first = 0, count = 0;
  const int* rows = nullptr;
  if (mode == kWindow) {
    first = tile.start;
    count = max(0, min(keyLen, tile.end - 1 + c.window) - first);
  } else if (mode == kCompressed) {
    first = tile.start * c.d + c.l - 1;
    count = max(0, keyLen - first);
  } else {
    const int J = selBase(f.seq)[s] + tile.j;
    rows = kb.list + kb.starts[(size_t)g * kb.NB + J];
    count = kb.totals[(size_t)g * kb.NB + J];
  }
  const int window = mode == kWindow ? c.window : kBigWindow;
  const int q0 = tile.q0, qEnd = min(count, tile.q1);
  auto rowOf = [&](int i) -> int { return i >= qEnd ? -1 : rows ? rows[i] : qStart + first + i - pos0; };

  // This thread's keys: rows 16 warp + g4 (+ 8) of the tile, at positions kp (compressed: last token).
  int kp[2];
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int idx = tile.start + 16 * warp + g4 + 8 * i;
    kp[i] = mode == kCompressed ? idx * c.d + c.l - 1 : idx;
  }

  const T* Q = static_cast<const T*>(f.q);
  const T* dOut = static_cast<const T*>(a.dOut);
  const T* gates = static_cast<const T*>(f.gates);
  // A stage's copies and scalars take its query rows from rowAt(k), k < kStageRows (-1: past the
  // list): rowOf, or the stage's slot of prefetched rows.
  const uint32_t bars = smemAddr(smem) + L::barOffset;  // Tma: stage buffer b's mbarrier at bars + 8 b
  if constexpr (Tma) {
    if (threadIdx.x == 0) {
#pragma unroll
      for (int b = 0; b < S; b++) tma::initBarrier(bars + 8 * b, 1);
      tma::fenceInit();
    }
    __syncwarp();  // warp 0 issues the copies
  }
  auto loadStage = [&](auto rowAt, int buf) {
    if constexpr (Tma) {
      // warp 0: lane i < 4 rows x 2 tensors x D / 64 regions copies one 16-head x 64-feature slice
      // (2 KB, rows 16 k .. of region dn: the layout copyRowsSwizzled writes)
      constexpr int kRegions = D / 64, kCopies = kStageRows * 2 * kRegions;
      if (warp == 0) {
        if (lane == 0) tma::arriveExpect(bars + 8 * buf, 2 * L::stageBytes);
        __syncwarp();
        // A stage whose 4 rows are consecutive query rows (window and compressed: all but a stage
        // reaching past the list; selected, maps->on4 == 2: where the ascending list has a run, as
        // for the forced initial and local blocks): one 4-row box per tensor and region (maps->q4 /
        // dO4, 8 KB) writes the same bytes as its rows' 4 copies. Other stages: per-row copies.
        const int r0 = rowAt(0);
        const bool run = r0 >= 0 && rowAt(kStageRows - 1) == r0 + kStageRows - 1;
        if (maps->on4 > (rows ? 1 : 0) && run) {
          if (lane < 2 * kRegions) {
            const int tensor = lane / kRegions, dn = lane % kRegions;
            const uint32_t dst = sStage + (2 * buf + tensor) * L::stageBytes + dn * kStageCols * kSwizzleRowBytes;
            tma::load(dst, tensor ? &maps->dO4 : &maps->q4, 64 * dn, hq0, r0, bars + 8 * buf);
          }
        } else if (lane < kCopies) {
          const int k = lane / (2 * kRegions), tensor = lane / kRegions % 2, dn = lane % kRegions;
          const int qr = rowAt(k);
          const uint32_t dst = sStage + (2 * buf + tensor) * L::stageBytes + dn * kStageCols * kSwizzleRowBytes + k * kBwdGroup * kSwizzleRowBytes;
          tma::load(dst, tensor ? &maps->dO : &maps->q, 64 * dn, hq0, qr >= 0 ? qr : f.seq.rows, bars + 8 * buf);
        }
      }
      return;
    }
    auto slice = [&](const T* base, int r) -> const T* {
      const int qr = rowAt(r / kBwdGroup);
      return qr >= 0 ? base + ((size_t)qr * c.HQ + hq0 + r % kBwdGroup) * D : nullptr;
    };
    const uint32_t sQ = sStage + 2 * buf * L::stageBytes;
    copyRowsSwizzled<T, D, kBlockThreads>(sQ, kStageCols, [&](int r) { return slice(Q, r); });
    copyRowsSwizzled<T, D, kBlockThreads>(sQ + L::stageBytes, kStageCols, [&](int r) { return slice(dOut, r); });
  };
  // A stage's per-column lse, D and gate and per-row positions: fetched into registers (threads
  // below kStageCols), then stored to the stage's floats. Fetched one stage ahead and stored after
  // the current stage's products (kb.defer), the gathered loads (one L2 or DRAM round trip each,
  // the rows being anywhere in the sequence for selected keys) no longer hold up the warpgroup.
  struct StageScalars {
    float lse, dd, gt;
    int pos;
  };
  auto fetchScalars = [&](auto rowAt) {
    StageScalars v{0.f, 0.f, 0.f, -1};
    if (threadIdx.x < kStageCols) {
      const int r = threadIdx.x, qr = rowAt(r / kBwdGroup);
      if (qr >= 0) {
        const size_t at = ((size_t)qr * c.HQ + hq0 + r % kBwdGroup) * 3 + branch;
        v.lse = f.lse[at];
        v.dd = Dvals[at];
        v.gt = toF(gates[at]);
      }
    }
    if (threadIdx.x < kStageRows) {
      const int qr = rowAt(threadIdx.x);
      v.pos = qr >= 0 ? pos0 + qr - qStart : -1;
    }
    return v;
  };
  auto storeScalars = [&](const StageScalars& v, int buf) {
    float* sf = stageBase + buf * L::stageFloats;
    if (threadIdx.x < kStageCols) {
      sf[threadIdx.x] = v.lse;
      sf[kStageCols + threadIdx.x] = v.dd;
      sf[2 * kStageCols + threadIdx.x] = v.gt;
    }
    if (threadIdx.x < kStageRows) reinterpret_cast<int*>(sf + 3 * kStageCols)[threadIdx.x] = v.pos;
  };

  float dK[D / 8][4], dV[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) dK[n][e] = dV[n][e] = 0.f;
  }
  // This warpgroup's 64 keys: rows 64 (warp / 4) .. of every region of the K and V tiles.
  const uint32_t myK = sK + (warp >> 2) * 64 * kSwizzleRowBytes, myV = sV + (warp >> 2) * 64 * kSwizzleRowBytes;
  constexpr uint32_t kKeyRegion = kTileKeys * kSwizzleRowBytes, kStageRegion = kStageCols * kSwizzleRowBytes;

  // One stage: the 64 columns (4 rows x 16 heads) of stage buffer buf against the warpgroup's keys,
  // in two halves: issueScores puts Sᵀ and dPᵀ on the tensor cores (into st, dp), finishStage forms
  // P and dS from them and issues dV and dK (their wgmmas left in flight).
  float st[8][4], dp[8][4];
  auto issueScores = [&](int buf) {
    const uint32_t qT = sStage + 2 * buf * L::stageBytes, oT = qT + L::stageBytes;
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) st[n][e] = dp[n][e] = 0.f;
    }
    wg::fenceOperands(st);
    wg::fenceOperands(dp);
    wg::fence();
    // features 16 kk .. 16 kk + 15: region kk / 4, 32 bytes per step inside it
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      const uint32_t off = (kk >> 2) * kKeyRegion + (kk & 3) * 32, offB = (kk >> 2) * kStageRegion + (kk & 3) * 32;
      wg::mma64x64<false>(st, wg::descSw128(myK + off), wg::descSw128(qT + offB), T());
    }
    wg::commit();
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      const uint32_t off = (kk >> 2) * kKeyRegion + (kk & 3) * 32, offB = (kk >> 2) * kStageRegion + (kk & 3) * 32;
      wg::mma64x64<false>(dp, wg::descSw128(myV + off), wg::descSw128(oT + offB), T());
    }
    wg::commit();
  };
  // No row of stage buffer buf sees a key of this warpgroup (kb.skip): P and dS would be all zero,
  // so the products would add exact zeros; the warpgroup skips them (the same for all its threads).
  // Its first and last key positions follow from this thread's first key kp[0] (no registers kept).
  auto skipStage = [&](int buf) {
    const int* sPos = reinterpret_cast<const int*>(stageBase + buf * L::stageFloats + 3 * kStageCols);
    const int step = mode == kCompressed ? c.d : 1;
    const int wgLo = kp[0] - (16 * (warp & 3) + g4) * step, wgHi = wgLo + 63 * step;
    bool any = false;
#pragma unroll
    for (int rr = 0; rr < kStageRows; rr++) {
      const int P = sPos[rr];
      any |= P >= 0 && wgLo <= P && wgHi > P - window;
    }
    return !any;
  };
  auto finishStage = [&](int buf) {
    const float* sf = stageBase + buf * L::stageFloats;
    const int* sPos = reinterpret_cast<const int*>(sf + 3 * kStageCols);
    const uint32_t qT = sStage + 2 * buf * L::stageBytes, oT = qT + L::stageBytes;
    bool vis[kStageRows][2];
#pragma unroll
    for (int rr = 0; rr < kStageRows; rr++) {
      const int P = sPos[rr];
#pragma unroll
      for (int i = 0; i < 2; i++) vis[rr][i] = P >= 0 && kp[i] <= P && kp[i] > P - window;
    }
    // Pᵀ while dPᵀ is still on the tensor cores; then dV += (g Pᵀ) dO goes to the tensor cores
    // while dSᵀ is formed, and dK += dSᵀ Q last.
    wg::wait<1>();
    wg::fenceOperands(st);
    uint32_t pa[4][4], da[4][4];
#pragma unroll
    for (int n = 0; n < 8; n++) {
      const int col = n * 8 + 2 * t4;
      const float2 lse2 = *reinterpret_cast<const float2*>(sf + col);
      const float2 gt2 = *reinterpret_cast<const float2*>(sf + 2 * kStageCols + col);
      float gp[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const float lse = (e & 1) ? lse2.y : lse2.x, gq = (e & 1) ? gt2.y : gt2.x;
        st[n][e] = vis[n >> 1][e >> 1] ? exp2f(fmaf(st[n][e], sl2, -lse)) : 0.f;
        gp[e] = gq * st[n][e];
      }
      // n-tile n is half of the A fragment of columns 16 (n / 2) ..: registers 0-1 or 2-3
      pa[n >> 1][2 * (n & 1)] = packF2<T>(gp[0], gp[1]);
      pa[n >> 1][2 * (n & 1) + 1] = packF2<T>(gp[2], gp[3]);
    }
    // columns 16 j .. 16 j + 15 = rows 16 j.. of each 64-feature region of the stage's dO / Q
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(accPart<D>(dV, dn));
    wg::fence();
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
      for (int dn = 0; dn < D / 64; dn++)
        wg::mma64x64<true>(accPart<D>(dV, dn), pa[j], wg::descSw128(oT + dn * kStageRegion + j * 16 * kSwizzleRowBytes), T());
    }
    wg::commit();
    wg::wait<1>();  // dPᵀ (dV may still run)
    wg::fenceOperands(dp);
#pragma unroll
    for (int n = 0; n < 8; n++) {
      const int col = n * 8 + 2 * t4;
      const float2 dd2 = *reinterpret_cast<const float2*>(sf + kStageCols + col);
      const float2 gt2 = *reinterpret_cast<const float2*>(sf + 2 * kStageCols + col);
      float ds[4];
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const float dd = (e & 1) ? dd2.y : dd2.x, gq = (e & 1) ? gt2.y : gt2.x;
        ds[e] = st[n][e] * (gq * dp[n][e] - dd);
      }
      da[n >> 1][2 * (n & 1)] = packF2<T>(ds[0], ds[1]);
      da[n >> 1][2 * (n & 1) + 1] = packF2<T>(ds[2], ds[3]);
    }
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++) wg::fenceOperands(accPart<D>(dK, dn));
    wg::fence();
#pragma unroll
    for (int j = 0; j < 4; j++) {
#pragma unroll
      for (int dn = 0; dn < D / 64; dn++)
        wg::mma64x64<true>(accPart<D>(dK, dn), da[j], wg::descSw128(qT + dn * kStageRegion + j * 16 * kSwizzleRowBytes), T());
    }
    wg::commit();
  };
  auto drain = [&]() {
    wg::wait<0>();
#pragma unroll
    for (int dn = 0; dn < D / 64; dn++) {
      wg::fenceOperands(accPart<D>(dV, dn));
      wg::fenceOperands(accPart<D>(dK, dn));
    }
  };
  auto stage = [&](int buf) {
    if (kb.skip && skipStage(buf)) return;
    issueScores(buf);
    finishStage(buf);
    drain();
  };

  // Double-buffered stages with one barrier each: after it, every warp is done with the other
  // buffer (the previous stage), so the next stage's copy may overwrite it.
  // Deferred: stage t + 1's scalars are fetched with its copy and stored after stage t's products,
  // before the next barrier.
  // Stages in flight: `ahead` copies are issued before the first stage runs, then one per stage,
  // into the buffer that the stage before the barrier used (S = 3: the copy of stage t + 2 is
  // issued as stage t runs; S = 2: stage t + 1's).
  // Prefetched rows (kb.prefetch): a stage's list entries are copied (4-byte cp.async, threads
  // 0-3) into its slot `ahead` stages before its Q/dO copies are issued, so issuing those waits on
  // no list entry (a dependent L2 round trip per stage for selected keys). Slot of stage x: x % nbuf.
  //
  // Early: right after the barrier the stage's Sᵀ and dPᵀ go to the tensor cores, and only then
  // are the next stage's copies issued and its scalars fetched (v13 issued those first, the
  // tensor cores idle meanwhile). Tried and dropped (H100 64k, BENCHMARKS.md backward v14): leaving
  // a stage's dK in flight across the next barrier (ptxas serialises the wgmmas, C7515) and running
  // warpgroup 1 half a stage behind warpgroup 0 (serialised too: C7511/C7514/C7518).
  constexpr int nbuf = S, ahead = S - 1;
  const bool defer = kb.defer != 0, prefetch = kb.prefetch != 0;
  int* rowSlots = reinterpret_cast<int*>(stageBase + L::stages * L::stageFloats);  // [stages][kStageRows]
  auto prefetchRows = [&](int x) {  // threads 0-3: stage x's rows into its slot
    const int i = q0 + x * kStageRows + threadIdx.x;
    int* slot = rowSlots + (x % nbuf) * kStageRows + threadIdx.x;
    if (rows && i < qEnd) asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(smemAddr(slot)), "l"(rows + i));
    else *slot = rowOf(i);
  };
  const int nStages = qEnd > q0 ? (qEnd - q0 + kStageRows - 1) / kStageRows : 0;
  for (int p = 0; p < ahead; p++) {
    if (p < nStages) {
      auto rowAt = [&](int k) { return rowOf(q0 + p * kStageRows + k); };
      loadStage(rowAt, p);
      storeScalars(fetchScalars(rowAt), p);
    }
    if (prefetch && threadIdx.x < kStageRows) rowSlots[((ahead + p) % nbuf) * kStageRows + threadIdx.x] = rowOf(q0 + (ahead + p) * kStageRows + threadIdx.x);
    cpAsyncCommit();
  }
  for (int t = 0; t < nStages; t++) {
    const int buf = t % nbuf;
    cpAsyncWait<S - 2>();
    wg::fenceProxyAsync();  // this thread's tile writes, before the tensor cores read them
    __syncthreads();
    if constexpr (Tma) tma::wait(bars + 8 * buf, (t / S) & 1);  // stage t's Q and dO have landed
    if constexpr (Early) issueScores(buf);
    const int nt = t + ahead, nb = nt % nbuf;
    const bool more = nt < nStages;
    StageScalars next{0.f, 0.f, 0.f, -1};
    if (more) {
      if (prefetch) {
        if (nt + ahead < nStages && threadIdx.x < kStageRows) prefetchRows(nt + ahead);
        auto rowAt = [&](int k) { return rowSlots[nb * kStageRows + k]; };
        loadStage(rowAt, nb);
        next = fetchScalars(rowAt);
      } else {
        auto rowAt = [&](int k) { return rowOf(q0 + nt * kStageRows + k); };
        loadStage(rowAt, nb);
        next = fetchScalars(rowAt);
      }
      if (!defer) storeScalars(next, nb);
    }
    cpAsyncCommit();
    if constexpr (Early) {
      finishStage(buf);
      drain();
    } else stage(buf);
    if (more && defer) storeScalars(next, nb);
  }
  cpAsyncWait<0>();

  // Results: this thread's keys r = 16 warp + g4 (+ 8), features n * 8 + 2 t4 (+ 1).
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int r = 16 * warp + g4 + 8 * i;
    const bool valid = tile.start + r < tile.end;
    const int krow = valid ? keyBase + tile.start + r : -1;
    if (tile.part >= 0) {
      float* out = kb.partial + (size_t)tile.part * kTileKeys * 2 * D;
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        *reinterpret_cast<float2*>(out + r * D + n * 8 + 2 * t4) = make_float2(dK[n][2 * i], dK[n][2 * i + 1]);
        *reinterpret_cast<float2*>(out + kTileKeys * D + r * D + n * 8 + 2 * t4) = make_float2(dV[n][2 * i], dV[n][2 * i + 1]);
      }
      if (tile.q0 == 0 && t4 == 0) kb.groupRows[(size_t)tile.group * kTileKeys + r] = krow;
    } else if (valid) {
      T* dk = static_cast<T*>(mode == kCompressed ? a.dkCmp : mode == kSelected ? a.dkSlc : a.dkWin);
      T* dv = static_cast<T*>(mode == kCompressed ? a.dvCmp : mode == kSelected ? a.dvSlc : a.dvWin);
      const size_t at = ((size_t)krow * c.H + g) * D + 2 * t4;
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        *reinterpret_cast<uint32_t*>(dk + at + n * 8) = packF2<T>(dK[n][2 * i] * c.scale, dK[n][2 * i + 1] * c.scale);
        *reinterpret_cast<uint32_t*>(dv + at + n * 8) = packF2<T>(dV[n][2 * i], dV[n][2 * i + 1]);
      }
    }
  }
}

}  // namespace nsa
