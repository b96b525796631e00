// One block of the key-centric dK/dV of the register-layout NSA backward (16-bit, G = 16,
// Dk = Dv in {64, 128}), as a device function: the stand-alone kernel (nsa_backward_keys_mma.cu)
// and the grid shared with dq (nsa_backward_mma.cu) both run it.
//
// A block of W warps owns a tile of 16 W keys of one KV head and one branch; warp w owns keys
// 16w .. 16w+15 as one mma row tile, its dK and dV accumulators in registers. The query "columns"
// are (query row, head) pairs, 16 heads per row: a stage of 4 rows (64 columns) of Q and dO is
// double-buffered with cp.async, and each warp takes it in two halves of 32 columns:
//   Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, Pᵀ = exp2(Sᵀ·scale·log2e - lse), dV += (g Pᵀ) dO,
//   dSᵀ = Pᵀ (g dPᵀ - D), dK += dSᵀ Q     (dK is scaled once at the end).
// Which queries a tile visits: window keys: positions [key, key + w); compressed key i: positions
// from i*d + l - 1 on; selected block: the inverse index's rows (ascending). Lists longer than
// kSliceQueries are split over blocks that write float partials, summed in slice order by
// reduceKeyPartials: deterministic, no atomics.
#pragma once
#include <cuda.h>
#include "nsa_backward_parts.h"
#include "nsa_backward_warp.cuh"
#include "nsa_kernels.cuh"
#include "ops.h"

namespace nsa {

constexpr int kStageRows = 4;                       // query rows per stage
constexpr int kStageCols = kStageRows * kBwdGroup;  // (row, head) columns per stage
constexpr int kHalfCols = kStageCols / 2;           // columns one warp step takes

// W warps per block own 16 W keys (= the reduce's BK).
template <int D, int W>
struct KeyLayout {
  static constexpr int ld = D + 8;
  static constexpr int keys = 16 * W;
  static constexpr int keyElems = keys * ld, stageElems = kStageCols * ld;
  // [K V Q0 dO0 Q1 dO1] then per stage: lse, D, gate [kStageCols] floats and positions [kStageRows].
  __host__ __device__ static constexpr size_t tileBytes(size_t elem) { return elem * (2 * keyElems + 4 * stageElems); }
  static constexpr size_t stageFloats = 3 * kStageCols + kStageRows;
  static constexpr size_t bytes(size_t elem) { return tileBytes(elem) + sizeof(float) * 2 * stageFloats; }
};

// The inverse index and the split tiles' outputs, as the key blocks read and write them.
struct KeyBlockArgs {
  const KeyTile* tiles;
  const int *starts, *totals, *list;
  int NB;
  float* partial;
  int* groupRows;
  // keyGradBlockWg: a stage's lse, D, gates and positions are read one stage ahead into registers
  // and stored after the current stage's products (NSA_BWD_KEY_DEFER=0: read and stored before them).
  int defer = 1;
  // keyGradBlockWg: a stage's query rows (selected keys: inverse-list entries) are read two stages
  // ahead, so the next stage's copies need no list round trip (NSA_BWD_KEY_PREFETCH=0: read when
  // the copies are issued).
  int prefetch = 1;
  // keyGradBlockWg, NSA_BWD_KEY_SKIP=1 (opt-in): a warpgroup skips the products of a stage none of
  // whose rows sees its 64 keys (window tiles' first and last rows, the first slice of 128-key
  // compressed tiles). Bit-equal; not faster on H100 at 64k (128-key launch 30.74 ms with, 29.97
  // without, one ncu sample each): the warpgroup left alone at the barrier is no faster.
  int skip = 0;
  // NSA_BWD_KEY_RING=3: the 128-key wgmma blocks get three stage buffers, two stages' copies in
  // flight (read by the host, which picks the kernel). Not the default: H100 64k, 30.83 against
  // 30.74 ms with two (ncu, one call), forward+backward unchanged; that block is not waiting on its copies.
  // With the Early loop it applies where the stage copies run by TMA (KeyStageMaps::on): bit-equal,
  // not faster either (H100 fwd+bwd 64k 115.11 / 115.42 against 114.58 / 114.86 ms, cbwd5 call 3).
  int ring3 = 0;
  // keyGradBlockWg's Early loop (a stage's scores issued before the next stage's copies) in the
  // 128-key blocks and the 64-key blocks of the grid shared with dq (2, the default), in the
  // 128-key blocks only (1), or nowhere (0: v13's loop): NSA_BWD_KEY_EARLY, read by the host,
  // which picks the kernels. H100 64k, ncu (BENCHMARKS.md backward v14): 128-key launch 29.97 ->
  // 28.9-29.1 ms, shared grid 45.3-45.4 -> 44.4 ms. NSA_BWD_KEY_SKIP and NSA_BWD_KEY_RING apply
  // where the Early loop does not run.
  int early = 2;
};

// Sets KeyBlockArgs' switches from the environment (defer, prefetch, skip, ring3, early).
void setKeySwitches(KeyBlockArgs& kb);

// The backward's tensor maps (sm_90a copy engine). q, dO: Q and dO [rows][HQ][D] as 3-D maps (D, HQ,
// rows) with boxes of 64 features x kBwdGroup heads x 1 row, the wgmma key blocks' stage copies
// (keyGradBlockWg's Tma); on = 0: not encoded (NSA_BWD_KEY_TMA=0, no wgmma, or the driver refused),
// the blocks copy with cp.async. ks, vs: the selected keys / values [rows][H][D] in 16-row boxes
// (encodeKeyMap), dq's ring chunks (kDqRingTma); onRing = 0: not encoded (NSA_BWD_DQ_RING_TMA=0 ...).
// q4, dO4: the same tensors in boxes of 64 features x kBwdGroup heads x kStageRows rows, a whole
// stage's region in one copy where its rows are consecutive positions (4 copies per stage at D = 128
// instead of 16). on4: 2 in window, compressed and selected stages (a run in the selected list), 1 in
// window and compressed stages only (NSA_BWD_KEY_TMA4=1), 0 not encoded (NSA_BWD_KEY_TMA4=0): one row per copy.
struct KeyStageMaps {  // (CUtensorMap is 64-byte aligned)
  CUtensorMap q, dO, ks, vs, q4, dO4;
  int on, onRing, on4;
};
KeyStageMaps keyStageMaps(const NSABackwardArgs& a);

template <class T, int D, int W>
__device__ __forceinline__ void keyGradBlock(const NSABackwardArgs& a, const float* Dvals, const KeyTile& tile,
                                             const KeyBlockArgs& kb, char* smemRaw) {
  using L = KeyLayout<D, W>;
  constexpr int ld = L::ld, kBlockThreads = 32 * W, kTileKeys = L::keys;
  constexpr int kBigWindow = 1 << 30;
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  T* sK = reinterpret_cast<T*>(smemRaw);
  T* sV = sK + L::keyElems;
  T* sQ0 = sV + L::keyElems;  // stage buf: Q at sQ0 + 2 buf stageElems, dO stageElems after it
  float* stageBase = reinterpret_cast<float*>(smemRaw + L::tileBytes(sizeof(T)));
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
    copyRowsAsync<T, D, kBlockThreads>(sK, ld, kTileKeys, [&](int r) -> const T* {
      return tile.start + r < tile.end ? K + ((size_t)(keyBase + tile.start + r) * c.H + g) * D : nullptr;
    });
    copyRowsAsync<T, D, kBlockThreads>(sV, ld, kTileKeys, [&](int r) -> const T* {
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
  auto loadStage = [&](int st, int buf) {
    const int i0 = q0 + st * kStageRows;
    auto slice = [&](const T* base, int r) -> const T* {
      const int qr = rowOf(i0 + r / kBwdGroup);
      return qr >= 0 ? base + ((size_t)qr * c.HQ + hq0 + r % kBwdGroup) * D : nullptr;
    };
    T* sQ = sQ0 + 2 * buf * L::stageElems;
    copyRowsAsync<T, D, kBlockThreads>(sQ, ld, kStageCols, [&](int r) { return slice(Q, r); });
    copyRowsAsync<T, D, kBlockThreads>(sQ + L::stageElems, ld, kStageCols, [&](int r) { return slice(dOut, r); });
    float* sf = stageBase + buf * L::stageFloats;
    if (threadIdx.x < kStageCols) {
      const int r = threadIdx.x, qr = rowOf(i0 + r / kBwdGroup);
      float lse = 0.f, dd = 0.f, gt = 0.f;
      if (qr >= 0) {
        const size_t at = ((size_t)qr * c.HQ + hq0 + r % kBwdGroup) * 3 + branch;
        lse = f.lse[at];
        dd = Dvals[at];
        gt = toF(gates[at]);
      }
      sf[r] = lse;
      sf[kStageCols + r] = dd;
      sf[2 * kStageCols + r] = gt;
    }
    if (threadIdx.x < kStageRows) {
      const int qr = rowOf(i0 + threadIdx.x);
      reinterpret_cast<int*>(sf + 3 * kStageCols)[threadIdx.x] = qr >= 0 ? pos0 + qr - qStart : -1;
    }
  };

  float dK[D / 8][4], dV[D / 8][4];
#pragma unroll
  for (int n = 0; n < D / 8; n++) {
#pragma unroll
    for (int e = 0; e < 4; e++) dK[n][e] = dV[n][e] = 0.f;
  }
  const T* myK = sK + 16 * warp * ld;
  const T* myV = sV + 16 * warp * ld;

  // One warp step over columns [h * 32, h * 32 + 32) of stage buffer buf (2 query rows x 16 heads).
  auto half = [&](int buf, int h) {
    const float* sf = stageBase + buf * L::stageFloats;
    const int* sPos = reinterpret_cast<const int*>(sf + 3 * kStageCols);
    bool vis[2][2];
    bool any = false;
#pragma unroll
    for (int pp = 0; pp < 2; pp++) {
      const int P = sPos[2 * h + pp];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        vis[pp][i] = P >= 0 && kp[i] <= P && kp[i] > P - window;
        any |= vis[pp][i];
      }
    }
    if (!__any_sync(0xffffffffu, any)) return;
    const T* qc = sQ0 + 2 * buf * L::stageElems + h * kHalfCols * ld;
    const T* oc = qc + L::stageElems;
    float st[kHalfCols / 8][4], dp[kHalfCols / 8][4];
    mmaScoresPair<T, D, kHalfCols>(myK, qc, myV, oc, ld, st, dp);
#pragma unroll
    for (int n = 0; n < kHalfCols / 8; n++) {
      // columns 2 t4 and 2 t4 + 1 of this n-tile: lse, D and gate as float2 (one load each)
      const int col = h * kHalfCols + n * 8 + 2 * t4;
      const float2 lse2 = *reinterpret_cast<const float2*>(sf + col);
      const float2 dd2 = *reinterpret_cast<const float2*>(sf + kStageCols + col);
      const float2 gt2 = *reinterpret_cast<const float2*>(sf + 2 * kStageCols + col);
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const float lse = (e & 1) ? lse2.y : lse2.x, dd = (e & 1) ? dd2.y : dd2.x, gq = (e & 1) ? gt2.y : gt2.x;
        const float p = vis[n >> 1][e >> 1] ? exp2f(fmaf(st[n][e], sl2, -lse)) : 0.f;
        st[n][e] = gq * p;
        dp[n][e] = p * (gq * dp[n][e] - dd);
      }
    }
#pragma unroll
    for (int j = 0; j < kHalfCols / 16; j++) {
      uint32_t pa[4];
      cToA<T>(pa, st[2 * j], st[2 * j + 1]);
      mmaRowsKN<T, D>(dV, pa, oc, ld, j * 16);
      cToA<T>(pa, dp[2 * j], dp[2 * j + 1]);
      mmaRowsKN<T, D>(dK, pa, qc, ld, j * 16);
    }
  };

  const int nStages = qEnd > q0 ? (qEnd - q0 + kStageRows - 1) / kStageRows : 0;
  walkDoubleBuffered(nStages, loadStage, [&](int, int buf) {
    half(buf, 0);
    half(buf, 1);
  });
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
