// Dense causal flash-attention, the benchmark baseline: forward (with split-K over the keys when
// there are too few query tiles to fill the GPU, e.g. decoding), backward (query-centric dq,
// key-centric dK/dV, deterministic). A block's 64 rows are several positions x the heads of one
// GQA group, so every key tile serves the whole group.
#include <algorithm>
#include <vector>
#include "cuda_error.h"
#include "key_grad.cuh"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "split_k.cuh"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kMaxRows = 64;

// Rows per block: 64 where shared memory allows, else 32 or 16 (large head dims, float32).
template <class T>
int rowsFor(int BK, int Dk, int Dv, bool backward, size_t* bytes) {
  for (int R : {64, 32, 16}) {
    *bytes = AttendSmem<T>::bytes(R, BK, Dk, Dv, R, backward, !backward);
    if (*bytes <= 200 * 1024) return R;
  }
  return 16;
}

struct QueryTile {
  int s, first;  // sequence, first query index within it
};

// Fills rpos/rrow-like bookkeeping for rows (position index pi, head h0 + hi) of a query tile.
struct RowMap {
  int headsPer, QP;
  __device__ RowMap(int G, int R) : headsPer(min(G, R)), QP(R / min(G, R)) {}
};

template <class T>
__global__ void __launch_bounds__(kThreads) denseForwardKernel(AttentionArgs a, const QueryTile* tiles, int BK, int splits,
                                                               float* partial, int kRows) {
  extern __shared__ __align__(16) char smemRaw[];
  const int G = a.HQ / a.H;
  const RowMap rm(G, kRows);
  const int headChunks = (G + rm.headsPer - 1) / rm.headsPer;
  const int g = blockIdx.y / headChunks, h0 = (blockIdx.y % headChunks) * rm.headsPer;
  const int split = blockIdx.z;
  AttendSmem<T> sm;
  sm.carve(smemRaw, kRows, BK, a.Dk, a.Dv, false, true);
  const QueryTile tile = tiles[blockIdx.x];
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart, pos0 = st.pos0[tile.s];
  const int kBase = st.kBase[tile.s];
  const int nq = min(rm.QP, qCount - tile.first);
  const T* Q = static_cast<const T*>(a.q);
  int* rowQ = sm.ints;  // [kRows] flat query row or -1
  for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
    const int pi = r / rm.headsPer, hi = r % rm.headsPer;
    const bool ok = pi < nq && h0 + hi < G;
    rowQ[r] = ok ? qStart + tile.first + pi : -1;
    sm.rpos[r] = ok ? pos0 + tile.first + pi : -1;
  }
  __syncthreads();
  gatherRows<T>(sm.q, sm.ldq, kRows, a.Dk, [&](int r) -> const T* {
    return rowQ[r] >= 0 ? Q + ((size_t)rowQ[r] * a.HQ + g * G + h0 + r % rm.headsPer) * a.Dk : nullptr;
  });
  beginBranch(sm);
  const int keys = pos0 + tile.first + nq;  // keys 0 .. last position
  const int tilesAll = (keys + BK - 1) / BK;
  const int per = (tilesAll + splits - 1) / splits;
  const int t0 = split * per, t1 = min(tilesAll, t0 + per);
  const float sl2 = a.scale * kLog2e;
  auto fill = [&](int t, int* krow, int* kpos) {
    for (int j = threadIdx.x; j < BK; j += blockDim.x) {
      const int p = (t0 + t) * BK + j;
      krow[j] = p < keys ? kBase + p : -1;
      kpos[j] = p;
    }
  };
  forEachTile(sm, t1 - t0, static_cast<const T*>(a.k), static_cast<const T*>(a.v), a.H, g, true, fill,
              [&] { attendTile(sm, kRows, sl2); });
  if (splits == 1) {
    endBranch(sm);
    T* out = static_cast<T*>(a.out);
    for (int e = threadIdx.x; e < kRows * a.Dv; e += blockDim.x) {
      const int r = e / a.Dv, col = e % a.Dv;
      if (rowQ[r] >= 0) out[((size_t)rowQ[r] * a.HQ + g * G + h0 + r % rm.headsPer) * a.Dv + col] = fromF<T>(sm.o[r * sm.ldo + col]);
    }
    if (a.lse)
      for (int r = threadIdx.x; r < kRows; r += blockDim.x)
        if (rowQ[r] >= 0) a.lse[(size_t)rowQ[r] * a.HQ + g * G + h0 + r % rm.headsPer] = sm.lse[r];
  } else {
    // Partial results: m, l and the unnormalised output per (split, row, head).
    __syncthreads();
    const size_t rowsHeads = (size_t)a.seq.rows * a.HQ;
    float* pm = partial + (size_t)split * rowsHeads * (a.Dv + 2);
    for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
      if (rowQ[r] < 0) continue;
      const size_t at = (size_t)rowQ[r] * a.HQ + g * G + h0 + r % rm.headsPer;
      pm[at * (a.Dv + 2)] = sm.m[r];
      pm[at * (a.Dv + 2) + 1] = sm.l[r];
    }
    for (int e = threadIdx.x; e < kRows * a.Dv; e += blockDim.x) {
      const int r = e / a.Dv, col = e % a.Dv;
      if (rowQ[r] < 0) continue;
      const size_t at = (size_t)rowQ[r] * a.HQ + g * G + h0 + r % rm.headsPer;
      pm[at * (a.Dv + 2) + 2 + col] = sm.o[r * sm.ldo + col];
    }
  }
}

// Merges split-K partials: one warp per (row, head).
template <class T>
__global__ void combineKernel(const float* partial, int splits, size_t rowsHeads, int Dv, T* out, float* lse) {
  const size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  if (w >= rowsHeads) return;
  mergePartials(partial + w * (Dv + 2), splits, rowsHeads * (Dv + 2), Dv, lse ? lse + w : nullptr,
                [&](int c, float v) { out[w * Dv + c] = fromF<T>(v); });
}

template <class T>
__global__ void densePrepKernel(const T* dO, const T* o, float* D, size_t rowsHeads, int Dv) {
  const size_t w = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (w >= rowsHeads) return;
  float acc = 0.f;
  for (int c = lane; c < Dv; c += 32) acc += toF(dO[w * Dv + c]) * toF(o[w * Dv + c]);
  acc = warpSum(acc);
  if (lane == 0) D[w] = acc;
}

template <class T>
__global__ void __launch_bounds__(kThreads) denseDqKernel(AttentionBackwardArgs b, const float* D, const QueryTile* tiles, int BK, int kRows) {
  extern __shared__ __align__(16) char smemRaw[];
  const AttentionArgs& a = b.fwd;
  const int G = a.HQ / a.H;
  const RowMap rm(G, kRows);
  const int headChunks = (G + rm.headsPer - 1) / rm.headsPer;
  const int g = blockIdx.y / headChunks, h0 = (blockIdx.y % headChunks) * rm.headsPer;
  AttendSmem<T> sm;
  sm.carve(smemRaw, kRows, BK, a.Dk, a.Dv, true);
  const QueryTile tile = tiles[blockIdx.x];
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart, pos0 = st.pos0[tile.s];
  const int kBase = st.kBase[tile.s];
  const int nq = min(rm.QP, qCount - tile.first);
  int* rowQ = sm.ints;
  for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
    const int pi = r / rm.headsPer, hi = r % rm.headsPer;
    const bool ok = pi < nq && h0 + hi < G;
    rowQ[r] = ok ? qStart + tile.first + pi : -1;
    sm.rpos[r] = ok ? pos0 + tile.first + pi : -1;
    const size_t at = ok ? (size_t)rowQ[r] * a.HQ + g * G + h0 + hi : 0;
    sm.lse[r] = ok ? a.lse[at] : INFINITY;
    sm.aux[r] = ok ? D[at] : 0.f;
  }
  __syncthreads();
  const T* Q = static_cast<const T*>(a.q);
  const T* dO = static_cast<const T*>(b.dOut);
  gatherRows<T>(sm.q, sm.ldq, kRows, a.Dk, [&](int r) -> const T* {
    return rowQ[r] >= 0 ? Q + ((size_t)rowQ[r] * a.HQ + g * G + h0 + r % rm.headsPer) * a.Dk : nullptr;
  });
  gatherRows<T>(sm.dO, sm.ldv, kRows, a.Dv, [&](int r) -> const T* {
    return rowQ[r] >= 0 ? dO + ((size_t)rowQ[r] * a.HQ + g * G + h0 + r % rm.headsPer) * a.Dv : nullptr;
  });
  for (int e = threadIdx.x; e < kRows * sm.ldo; e += blockDim.x) sm.o[e] = 0.f;
  const int keys = pos0 + tile.first + nq;
  const float sl2 = a.scale * kLog2e;
  for (int t = 0; t * BK < keys; t++) {
    __syncthreads();
    for (int j = threadIdx.x; j < BK; j += blockDim.x) {
      const int p = t * BK + j;
      sm.krow[j] = p < keys ? kBase + p : -1;
      sm.kpos[j] = p;
    }
    __syncthreads();
    loadKV(sm, static_cast<const T*>(a.k), static_cast<const T*>(a.v), a.H, g);
    __syncthreads();
    tileScores(sm);
    smemGemm<T, ALayout::Row, BLayout::NK>(kRows, BK, a.Dv, sm.dO, sm.ldv, sm.v, sm.ldv, sm.y, sm.ldo, false);
    __syncthreads();
    for (int e = threadIdx.x; e < kRows * BK; e += blockDim.x) {
      const int r = e / BK, j = e % BK;
      const bool vis = rowQ[r] >= 0 && sm.krow[j] >= 0 && sm.kpos[j] <= sm.rpos[r];
      const float p = vis ? exp2f(sm.s[r * sm.lds + j] * sl2 - sm.lse[r]) : 0.f;
      sm.p[r * sm.ldp + j] = fromF<T>(p * (sm.y[r * sm.ldo + j] - sm.aux[r]));
    }
    __syncthreads();
    smemGemm<T, ALayout::Row, BLayout::KN>(kRows, a.Dk, BK, sm.p, sm.ldp, sm.k, sm.ldq, sm.o, sm.ldo, true);
  }
  __syncthreads();
  T* dq = static_cast<T*>(b.dq);
  for (int e = threadIdx.x; e < kRows * a.Dk; e += blockDim.x) {
    const int r = e / a.Dk, col = e % a.Dk;
    if (rowQ[r] >= 0) dq[((size_t)rowQ[r] * a.HQ + g * G + h0 + r % rm.headsPer) * a.Dk + col] = fromF<T>(sm.o[r * sm.ldo + col] * a.scale);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) denseKeyGradKernel(AttentionBackwardArgs b, const float* D, const QueryTile* tiles, int BK, int R) {
  extern __shared__ __align__(16) char smemRaw[];
  const AttentionArgs& a = b.fwd;
  const int G = a.HQ / a.H;
  KeyGradSmem<T> sm;
  sm.carve(smemRaw, R, BK, a.Dk, a.Dv);
  const QueryTile tile = tiles[blockIdx.x];  // first = first key
  const int g = blockIdx.y;
  const SeqTable st = seqTable(a.seq);
  const int qStart = st.qStart[tile.s], qCount = st.qStart[tile.s + 1] - qStart, pos0 = st.pos0[tile.s];
  const int keyLen = pos0 + qCount;
  for (int j = threadIdx.x; j < BK; j += blockDim.x) {
    const int p = tile.first + j;
    sm.krow[j] = p < keyLen ? st.kBase[tile.s] + p : -1;
    sm.kpos[j] = p;
  }
  __syncthreads();
  keyGradLoad<T>(sm, a.k, a.v, a.H, g);
  keyGradBegin(sm);
  const int first = max(tile.first, pos0);  // first query position that sees the tile
  const int count = max(0, keyLen - first);
  RowSource src{a.q, b.dOut, a.lse, 1, 0, D, nullptr, 0, a.HQ};
  const int headsPer = min(G, R), QP = R / headsPer;
  const float sl2 = a.scale * kLog2e;
  for (int h0 = 0; h0 < G; h0 += headsPer) {
    for (int i0 = 0; i0 < count; i0 += QP) {
      __syncthreads();
      for (int r = threadIdx.x; r < R; r += blockDim.x) {
        const int pi = r / headsPer, h = h0 + r % headsPer;
        const bool ok = pi < QP && i0 + pi < count && h < G;
        const int p = first + i0 + pi;
        sm.rrow[r] = ok ? qStart + p - pos0 : -1;
        sm.rpos[r] = p;
        sm.rhead[r] = g * G + h;
      }
      __syncthreads();
      keyGradStep(sm, src, sl2, 1 << 30);
    }
  }
  __syncthreads();
  keyGradEnd(sm, b.dk, b.dv, a.H, g, a.scale);
}

std::vector<QueryTile> queryTiles(const SeqArgs& seq, int QP) {
  std::vector<QueryTile> tiles;
  const int S = seq.S;
  for (int s = 0; s < S; s++) {
    const int qCount = seq.host[s + 1] - seq.host[s];
    for (int f = 0; f < qCount; f += QP) tiles.push_back({s, f});
  }
  // Longest tiles (latest positions) first: they have the most keys.
  std::stable_sort(tiles.begin(), tiles.end(), [&](const QueryTile& x, const QueryTile& y) {
    return x.first + seq.host[3 * S + 1 + x.s] > y.first + seq.host[3 * S + 1 + y.s];
  });
  return tiles;
}

int smCount() {
  static int count = 0;
  if (!count) {
    int dev = 0;
    NSA_CUDA(cudaGetDevice(&dev));
    NSA_CUDA(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev));
  }
  return count;
}

template <class T>
void launchDenseForward(const AttentionArgs& a, cudaStream_t stream) {
  if (a.seq.rows == 0) return;
  if (denseForwardRegisters(a, stream)) return;
  const int G = a.HQ / a.H;
  const int BK = sizeof(T) == 4 ? 32 : 64;
  size_t bytes = 0;
  int kRows = rowsFor<T>(BK, a.Dk, a.Dv, false, &bytes);
  // Few queries per sequence (decoding): fewer rows per block, so no tensor-core rows go to waste.
  int maxQ = 0;
  for (int s = 0; s < a.seq.S; s++) maxQ = std::max(maxQ, a.seq.host[s + 1] - a.seq.host[s]);
  const int want = roundUp(std::min(std::min(G, kMaxRows) * std::max(maxQ, 1), kMaxRows), 16);
  if (want < kRows) {
    kRows = want;
    bytes = AttendSmem<T>::bytes(kRows, BK, a.Dk, a.Dv, kRows, false, true);
  }
  const int headsPer = std::min(G, kRows), QP = kRows / headsPer, headChunks = (G + headsPer - 1) / headsPer;
  Workspace ws(stream);
  const std::vector<QueryTile> tiles = queryTiles(a.seq, QP);
  QueryTile* dTiles = ws.upload(tiles);
  const size_t blocks = tiles.size() * a.H * headChunks;
  // Split the keys when the grid would leave most multiprocessors idle (decoding, short batches).
  const int keyTiles = (a.seq.maxKeys + BK - 1) / BK;
  int splits = 1;
  if (blocks < (size_t)smCount() * 4) splits = std::max(1, std::min(keyTiles / 2, (int)((size_t)smCount() * 4 / blocks)));
  NSA_CUDA(cudaFuncSetAttribute(denseForwardKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  float* partial = nullptr;
  const size_t rowsHeads = (size_t)a.seq.rows * a.HQ;
  if (splits > 1) partial = ws.alloc<float>((size_t)splits * rowsHeads * (a.Dv + 2));
  denseForwardKernel<T><<<dim3((unsigned)tiles.size(), a.H * headChunks, splits), kThreads, bytes, stream>>>(a, dTiles, BK,
                                                                                                            splits, partial, kRows);
  NSA_LAUNCHED("denseForwardKernel");
  if (splits > 1) {
    combineKernel<T><<<(unsigned)((rowsHeads * 32 + 255) / 256), 256, 0, stream>>>(partial, splits, rowsHeads, a.Dv,
                                                                                 static_cast<T*>(a.out), a.lse);
    NSA_LAUNCHED("dense combineKernel");
  }
}

template <class T>
void launchDenseBackward(const AttentionBackwardArgs& b, cudaStream_t stream) {
  const AttentionArgs& a = b.fwd;
  if (a.seq.rows == 0) return;
  if (denseBackwardRegisters(b, stream)) return;
  const int G = a.HQ / a.H;
  const int BK = sizeof(T) == 4 ? 32 : 64;
  size_t bytes = 0;
  const int kRows = rowsFor<T>(BK, a.Dk, a.Dv, true, &bytes);
  const int headsPer = std::min(G, kRows), QP = kRows / headsPer, headChunks = (G + headsPer - 1) / headsPer;
  Workspace ws(stream);
  const size_t rowsHeads = (size_t)a.seq.rows * a.HQ;
  float* D = ws.alloc<float>(rowsHeads);
  densePrepKernel<T><<<(unsigned)((rowsHeads * 32 + 255) / 256), 256, 0, stream>>>(
      static_cast<const T*>(b.dOut), static_cast<const T*>(a.out), D, rowsHeads, a.Dv);
  NSA_LAUNCHED("dense densePrepKernel");
  const std::vector<QueryTile> qt = queryTiles(a.seq, QP);
  QueryTile* dq = ws.upload(qt);
  NSA_CUDA(cudaFuncSetAttribute(denseDqKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  denseDqKernel<T><<<dim3((unsigned)qt.size(), a.H * headChunks), kThreads, bytes, stream>>>(b, D, dq, BK, kRows);
  NSA_LAUNCHED("denseDqKernel");
  int R = 64, KB = 64;
  keyGradShape<T>(a.Dk, a.Dv, &R, &KB, &bytes);
  std::vector<QueryTile> kt;
  for (int s = 0; s < a.seq.S; s++) {
    const int keyLen = a.seq.host[3 * a.seq.S + 1 + s] + a.seq.host[s + 1] - a.seq.host[s];
    for (int p = 0; p < keyLen; p += KB) kt.push_back({s, p});
  }
  if (kt.empty()) return;
  QueryTile* dk = ws.upload(kt);
  NSA_CUDA(cudaFuncSetAttribute(denseKeyGradKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  denseKeyGradKernel<T><<<dim3((unsigned)kt.size(), a.H), kThreads, bytes, stream>>>(b, D, dk, KB, R);
  NSA_LAUNCHED("denseKeyGradKernel");
}

}  // namespace

void attentionForward(const AttentionArgs& a, cudaStream_t stream) {
  switch (a.dtype) {
    case DType::F32: return launchDenseForward<float>(a, stream);
    case DType::F16: return launchDenseForward<__half>(a, stream);
    case DType::BF16: return launchDenseForward<__nv_bfloat16>(a, stream);
  }
}

void attentionBackward(const AttentionBackwardArgs& b, cudaStream_t stream) {
  switch (b.fwd.dtype) {
    case DType::F32: return launchDenseBackward<float>(b, stream);
    case DType::F16: return launchDenseBackward<__half>(b, stream);
    case DType::BF16: return launchDenseBackward<__nv_bfloat16>(b, stream);
  }
}

}  // namespace nsa
