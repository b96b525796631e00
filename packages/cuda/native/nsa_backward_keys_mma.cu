// Key-centric dK/dV of the NSA backward in the flash-attention-2 register layout (16-bit, G = 16,
// Dk = Dv in {64, 128}). A block of 4 warps owns a tile of 64 keys of one KV head and one branch;
// warp w owns keys 16w .. 16w+15 as one mma row tile, its dK and dV accumulators in registers. The
// query "columns" are (query row, head) pairs, 16 heads per row: a stage of 4 rows (64 columns) of Q
// and dO is double-buffered with cp.async, and each warp takes it in two halves of 32 columns:
//   Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, Pᵀ = exp2(Sᵀ·scale·log2e - lse), dV += (g Pᵀ) dO,
//   dSᵀ = Pᵀ (g dPᵀ - D), dK += dSᵀ Q     (dK is scaled once at the end).
// Which queries a tile visits: window keys: positions [key, key + w); compressed key i: positions
// from i*d + l - 1 on; selected block: the inverse index's rows (ascending). Lists longer than
// kSliceQueries are split over blocks that write float partials, summed in slice order by
// reduceKeyPartials: deterministic, no atomics.
#include <algorithm>
#include <cstdlib>
#include <vector>
#include "cuda_error.h"
#include "nsa_backward_parts.h"
#include "nsa_backward_warp.cuh"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kStageRows = 4;                       // query rows per stage
constexpr int kStageCols = kStageRows * kBwdGroup;  // (row, head) columns per stage
constexpr int kHalfCols = kStageCols / 2;           // columns one warp step takes
constexpr int kBigWindow = 1 << 30;

// One block's work: keys [start, end) of one branch (positions; compressed: indices) of KV head g
// in sequence s, and the slice [q0, q1) of its query list; part >= 0: write float partials.
struct KeyTile {
  int s, mode, start, end, j, g, q0, q1, part, group;
};

// W warps per block own 16 W keys (= the reduce's BK).
template <int D, int W>
struct KeyLayout {
  static constexpr int ld = D + 8;
  static constexpr int keys = 16 * W;
  static constexpr int keyElems = keys * ld, stageElems = kStageCols * ld;
  // [K V Q0 dO0 Q1 dO1] then per stage: lse, D, gate [kStageCols] floats and positions [kStageRows].
  __host__ __device__ static constexpr size_t tileBytes(size_t elem) { return elem * (2 * keyElems + 4 * stageElems); }
  static constexpr size_t stageFloats = 3 * kStageCols + kStageRows;
  static size_t bytes(size_t elem) { return tileBytes(elem) + sizeof(float) * 2 * stageFloats; }
};

template <class T, int D, int W>
__global__ void __launch_bounds__(32 * W, 8 / W)
    keyGradRegKernel(NSABackwardArgs a, const float* Dvals, const KeyTile* tiles, const int* starts, const int* totals,
                     const int* list, int NB, float* partial, int* groupRows) {
  extern __shared__ __align__(16) char smemRaw[];
  using L = KeyLayout<D, W>;
  constexpr int ld = L::ld, kBlockThreads = 32 * W, kTileKeys = L::keys;
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  T* sK = reinterpret_cast<T*>(smemRaw);
  T* sV = sK + L::keyElems;
  T* sQ[2] = {sV + L::keyElems, sV + L::keyElems + 2 * L::stageElems};
  T* sO[2] = {sV + L::keyElems + L::stageElems, sV + L::keyElems + 3 * L::stageElems};
  float* stageBase = reinterpret_cast<float*>(smemRaw + L::tileBytes(sizeof(T)));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g4 = lane >> 2, t4 = lane & 3;

  const KeyTile tile = tiles[blockIdx.x];
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
    rows = list + starts[(size_t)g * NB + J];
    count = totals[(size_t)g * NB + J];
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
    copyRowsAsync<T, D, kBlockThreads>(sQ[buf], ld, kStageCols, [&](int r) { return slice(Q, r); });
    copyRowsAsync<T, D, kBlockThreads>(sO[buf], ld, kStageCols, [&](int r) { return slice(dOut, r); });
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
    const T* qc = sQ[buf] + h * kHalfCols * ld;
    const T* oc = sO[buf] + h * kHalfCols * ld;
    float st[kHalfCols / 8][4], dp[kHalfCols / 8][4];
    mmaScoresPair<T, D, kHalfCols>(myK, qc, myV, oc, ld, st, dp);
#pragma unroll
    for (int n = 0; n < kHalfCols / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int col = h * kHalfCols + n * 8 + 2 * t4 + (e & 1);
        const float p = vis[n >> 1][e >> 1] ? exp2f(fmaf(st[n][e], sl2, -sf[col])) : 0.f;
        const float gq = sf[2 * kStageCols + col];
        st[n][e] = gq * p;
        dp[n][e] = p * (gq * dp[n][e] - sf[kStageCols + col]);
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
  if (nStages > 0) loadStage(0, 0);
  cpAsyncCommit();
  for (int st = 0; st < nStages; st++) {
    const int buf = st & 1;
    if (st + 1 < nStages) {
      loadStage(st + 1, buf ^ 1);
      cpAsyncCommit();
      cpAsyncWait<1>();
    } else {
      cpAsyncWait<0>();
    }
    __syncthreads();
    half(buf, 0);
    half(buf, 1);
    __syncthreads();
  }
  cpAsyncWait<0>();

  // Results: this thread's keys r = 16 warp + g4 (+ 8), features n * 8 + 2 t4 (+ 1).
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const int r = 16 * warp + g4 + 8 * i;
    const bool valid = tile.start + r < tile.end;
    const int krow = valid ? keyBase + tile.start + r : -1;
    if (tile.part >= 0) {
      float* out = partial + (size_t)tile.part * kTileKeys * 2 * D;
#pragma unroll
      for (int n = 0; n < D / 8; n++) {
        *reinterpret_cast<float2*>(out + r * D + n * 8 + 2 * t4) = make_float2(dK[n][2 * i], dK[n][2 * i + 1]);
        *reinterpret_cast<float2*>(out + kTileKeys * D + r * D + n * 8 + 2 * t4) = make_float2(dV[n][2 * i], dV[n][2 * i + 1]);
      }
      if (tile.q0 == 0 && t4 == 0) groupRows[(size_t)tile.group * kTileKeys + r] = krow;
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

// Plans and launches the tiles of the branches in `modes` (bit per KeyMode) with W-warp blocks.
template <class T, int D, int W>
void launchKeys(const NSABackwardArgs& a, const float* Dvals, const InverseIndex& index, int modes, Workspace& ws,
                cudaStream_t stream) {
  constexpr int kTileKeys = 16 * W;
  const NSAConfigArgs& c = a.fwd.cfg;
  const int S = a.fwd.seq.S;
  const int* host = a.fwd.seq.host;
  std::vector<KeyTile> tiles;
  std::vector<int> work;  // query rows each block visits: the launch order (largest first)
  std::vector<KeyGroup> groups;
  int parts = 0;
  auto add = [&](KeyTile t, int count, bool split) {
    const int slices = split ? std::max(1, (count + kSliceQueries - 1) / kSliceQueries) : 1;
    if (slices == 1) {
      t.q0 = 0; t.q1 = 1 << 30; t.part = -1; t.group = -1;
      tiles.push_back(t);
      work.push_back(count);
      return;
    }
    const int group = (int)groups.size();
    groups.push_back({parts, slices, t.g, t.mode});
    for (int z = 0; z < slices; z++) {
      t.q0 = z * kSliceQueries; t.q1 = (z + 1) * kSliceQueries; t.part = parts + z; t.group = group;
      tiles.push_back(t);
      work.push_back(std::min(count, t.q1) - t.q0);
    }
    parts += slices;
  };
  int sel = 0;
  for (int s = 0; s < S; s++) {
    const int keyLen = host[3 * S + 1 + s] + host[s + 1] - host[s];
    const int nc = compressedCount(keyLen, c.l, c.d);
    const int nbs = (keyLen + c.ls - 1) / c.ls;
    for (int g = 0; g < c.H; g++) {
      for (int p = 0; (modes >> kWindow & 1) && p < keyLen; p += kTileKeys) {
        const int end = std::min(p + kTileKeys, keyLen);
        add({s, kWindow, p, end, 0, g}, std::min(keyLen, end - 1 + c.window) - p, false);
      }
      for (int i = 0; (modes >> kCompressed & 1) && i < nc; i += kTileKeys) add({s, kCompressed, i, std::min(i + kTileKeys, nc), 0, g}, keyLen - (i * c.d + c.l - 1), true);
      for (int j = 0; (modes >> kSelected & 1) && j < nbs; j++)
        for (int p = j * c.ls; p < std::min((j + 1) * c.ls, keyLen); p += kTileKeys)
          add({s, kSelected, p, std::min({p + kTileKeys, (j + 1) * c.ls, keyLen}), j, g}, index.hostTotals[(size_t)g * index.NB + sel + j],
              true);
    }
    sel += nbs;
  }
  if (tiles.empty()) return;
  std::vector<int> order(tiles.size());
  for (size_t i = 0; i < order.size(); i++) order[i] = (int)i;
  std::stable_sort(order.begin(), order.end(), [&](int x, int y) { return work[x] > work[y]; });
  std::vector<KeyTile> sorted(tiles.size());
  for (size_t i = 0; i < order.size(); i++) sorted[i] = tiles[order[i]];

  float* partial = parts ? ws.alloc<float>((size_t)parts * kTileKeys * 2 * D) : nullptr;
  int* groupRows = groups.empty() ? nullptr : ws.alloc<int>(groups.size() * kTileKeys);
  const KeyTile* dTiles = ws.upload(sorted);
  const size_t bytes = KeyLayout<D, W>::bytes(sizeof(T));
  NSA_CUDA(cudaFuncSetAttribute(keyGradRegKernel<T, D, W>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  keyGradRegKernel<T, D, W><<<(unsigned)sorted.size(), 32 * W, bytes, stream>>>(a, Dvals, dTiles, index.starts, index.totals,
                                                                                    index.list, index.NB, partial, groupRows);
  NSA_LAUNCHED("keyGradRegKernel");
  reduceKeyPartials(a, groups, partial, groupRows, kTileKeys, ws, stream);
}

// Compressed tiles see long query lists: 128-key blocks halve the Q/dO traffic per key, which pays
// once there are many of them (H100: 64k faster, 8k-32k not: fewer, longer blocks leave a tail).
// Window tiles (w + 64 queries) and selection blocks (64 keys) keep 64-key blocks.
// NSA_BWD_WIDE_KEYS=0/1 forces the choice (tests cover both paths on small inputs).
bool wideCompressedTiles(const NSABackwardArgs& a) {
  const char* force = getenv("NSA_BWD_WIDE_KEYS");
  if (force && (force[0] == '0' || force[0] == '1')) return force[0] == '1';
  const NSAConfigArgs& c = a.fwd.cfg;
  const int S = a.fwd.seq.S;
  const int* host = a.fwd.seq.host;
  long blocks = 0;
  for (int s = 0; s < S; s++) {
    const int keyLen = host[3 * S + 1 + s] + host[s + 1] - host[s];
    const int nc = compressedCount(keyLen, c.l, c.d);
    for (int i = 0; i < nc; i += 128) blocks += (keyLen - (i * c.d + c.l - 1) + kSliceQueries - 1) / kSliceQueries;
  }
  int device = 0, sms = 132;
  if (cudaGetDevice(&device) == cudaSuccess) cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return blocks * c.H >= 16L * sms;
}

template <class T, int D>
void launchAll(const NSABackwardArgs& a, const float* Dvals, const InverseIndex& index, Workspace& ws, cudaStream_t stream) {
  if (!wideCompressedTiles(a)) {
    launchKeys<T, D, 4>(a, Dvals, index, 1 << kWindow | 1 << kCompressed | 1 << kSelected, ws, stream);
    return;
  }
  launchKeys<T, D, 8>(a, Dvals, index, 1 << kCompressed, ws, stream);
  launchKeys<T, D, 4>(a, Dvals, index, 1 << kWindow | 1 << kSelected, ws, stream);
}

}  // namespace

void keyGradRegisters(const NSABackwardArgs& a, const float* D, const InverseIndex& index, Workspace& ws, cudaStream_t stream) {
  const bool f16 = a.fwd.dtype == DType::F16;
  if (a.fwd.cfg.Dk == 64) f16 ? launchAll<__half, 64>(a, D, index, ws, stream) : launchAll<__nv_bfloat16, 64>(a, D, index, ws, stream);
  else f16 ? launchAll<__half, 128>(a, D, index, ws, stream) : launchAll<__nv_bfloat16, 128>(a, D, index, ws, stream);
}

}  // namespace nsa
