// NSA backward, deterministic (no floating-point atomics):
//   prep   dGates = dO · o_b and D_b = g_b * dGates per (row, head, branch);
//   dq     query-centric, one block per (position, KV head), all three branches;
//   dK/dV  key-centric per branch: window and compressed keys walk the query range that sees them;
//          selected keys walk an inverse index (key block -> query rows that chose it, ascending),
//          built with integer counting only.
#include <algorithm>
#include <climits>
#include <vector>
#include "cuda_error.h"
#include "key_grad.cuh"
#include "nsa_backward_parts.h"
#include "nsa_kernels.cuh"
#include "ops.h"
#include "workspace.h"

namespace nsa {

namespace {

constexpr int kBigWindow = 1 << 30;

template <class T>
__global__ void prepKernel(const T* dO, const T* oCmp, const T* oSlc, const T* oWin, const T* gates, T* dGates, float* D,
                           int rowsHeads, int Dv) {
  const int warpId = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (warpId >= rowsHeads) return;
  const size_t base = (size_t)warpId * Dv;
  float acc[3] = {0.f, 0.f, 0.f};
  for (int c = lane; c < Dv; c += 32) {
    const float d = toF(dO[base + c]);
    acc[0] += d * toF(oCmp[base + c]);
    acc[1] += d * toF(oSlc[base + c]);
    acc[2] += d * toF(oWin[base + c]);
  }
  for (int b = 0; b < 3; b++) acc[b] = warpSum(acc[b]);
  if (lane < 3) {
    dGates[(size_t)warpId * 3 + lane] = fromF<T>(acc[lane]);
    D[(size_t)warpId * 3 + lane] = toF(gates[(size_t)warpId * 3 + lane]) * acc[lane];
  }
}

// dq for one (position, KV head): the forward's tiles again, with dS = P (g dP - D).
template <class T>
__global__ void __launch_bounds__(kThreads) dqKernel(NSABackwardArgs a, const float* D, int RG, int BK) {
  extern __shared__ __align__(16) char smemRaw[];
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  const int G = c.HQ / c.H;
  AttendSmem<T> sm;
  sm.carve(smemRaw, RG, BK, c.Dk, c.Dv, true);
  int* blk = sm.ints;
  int* pre = blk + c.n;
  const int row = blockIdx.x, g = blockIdx.y;
  const SeqTable st = seqTable(f.seq);
  const int s = seqOfRow(st, row);
  const int pos = st.pos0[s] + row - st.qStart[s];
  const int kBase = st.kBase[s], cBase = st.cBase[s];
  const float sl2 = c.scale * kLog2e;
  const int nc = compressedCount(pos + 1, c.l, c.d);
  const int ws = max(0, pos - c.window + 1), winTokens = pos - ws + 1;
  for (int k = threadIdx.x; k < c.n; k += blockDim.x) blk[k] = a.blocks[((size_t)row * c.H + g) * c.n + k];
  for (int r = threadIdx.x; r < RG; r += blockDim.x) sm.rpos[r] = 0;
  for (int j = threadIdx.x; j < BK; j += blockDim.x) sm.kpos[j] = 0;
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int k = 0; k < c.n; k++) {
      pre[k] = total;
      const int j = blk[k];
      total += (j >= 0 && j <= pos / c.ls) ? min(c.ls, pos - j * c.ls + 1) : 0;
    }
    pre[c.n] = total;
  }
  __syncthreads();
  const int slcTokens = pre[c.n];
  const T* Q = static_cast<const T*>(f.q);
  const T* dOut = static_cast<const T*>(a.dOut);
  const T* gates = static_cast<const T*>(f.gates);
  const size_t qRow = (size_t)row * c.HQ * c.Dk, oRow = (size_t)row * c.HQ * c.Dv;
  for (int h0 = 0; h0 < G; h0 += RG) {
    const int nr = min(RG, G - h0), hq0 = g * G + h0;
    loadHeads<T>(sm.q, sm.ldq, RG, nr, Q, qRow, hq0, c.Dk);
    loadHeads<T>(sm.dO, sm.ldv, RG, nr, dOut, oRow, hq0, c.Dv);
    for (int e = threadIdx.x; e < RG * sm.ldo; e += blockDim.x) sm.o[e] = 0.f;
    for (int branch = 0; branch < 3; branch++) {
      for (int r = threadIdx.x; r < RG; r += blockDim.x) {
        const size_t at = ((size_t)row * c.HQ + hq0 + r) * 3 + branch;
        sm.lse[r] = r < nr ? f.lse[at] : INFINITY;
        sm.aux[r] = r < nr ? D[at] : 0.f;
        sm.gate[r] = r < nr ? toF(gates[at]) : 0.f;
      }
      const int tokens = branch == 0 ? nc : branch == 1 ? slcTokens : winTokens;
      const T* K = static_cast<const T*>(branch == 0 ? f.kCmp : branch == 1 ? f.kSlc : f.kWin);
      const T* V = static_cast<const T*>(branch == 0 ? f.vCmp : branch == 1 ? f.vSlc : f.vWin);
      for (int tile = 0; tile * BK < tokens; tile++) {
        __syncthreads();
        for (int j = threadIdx.x; j < BK; j += blockDim.x) {
          const int e = tile * BK + j;
          int kr = -1;
          if (e < tokens) {
            if (branch == 0) {
              kr = cBase + e;
            } else if (branch == 1) {
              int k = 0;
              while (pre[k + 1] <= e) k++;
              kr = kBase + blk[k] * c.ls + (e - pre[k]);
            } else {
              kr = kBase + ws + e;
            }
          }
          sm.krow[j] = kr;
        }
        __syncthreads();
        loadKV(sm, K, V, c.H, g);
        __syncthreads();
        tileScores(sm);
        smemGemm<T, ALayout::Row, BLayout::NK>(RG, BK, c.Dv, sm.dO, sm.ldv, sm.v, sm.ldv, sm.y, sm.ldo, false);
        __syncthreads();
        for (int e = threadIdx.x; e < RG * BK; e += blockDim.x) {
          const int r = e / BK, j = e % BK;
          const float p = (r < nr && sm.krow[j] >= 0) ? exp2f(sm.s[r * sm.lds + j] * sl2 - sm.lse[r]) : 0.f;
          sm.p[r * sm.ldp + j] = fromF<T>(p * (sm.gate[r] * sm.y[r * sm.ldo + j] - sm.aux[r]));
        }
        __syncthreads();
        smemGemm<T, ALayout::Row, BLayout::KN>(RG, c.Dk, BK, sm.p, sm.ldp, sm.k, sm.ldq, sm.o, sm.ldo, true);
      }
    }
    __syncthreads();
    T* dq = static_cast<T*>(a.dq);
    for (int e = threadIdx.x; e < nr * c.Dk; e += blockDim.x) {
      const int r = e / c.Dk, col = e % c.Dk;
      dq[qRow + (size_t)(hq0 + r) * c.Dk + col] = fromF<T>(sm.o[r * sm.ldo + col] * c.scale);
    }
    __syncthreads();
  }
}

// ---- inverse index: (KV head, global selection block) -> query rows, ascending ----
constexpr int kChunkRows = 64;

__device__ __forceinline__ bool blockHasTokens(int j, int pos, int ls) { return j >= 0 && j <= pos / ls; }

__global__ void countKernel(const int* blocks, SeqArgs seq, int H, int n, int ls, int NB, int chunks, int* counts) {
  const int chunk = blockIdx.x, g = blockIdx.y, row = chunk * kChunkRows + threadIdx.x;
  if (row >= seq.rows) return;
  const SeqTable st = seqTable(seq);
  const int s = seqOfRow(st, row);
  const int pos = st.pos0[s] + row - st.qStart[s];
  const int base = selBase(seq)[s];
  for (int k = 0; k < n; k++) {
    const int j = blocks[((size_t)row * H + g) * n + k];
    if (blockHasTokens(j, pos, ls)) atomicAdd(&counts[((size_t)g * chunks + chunk) * NB + base + j], 1);
  }
}

// Per (g, J): counts over chunks -> exclusive running offsets within J; totals[g][J]. One warp per
// (g, J), 32 chunks per step with a shuffle scan (a serial walk over 1024 chunks took 0.55 ms at 64k).
__global__ void chunkScanKernel(int* counts, int* totals, int H, int NB, int chunks) {
  const int idx = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
  if (idx >= H * NB) return;
  const int g = idx / NB, J = idx % NB;
  int run = 0;
  for (int ch0 = 0; ch0 < chunks; ch0 += 32) {
    const int ch = ch0 + lane;
    int* at = &counts[((size_t)g * chunks + ch) * NB + J];
    const int v = ch < chunks ? *at : 0;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, x, o);
      if (lane >= o) x += y;
    }
    if (ch < chunks) *at = run + x - v;
    run += __shfl_sync(0xffffffffu, x, 31);
  }
  if (lane == 0) totals[idx] = run;
}

// Exclusive scan of totals into starts (one block, serial chunks per thread then a block scan).
__global__ void totalsScanKernel(const int* totals, int* starts, int count) {
  __shared__ int partial[1024];
  const int per = (count + blockDim.x - 1) / blockDim.x;
  const int lo = threadIdx.x * per, hi = min(count, lo + per);
  int sum = 0;
  for (int i = lo; i < hi; i++) sum += totals[i];
  partial[threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    for (int t = 0; t < (int)blockDim.x; t++) { const int v = partial[t]; partial[t] = run; run += v; }
  }
  __syncthreads();
  int run = partial[threadIdx.x];
  for (int i = lo; i < hi; i++) { starts[i] = run; run += totals[i]; }
}

// One warp per (chunk, g): rows in ascending order; lanes take the row's blocks; equal blocks in
// one row (caller-supplied duplicates) get consecutive slots by lane order.
__global__ void fillKernel(const int* blocks, SeqArgs seq, int H, int n, int ls, int NB, int chunks, int* counts,
                           const int* starts, int* list) {
  const int chunk = blockIdx.x, g = blockIdx.y, lane = threadIdx.x;
  const SeqTable st = seqTable(seq);
  for (int r = 0; r < kChunkRows; r++) {
    const int row = chunk * kChunkRows + r;
    if (row >= seq.rows) break;
    const int s = seqOfRow(st, row);
    const int pos = st.pos0[s] + row - st.qStart[s];
    const int base = selBase(seq)[s];
    for (int k0 = 0; k0 < n; k0 += 32) {
      const int k = k0 + lane;
      int J = -1;
      if (k < n) {
        const int j = blocks[((size_t)row * H + g) * n + k];
        if (blockHasTokens(j, pos, ls)) J = base + j;
      }
      const unsigned same = __match_any_sync(0xffffffffu, J);
      if (J >= 0) {
        const unsigned below = same & ((1u << lane) - 1u);
        int* off = &counts[((size_t)g * chunks + chunk) * NB + J];
        const int slot = starts[(size_t)g * NB + J] + *off + __popc(below);
        list[slot] = row;
        __syncwarp(same);
        if (below == 0) *off += __popc(same);
      }
      __syncwarp();
    }
  }
}

// ---- key-centric dK/dV ----

// One key tile of one KV head g, and the slice [q0, q1) of the queries that see it. A tile whose
// queries are split over several blocks (part >= 0) writes float partials that reduceKernel sums
// in slice order, so the result does not depend on scheduling.
struct KeyTile {
  int s, start, j, sub, g, q0, q1, part, group;
};

template <class T>
__global__ void __launch_bounds__(kThreads) keyGradKernel(NSABackwardArgs a, const float* D, const KeyTile* tiles, int mode,
                                                          const int* starts, const int* totals, const int* list, int NB,
                                                          int BK, int R, float* partial, int* groupRows) {
  extern __shared__ __align__(16) char smemRaw[];
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  const int G = c.HQ / c.H;
  KeyGradSmem<T> sm;
  sm.carve(smemRaw, R, BK, c.Dk, c.Dv);
  const KeyTile tile = tiles[blockIdx.x];
  const int g = tile.g;
  const SeqTable st = seqTable(f.seq);
  const int s = tile.s;
  const int qStart = st.qStart[s], qCount = st.qStart[s + 1] - qStart, pos0 = st.pos0[s];
  const int keyLen = pos0 + qCount;
  const float sl2 = c.scale * kLog2e;
  const int nc = compressedCount(keyLen, c.l, c.d);

  // Key tile.
  for (int j = threadIdx.x; j < BK; j += blockDim.x) {
    int kr = -1, kp = 0;
    if (mode == kCompressed) {
      const int i = tile.start + j;
      if (i < nc) { kr = st.cBase[s] + i; kp = i * c.d + c.l - 1; }
    } else if (mode == kSelected) {
      const int off = tile.sub * BK + j;
      const int p = tile.j * c.ls + off;
      if (off < c.ls && p < keyLen) { kr = st.kBase[s] + p; kp = p; }
    } else {
      const int p = tile.start + j;
      if (p < keyLen) { kr = st.kBase[s] + p; kp = p; }
    }
    sm.krow[j] = kr;
    sm.kpos[j] = kp;
  }
  __syncthreads();
  const void* K = mode == kCompressed ? f.kCmp : mode == kSelected ? f.kSlc : f.kWin;
  const void* V = mode == kCompressed ? f.vCmp : mode == kSelected ? f.vSlc : f.vWin;
  keyGradLoad<T>(sm, K, V, c.H, g);
  keyGradBegin(sm);

  // Query positions (window, compressed: a contiguous range; selected: the inverse index).
  int first = 0, count = 0;
  const int* rows = nullptr;
  if (mode == kWindow) {
    first = tile.start;
    count = max(0, min(keyLen - 1, tile.start + BK - 1 + c.window - 1) - first + 1);
  } else if (mode == kCompressed) {
    first = tile.start * c.d + c.l - 1;
    count = max(0, keyLen - first);
  } else {
    const int J = selBase(f.seq)[s] + tile.j;
    rows = list + starts[(size_t)g * NB + J];
    count = totals[(size_t)g * NB + J];
  }
  const int window = mode == kWindow ? c.window : kBigWindow;
  RowSource src{f.q, a.dOut, f.lse, 3, mode == kCompressed ? 0 : mode == kSelected ? 1 : 2, D, f.gates,
                mode == kCompressed ? 0 : mode == kSelected ? 1 : 2, c.HQ};
  const int headsPer = min(G, R), QP = R / headsPer;
  const int qEnd = min(count, tile.q1);
  for (int h0 = 0; h0 < G; h0 += headsPer) {
    for (int i0 = tile.q0; i0 < qEnd; i0 += QP) {
      __syncthreads();
      for (int r = threadIdx.x; r < R; r += blockDim.x) {
        const int pi = r / headsPer, h = h0 + r % headsPer;
        int qrow = -1, p = 0;
        if (pi < QP && i0 + pi < qEnd && h < G) {
          if (rows) { qrow = rows[i0 + pi]; p = pos0 + qrow - qStart; }
          else { p = first + i0 + pi; qrow = qStart + p - pos0; }
        }
        sm.rrow[r] = qrow;
        sm.rpos[r] = p;
        sm.rhead[r] = g * G + h;
      }
      __syncthreads();
      keyGradStep(sm, src, sl2, window);
    }
  }
  __syncthreads();
  if (tile.part >= 0) {
    float* out = partial + (size_t)tile.part * BK * (c.Dk + c.Dv);
    for (int e = threadIdx.x; e < BK * c.Dk; e += blockDim.x) out[e] = sm.dK[(e / c.Dk) * sm.ldk + e % c.Dk];
    for (int e = threadIdx.x; e < BK * c.Dv; e += blockDim.x) out[BK * c.Dk + e] = sm.dV[(e / c.Dv) * sm.ldvv + e % c.Dv];
    if (tile.q0 == 0) for (int j = threadIdx.x; j < BK; j += blockDim.x) groupRows[(size_t)tile.group * BK + j] = sm.krow[j];
    return;
  }
  void* dK = mode == kCompressed ? a.dkCmp : mode == kSelected ? a.dkSlc : a.dkWin;
  void* dV = mode == kCompressed ? a.dvCmp : mode == kSelected ? a.dvSlc : a.dvWin;
  keyGradEnd(sm, dK, dV, c.H, g, c.scale);
}

// Sums the float partials of one split key tile in slice order and writes dK (times scale), dV.
constexpr int kReduceChunk = 4096;  // elements of one group per reduce block

template <class T>
__global__ void reduceKernel(NSABackwardArgs a, const KeyGroup* groups, const float* partial, const int* groupRows, int BK) {
  const NSAConfigArgs& c = a.fwd.cfg;
  const KeyGroup grp = groups[blockIdx.x];
  const int* rows = groupRows + (size_t)blockIdx.x * BK;
  const size_t width = (size_t)BK * (c.Dk + c.Dv);
  T* dK = static_cast<T*>(grp.mode == kCompressed ? a.dkCmp : grp.mode == kSelected ? a.dkSlc : a.dkWin);
  T* dV = static_cast<T*>(grp.mode == kCompressed ? a.dvCmp : grp.mode == kSelected ? a.dvSlc : a.dvWin);
  // blockIdx.y takes one chunk of the group's elements (more blocks than groups: small grids).
  const int eEnd = min(BK * (c.Dk + c.Dv), (int)((blockIdx.y + 1) * kReduceChunk));
  for (int e = blockIdx.y * kReduceChunk + threadIdx.x; e < eEnd; e += blockDim.x) {
    float acc = 0.f;
    for (int z = 0; z < grp.parts; z++) acc += partial[(grp.firstPart + z) * width + e];
    const bool isK = e < BK * c.Dk;
    const int D = isK ? c.Dk : c.Dv, local = isK ? e : e - BK * c.Dk;
    const int j = local / D, d = local % D;
    if (rows[j] < 0) continue;
    if (isK) dK[((size_t)rows[j] * c.H + grp.g) * c.Dk + d] = fromF<T>(acc * c.scale);
    else dV[((size_t)rows[j] * c.H + grp.g) * c.Dv + d] = fromF<T>(acc);
  }
}

template <class T>
float* launchPrep(const NSABackwardArgs& a, Workspace& ws, cudaStream_t stream) {
  const NSAForwardArgs& f = a.fwd;
  const int HQ = f.cfg.HQ;
  float* D = ws.alloc<float>((size_t)f.seq.rows * HQ * 3);
  const int warps = f.seq.rows * HQ, threads = 256;
  if (warps == 0) return D;
  prepKernel<T><<<(warps * 32 + threads - 1) / threads, threads, 0, stream>>>(
      static_cast<const T*>(a.dOut), static_cast<const T*>(f.oCmp), static_cast<const T*>(f.oSlc),
      static_cast<const T*>(f.oWin), static_cast<const T*>(f.gates), static_cast<T*>(a.dGates), D, warps, f.cfg.Dv);
  NSA_LAUNCHED("nsa backward prepKernel");
  return D;
}

template <class T>
void launchBackward(const NSABackwardArgs& a, cudaStream_t stream) {
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  const int G = c.HQ / c.H;
  const int rows = f.seq.rows;
  const int S = f.seq.S;
  const int* host = f.seq.host;
  Workspace ws(stream);
  if (rows == 0) return;

  float* D = backwardPrep(a, ws, stream);
  int R = 64, BK = 64;
  size_t bytes = 0;
  keyGradShape<T>(c.Dk, c.Dv, &R, &BK, &bytes);
  InverseIndex index = backwardIndex(a, ws, stream);
  const int NB = index.NB;
  int *starts = index.starts, *totals = index.totals, *list = index.list;
  const std::vector<int>& hostTotals = index.hostTotals;
  // dq (queued after the index so that the read-back above waits only for the index)
  {
    const int qBK = sizeof(T) == 4 ? 32 : 64;
    int RG = 16;
    size_t qBytes = 0;
    for (int cand : {64, 32, 16}) {
      if (cand > roundUp(G, 16)) continue;
      qBytes = AttendSmem<T>::bytes(cand, qBK, c.Dk, c.Dv, 2 * c.n + 8, true);
      RG = cand;
      if (qBytes <= 200 * 1024) break;
    }
    NSA_CUDA(cudaFuncSetAttribute(dqKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)qBytes));
    dqKernel<T><<<dim3(rows, c.H), kThreads, qBytes, stream>>>(a, D, RG, qBK);
    NSA_LAUNCHED("nsa backward dqKernel");
  }
  std::vector<KeyTile> tiles[3];
  std::vector<KeyGroup> groups;
  int parts = 0;
  auto add = [&](int mode, KeyTile t, int count) {
    const int slices = std::max(1, (count + kSliceQueries - 1) / kSliceQueries);
    if (slices == 1) {
      t.q0 = 0; t.q1 = INT_MAX; t.part = -1; t.group = -1;
      tiles[mode].push_back(t);
      return;
    }
    const int group = (int)groups.size();
    groups.push_back({parts, slices, t.g, mode});
    for (int z = 0; z < slices; z++) {
      t.q0 = z * kSliceQueries; t.q1 = (z + 1) * kSliceQueries; t.part = parts + z; t.group = group;
      tiles[mode].push_back(t);
    }
    parts += slices;
  };
  int sel = 0;
  for (int s = 0; s < S; s++) {
    const int qCount = host[s + 1] - host[s], pos0 = host[3 * S + 1 + s];
    const int keyLen = pos0 + qCount;
    const int nc = compressedCount(keyLen, c.l, c.d);
    const int nbs = (keyLen + c.ls - 1) / c.ls;
    for (int g = 0; g < c.H; g++) {
      for (int p = 0; p < keyLen; p += BK) add(kWindow, {s, p, 0, 0, g}, 0);
      for (int i = 0; i < nc; i += BK) add(kCompressed, {s, i, 0, 0, g}, keyLen - (i * c.d + c.l - 1));
      for (int j = 0; j < nbs; j++)
        for (int sub = 0; sub * BK < c.ls; sub++) add(kSelected, {s, 0, j, sub, g}, hostTotals[(size_t)g * NB + sel + j]);
    }
    sel += nbs;
  }
  float* partial = parts ? ws.alloc<float>((size_t)parts * BK * (c.Dk + c.Dv)) : nullptr;
  int* groupRows = groups.empty() ? nullptr : ws.alloc<int>(groups.size() * BK);
  NSA_CUDA(cudaFuncSetAttribute(keyGradKernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
  for (int mode = 0; mode < 3; mode++) {
    if (tiles[mode].empty()) continue;
    KeyTile* dTiles = ws.upload(tiles[mode]);
    keyGradKernel<T><<<(unsigned)tiles[mode].size(), kThreads, bytes, stream>>>(a, D, dTiles, mode, starts, totals, list, NB,
                                                                                BK, R, partial, groupRows);
    NSA_LAUNCHED("nsa backward keyGradKernel");
  }
  reduceKeyPartials(a, groups, partial, groupRows, BK, ws, stream);
  // A sequence with no compressed keys leaves dkCmp untouched: C = 0 there, nothing to write.
}

template <class T>
void launchReduce(const NSABackwardArgs& a, const std::vector<KeyGroup>& groups, const float* partial, const int* groupRows,
                  int BK, Workspace& ws, cudaStream_t stream) {
  if (groups.empty()) return;
  KeyGroup* dGroups = ws.upload(groups);
  const int chunks = (BK * (a.fwd.cfg.Dk + a.fwd.cfg.Dv) + kReduceChunk - 1) / kReduceChunk;
  reduceKernel<T><<<dim3((unsigned)groups.size(), chunks), kThreads, 0, stream>>>(a, dGroups, partial, groupRows, BK);
  NSA_LAUNCHED("nsa backward reduceKernel");
}

}  // namespace

float* backwardPrep(const NSABackwardArgs& a, Workspace& ws, cudaStream_t stream) {
  switch (a.fwd.dtype) {
    case DType::F32: return launchPrep<float>(a, ws, stream);
    case DType::F16: return launchPrep<__half>(a, ws, stream);
    default: return launchPrep<__nv_bfloat16>(a, ws, stream);
  }
}

InverseIndex backwardIndex(const NSABackwardArgs& a, Workspace& ws, cudaStream_t stream, bool wait) {
  const NSAForwardArgs& f = a.fwd;
  const NSAConfigArgs& c = f.cfg;
  const int rows = f.seq.rows, S = f.seq.S;
  const int* host = f.seq.host;
  InverseIndex x;
  for (int s = 0; s < S; s++) x.NB += (host[3 * S + 1 + s] + host[s + 1] - host[s] + c.ls - 1) / c.ls;
  const int NB = x.NB;
  const int chunks = (rows + kChunkRows - 1) / kChunkRows;
  int* counts = ws.alloc<int>((size_t)c.H * chunks * NB);
  x.totals = ws.alloc<int>((size_t)c.H * NB);
  x.starts = ws.alloc<int>((size_t)c.H * NB);
  x.list = ws.alloc<int>((size_t)rows * c.H * c.n + 1);
  x.hostTotals.assign((size_t)c.H * NB, 0);
  if (rows == 0 || NB == 0) return x;
  NSA_CUDA(cudaMemsetAsync(counts, 0, sizeof(int) * (size_t)c.H * chunks * NB, stream));
  countKernel<<<dim3(chunks, c.H), kChunkRows, 0, stream>>>(a.blocks, f.seq, c.H, c.n, c.ls, NB, chunks, counts);
  NSA_LAUNCHED("nsa backward countKernel");
  chunkScanKernel<<<(unsigned)(((size_t)c.H * NB * 32 + 255) / 256), 256, 0, stream>>>(counts, x.totals, c.H, NB, chunks);
  NSA_LAUNCHED("nsa backward chunkScanKernel");
  totalsScanKernel<<<1, 1024, 0, stream>>>(x.totals, x.starts, c.H * NB);
  NSA_LAUNCHED("nsa backward totalsScanKernel");
  fillKernel<<<dim3(chunks, c.H), 32, 0, stream>>>(a.blocks, f.seq, c.H, c.n, c.ls, NB, chunks, counts, x.starts, x.list);
  NSA_LAUNCHED("nsa backward fillKernel");
  // How many queries chose each block decides how the key-centric work is split: read the counts back.
  if (wait) {
    NSA_CUDA(cudaMemcpyAsync(x.hostTotals.data(), x.totals, sizeof(int) * x.hostTotals.size(), cudaMemcpyDeviceToHost, stream));
    NSA_CUDA(cudaStreamSynchronize(stream));
    return x;
  }
  // One pinned staging buffer and event for the process (operators run on one host thread; the
  // buffer is read in backwardIndexWait before the next call can overwrite it).
  static int* pinned = nullptr;
  static size_t pinnedCount = 0;
  static cudaEvent_t copied = nullptr;
  if (!copied) NSA_CUDA(cudaEventCreateWithFlags(&copied, cudaEventDisableTiming));
  if (pinnedCount < x.hostTotals.size()) {
    if (pinned) NSA_CUDA(cudaFreeHost(pinned));
    pinned = nullptr;
    pinnedCount = 0;
    NSA_CUDA(cudaMallocHost(&pinned, sizeof(int) * x.hostTotals.size()));
    pinnedCount = x.hostTotals.size();
  }
  NSA_CUDA(cudaMemcpyAsync(pinned, x.totals, sizeof(int) * x.hostTotals.size(), cudaMemcpyDeviceToHost, stream));
  NSA_CUDA(cudaEventRecord(copied, stream));
  x.pinnedTotals = pinned;
  x.copied = copied;
  return x;
}

void backwardIndexWait(InverseIndex& x) {
  if (!x.copied) return;
  NSA_CUDA(cudaEventSynchronize(x.copied));
  std::copy(x.pinnedTotals, x.pinnedTotals + x.hostTotals.size(), x.hostTotals.begin());
  x.copied = nullptr;
  x.pinnedTotals = nullptr;
}

void reduceKeyPartials(const NSABackwardArgs& a, const std::vector<KeyGroup>& groups, const float* partial,
                       const int* groupRows, int BK, Workspace& ws, cudaStream_t stream) {
  switch (a.fwd.dtype) {
    case DType::F32: return launchReduce<float>(a, groups, partial, groupRows, BK, ws, stream);
    case DType::F16: return launchReduce<__half>(a, groups, partial, groupRows, BK, ws, stream);
    default: return launchReduce<__nv_bfloat16>(a, groups, partial, groupRows, BK, ws, stream);
  }
}

void nsaBackward(const NSABackwardArgs& a, cudaStream_t stream) {
  if (nsaBackwardRegisters(a, stream)) return;
  switch (a.fwd.dtype) {
    case DType::F32: return launchBackward<float>(a, stream);
    case DType::F16: return launchBackward<__half>(a, stream);
    case DType::BF16: return launchBackward<__nv_bfloat16>(a, stream);
  }
}

}  // namespace nsa
