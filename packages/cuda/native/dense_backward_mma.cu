// Dense causal backward in the flash-attention-2 register layout, float16/bfloat16, Dk = Dv in
// {64, 128}, any GQA group, varlen, queries after a cached prefix (TQ < Tk). Three kernels, all
// deterministic (every gradient element is written once by one thread, no atomics):
// - prep: D = Σ dO ∘ O per (row, head);
// - key-centric dK/dV: a block of 8 warps owns 128 keys of one KV head (a warp = 16 keys = one mma
//   row strip) and walks every (query position >= key, head of the group) column that sees them in
//   tiles of 64 columns, Q/dO/lse/D in a 3-stage cp.async ring. Per tile, in registers:
//   Sᵀ = K·Qᵀ, Pᵀ = exp2(Sᵀ·scale·log2e − lse), dV += Pᵀ·dO, dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ − D),
//   dK += dSᵀ·Q (Pᵀ and dSᵀ repacked from C to A fragments);
// - query-centric dq: a block of 8 warps owns 128 positions of one query head (as the forward) and
//   walks the key tiles they see (3-stage ring): S = Q·Kᵀ, P, dP = dO·Vᵀ, dS, dq += dS·K.
// The dK/dV and dq blocks share one grid (denseGradKernel). Block shapes were chosen on an H100
// (BENCHMARKS.md v5): 4-warp dK/dV blocks or 32-column steps were slower.
// dense_attention.cu keeps the general kernels (float32, other head dims, Dk != Dv).
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>
#include "cuda_error.h"
#include "dense_wgmma.h"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "warp_backward.cuh"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kBwdWarps = 8, kBwdThreads = 32 * kBwdWarps;
constexpr int kKeyRows = 16 * kBwdWarps;  // keys per dK/dV block
constexpr int kColTile = 64;              // query columns per dK/dV step
constexpr int kDqRows = 16 * kBwdWarps;   // query positions per dq block
constexpr int kDqKeys = 64;               // keys per dq step

using SeqTile = DenseTile;  // sequence; first key (dK/dV) or first query index (dq) of the tile

template <class T, int Dv>
__global__ void denseDeltaKernel(const T* dO, const T* o, float* delta, size_t rowsHeads) {
  constexpr int L = Dv / 8;
  const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) / L;
  const size_t at = i < rowsHeads ? i : rowsHeads - 1;  // every lane joins the shuffles
  const float d = rowDotGroup<T, Dv>(dO + at * Dv, o + at * Dv);
  if (i < rowsHeads && threadIdx.x % L == 0) delta[i] = d;
}

// ST: pipeline stages (ring of ST column tiles, ST - 1 in flight while one is computed).
template <int D, int ST>
struct KeyGradLayout {
  static constexpr int ld = D + 8;  // 16-byte pad: ldmatrix rows fall in distinct banks
  static constexpr int colTile = kColTile * ld;
  // K, V [keys][ld]; Q, dO [ST][cols][ld]; then lse, D [ST][cols] floats.
  static constexpr size_t bytes(size_t elem) {
    return elem * (size_t)(2 * kKeyRows * ld + 2 * ST * colTile) + sizeof(float) * 2 * ST * kColTile;
  }
};

// One dK/dV block: keys tile.first .. + kKeyRows of KV head kvh.
template <class T, int D, int ST>
__device__ __forceinline__ void keyValueGradBlock(const AttentionBackwardArgs& b, const float* delta, const SeqTile tile,
                                                  const int kvh, char* smemRaw) {
  using L = KeyGradLayout<D, ST>;
  constexpr int ld = L::ld;
  T* sK = reinterpret_cast<T*>(smemRaw);
  T* sV = sK + kKeyRows * ld;
  T* sQ = sV + kKeyRows * ld;      // [ST][cols][ld]
  T* sdO = sQ + ST * L::colTile;   // [ST][cols][ld]
  float* sLse = reinterpret_cast<float*>(sdO + ST * L::colTile);  // [ST][cols]
  float* sDel = sLse + ST * kColTile;                              // [ST][cols]

  const AttentionArgs& a = b.fwd;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int G = a.HQ / a.H;
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart;
  const int pos0 = st.pos0[tile.s], kBase = st.kBase[tile.s];
  const int keyLen = pos0 + qCount, k0 = tile.first;
  const int nk = min(kKeyRows, keyLen - k0);
  const int first = max(k0, pos0);  // first query position that sees a key of the tile
  const int count = max(0, keyLen - first);
  const int perHead = (count + kColTile - 1) / kColTile;
  const int nTiles = G * perHead;  // column tiles: heads of the group outer, positions inner
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const T* dO = static_cast<const T*>(b.dOut);

  copyRowsAsync<T, D, kBwdThreads>(sK, ld, kKeyRows, [&](int r) -> const T* {
    return r < nk ? K + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr;
  });
  copyRowsAsync<T, D, kBwdThreads>(sV, ld, kKeyRows, [&](int r) -> const T* {
    return r < nk ? V + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr;
  });
  auto loadCols = [&](int it, int buf) {
    const int hq = kvh * G + it / perHead, p0 = first + (it % perHead) * kColTile;
    auto at = [&](int r) { return (size_t)(qStart + p0 + r - pos0) * a.HQ + hq; };
    copyRowsAsync<T, D, kBwdThreads>(sQ + buf * L::colTile, ld, kColTile, [&](int r) -> const T* {
      return p0 + r < keyLen ? Q + at(r) * D : nullptr;
    });
    copyRowsAsync<T, D, kBwdThreads>(sdO + buf * L::colTile, ld, kColTile, [&](int r) -> const T* {
      return p0 + r < keyLen ? dO + at(r) * D : nullptr;
    });
    for (int r = threadIdx.x; r < kColTile; r += kBwdThreads) {
      float* lse = sLse + buf * kColTile + r;
      float* del = sDel + buf * kColTile + r;
      if (p0 + r < keyLen) {
        cpAsync4(lse, a.lse + at(r));
        cpAsync4(del, delta + at(r));
      } else {
        *lse = INFINITY;
        *del = 0.f;
      }
    }
  };
#pragma unroll
  for (int i = 0; i < ST - 1; i++) {  // group i: column tile i (group 0 also holds K and V)
    if (i < nTiles) loadCols(i, i);
    cpAsyncCommit();
  }

  const int kp0 = k0 + warp * 16 + g;  // this thread's key positions: kp0 and kp0 + 8
  const float sl2 = a.scale * kLog2e;
  float dk[D / 8][4], dv[D / 8][4];
  zeroFrags<D>(dk);
  zeroFrags<D>(dv);
  for (int it = 0; it < nTiles; it++) {
    // Tile it has landed once at most ST - 2 later groups are pending; after the barrier every warp
    // is done with tile it - 1, whose slot takes tile it + ST - 1.
    cpAsyncWait<ST - 2>();
    __syncthreads();
    if (it + ST - 1 < nTiles) loadCols(it + ST - 1, (it + ST - 1) % ST);
    cpAsyncCommit();
    const int buf = it % ST;
    const T* q = sQ + buf * L::colTile;
    const T* dOt = sdO + buf * L::colTile;
    const float* lse = sLse + buf * kColTile;
    const float* del = sDel + buf * kColTile;
    const int p0 = first + (it % perHead) * kColTile;
    // Sᵀ = K·Qᵀ, then Pᵀ. Only tiles that start before the block's last key, or run past the last
    // query, need the causal / range test.
    float s[kColTile / 8][4];
    zeroFrags<kColTile>(s);
    warpGemmNT<T, D, kColTile>(s, sK, ld, warp * 16, q, ld);
    const bool edge = p0 < k0 + kKeyRows - 1 || p0 + kColTile > keyLen;
#pragma unroll
    for (int n = 0; n < kColTile / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int c = n * 8 + 2 * t4 + (e & 1), p = p0 + c, kp = kp0 + 8 * (e >> 1);
        const bool vis = !edge || (kp <= p && p < keyLen);
        s[n][e] = vis ? exp2f(fmaf(s[n][e], sl2, -lse[c])) : 0.f;
      }
    }
    uint32_t pa[kColTile / 16][4];
    packA<T, kColTile>(pa, s);
    warpGemmRegNN<T, kColTile, D>(dv, pa, dOt, ld);  // dV += Pᵀ·dO
    float dp[kColTile / 8][4];
    zeroFrags<kColTile>(dp);
    warpGemmNT<T, D, kColTile>(dp, sV, ld, warp * 16, dOt, ld);  // dPᵀ = V·dOᵀ
    // dSᵀ = Pᵀ ∘ (dPᵀ − D), written over the packed Pᵀ.
#pragma unroll
    for (int n = 0; n < kColTile / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e += 2) {
        const int c = n * 8 + 2 * t4;
        uint32_t& r = pa[n >> 1][packedReg(n, e)];
        const float2 pp = unpackF2(r, T());
        r = packF2<T>(pp.x * (dp[n][e] - del[c]), pp.y * (dp[n][e + 1] - del[c + 1]));
      }
    }
    warpGemmRegNN<T, kColTile, D>(dk, pa, q, ld);  // dK += dSᵀ·Q
  }
  cpAsyncWait<0>();

  T* dK = static_cast<T*>(b.dk);
  T* dV = static_cast<T*>(b.dv);
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  auto keyRow = [&](T* base, int r) { return r < nk ? base + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr; };
  storeFragRows<T, D>(dk, keyRow(dK, r0), keyRow(dK, r1), a.scale);
  storeFragRows<T, D>(dv, keyRow(dV, r0), keyRow(dV, r1), 1.f);
}

template <int D, int ST>
struct DqLayout {
  static constexpr int ld = D + 8;
  static constexpr int keyTile = kDqKeys * ld;
  // Q, dO [rows][ld]; K, V [ST][keys][ld].
  static constexpr size_t bytes(size_t elem) { return elem * (size_t)(2 * kDqRows * ld + 2 * ST * keyTile); }
};

// One dq block: query positions tile.first .. + kDqRows of query head hq.
template <class T, int D, int ST>
__device__ __forceinline__ void dqBlock(const AttentionBackwardArgs& b, const float* delta, const SeqTile tile, const int hq,
                                        char* smemRaw) {
  using L = DqLayout<D, ST>;
  constexpr int ld = L::ld;
  T* sQ = reinterpret_cast<T*>(smemRaw);
  T* sdO = sQ + kDqRows * ld;
  T* sK = sdO + kDqRows * ld;     // [ST][keys][ld]
  T* sV = sK + ST * L::keyTile;   // [ST][keys][ld]

  const AttentionArgs& a = b.fwd;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
  const int kvh = hq / (a.HQ / a.H);
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart;
  const int kBase = st.kBase[tile.s], base = st.pos0[tile.s] + tile.first;  // position of row 0
  const int nq = min(kDqRows, qCount - tile.first);
  const int keys = base + nq;  // keys 0 .. last row's position
  const int nTiles = (keys + kDqKeys - 1) / kDqKeys;
  const T* Q = static_cast<const T*>(a.q);
  const T* K = static_cast<const T*>(a.k);
  const T* V = static_cast<const T*>(a.v);
  const T* dO = static_cast<const T*>(b.dOut);
  auto at = [&](int r) { return (size_t)(qStart + tile.first + r) * a.HQ + hq; };

  copyRowsAsync<T, D, kBwdThreads>(sQ, ld, kDqRows, [&](int r) -> const T* { return r < nq ? Q + at(r) * D : nullptr; });
  copyRowsAsync<T, D, kBwdThreads>(sdO, ld, kDqRows, [&](int r) -> const T* { return r < nq ? dO + at(r) * D : nullptr; });
  auto loadKV = [&](int kt, int buf) {
    const int k0 = kt * kDqKeys;
    copyRowsAsync<T, D, kBwdThreads>(sK + buf * L::keyTile, ld, kDqKeys, [&](int r) -> const T* {
      return k0 + r < keys ? K + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr;
    });
    copyRowsAsync<T, D, kBwdThreads>(sV + buf * L::keyTile, ld, kDqKeys, [&](int r) -> const T* {
      return k0 + r < keys ? V + ((size_t)(kBase + k0 + r) * a.H + kvh) * D : nullptr;
    });
  };
#pragma unroll
  for (int i = 0; i < ST - 1; i++) {  // group i: key tile i (group 0 also holds Q and dO)
    if (i < nTiles) loadKV(i, i);
    cpAsyncCommit();
  }

  const int row0 = warp * 16 + g;  // this thread's rows: row0 and row0 + 8
  const int pos[2] = {base + row0, base + row0 + 8};
  float lse[2], del[2];
#pragma unroll
  for (int i = 0; i < 2; i++) {
    const bool ok = row0 + 8 * i < nq;
    lse[i] = ok ? a.lse[at(row0 + 8 * i)] : INFINITY;  // padding rows: P = 0
    del[i] = ok ? delta[at(row0 + 8 * i)] : 0.f;
  }
  const float sl2 = a.scale * kLog2e;
  uint32_t qf[D / 16][4];
  float dq[D / 8][4];
  zeroFrags<D>(dq);

  for (int kt = 0; kt < nTiles; kt++) {
    cpAsyncWait<ST - 2>();  // key tile kt has landed; every warp is done with tile kt - 1
    __syncthreads();
    if (kt + ST - 1 < nTiles) loadKV(kt + ST - 1, (kt + ST - 1) % ST);
    cpAsyncCommit();
    const int buf = kt % ST;
    if (kt == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) loadA(qf[kk], sQ, ld, warp * 16, kk * 16);
    }
    const T* k = sK + buf * L::keyTile;
    const T* v = sV + buf * L::keyTile;
    float s[kDqKeys / 8][4];
    zeroFrags<kDqKeys>(s);
    warpGemmRegNT<T, D, kDqKeys>(s, qf, k, ld);  // S = Q·Kᵀ
    float dp[kDqKeys / 8][4];
    zeroFrags<kDqKeys>(dp);
    warpGemmNT<T, D, kDqKeys>(dp, sdO, ld, warp * 16, v, ld);  // dP = dO·Vᵀ
    // Causal visibility (key position <= row position) matters only in tiles reaching past row 0.
    const int k0 = kt * kDqKeys;
    const bool edge = k0 + kDqKeys - 1 > base;
#pragma unroll
    for (int n = 0; n < kDqKeys / 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const int i = e >> 1, kp = k0 + n * 8 + 2 * t4 + (e & 1);
        const float p = (!edge || kp <= pos[i]) ? exp2f(fmaf(s[n][e], sl2, -lse[i])) : 0.f;
        s[n][e] = p * (dp[n][e] - del[i]);
      }
    }
    uint32_t da[kDqKeys / 16][4];
    packA<T, kDqKeys>(da, s);
    warpGemmRegNN<T, kDqKeys, D>(dq, da, k, ld);  // dq += dS·K
  }
  cpAsyncWait<0>();

  T* dQ = static_cast<T*>(b.dq);
  storeFragRows<T, D>(dq, row0 < nq ? dQ + at(row0) * D : nullptr, row0 + 8 < nq ? dQ + at(row0 + 8) * D : nullptr, a.scale);
}

// Both gradients in one grid, dK/dV blocks first (heaviest first), then dq blocks: the dq blocks fill
// the multiprocessors that the dK/dV tail leaves idle (measured: 64k 1291 -> 1276 ms on H100).
template <class T, int D, int ST>
__global__ void __launch_bounds__(kBwdThreads, 1)
    denseGradKernel(AttentionBackwardArgs b, const float* delta, const SeqTile* kvTiles, int kvBlocks, const SeqTile* qTiles) {
  extern __shared__ __align__(16) char smemRaw[];
  const int i = blockIdx.x;
  if (i < kvBlocks) {
    keyValueGradBlock<T, D, ST>(b, delta, kvTiles[i / b.fwd.H], i % b.fwd.H, smemRaw);
  } else {
    const int j = i - kvBlocks;
    dqBlock<T, D, ST>(b, delta, qTiles[j / b.fwd.HQ], j % b.fwd.HQ, smemRaw);
  }
}

// Key tiles of `keys` keys of every sequence, the most-seen (earliest) keys first; query tiles of
// kDqRows positions, the latest (most keys) first.
std::vector<SeqTile> keyTiles(const SeqArgs& seq, int keys) {
  const int S = seq.S;
  auto pos0 = [&](int s) { return seq.host[3 * S + 1 + s]; };
  auto queries = [&](int s) { return seq.host[s + 1] - seq.host[s]; };
  std::vector<SeqTile> kt;
  for (int s = 0; s < S; s++)
    for (int k = 0; k < pos0(s) + queries(s); k += keys) kt.push_back({s, k});
  auto seen = [&](const SeqTile& t) { return pos0(t.s) + queries(t.s) - std::max(t.first, pos0(t.s)); };
  std::stable_sort(kt.begin(), kt.end(), [&](const SeqTile& x, const SeqTile& y) { return seen(x) > seen(y); });
  return kt;
}
std::vector<SeqTile> queryTiles(const SeqArgs& seq) {
  const int S = seq.S;
  auto pos0 = [&](int s) { return seq.host[3 * S + 1 + s]; };
  std::vector<SeqTile> qt;
  for (int s = 0; s < S; s++)
    for (int f = 0; f < seq.host[s + 1] - seq.host[s]; f += kDqRows) qt.push_back({s, f});
  std::stable_sort(qt.begin(), qt.end(), [&](const SeqTile& x, const SeqTile& y) { return x.first + pos0(x.s) > y.first + pos0(y.s); });
  return qt;
}

// Which gradient blocks run on the Hopper wgmma kernels (dense_backward_wgmma.cu): both where they
// run; NSA_DENSE_BWD_WGMMA=0 none, =kv only dK/dV, =dq only dq (A/B and bisecting).
struct WgmmaParts {
  bool kv, dq;
};
WgmmaParts wgmmaParts() {
  const char* env = getenv("NSA_DENSE_BWD_WGMMA");
  if ((env && env[0] == '0') || !denseWgmmaRuns()) return {false, false};
  if (env && strcmp(env, "kv") == 0) return {true, false};
  if (env && strcmp(env, "dq") == 0) return {false, true};
  return {true, true};
}

template <class T, int D, int ST>
void launchGrads(const AttentionBackwardArgs& b, const float* delta, Workspace& ws, cudaStream_t stream) {
  const AttentionArgs& a = b.fwd;
  const std::vector<SeqTile> kt = keyTiles(a.seq, kKeyRows), qt = queryTiles(a.seq);
  const SeqTile* dKt = ws.upload(kt);
  const SeqTile* dQt = ws.upload(qt);
  const WgmmaParts wg = wgmmaParts();
  const char* split = getenv("NSA_DENSE_BWD_SPLIT");  // =1: dK/dV and dq as two launches (A/B)
  if (split && split[0] == '1') {
    if (wg.kv) denseGradsWgmma(b, delta, dKt, (int)kt.size(), dQt, 0, stream);
    if (wg.dq) denseGradsWgmma(b, delta, dKt, 0, dQt, (int)qt.size(), stream);
  } else {
    denseGradsWgmma(b, delta, dKt, wg.kv ? (int)kt.size() : 0, dQt, wg.dq ? (int)qt.size() : 0, stream);
  }
  // The rest in one mma.sync grid.
  const size_t kvBlocks = wg.kv ? 0 : kt.size() * a.H, blocks = kvBlocks + (wg.dq ? 0 : qt.size() * a.HQ);
  if (blocks == 0) return;
  const size_t bytes = std::max(KeyGradLayout<D, ST>::bytes(sizeof(T)), DqLayout<D, ST>::bytes(sizeof(T)));
  NSA_CUDA(cudaFuncSetAttribute(denseGradKernel<T, D, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  denseGradKernel<T, D, ST><<<(unsigned)blocks, kBwdThreads, bytes, stream>>>(b, delta, dKt, (int)kvBlocks, dQt);
  NSA_LAUNCHED("denseGradKernel");
}

template <class T, int D>
void launch(const AttentionBackwardArgs& b, cudaStream_t stream) {
  const AttentionArgs& a = b.fwd;
  Workspace ws(stream);
  const size_t rowsHeads = (size_t)a.seq.rows * a.HQ;
  float* delta = ws.alloc<float>(rowsHeads);
  const size_t lanes = rowsHeads * (D / 8);
  denseDeltaKernel<T, D><<<(unsigned)((lanes + 255) / 256), 256, 0, stream>>>(static_cast<const T*>(b.dOut),
                                                                             static_cast<const T*>(a.out), delta, rowsHeads);
  NSA_LAUNCHED("denseDeltaKernel");
  launchGrads<T, D, 3>(b, delta, ws, stream);  // 3 stages: as fast as 2 on an H100 (v5), one barrier per step
}

template <class T>
bool launchTyped(const AttentionBackwardArgs& b, cudaStream_t stream) {
  if (b.fwd.Dk == 64) return launch<T, 64>(b, stream), true;
  if (b.fwd.Dk == 128) return launch<T, 128>(b, stream), true;
  return false;
}

}  // namespace

bool denseBackwardRegisters(const AttentionBackwardArgs& b, cudaStream_t stream) {
  const AttentionArgs& a = b.fwd;
  if (a.dtype == DType::F32 || a.Dk != a.Dv || a.seq.rows == 0 || !a.lse || !a.out) return false;
  return a.dtype == DType::F16 ? launchTyped<__half>(b, stream) : launchTyped<__nv_bfloat16>(b, stream);
}

}  // namespace nsa
